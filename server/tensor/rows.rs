//! Cutting a request into chunks of rows, and joining their outputs: how a
//! request larger than any batch the model runs is served (as TensorFlow
//! Serving does; Triton refuses it).

use bytes::BytesMut;

use super::{BytesElements, DecodedRequest, Tensor};

impl Tensor {
    /// Rows along dimension 0 (1 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Rows `start..start + count` as a tensor of their own, sharing the
    /// data. The tensor is valid (checked on decode), so every row holds
    /// exactly its elements.
    fn row_slice(&self, start: usize, count: usize) -> Tensor {
        let per_row: usize = self.shape.iter().skip(1).product();
        let (begin, end) = match self.datatype.element_size() {
            Some(size) => (start * per_row * size, (start + count) * per_row * size),
            None => {
                // BYTES: find the byte offsets of the first and last element.
                let first = start * per_row;
                let last = (start + count) * per_row;
                let mut offset = 0;
                let (mut begin, mut end) = (self.data.len(), self.data.len());
                for (index, element) in BytesElements::new(&self.data).enumerate() {
                    if index == first {
                        begin = offset;
                    }
                    if index == last {
                        end = offset;
                        break;
                    }
                    // Decoded data is well formed; a malformed tail would
                    // only shorten the last chunk.
                    offset += 4 + element.map_or(0, <[u8]>::len);
                }
                (begin.min(end), end)
            }
        };
        let mut shape = self.shape.clone();
        if let Some(rows) = shape.first_mut() {
            *rows = count;
        }
        Tensor {
            name: self.name.clone(),
            datatype: self.datatype,
            shape,
            data: self.data.slice(begin..end),
        }
    }

    /// Joins tensors of the same name, datatype and non-batch dimensions
    /// along dimension 0.
    pub fn join_rows(parts: Vec<Tensor>) -> Option<Tensor> {
        let mut parts = parts.into_iter();
        let first = parts.next()?;
        let rest: Vec<Tensor> = parts.collect();
        if rest.is_empty() {
            return Some(first);
        }
        let rows = first.rows() + rest.iter().map(Tensor::rows).sum::<usize>();
        let len = first.data.len() + rest.iter().map(|t| t.data.len()).sum::<usize>();
        let mut data = BytesMut::with_capacity(len);
        data.extend_from_slice(&first.data);
        for part in &rest {
            if part.datatype != first.datatype || part.shape.get(1..) != first.shape.get(1..) {
                return None;
            }
            data.extend_from_slice(&part.data);
        }
        let mut shape = first.shape;
        if let Some(first_dim) = shape.first_mut() {
            *first_dim = rows;
        }
        Some(Tensor {
            name: first.name,
            datatype: first.datatype,
            shape,
            data: data.freeze(),
        })
    }
}

impl DecodedRequest {
    /// The request cut into requests of at most `max_rows` rows each (the
    /// request itself when it fits, or when it does not batch).
    pub fn split_rows(&self, max_rows: usize) -> Vec<DecodedRequest> {
        let Some(rows) = self
            .batch_size
            .filter(|&rows| rows > max_rows && max_rows > 0)
        else {
            return vec![self.clone()];
        };
        (0..rows)
            .step_by(max_rows)
            .map(|start| {
                let count = max_rows.min(rows - start);
                DecodedRequest {
                    inputs: self
                        .inputs
                        .iter()
                        .map(|t| t.row_slice(start, count))
                        .collect(),
                    outputs: self.outputs.clone(),
                    batch_size: Some(count),
                }
            })
            .collect()
    }
}

/// A tensor built by hand, for tests.
#[cfg(test)]
fn tensor(datatype: super::DataType, shape: &[usize], data: impl Into<bytes::Bytes>) -> Tensor {
    Tensor {
        name: "t".into(),
        datatype,
        shape: shape.to_vec(),
        data: data.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{BytesWriter, DataType};

    fn request(inputs: Vec<Tensor>, rows: usize) -> DecodedRequest {
        DecodedRequest {
            inputs,
            outputs: vec![0],
            batch_size: Some(rows),
        }
    }

    #[test]
    fn fixed_size_rows_split_and_join_back_exactly() {
        let data: Vec<u8> = (0..5 * 2 * 4).map(|i| i as u8).collect();
        let t = tensor(DataType::Fp32, &[5, 2], data.clone());
        let chunks = request(vec![t.clone()], 5).split_rows(2);
        assert_eq!(chunks.len(), 3);
        assert_eq!(
            chunks.iter().map(|c| c.batch_size).collect::<Vec<_>>(),
            [Some(2), Some(2), Some(1)]
        );
        assert_eq!(chunks[2].inputs[0].shape, [1, 2]);
        assert_eq!(&chunks[1].inputs[0].data[..], &data[16..32]);
        let joined =
            Tensor::join_rows(chunks.into_iter().map(|c| c.inputs[0].clone()).collect()).unwrap();
        assert_eq!(joined, t);
    }

    #[test]
    fn bytes_rows_split_on_element_boundaries() {
        let elements = ["a", "", "ccc", "dddd", "e", "ff"];
        let data = BytesWriter::encode(&elements).unwrap();
        // 3 rows of 2 elements.
        let t = tensor(DataType::Bytes, &[3, 2], data);
        let chunks = request(vec![t.clone()], 3).split_rows(2);
        let read = |t: &Tensor| -> Vec<Vec<u8>> {
            BytesElements::new(&t.data)
                .map(|e| e.unwrap().to_vec())
                .collect()
        };
        assert_eq!(
            read(&chunks[0].inputs[0]),
            [b"a".to_vec(), vec![], b"ccc".to_vec(), b"dddd".to_vec()]
        );
        assert_eq!(read(&chunks[1].inputs[0]), [b"e".to_vec(), b"ff".to_vec()]);
        let joined =
            Tensor::join_rows(chunks.into_iter().map(|c| c.inputs[0].clone()).collect()).unwrap();
        assert_eq!(joined, t);
    }

    #[test]
    fn a_request_that_fits_or_does_not_batch_stays_whole() {
        let t = tensor(DataType::Int8, &[4, 1], vec![1u8, 2, 3, 4]);
        assert_eq!(request(vec![t.clone()], 4).split_rows(4).len(), 1);
        let unbatched = DecodedRequest {
            inputs: vec![t],
            outputs: vec![0],
            batch_size: None,
        };
        assert_eq!(unbatched.split_rows(1).len(), 1);
    }

    #[test]
    fn only_matching_tensors_join() {
        let a = tensor(DataType::Int8, &[1, 2], vec![1u8, 2]);
        let b = tensor(DataType::Int8, &[1, 3], vec![1u8, 2, 3]);
        assert!(Tensor::join_rows(vec![a, b]).is_none());
        assert!(Tensor::join_rows(Vec::new()).is_none());
    }
}
