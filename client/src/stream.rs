//! Streaming inference: `ModelStreamInfer` (a Triton extension).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::Streaming;

use crate::{
    Client, Error, InferBuilder, InferResponse, Result,
    client::{self, Call},
    pb::{ModelInferRequest, ModelStreamInferResponse},
};

/// Requests queued on the client's side of one stream before
/// [`InferSender::send`] waits.
const QUEUE: usize = 64;

type Opening = Pin<
    Box<
        dyn Future<Output = Result<tonic::Response<Streaming<ModelStreamInferResponse>>, Error>>
            + Send,
    >,
>;

impl Client {
    /// Opens a `ModelStreamInfer` stream on the next endpoint: requests go
    /// in through the [`InferSender`], and answers come out of the
    /// [`InferStream`] in the order the server sends them (oxserve and
    /// Triton: request order), each carrying its request's id.
    ///
    /// The stream opens when the [`InferStream`] is first polled; a server
    /// without the extension then answers `UNIMPLEMENTED`. Streams are
    /// neither retried nor bound by the client's timeout. Dropping every
    /// sender ends the stream once the answers in flight have arrived.
    ///
    /// ```no_run
    /// # async fn run(client: oxserve_client::Client) -> oxserve_client::Result<()> {
    /// let (requests, mut answers) = client.stream_infer()?;
    /// for i in 0..3 {
    ///     let text = format!("message {i}");
    ///     let request = client.infer("intent").id(i.to_string()).input_bytes("text", [1, 1], &[text]);
    ///     requests.send(request).await?;
    /// }
    /// drop(requests);
    /// while let Some(answer) = answers.next().await {
    ///     let response = answer?;
    ///     println!("{}: {:?}", response.id(), response.try_output("label")?.as_strings()?);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `UNAVAILABLE` if a DNS target has not resolved to any address yet.
    pub fn stream_infer(&self) -> Result<(InferSender, InferStream)> {
        let backend = self.pool().pick().ok_or_else(|| self.no_endpoint())?;
        let (sender, receiver) = mpsc::channel(QUEUE);
        let settings = self.settings().clone();
        let call = Call {
            timeout: None,
            retry: false,
            headers: &[],
        };
        let request = self.request(ReceiverStream::new(receiver), call);
        let sender = InferSender {
            sender,
            max_message_size: settings.max_send_message_size,
        };
        let opening: Opening = Box::pin(async move {
            let channel = client::ready(&backend).await?;
            let mut stub = settings.inference_client(channel);
            Ok(stub.model_stream_infer(request).await?)
        });
        Ok((sender, InferStream(State::Opening(opening))))
    }
}

/// The sending half of a [`Client::stream_infer`] stream; clone it to send
/// from several tasks.
#[derive(Clone, Debug)]
pub struct InferSender {
    sender: mpsc::Sender<ModelInferRequest>,
    max_message_size: usize,
}

impl InferSender {
    /// Builds and queues one request; waits while the stream's queue is
    /// full. Give each request an [`id`](InferBuilder::id) to match the
    /// answers to them.
    ///
    /// # Errors
    /// [`Error::Mismatch`] for a mistake in the request (nothing is sent);
    /// `OUT_OF_RANGE` if it is over the message limit; `CANCELLED` if the
    /// stream has ended (the [`InferStream`] says why).
    pub async fn send(&self, request: InferBuilder) -> Result<()> {
        self.send_raw(request.build()?).await
    }

    /// Queues a request exactly as given.
    ///
    /// # Errors
    /// As [`InferSender::send`].
    pub async fn send_raw(&self, request: ModelInferRequest) -> Result<()> {
        let len = request.encoded_len();
        if len > self.max_message_size {
            return Err(Error::Status {
                code: tonic::Code::OutOfRange,
                message: format!(
                    "request is {len} bytes, over the client's message limit of {} bytes",
                    self.max_message_size
                ),
            });
        }
        self.sender.send(request).await.map_err(|_| Error::Status {
            code: tonic::Code::Cancelled,
            message: "the inference stream has ended".into(),
        })
    }
}

