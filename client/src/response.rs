//! Reading an inference response.

use std::collections::HashMap;

use crate::{
    DataType, Element, Error, Result, codec,
    pb::{self, InferParameter, InferTensorContents, model_infer_response::InferOutputTensor},
};

/// A `ModelInfer` response, with typed access to its outputs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InferResponse {
    inner: pb::ModelInferResponse,
}

impl InferResponse {
    /// The request id the server echoed (empty if none was sent).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The model that answered.
    pub fn model_name(&self) -> &str {
        &self.inner.model_name
    }

    /// The version of the model that answered.
    pub fn model_version(&self) -> &str {
        &self.inner.model_version
    }

    /// The response's parameters.
    pub fn parameters(&self) -> &HashMap<String, InferParameter> {
        &self.inner.parameters
    }

    /// The output called `name`, if the response has one.
    pub fn output(&self, name: &str) -> Option<Output<'_>> {
        self.outputs().find(|output| output.name() == name)
    }

    /// The output called `name`, or [`Error::Mismatch`] naming the outputs
    /// the response does have; handy with `?`.
    pub fn try_output(&self, name: &str) -> Result<Output<'_>> {
        self.output(name).ok_or_else(|| {
            let names: Vec<&str> = self.outputs().map(|o| o.name()).collect();
            Error::mismatch(format!(
                "the response has no output '{name}' (it has {names:?})"
            ))
        })
    }

    /// Every output, in the order the server sent them.
    pub fn outputs(&self) -> impl ExactSizeIterator<Item = Output<'_>> + '_ {
        self.inner
            .outputs
            .iter()
            .enumerate()
            .map(|(index, tensor)| Output {
                tensor,
                // `raw_output_contents[i]` belongs to `outputs[i]`.
                raw: self
                    .inner
                    .raw_output_contents
                    .get(index)
                    .map(|raw| &raw[..]),
            })
    }

    /// The wire message.
    pub fn as_proto(&self) -> &pb::ModelInferResponse {
        &self.inner
    }

    /// The wire message, by value.
    pub fn into_proto(self) -> pb::ModelInferResponse {
        self.inner
    }
}

impl From<pb::ModelInferResponse> for InferResponse {
    fn from(inner: pb::ModelInferResponse) -> Self {
        InferResponse { inner }
    }
}

/// One output tensor of an [`InferResponse`].
///
/// The typed readers (`as_f32`, `as_bytes`, ...) check the datatype, then
/// that the data holds exactly the elements the shape says: a malformed
/// response is an [`Error::Decode`], reading as the wrong type an
/// [`Error::Mismatch`]. They read `raw_output_contents` when the server sent
/// it, as reference servers do, and the typed `contents` otherwise.
#[derive(Clone, Copy, Debug)]
pub struct Output<'a> {
    tensor: &'a InferOutputTensor,
    raw: Option<&'a [u8]>,
}

macro_rules! typed_readers {
    ($($name:ident => $t:ty),* $(,)?) => {$(
        #[doc = concat!("The elements as `", stringify!($t), "`; see [`Output::to_vec`].")]
        pub fn $name(&self) -> Result<Vec<$t>> {
            self.to_vec::<$t>()
        }
    )*};
}

