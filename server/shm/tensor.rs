//! Request tensors that name a region: the `shared_memory_region`,
//! `shared_memory_byte_size` and `shared_memory_offset` tensor parameters.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use oxserve_proto::inference::model_infer_response::InferOutputTensor;
use oxserve_proto::inference::{InferParameter, ModelInferRequest, ParameterChoice};

use super::{Region, SharedMemory, ShmError};

const REGION: &str = "shared_memory_region";
const BYTE_SIZE: &str = "shared_memory_byte_size";
const OFFSET: &str = "shared_memory_offset";

/// Where one tensor lives in shared memory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TensorRef {
    region: String,
    byte_size: u64,
    offset: u64,
}

/// The tensor's shared-memory reference, if its parameters name a region.
fn tensor_ref(
    what: &dyn Fn() -> String,
    parameters: &HashMap<String, InferParameter>,
) -> Result<Option<TensorRef>, ShmError> {
    let Some(region) = parameters.get(REGION) else {
        return Ok(None);
    };
    let bad = |reason: &str| ShmError::BadParameter(format!("{}: {reason}", what()));
    let region = match &region.parameter_choice {
        Some(ParameterChoice::StringParam(name)) => name.clone(),
        _ => return Err(bad(&format!("'{REGION}' must be a string"))),
    };
    let number = |key: &str| -> Result<Option<u64>, ShmError> {
        match parameters
            .get(key)
            .and_then(|p| p.parameter_choice.as_ref())
        {
            None => Ok(None),
            Some(ParameterChoice::Int64Param(v)) if *v >= 0 => Ok(Some(*v as u64)),
            Some(ParameterChoice::Uint64Param(v)) => Ok(Some(*v)),
            Some(_) => Err(bad(&format!("'{key}' must be a non-negative integer"))),
        }
    };
    let byte_size =
        number(BYTE_SIZE)?.ok_or_else(|| bad(&format!("'{REGION}' needs '{BYTE_SIZE}'")))?;
    let offset = number(OFFSET)?.unwrap_or(0);
    Ok(Some(TensorRef {
        region,
        byte_size,
        offset,
    }))
}

/// The data of every input that names a region, copied out of it: one
/// entry per request input, `None` for inputs that carry their data in the
/// request. Empty when no input names a region (nothing is allocated).
/// No input may take more than `limit` bytes.
pub(crate) fn input_refs(
    shm: &SharedMemory,
    request: &ModelInferRequest,
    limit: usize,
) -> Result<Vec<Option<Bytes>>, ShmError> {
    if !request
        .inputs
        .iter()
        .any(|i| i.parameters.contains_key(REGION))
    {
        return Ok(Vec::new());
    }
    request
        .inputs
        .iter()
        .map(|input| {
            let what = || format!("input '{}'", input.name);
            let Some(r) = tensor_ref(&what, &input.parameters)? else {
                return Ok(None);
            };
            shm.read(&r.region, r.offset, r.byte_size, limit)
                .map(Some)
                .map_err(|e| {
                    if let ShmError::OutOfBounds(m) = e {
                        ShmError::OutOfBounds(format!("{}: {m}", what()))
                    } else {
                        e
                    }
                })
        })
        .collect()
}

/// Outputs to be written to regions, resolved before the request runs so
/// that a missing region fails it at once.
#[derive(Debug, Default)]
pub(crate) struct OutputRefs(Vec<(String, TensorRef, Arc<Region>)>);

/// The requested outputs that name a region.
pub(crate) fn output_refs(
    shm: &SharedMemory,
    request: &ModelInferRequest,
) -> Result<OutputRefs, ShmError> {
    let mut refs = Vec::new();
    for output in &request.outputs {
        let what = || format!("output '{}'", output.name);
        if let Some(r) = tensor_ref(&what, &output.parameters)? {
            let region = shm.get(&r.region)?;
            refs.push((output.name.clone(), r, region));
        }
    }
    Ok(OutputRefs(refs))
}

impl OutputRefs {
    /// Whether no output goes to shared memory.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Writes each output that names a region into it, and leaves its raw
    /// contents in the response empty (the entry stays, so the others keep
    /// their positions). The output's parameters say where it went.
    pub(crate) fn write(
        &self,
        outputs: &mut [InferOutputTensor],
        raw: &mut [Bytes],
    ) -> Result<(), ShmError> {
        for (name, r, region) in &self.0 {
            let Some(index) = outputs.iter().position(|o| &o.name == name) else {
                continue;
            };
            let data = &raw[index];
            if data.len() as u64 > r.byte_size {
                return Err(ShmError::OutOfBounds(format!(
                    "output '{name}' needs {} bytes, but its '{BYTE_SIZE}' is {}",
                    data.len(),
                    r.byte_size
                )));
            }
            region
                .write(r.offset, data)
                .map_err(|e| ShmError::OutOfBounds(format!("output '{name}': {e}")))?;
            let parameters = &mut outputs[index].parameters;
            parameters.insert(REGION.into(), r.region.clone().into());
            parameters.insert(BYTE_SIZE.into(), (data.len() as i64).into());
            if r.offset > 0 {
                parameters.insert(OFFSET.into(), (r.offset as i64).into());
            }
            raw[index] = Bytes::new();
        }
        Ok(())
    }
}
