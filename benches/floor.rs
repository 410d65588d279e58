//! The transport floor: a bare tonic server that speaks the same protocol
//! as oxserve and answers `ModelInfer` for an `mlp`-shaped model with a
//! canned response, without a model, a queue or a worker thread. The CPU it
//! spends per request is what gRPC over HTTP/2 with tonic and prost costs on
//! this machine; `benches/cpu-per-request.sh` drives it and oxserve with the
//! same client and the same request frame and compares the two.
//!
//! ```text
//! floor serve --addr 127.0.0.1:0            # prints "listening on ADDR"
//! floor frame --out mlp.grpc                # the batch-1 mlp request as h2load's body
//! floor stats --addr 127.0.0.1:8001         # a server's mlp statistics as JSON
//! ```
//!
//! `serve` answers what the load tools call besides `ModelInfer`: health
//! (`grpc.health.v1`), `ServerLive`/`ServerReady`, `ModelReady`,
//! `ServerMetadata`, `ModelMetadata`, `ModelConfig` and `ModelStatistics`
//! for `mlp` (perf_analyzer reads the last three); everything else is
//! UNIMPLEMENTED. `ModelStatistics` counts the answered requests, so a
//! script can check that a client's requests really succeeded (h2load sees
//! only the HTTP status, and a gRPC error is an HTTP 200).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use oxserve_proto::inference as pb;
use oxserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use oxserve_proto::inference::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use prost::Message;
use tonic::{Request, Response, Status};

use common::{Rng, random_raw};

/// The model the floor pretends to serve: FP32 `input` [-1, 784] →
/// FP32 `output` [-1, 10], like examples/models/mlp.
const MODEL: &str = "mlp";
const VERSION: &str = "1";
const INPUT: &str = "input";
const INPUT_WIDTH: i64 = 784;
const OUTPUT: &str = "output";
const OUTPUT_WIDTH: i64 = 10;

/// A bare tonic server with a canned mlp answer, and its tools.
#[derive(Debug, Parser)]
#[command(name = "floor")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve until SIGTERM or Ctrl-C; prints "listening on ADDR" first.
    Serve {
        /// Address to listen on (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: SocketAddr,
        /// The async runtime's worker threads (default: the cores, as
        /// oxserve).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Write a batch-1 mlp ModelInfer request (random FP32 raw contents) as
    /// one gRPC message: the 5-byte prefix, then the protobuf. It is the body
    /// h2load sends with `-d`.
    Frame {
        /// File to write.
        #[arg(long)]
        out: PathBuf,
        /// Rows (dimension 0).
        #[arg(long, default_value_t = 1)]
        batch: usize,
    },
    /// Print a server's statistics of `--model` as one JSON object:
    /// successful requests, executions, and the summed ONNX Runtime time of
    /// every execution (`batch_stats` compute_infer).
    Stats {
        /// Server, HOST:PORT.
        #[arg(long)]
        addr: String,
        /// Model.
        #[arg(long, default_value = MODEL)]
        model: String,
    },
}

/// The floor's service: a canned response, counted.
struct Floor {
    /// The batch-1 output, built once and shared by every response.
    canned: Bytes,
    answered: AtomicU64,
}

type Answer<T> = Result<Response<T>, Status>;

fn unimplemented<T>(what: &str) -> Answer<T> {
    Err(Status::unimplemented(format!(
        "the transport floor does not implement {what}"
    )))
}

fn check_model(name: &str) -> Result<(), Status> {
    if name == MODEL {
        Ok(())
    } else {
        Err(Status::not_found(format!(
            "the transport floor serves only '{MODEL}', not '{name}'"
        )))
    }
}

fn tensor(name: &str, width: i64) -> pb::model_metadata_response::TensorMetadata {
    pb::model_metadata_response::TensorMetadata {
        name: name.to_string(),
        datatype: "FP32".to_string(),
        shape: vec![-1, width],
    }
}

impl Floor {
    fn new() -> Floor {
        Floor {
            canned: Bytes::from(vec![0u8; OUTPUT_WIDTH as usize * 4]),
            answered: AtomicU64::new(0),
        }
    }

