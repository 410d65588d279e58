//! ModelStreamInfer: a bidirectional stream of requests answered in order.
//!
//! Requests are taken off the stream as they arrive and run concurrently
//! (so they can be batched with each other and with other clients'), up to
//! a bound per stream; responses go back in request order. A failed request
//! answers with its error message on the stream, which stays open.

use oxserve_proto::inference::{ModelInferRequest, ModelInferResponse, ModelStreamInferResponse};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::codec::is_undecodable;
use super::status::to_status;
use crate::inference::{Arrival, Inference};
use crate::metrics::Protocol;
use crate::trace::TraceParent;

/// Requests of one stream in flight at once; more wait on the client's
/// side (HTTP/2 flow control), so memory stays bounded.
const IN_FLIGHT: usize = 64;

type Answer = Result<ModelStreamInferResponse, Status>;

/// Starts serving `inbound`; the returned stream carries the answers.
pub(super) fn serve(
    core: Inference,
    mut inbound: Streaming<ModelInferRequest>,
    deadline: Option<Instant>,
    trace: Option<TraceParent>,
) -> ReceiverStream<Answer> {
    let (answers, outbound) = mpsc::channel::<Answer>(IN_FLIGHT);
    let (pending, mut in_order) = mpsc::channel::<JoinHandle<Answer>>(IN_FLIGHT);

    tokio::spawn(async move {
        while let Some(message) = inbound.next().await {
            let request = match message {
                Ok(request) => request,
                Err(status) if is_undecodable(&status) => {
                    // The caller's bytes: answer the requests before it,
                    // then end the stream with the caller's error (the
                    // stream cannot resume after a broken message).
                    if let Some(metrics) = core.repository().metrics() {
                        metrics.client_error(Protocol::Grpc, "undecodable");
                    }
                    let status = Status::new(status.code(), status.message());
                    let _ = pending.send(tokio::spawn(async move { Err(status) })).await;
                    break;
                }
                Err(_) => break, // the client's side of the stream broke
            };
            // Each message arrives now; the stream's deadline bounds them
            // all, and its caller's span is the parent of each.
            let arrival = Arrival {
                received: Instant::now(),
                deadline,
                protocol: Protocol::Grpc,
                trace,
            };
            let core = core.clone();
            let task = tokio::spawn(async move {
                let id = request.id.clone();
                let model_name = request.model_name.clone();
                let model_version = request.model_version.clone();
                Ok(match core.infer(request, arrival).await {
                    Ok(response) => ModelStreamInferResponse {
                        error_message: String::new(),
                        infer_response: Some(response),
                    },
                    Err(error) => ModelStreamInferResponse {
                        error_message: to_status(error, &id).message().to_string(),
                        // Lets the client tell which request failed.
                        infer_response: Some(ModelInferResponse {
                            model_name,
                            model_version,
                            id,
                            ..Default::default()
                        }),
                    },
                })
            });
            if pending.send(task).await.is_err() {
                break;
            }
        }
    });

    tokio::spawn(async move {
        while let Some(task) = in_order.recv().await {
            let answer = task
                .await
                .unwrap_or_else(|_| Err(Status::internal("inference task failed")));
            let last = answer.is_err();
            if answers.send(answer).await.is_err() || last {
                // The client went away, or the stream ended with an error:
                // stop the requests still running so their queue entries
                // are dropped instead of executed.
                in_order.close();
                while let Ok(task) = in_order.try_recv() {
                    task.abort();
                }
                return;
            }
        }
    });

    ReceiverStream::new(outbound)
}