impl<'a> Output<'a> {
    /// The output's name.
    pub fn name(&self) -> &'a str {
        &self.tensor.name
    }

    /// The datatype string as sent; see [`Output::dtype`] for the parsed
    /// form.
    pub fn datatype(&self) -> &'a str {
        &self.tensor.datatype
    }

    /// The datatype, or [`Error::Decode`] if the server sent a string that
    /// names none.
    pub fn dtype(&self) -> Result<DataType> {
        self.datatype().parse().map_err(|e| self.decode_error(e))
    }

    /// The shape, as sent.
    pub fn shape(&self) -> &'a [i64] {
        &self.tensor.shape
    }

    /// The raw data, if the server sent this output in
    /// `raw_output_contents`; the only form `FP16` and `BF16` travel in.
    pub fn raw(&self) -> Option<&'a [u8]> {
        self.raw
    }

    /// The typed data, if the server sent this output in `contents`.
    pub fn contents(&self) -> Option<&'a InferTensorContents> {
        self.tensor.contents.as_ref()
    }

    /// The output's parameters.
    pub fn parameters(&self) -> &'a HashMap<String, InferParameter> {
        &self.tensor.parameters
    }

    /// The number of elements the shape holds, or [`Error::Decode`] if a
    /// dimension is negative or the product overflows.
    pub fn element_count(&self) -> Result<usize> {
        codec::element_count(self.shape()).ok_or_else(|| {
            self.decode_error(format!(
                "shape {:?} has a negative dimension or too many elements",
                self.shape()
            ))
        })
    }

    /// The elements as `T`, which must match the output's datatype.
    ///
    /// # Errors
    /// [`Error::Mismatch`] if the datatype is not `T`'s; [`Error::Decode`]
    /// if the data is not exactly the shape's element count, or carries a
    /// value `T` cannot hold (a `BOOL` byte other than 0 or 1, an out of
    /// range typed content).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        self.expect_dtype(T::DATATYPE)?;
        let count = self.element_count()?;
        let values = match (self.raw, self.contents()) {
            (Some(raw), _) => codec::decode_fixed(raw, count),
            (None, Some(contents)) => T::from_contents(contents).and_then(|v| check_len(v, count)),
            (None, None) => no_data(count),
        };
        values.map_err(|e| self.decode_error(e))
    }

    typed_readers! {
        as_bool => bool,
        as_u8 => u8,
        as_u16 => u16,
        as_u32 => u32,
        as_u64 => u64,
        as_i8 => i8,
        as_i16 => i16,
        as_i32 => i32,
        as_i64 => i64,
        as_f32 => f32,
        as_f64 => f64,
    }

    /// The elements of an `FP16` output; see [`Output::to_vec`].
    #[cfg(feature = "half")]
    pub fn as_f16(&self) -> Result<Vec<half::f16>> {
        self.to_vec()
    }

    /// The elements of a `BF16` output; see [`Output::to_vec`].
    #[cfg(feature = "half")]
    pub fn as_bf16(&self) -> Result<Vec<half::bf16>> {
        self.to_vec()
    }

    /// The elements of a `BYTES` output.
    ///
    /// # Errors
    /// [`Error::Mismatch`] if the output is not `BYTES`; [`Error::Decode`]
    /// if the length-prefixed stream is malformed or does not hold the
    /// shape's element count.
    pub fn as_bytes(&self) -> Result<Vec<Vec<u8>>> {
        self.expect_dtype(DataType::Bytes)?;
        let count = self.element_count()?;
        let values = match (self.raw, self.contents()) {
            (Some(raw), _) => codec::decode_bytes_inner(raw, count),
            (None, Some(contents)) => {
                let elements = contents.bytes_contents.iter().map(|e| e.to_vec());
                check_len(elements.collect(), count)
            }
            (None, None) => no_data(count),
        };
        values.map_err(|e| self.decode_error(e))
    }

    /// The elements of a `BYTES` output as UTF-8 strings.
    ///
    /// # Errors
    /// As [`Output::as_bytes`], and [`Error::Decode`] if an element is not
    /// valid UTF-8 (nothing is replaced or dropped).
    pub fn as_strings(&self) -> Result<Vec<String>> {
        self.as_bytes()?
            .into_iter()
            .enumerate()
            .map(|(i, bytes)| {
                String::from_utf8(bytes)
                    .map_err(|e| self.decode_error(format!("element {i} is not UTF-8: {e}")))
            })
            .collect()
    }

    fn expect_dtype(&self, wanted: DataType) -> Result<()> {
        let actual = self.dtype()?;
        if actual == wanted {
            Ok(())
        } else {
            Err(Error::mismatch(format!(
                "output '{}' is {actual}, cannot read it as {wanted}",
                self.name()
            )))
        }
    }

    pub(crate) fn decode_error(&self, message: impl std::fmt::Display) -> Error {
        Error::decode(format!("output '{}': {message}", self.name()))
    }
}

fn check_len<T>(values: Vec<T>, count: usize) -> Result<Vec<T>, String> {
    if values.len() == count {
        Ok(values)
    } else {
        Err(format!(
            "shape holds {count} elements, contents hold {}",
            values.len()
        ))
    }
}

/// An output with neither raw nor typed data is only well formed if empty.
fn no_data<T>(count: usize) -> Result<Vec<T>, String> {
    if count == 0 {
        Ok(Vec::new())
    } else {
        Err(format!("no data for {count} elements"))
    }
}

#[cfg(test)]
mod tests;