    /// Checks the request as far as a server must before running a model:
    /// the model, one FP32 input of [N, 784], raw contents of that size.
    fn rows(request: &pb::ModelInferRequest) -> Result<usize, Status> {
        check_model(&request.model_name)?;
        let [input] = request.inputs.as_slice() else {
            return Err(Status::invalid_argument("expected exactly one input"));
        };
        let ok = input.name == INPUT
            && input.datatype == "FP32"
            && input.shape.len() == 2
            && input.shape[1] == INPUT_WIDTH
            && input.shape[0] > 0;
        if !ok {
            return Err(Status::invalid_argument(format!(
                "expected input '{INPUT}' FP32 [N, {INPUT_WIDTH}], got '{}' {} {:?}",
                input.name, input.datatype, input.shape
            )));
        }
        let rows = input.shape[0] as usize;
        let expected = rows * INPUT_WIDTH as usize * 4;
        let got = match request.raw_input_contents.as_slice() {
            [raw] => raw.len(),
            _ => match &input.contents {
                Some(contents) => contents.fp32_contents.len() * 4,
                None => 0,
            },
        };
        if got != expected {
            return Err(Status::invalid_argument(format!(
                "input '{INPUT}': expected {expected} bytes of data, got {got}"
            )));
        }
        Ok(rows)
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Floor {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Answer<pb::ServerLiveResponse> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Answer<pb::ServerReadyResponse> {
        Ok(Response::new(pb::ServerReadyResponse { ready: true }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Answer<pb::ModelReadyResponse> {
        Ok(Response::new(pb::ModelReadyResponse {
            ready: request.get_ref().name == MODEL,
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Answer<pb::ServerMetadataResponse> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: "oxserve-floor".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            extensions: vec!["model_configuration".into(), "statistics".into()],
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Answer<pb::ModelMetadataResponse> {
        check_model(&request.get_ref().name)?;
        Ok(Response::new(pb::ModelMetadataResponse {
            name: MODEL.to_string(),
            versions: vec![VERSION.to_string()],
            platform: "onnxruntime_onnx".to_string(),
            inputs: vec![tensor(INPUT, INPUT_WIDTH)],
            outputs: vec![tensor(OUTPUT, OUTPUT_WIDTH)],
        }))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Answer<pb::ModelInferResponse> {
        let request = request.into_inner();
        let rows = Floor::rows(&request)?;
        let data = if rows == 1 {
            self.canned.clone()
        } else {
            Bytes::from(vec![0u8; rows * OUTPUT_WIDTH as usize * 4])
        };
        self.answered.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(pb::ModelInferResponse {
            model_name: MODEL.to_string(),
            model_version: VERSION.to_string(),
            id: request.id,
            outputs: vec![pb::model_infer_response::InferOutputTensor {
                name: OUTPUT.to_string(),
                datatype: "FP32".to_string(),
                shape: vec![rows as i64, OUTPUT_WIDTH],
                ..Default::default()
            }],
            raw_output_contents: vec![data],
            ..Default::default()
        }))
    }

    type ModelStreamInferStream = Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::ModelStreamInferResponse, Status>> + Send>,
    >;

    async fn model_stream_infer(
        &self,
        _: Request<tonic::Streaming<pb::ModelInferRequest>>,
    ) -> Answer<Self::ModelStreamInferStream> {
        unimplemented("ModelStreamInfer")
    }

    async fn model_config(
        &self,
        request: Request<pb::ModelConfigRequest>,
    ) -> Answer<pb::ModelConfigResponse> {
        check_model(&request.get_ref().name)?;
        let fp32 = pb::DataType::TypeFp32 as i32;
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(pb::ModelConfig {
                name: MODEL.to_string(),
                platform: "onnxruntime_onnx".to_string(),
                backend: "onnxruntime".to_string(),
                max_batch_size: Some(64),
                input: vec![pb::ModelInput {
                    name: INPUT.to_string(),
                    data_type: fp32,
                    dims: vec![INPUT_WIDTH],
                    ..Default::default()
                }],
                output: vec![pb::ModelOutput {
                    name: OUTPUT.to_string(),
                    data_type: fp32,
                    dims: vec![OUTPUT_WIDTH],
                }],
                ..Default::default()
            }),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<pb::ModelStatisticsRequest>,
    ) -> Answer<pb::ModelStatisticsResponse> {
        let name = &request.get_ref().name;
        if !name.is_empty() {
            check_model(name)?;
        }
        let answered = self.answered.load(Ordering::Relaxed);
        let count = |count| pb::StatisticDuration { count, ns: 0 };
        Ok(Response::new(pb::ModelStatisticsResponse {
            model_stats: vec![pb::ModelStatistics {
                name: MODEL.to_string(),
                version: VERSION.to_string(),
                inference_count: answered,
                inference_stats: Some(pb::InferStatistics {
                    success: Some(count(answered)),
                    ..Default::default()
                }),
                ..Default::default()
            }],
        }))
    }

    async fn repository_index(
        &self,
        _: Request<pb::RepositoryIndexRequest>,
    ) -> Answer<pb::RepositoryIndexResponse> {
        unimplemented("RepositoryIndex")
    }

    async fn repository_model_load(
        &self,
        _: Request<pb::RepositoryModelLoadRequest>,
    ) -> Answer<pb::RepositoryModelLoadResponse> {
        unimplemented("RepositoryModelLoad")
    }

    async fn repository_model_unload(
        &self,
        _: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Answer<pb::RepositoryModelUnloadResponse> {
        unimplemented("RepositoryModelUnload")
    }

    async fn system_shared_memory_status(
        &self,
        _: Request<pb::SystemSharedMemoryStatusRequest>,
    ) -> Answer<pb::SystemSharedMemoryStatusResponse> {
        unimplemented("SystemSharedMemoryStatus")
    }

    async fn system_shared_memory_register(
        &self,
        _: Request<pb::SystemSharedMemoryRegisterRequest>,
    ) -> Answer<pb::SystemSharedMemoryRegisterResponse> {
        unimplemented("SystemSharedMemoryRegister")
    }

    async fn system_shared_memory_unregister(
        &self,
        _: Request<pb::SystemSharedMemoryUnregisterRequest>,
    ) -> Answer<pb::SystemSharedMemoryUnregisterResponse> {
        unimplemented("SystemSharedMemoryUnregister")
    }

    async fn cuda_shared_memory_status(
        &self,
        _: Request<pb::CudaSharedMemoryStatusRequest>,
    ) -> Answer<pb::CudaSharedMemoryStatusResponse> {
        unimplemented("CudaSharedMemoryStatus")
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<pb::CudaSharedMemoryRegisterRequest>,
    ) -> Answer<pb::CudaSharedMemoryRegisterResponse> {
        unimplemented("CudaSharedMemoryRegister")
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<pb::CudaSharedMemoryUnregisterRequest>,
    ) -> Answer<pb::CudaSharedMemoryUnregisterResponse> {
        unimplemented("CudaSharedMemoryUnregister")
    }

    async fn trace_setting(
        &self,
        _: Request<pb::TraceSettingRequest>,
    ) -> Answer<pb::TraceSettingResponse> {
        unimplemented("TraceSetting")
    }

    async fn log_settings(
        &self,
        _: Request<pb::LogSettingsRequest>,
    ) -> Answer<pb::LogSettingsResponse> {
        unimplemented("LogSettings")
    }
}

async fn serve(addr: SocketAddr) -> Result<(), String> {
    // Nagle off, as oxserve has it: with it on, every small response waits
    // for the client's delayed ACK. (The builder's `tcp_nodelay` applies
    // only to listeners tonic binds itself.)
    let incoming = tonic::transport::server::TcpIncoming::bind(addr)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?
        .with_nodelay(Some(true));
    let local = incoming.local_addr().map_err(|e| e.to_string())?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<GrpcInferenceServiceServer<Floor>>()
        .await;
    println!("listening on {local}");
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    eprintln!("floor: no SIGTERM handler ({e}); Ctrl-C still stops");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    // tonic's defaults otherwise.
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(GrpcInferenceServiceServer::new(Floor::new()))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| e.to_string())
}

fn frame(out: &PathBuf, batch: usize) -> Result<(), String> {
    let count = batch * INPUT_WIDTH as usize;
    let data = random_raw("FP32", count, &mut Rng::new(0x5eed)).ok_or("FP32 is a datatype")?;
    let request = pb::ModelInferRequest {
        model_name: MODEL.to_string(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: INPUT.to_string(),
            datatype: "FP32".to_string(),
            shape: vec![batch as i64, INPUT_WIDTH],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(data)],
        ..Default::default()
    };
    let body = request.encode_to_vec();
    let mut message = Vec::with_capacity(5 + body.len());
    // gRPC length-prefixed message: uncompressed flag, big-endian length.
    message.push(0);
    message.extend_from_slice(&(body.len() as u32).to_be_bytes());
    message.extend_from_slice(&body);
    std::fs::write(out, &message).map_err(|e| format!("cannot write {}: {e}", out.display()))
}

async fn stats(addr: &str, model: &str) -> Result<(), String> {
    let target = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let channel = tonic::transport::Channel::from_shared(target)
        .map_err(|e| format!("'{addr}' is not an address: {e}"))?
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let mut client = GrpcInferenceServiceClient::new(channel);
    let response = client
        .model_statistics(pb::ModelStatisticsRequest {
            name: model.to_string(),
            version: String::new(),
        })
        .await
        .map_err(|e| format!("ModelStatistics: {e}"))?
        .into_inner();
    let (mut success, mut executions, mut infer_ns, mut inferences) = (0, 0, 0, 0);
    for s in &response.model_stats {
        success += s
            .inference_stats
            .as_ref()
            .and_then(|i| i.success.as_ref())
            .map_or(0, |d| d.count);
        executions += s.execution_count;
        inferences += s.inference_count;
        infer_ns += s
            .batch_stats
            .iter()
            .filter_map(|b| b.compute_infer.as_ref())
            .map(|d| d.ns)
            .sum::<u64>();
    }
    println!(
        "{}",
        serde_json::json!({
            "model": model,
            "success": success,
            "inferences": inferences,
            "executions": executions,
            "compute_infer_ns": infer_ns,
        })
    );
    Ok(())
}

fn main() -> ExitCode {
    // `cargo bench` appends `--bench`; it means nothing here.
    let args = Args::parse_from(std::env::args().filter(|a| a != "--bench"));
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("floor");
    if let Command::Serve {
        threads: Some(n), ..
    } = &args.command
    {
        builder.worker_threads((*n).max(1));
    }
    let result = match &args.command {
        Command::Frame { out, batch } => frame(out, (*batch).max(1)),
        Command::Serve { addr, .. } => match builder.build() {
            Ok(runtime) => runtime.block_on(serve(*addr)),
            Err(e) => Err(format!("cannot start the async runtime: {e}")),
        },
        Command::Stats { addr, model } => match builder.build() {
            Ok(runtime) => runtime.block_on(stats(addr, model)),
            Err(e) => Err(format!("cannot start the async runtime: {e}")),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor: {e}");
            ExitCode::FAILURE
        }
    }
}