/// The answers of a [`Client::stream_infer`] stream, as a
/// [`Stream`](tokio_stream::Stream) or through [`InferStream::next`].
///
/// Each item is one request's response, or [`Error::Stream`] with the id
/// and message of a request that failed (the stream goes on). A failure of
/// the stream itself is an [`Error::Status`] and ends it.
pub struct InferStream(State);

enum State {
    Opening(Opening),
    // Boxed: the open stream is ~230 bytes, the other states a pointer.
    Open(Box<Streaming<ModelStreamInferResponse>>),
    Done,
}

impl InferStream {
    /// The next answer; `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<Result<InferResponse>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for InferStream {
    type Item = Result<InferResponse>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match &mut this.0 {
                State::Opening(opening) => match ready!(opening.as_mut().poll(cx)) {
                    Ok(response) => this.0 = State::Open(Box::new(response.into_inner())),
                    Err(error) => {
                        this.0 = State::Done;
                        return Poll::Ready(Some(Err(error)));
                    }
                },
                State::Open(stream) => {
                    let item = ready!(Pin::new(&mut **stream).poll_next(cx));
                    let answer = match item {
                        Some(Ok(message)) => answer(message),
                        Some(Err(status)) => Err(Error::from(status)),
                        None => {
                            this.0 = State::Done;
                            return Poll::Ready(None);
                        }
                    };
                    if matches!(answer, Err(Error::Status { .. })) {
                        this.0 = State::Done;
                    }
                    return Poll::Ready(Some(answer));
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }
}

impl std::fmt::Debug for InferStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.0 {
            State::Opening(_) => "opening",
            State::Open(_) => "open",
            State::Done => "done",
        };
        f.debug_tuple("InferStream").field(&state).finish()
    }
}

/// One message of the stream as a response or that request's error.
fn answer(message: ModelStreamInferResponse) -> Result<InferResponse> {
    match (message.error_message.is_empty(), message.infer_response) {
        (true, Some(response)) => Ok(InferResponse::from(response)),
        (true, None) => Err(Error::decode(
            "a stream message with neither a response nor an error",
        )),
        (false, response) => Err(Error::Stream {
            id: response.map(|r| r.id).unwrap_or_default(),
            message: message.error_message,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::ModelInferResponse;

    #[test]
    fn messages_become_responses_or_request_errors() {
        let ok = answer(ModelStreamInferResponse {
            error_message: String::new(),
            infer_response: Some(ModelInferResponse {
                id: "a".into(),
                ..Default::default()
            }),
        });
        assert_eq!(ok.unwrap().id(), "a");
        let failed = answer(ModelStreamInferResponse {
            error_message: "no such model".into(),
            infer_response: Some(ModelInferResponse {
                id: "b".into(),
                ..Default::default()
            }),
        });
        match failed {
            Err(Error::Stream { id, message }) => {
                assert_eq!((id.as_str(), message.as_str()), ("b", "no such model"))
            }
            other => panic!("expected a stream error, got {other:?}"),
        }
        let anonymous = answer(ModelStreamInferResponse {
            error_message: "bad".into(),
            infer_response: None,
        });
        assert!(matches!(anonymous, Err(Error::Stream { id, .. }) if id.is_empty()));
        let empty = answer(ModelStreamInferResponse::default());
        assert!(matches!(empty, Err(Error::Decode(_))));
    }

    #[tokio::test]
    async fn a_server_without_the_extension_answers_unimplemented() {
        let server = crate::mock::start().await;
        let client = Client::connect(server.endpoint()).await.unwrap();
        let (requests, mut answers) = client.stream_infer().unwrap();
        let err = answers.next().await.unwrap().unwrap_err();
        assert_eq!(err.code(), Some(tonic::Code::Unimplemented), "{err}");
        assert!(answers.next().await.is_none());
        // The request half notices eventually; it must not hang or panic.
        drop(requests);
        assert_eq!(format!("{answers:?}"), "InferStream(\"done\")");
    }
}
