//! Why a request's tensors were rejected. Every variant is the client's
//! fault (INVALID_ARGUMENT) and names the model, the tensor, what was expected
//! and what was received.

/// Formats a shape the way it appears in messages: `[1, 784]`.
pub(crate) fn fmt_shape<T: std::fmt::Display>(shape: &[T]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

/// A request whose tensors do not fit the model or the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    /// Typed `contents` and `raw_input_contents` in one request.
    #[error(
        "model '{model}': the request mixes 'contents' and 'raw_input_contents'; send all inputs one way"
    )]
    MixedContents {
        /// Model name.
        model: String,
    },
    /// `raw_input_contents` does not have one entry per input.
    #[error(
        "model '{model}': {raw} raw_input_contents for {inputs} inputs; expected one raw blob per input, in the order of 'inputs'"
    )]
    RawCountMismatch {
        /// Model name.
        model: String,
        /// Number of entries in `inputs`.
        inputs: usize,
        /// Number of entries in `raw_input_contents`.
        raw: usize,
    },
    /// An input the model does not have.
    #[error("unexpected inference input '{input}' for model '{model}'; its inputs are {expected}")]
    UnknownInput {
        /// Model name.
        model: String,
        /// The name sent.
        input: String,
        /// The model's inputs, listed.
        expected: String,
    },
    /// The same input twice.
    #[error("input '{input}' of model '{model}' is given more than once")]
    DuplicateInput {
        /// Model name.
        model: String,
        /// The repeated name.
        input: String,
    },
    /// Required inputs absent.
    #[error("model '{model}' expects {expected} inputs, but the request is missing {missing}")]
    MissingInputs {
        /// Model name.
        model: String,
        /// How many inputs the model has.
        expected: usize,
        /// The missing names, listed.
        missing: String,
    },
    /// An input without data.
    #[error(
        "input '{input}' of model '{model}' has no data: expected contents.{field} or an entry in raw_input_contents"
    )]
    NoData {
        /// Model name.
        model: String,
        /// Input name.
        input: String,
        /// The typed field that would carry this datatype.
        field: &'static str,
    },
    /// A datatype string the protocol does not define.
    #[error(
        "input '{input}' of model '{model}': unknown data-type '{datatype}'; expected one of BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, BF16, FP32, FP64, BYTES"
    )]
    UnknownDatatype {
        /// Model name.
        model: String,
        /// Input name.
        input: String,
        /// What was sent.
        datatype: String,
    },
    /// A datatype other than the model's.
    #[error("input '{input}': data-type is '{got}', but model '{model}' expects '{expected}'")]
    DatatypeMismatch {
        /// Model name.
        model: String,
        /// Input name.
        input: String,
        /// Datatype sent.
        got: String,
        /// Datatype of the model.
        expected: &'static str,
    },
    /// A shape with a negative or variable dimension.
    #[error(
        "input '{input}' of model '{model}': shape {shape} has a negative dimension; requests need concrete sizes (-1 is only for metadata)"
    )]
    NegativeDim {
        /// Model name.
        model: String,
        /// Input name.
        input: String,
        /// Shape sent, formatted.
        shape: String,
    },
    /// A shape whose element count does not fit in memory arithmetic.
    #[error(
        "input '{input}' of model '{model}': shape {shape} has more elements than can be addressed"
    )]
    ShapeOverflow {
        /// Model name.
        model: String,
        /// Input name.
        input: String,
        /// Shape sent, formatted.
        shape: String,
    },
    /// A shape the model does not accept.
    #[error(
        "input '{input}' of model '{model}': unexpected shape {got}; the model expects {expected}"
    )]
    ShapeMismatch {
        /// Model name.
        model: String,
        /// Input name.
        input: String,
        /// Shape sent, formatted.
        got: String,
        /// Model shape, formatted (-1 = any size).
        expected: String,
    },
    /// Inputs with different sizes in the batch dimension.
    #[error(
        "model '{model}': inputs disagree on the batch size: '{first}' has {first_batch} rows, '{input}' has {batch}"
    )]
    BatchMismatch {
        /// Model name.
        model: String,
        /// First input.
        first: String,
        /// Its batch size.
        first_batch: usize,
        /// The disagreeing input.
        input: String,
        /// Its batch size.
        batch: usize,
    },
    /// A batch larger than the model's maximum.
    #[error(
        "model '{model}': the request has a batch of {batch} rows, above the model's max_batch_size of {max} (the server runs larger requests in chunks unless split_large_requests is off)"
    )]
    BatchTooLarge {
        /// Model name.
        model: String,
        /// Rows sent.
        batch: usize,
        /// The maximum.
        max: usize,
    },
    /// Raw data of the wrong size.
    #[error(
        "input '{input}' of model '{model}': raw data size does not match shape {shape} of {datatype}: Expected {expected} bytes, got {got}"
    )]
    ByteSizeMismatch {
        /// Model name.
        model: String,
        /// Input name.
        input: String,
        /// Datatype.
        datatype: &'static str,
        /// Shape, formatted.
        shape: String,
        /// product(shape) * element size.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// Typed contents with the wrong number of elements.
    #[error(
        "input '{input}' of model '{model}': contents.{field} has {got} elements, but shape {shape} needs {expected}"
    )]
    ContentsCountMismatch {
        /// Model name.
        model: String,
        /// Input name.
        input: String,
        /// Field used.
        field: &'static str,
        /// Shape, formatted.
        shape: String,
        /// Elements the shape implies.
        expected: usize,
        /// Elements received.
        got: usize,
    },
    /// Typed contents in a field that does not carry this datatype.
    #[error(
        "input '{input}' of model '{model}': data-type {datatype} must be sent {expected}, but the request uses contents.{got}"
    )]
    WrongContentsField {
        /// Model name.
        model: String,
        /// Input name.
        input: String,
        /// Datatype.
        datatype: &'static str,
        /// Where it must be sent.
        expected: String,
        /// The field used.
        got: &'static str,
    },
    /// A typed value that does not fit the input's datatype.
    #[error(
        "input '{input}' of model '{model}': contents.{field}[{index}] = {value} does not fit data-type {datatype}"
    )]
    ValueOutOfRange {
        /// Model name.
        model: String,
        /// Input name.
        input: String,
        /// Field used.
        field: &'static str,
        /// Element index.
        index: usize,
        /// The value sent.
        value: i64,
        /// Datatype.
        datatype: &'static str,
    },
    /// A BYTES stream whose length prefixes do not add up.
    #[error("input '{input}' of model '{model}': malformed BYTES data: {detail}")]
    MalformedBytes {
        /// Model name.
        model: String,
        /// Input name.
        input: String,
        /// What is wrong, with offsets.
        detail: super::MalformedBytes,
    },
    /// A BYTES tensor whose element count differs from its shape.
    #[error(
        "input '{input}' of model '{model}': BYTES data has {got} elements, but shape {shape} needs {expected}"
    )]
    BytesCountMismatch {
        /// Model name.
        model: String,
        /// Input name.
        input: String,
        /// Shape, formatted.
        shape: String,
        /// Elements the shape implies.
        expected: usize,
        /// Elements found.
        got: usize,
    },
    /// A BYTES element that is not UTF-8, for an input the model decodes
    /// as text.
    #[error(
        "input '{input}' of model '{model}': element {element} is not UTF-8 text ({detail}); this input feeds text operators, which need UTF-8"
    )]
    NotUtf8 {
        /// Model name.
        model: String,
        /// Input name.
        input: String,
        /// Index of the element, in row-major order.
        element: usize,
        /// Where the invalid bytes start.
        detail: String,
    },
    /// An output the model does not have.
    #[error(
        "unexpected inference output '{output}' for model '{model}'; its outputs are {expected}"
    )]
    UnknownOutput {
        /// Model name.
        model: String,
        /// Name asked for.
        output: String,
        /// The model's outputs, listed.
        expected: String,
    },
    /// The same output asked for twice.
    #[error("output '{output}' of model '{model}' is requested more than once")]
    DuplicateOutput {
        /// Model name.
        model: String,
        /// The repeated name.
        output: String,
    },
}
