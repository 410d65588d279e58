//! Which BYTES (ONNX `string`) inputs of a model must be UTF-8 text.
//!
//! ONNX Runtime's string tensors hold arbitrary bytes, and operators that
//! only move strings (Identity, Concat, Gather, LabelEncoder, ...) pass any
//! bytes through; the protocol's BYTES are arbitrary bytes too, so the
//! server does not demand UTF-8 in general. Text operators decode UTF-8,
//! and fail inside ONNX Runtime on anything else: StringNormalizer, for
//! one, answers "Input contains invalid utf8 chars" for the whole batch it
//! runs in, so one client's bad string would fail the other requests
//! batched with it. The inputs that reach such an operator are found here,
//! once, when the model loads, and validated before a request is queued
//! (`tensor::decode_request`).
//!
//! The graph is read with a schema of just the fields needed (nodes, their
//! inputs, outputs, operator and subgraphs); prost skips the rest, weights
//! included, without copying them.

use std::collections::HashSet;

use prost::Message;

use super::ModelSource;
use crate::tensor::{DataType, TensorSpec};

/// Operators that decode their string inputs as UTF-8.
const TEXT_OPS: &[&str] = &[
    "StringNormalizer",
    "Tokenizer",
    "RegexFullMatch",
    "StringSplit",
];

#[derive(Clone, PartialEq, prost::Message)]
struct OnnxModel {
    #[prost(message, optional, tag = "7")]
    graph: Option<Graph>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Graph {
    #[prost(message, repeated, tag = "1")]
    node: Vec<Node>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Node {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<Attribute>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Attribute {
    #[prost(message, optional, tag = "6")]
    g: Option<Graph>,
    #[prost(message, repeated, tag = "11")]
    graphs: Vec<Graph>,
}

impl Node {
    fn subgraphs(&self) -> impl Iterator<Item = &Graph> {
        self.attribute
            .iter()
            .flat_map(|a| a.g.iter().chain(a.graphs.iter()))
    }

    /// Whether this node, or any node of its subgraphs, is a text operator.
    fn is_text(&self) -> bool {
        TEXT_OPS.contains(&self.op_type.as_str())
            || self.subgraphs().any(|g| g.node.iter().any(Node::is_text))
    }

    /// Every name this node reads: its inputs, and the outer names its
    /// subgraphs' nodes read.
    fn reads(&self, names: &mut Vec<String>) {
        names.extend(self.input.iter().cloned());
        for graph in self.subgraphs() {
            for node in &graph.node {
                node.reads(names);
            }
        }
    }
}

/// The indices of `inputs` (a model's, as ONNX Runtime describes them)
/// that must be UTF-8 text; reads the model file only if it has BYTES
/// inputs.
pub(super) fn utf8_inputs_of(source: &ModelSource, inputs: &[TensorSpec]) -> Vec<usize> {
    let strings: Vec<(usize, &str)> = inputs
        .iter()
        .enumerate()
        .filter(|(_, t)| t.datatype == DataType::Bytes)
        .map(|(index, t)| (index, t.name.as_str()))
        .collect();
    if strings.is_empty() {
        return Vec::new();
    }
    match source {
        ModelSource::Memory { bytes, .. } => utf8_inputs(bytes, &strings),
        // ONNX Runtime just read the same file; failing to read it again
        // leaves the strict answer.
        ModelSource::File(path) => match std::fs::read(path) {
            Ok(file) => utf8_inputs(&file, &strings),
            Err(_) => strings.iter().map(|&(index, _)| index).collect(),
        },
    }
}

/// Of the string inputs named `inputs` (model input index, name), the
/// indices of those from which a text operator can be reached, reading the
/// ONNX file `model`. A file this schema cannot read makes every string
/// input text: the strict answer is the safe one.
pub(super) fn utf8_inputs(model: &[u8], inputs: &[(usize, &str)]) -> Vec<usize> {
    let Ok(OnnxModel { graph: Some(graph) }) = OnnxModel::decode(model) else {
        return inputs.iter().map(|&(index, _)| index).collect();
    };
    inputs
        .iter()
        .filter(|(_, name)| reaches_text(&graph, name))
        .map(|&(index, _)| index)
        .collect()
}

/// Whether data flowing from `input` reaches a text operator. ONNX graphs
/// list nodes in topological order, so one pass sees every producer before
/// its consumers.
fn reaches_text(graph: &Graph, input: &str) -> bool {
    let mut reached: HashSet<&str> = HashSet::from([input]);
    let mut reads = Vec::new();
    for node in &graph.node {
        reads.clear();
        node.reads(&mut reads);
        if !reads.iter().any(|name| reached.contains(name.as_str())) {
            continue;
        }
        if node.is_text() {
            return true;
        }
        reached.extend(node.output.iter().map(String::as_str));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, input: &[&str], output: &[&str]) -> Node {
        Node {
            input: input.iter().map(|s| s.to_string()).collect(),
            output: output.iter().map(|s| s.to_string()).collect(),
            op_type: op.to_string(),
            attribute: Vec::new(),
        }
    }

    fn model(nodes: Vec<Node>) -> Vec<u8> {
        OnnxModel {
            graph: Some(Graph { node: nodes }),
        }
        .encode_to_vec()
    }

    #[test]
    fn an_input_that_reaches_a_text_operator_needs_utf8() {
        let file = model(vec![
            node("Identity", &["text"], &["t1"]),
            node("StringNormalizer", &["t1"], &["norm"]),
            node("Identity", &["raw"], &["out"]),
        ]);
        assert_eq!(utf8_inputs(&file, &[(0, "text"), (1, "raw")]), vec![0]);
    }

    #[test]
    fn an_identity_model_takes_any_bytes() {
        let file = model(vec![node("Identity", &["INPUT0"], &["OUTPUT0"])]);
        assert_eq!(utf8_inputs(&file, &[(0, "INPUT0")]), Vec::<usize>::new());
    }

    #[test]
    fn a_text_operator_inside_a_subgraph_counts() {
        let mut branch = node("If", &["cond"], &["out"]);
        branch.attribute.push(Attribute {
            g: Some(Graph {
                node: vec![node("Tokenizer", &["text"], &["tokens"])],
            }),
            graphs: Vec::new(),
        });
        let file = model(vec![branch]);
        assert_eq!(utf8_inputs(&file, &[(0, "text")]), vec![0]);
    }

    #[test]
    fn an_unreadable_file_makes_every_string_input_text() {
        assert_eq!(utf8_inputs(b"not onnx", &[(0, "a"), (2, "b")]), vec![0, 2]);
    }

    #[test]
    fn the_example_intent_model_needs_utf8_text() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/models/intent/1/model.onnx"
        );
        let file = std::fs::read(path).expect("examples/models/intent is committed");
        assert_eq!(utf8_inputs(&file, &[(0, "text")]), vec![0]);
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/models/identity_bytes/1/model.onnx"
        );
        let file = std::fs::read(path).expect("tests/models/identity_bytes is committed");
        assert_eq!(utf8_inputs(&file, &[(0, "INPUT0")]), Vec::<usize>::new());
    }
}
