//! What a model expects: the names, datatypes and shapes of its inputs and
//! outputs, as read from the ONNX graph.

use super::DataType;

/// Metadata of one input or output of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Tensor name in the graph.
    pub name: String,
    /// Element type.
    pub datatype: DataType,
    /// Shape; a variable dimension is `-1`.
    pub dims: Vec<i64>,
}

impl TensorSpec {
    /// Whether a concrete request shape fits this spec: same rank, and every
    /// fixed dimension equal.
    pub fn accepts_shape(&self, shape: &[i64]) -> bool {
        shape.len() == self.dims.len()
            && self
                .dims
                .iter()
                .zip(shape)
                .all(|(&want, &got)| want < 0 || want == got)
    }
}

/// Inputs and outputs of one model version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// Model name (as in the repository).
    pub name: String,
    /// Inputs, in graph order.
    pub inputs: Vec<TensorSpec>,
    /// Outputs, in graph order.
    pub outputs: Vec<TensorSpec>,
    /// Largest batch along dimension 0 the model runs; 0 when the model
    /// does not batch (dimension 0 is then an ordinary dimension).
    pub max_batch_size: usize,
    /// Most rows one request may carry: `max_batch_size`, or unbounded
    /// when larger requests are run in chunks.
    pub max_request_rows: usize,
    /// Indices of the BYTES inputs whose elements must be UTF-8 text (they
    /// feed operators that decode text); other BYTES inputs take any bytes.
    pub utf8_inputs: Vec<usize>,
}

impl ModelSpec {
    /// Whether dimension 0 of every input and output is variable, so that
    /// the model can run batches of rows along it.
    pub fn has_batch_dim(&self) -> bool {
        let variable_first = |t: &TensorSpec| t.dims.first().is_some_and(|&d| d < 0);
        !self.inputs.is_empty()
            && self.inputs.iter().all(variable_first)
            && self.outputs.iter().all(variable_first)
    }

    /// Position of the input called `name`.
    pub fn input_index(&self, name: &str) -> Option<usize> {
        self.inputs.iter().position(|t| t.name == name)
    }

    /// Position of the output called `name`.
    pub fn output_index(&self, name: &str) -> Option<usize> {
        self.outputs.iter().position(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, dims: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype: DataType::Fp32,
            dims: dims.to_vec(),
        }
    }

    #[test]
    fn variable_dims_accept_any_size_fixed_dims_only_their_own() {
        let s = spec("x", &[-1, 784]);
        assert!(s.accepts_shape(&[1, 784]));
        assert!(s.accepts_shape(&[64, 784]));
        assert!(!s.accepts_shape(&[1, 783]));
        assert!(!s.accepts_shape(&[784]));
        assert!(!s.accepts_shape(&[1, 784, 1]));
    }

    #[test]
    fn batch_dim_needs_every_tensor_variable_in_dim_zero() {
        let mut m = ModelSpec {
            name: "m".into(),
            inputs: vec![spec("a", &[-1, 4]), spec("b", &[-1])],
            outputs: vec![spec("y", &[-1, 2])],
            max_batch_size: 0,
            max_request_rows: 0,
            utf8_inputs: Vec::new(),
        };
        assert!(m.has_batch_dim());
        m.outputs.push(spec("z", &[3]));
        assert!(!m.has_batch_dim());
    }
}
