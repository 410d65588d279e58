//! Conversions between tensors and `ndarray` arrays (feature `ndarray`).

use ndarray::{ArrayBase, ArrayD, Data, Dimension, IxDyn};

use crate::{Element, InferBuilder, Output, Result};

impl InferBuilder {
    /// Adds an input tensor with `array`'s shape and elements. Any memory
    /// layout works (a transposed view, a slice with steps): the elements
    /// are sent in logical row-major order, copied once into the request.
    ///
    /// ```no_run
    /// # async fn run(client: oxserve_client::Client) -> oxserve_client::Result<()> {
    /// let batch = ndarray::Array2::<f32>::zeros((4, 784));
    /// let response = client.infer("mlp").input_array("input", &batch).send().await?;
    /// let scores = response.output("output").expect("mlp has it").to_array::<f32>()?;
    /// assert_eq!(scores.shape(), [4, 10]);
    /// # Ok(()) }
    /// ```
    pub fn input_array<T, S, D>(self, name: impl Into<String>, array: &ArrayBase<S, D>) -> Self
    where
        T: Element,
        S: Data<Elem = T>,
        D: Dimension,
    {
        // An array cannot hold more than isize::MAX elements along an axis,
        // so every dimension fits in an i64.
        let shape: Vec<i64> = array.shape().iter().map(|&d| d as i64).collect();
        match array.as_slice() {
            Some(contiguous) => self.input(name, shape, contiguous),
            None => {
                let elements: Vec<T> = array.iter().copied().collect();
                self.input(name, shape, &elements)
            }
        }
    }
}

impl Output<'_> {
    /// The output as an array of its shape; the elements are checked as
    /// by [`Output::to_vec`].
    ///
    /// # Errors
    /// As [`Output::to_vec`].
    pub fn to_array<T: Element>(&self) -> Result<ArrayD<T>> {
        let data = self.to_vec::<T>()?;
        // `to_vec` checked the shape has no negative dimension and that its
        // element count matches the data, so these cannot fail; map errors
        // anyway rather than trust that across refactors.
        let shape = self
            .shape()
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Vec<usize>, _>>()
            .map_err(|e| self.decode_error(e))?;
        ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| self.decode_error(e))
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array2, Array3, array, s};

    use crate::{Client, InferResponse, mock};

    fn echo_of(request: crate::pb::ModelInferRequest) -> InferResponse {
        // What an echoing server answers: inputs turned into outputs.
        let outputs = request
            .inputs
            .iter()
            .map(|i| crate::pb::model_infer_response::InferOutputTensor {
                name: i.name.clone(),
                datatype: i.datatype.clone(),
                shape: i.shape.clone(),
                ..Default::default()
            })
            .collect();
        InferResponse::from(crate::pb::ModelInferResponse {
            outputs,
            raw_output_contents: request.raw_input_contents,
            ..Default::default()
        })
    }

    fn lazy() -> Client {
        Client::builder("http://127.0.0.1:9")
            .connect_lazy()
            .unwrap()
    }

    #[tokio::test]
    async fn arrays_of_any_layout_round_trip_in_logical_order() {
        let a = array![[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let transposed = a.t();
        let strided = Array3::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 100 + j * 10 + k) as i32);
        let stepped = strided.slice(s![.., ..;2, 1..]);
        let request = lazy()
            .infer("echo")
            .input_array("a", &a)
            .input_array("t", &transposed)
            .input_array("s", &stepped)
            .build()
            .unwrap();
        assert_eq!(request.inputs[1].shape, [3, 2]);
        let response = echo_of(request);
        assert_eq!(
            response.output("a").unwrap().to_array::<f32>().unwrap(),
            a.clone().into_dyn()
        );
        assert_eq!(
            response.output("t").unwrap().to_array::<f32>().unwrap(),
            transposed.into_dyn()
        );
        assert_eq!(
            response.output("s").unwrap().to_array::<i32>().unwrap(),
            stepped.into_dyn()
        );
    }

    #[tokio::test]
    async fn arrays_travel_through_a_server() {
        let server = mock::start().await;
        let client = Client::connect(server.endpoint()).await.unwrap();
        let batch = Array2::from_shape_fn((4, 3), |(i, j)| (i * 3 + j) as u16);
        let response = client
            .infer("echo")
            .input_array("x", &batch)
            .send()
            .await
            .unwrap();
        let out = response.output("x").unwrap();
        assert_eq!(out.shape(), [4, 3]);
        assert_eq!(out.to_array::<u16>().unwrap(), batch.into_dyn());
        assert!(matches!(
            out.to_array::<f32>(),
            Err(crate::Error::Mismatch(_))
        ));
    }

    #[test]
    fn malformed_outputs_are_errors() {
        let response = InferResponse::from(crate::pb::ModelInferResponse {
            outputs: vec![crate::pb::model_infer_response::InferOutputTensor {
                name: "y".into(),
                datatype: "UINT8".into(),
                shape: vec![2, -1],
                ..Default::default()
            }],
            raw_output_contents: vec![vec![1, 2].into()],
            ..Default::default()
        });
        let err = response.output("y").unwrap().to_array::<u8>().unwrap_err();
        assert!(matches!(err, crate::Error::Decode(_)), "{err}");
    }
}
