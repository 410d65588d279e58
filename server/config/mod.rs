//! Server configuration, layered with figment: built-in defaults < config
//! file (`--config`, TOML) < `OXSERVE_*` environment variables < command-line
//! flags. Every key has the same name in all four places (flags spell `_` as
//! `-`). Values are checked at start; errors name the key and its source.
//!
//! Every setting is declared once, in the table below: its field, doc,
//! default and flag value name. The `Config` struct, [`SETTINGS`] (from
//! which `--help` and `docs/configuration.md` are made) and the flags all
//! come from that one table, so a key cannot be documented wrongly.

mod byte_size;
mod flags;
mod load;
mod reference;
mod transport;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::model_config::{BatchSize, InstanceCount};
pub use crate::repository::ControlMode;
pub use flags::SettingFlags;
pub use load::ConfigError;
pub use reference::reference;

/// One configuration key, as documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The key, as written in the config file (snake case).
    pub key: &'static str,
    /// What it does (Markdown, several sentences).
    pub doc: &'static str,
    /// The default, as a user would write it.
    pub default: &'static str,
    /// What the flag takes, e.g. `DIR` or `DURATION`.
    pub value: &'static str,
    /// Whether the flag may be repeated (or take a comma-separated list).
    pub list: bool,
}

impl Setting {
    /// The command-line flag, e.g. `--grpc-address`.
    pub fn flag(&self) -> String {
        format!("--{}", self.key.replace('_', "-"))
    }

    /// The environment variable, e.g. `OXSERVE_GRPC_ADDRESS`.
    pub fn env(&self) -> String {
        format!("OXSERVE_{}", self.key.to_uppercase())
    }

    /// The doc's paragraphs, each on one line.
    pub fn paragraphs(&self) -> Vec<String> {
        self.doc
            .split("\n\n")
            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|p| !p.is_empty())
            .collect()
    }
}

macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        #[setting(value = $value:literal, default = $shown:literal $(, list = $list:literal)?)]
        $(#[serde($($serde:tt)*)])*
        $key:ident : $ty:ty = $default:expr;
    )*) => {
        /// The server's settings; see [`SETTINGS`] for each key's meaning
        /// and default.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Config {
            $(
                $(#[doc = $doc])+
                $(#[serde($($serde)*)])*
                pub $key: $ty,
            )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $($key: $default,)* }
            }
        }

        /// Every setting, in the order `--help` and the docs list them.
        pub const SETTINGS: &[Setting] = &[$(
            Setting {
                key: stringify!($key),
                doc: concat!($($doc, "\n"),+),
                default: $shown,
                value: $value,
                list: false $(|| $list)?,
            },
        )*];
    };
}

settings! {
    /// Directory holding the models: `<DIR>/<model>/<version>/model.onnx`,
    /// with an optional `<DIR>/<model>/config.pbtxt`.
    #[setting(value = "DIR", default = "/models")]
    model_repository: PathBuf = PathBuf::from("/models");

    /// How the loaded models may change while the server runs, with
    /// Triton's meaning: `none` loads every model at start and changes
    /// nothing (RepositoryModelLoad/Unload answer FAILED_PRECONDITION);
    /// `poll` loads every model and polls the repository for new, changed
    /// and removed models and versions; `explicit` loads only `load_model`
    /// at start, and the load and unload RPCs change the rest.
    #[setting(value = "none|poll|explicit", default = "none")]
    model_control_mode: ControlMode = ControlMode::None;

    /// How often `poll` mode looks at the repository (`15s`, `500ms`); a
    /// change is loaded once it has held still for a whole interval.
    #[setting(value = "DURATION", default = "15s")]
    #[serde(with = "humantime_serde")]
    repository_poll_interval: Duration = Duration::from_secs(15);

    /// Models `explicit` mode loads at start (repeat the flag, or
    /// comma-separate; environment: `[mlp,intent]`); `*` loads them all.
    /// Only valid in explicit mode.
    #[setting(value = "NAME", default = "[]", list = true)]
    load_model: Vec<String> = Vec::new();

    /// Address the gRPC server listens on.
    #[setting(value = "HOST:PORT", default = "0.0.0.0:8001")]
    grpc_address: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 8001));

    /// Whether to serve the KServe v2 REST API (HTTP/1.1 and h2c) beside
    /// gRPC; `--http false` turns it off.
    #[setting(value = "BOOL", default = "true")]
    http: bool = true;

    /// Address the REST (HTTP) server listens on; 8000 is Triton's.
    #[setting(value = "HOST:PORT", default = "0.0.0.0:8000")]
    http_address: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 8000));

    /// Largest gRPC message or REST request body accepted or sent, in bytes or with a unit
    /// (`256MiB`, `1GB`); 4 KiB to 2 GiB.
    #[setting(value = "SIZE", default = "256MiB")]
    #[serde(with = "byte_size")]
    max_message_size: usize = 256 * 1024 * 1024;

    /// After SIGTERM or SIGINT, how long in-flight requests may take to
    /// finish before the server exits anyway (`30s`, `500ms`); at most an
    /// hour.
    #[setting(value = "DURATION", default = "30s")]
    #[serde(with = "humantime_serde")]
    drain_timeout: Duration = Duration::from_secs(30);

    /// Path of `libonnxruntime.so` from the onnxruntime 1.31 wheel.
    ///
    /// Unset: `ORT_DYLIB_PATH` if set, else beside the executable or in its
    /// `lib/`, else `.oxserve/onnxruntime/` of the checkout it was built
    /// from (where `scripts/setup.sh` puts it).
    #[setting(value = "FILE", default = "(searched)")]
    onnxruntime_library: Option<PathBuf> = None;

    /// Threads ONNX Runtime uses inside one operator, per model instance,
    /// for models whose config.pbtxt sets no `intra_op_thread_count`; 0
    /// gives each instance its share of the CPUs the process may use (the
    /// container's CPU quota and affinity, not the host's core count, so
    /// pods do not oversubscribe); at most 1024.
    #[setting(value = "N", default = "0")]
    intra_op_threads: usize = 0;

    /// Model instances (ONNX Runtime sessions, each on its own worker
    /// thread) for models whose config.pbtxt sets no `instance_group`:
    /// `auto` (one per CPU the process may use, each with one intra-op
    /// thread unless `intra_op_threads` says otherwise, so concurrent
    /// requests run side by side; fewer for large models, so that the
    /// copies of a model take at most 1 GiB together) or 1 to 64.
    #[setting(value = "auto|N", default = "auto")]
    instances: InstanceCount = InstanceCount::Auto;

    /// Largest batch the scheduler forms for models that can batch (a
    /// variable first dimension on every input and output) and whose
    /// config.pbtxt sets no `max_batch_size`: `auto` (the server learns
    /// each model's efficient batch size from its own execution times, and
    /// follows it as the load changes), or a number of rows (0 disables
    /// batching; at most 1048576).
    #[setting(value = "auto|N", default = "auto")]
    max_batch_size: BatchSize = BatchSize::Auto;

    /// With `max_batch_size = auto`: the longest one execution may take; a
    /// batch size whose executions take longer is too big (`100ms`).
    #[setting(value = "DURATION", default = "100ms")]
    #[serde(with = "humantime_serde")]
    batch_latency_budget: Duration = Duration::from_millis(100);

    /// Run a request with more rows than a batch in chunks the model
    /// takes, and join the answers (as TensorFlow Serving does); `false`
    /// refuses it with INVALID_ARGUMENT, as Triton does.
    #[setting(value = "BOOL", default = "true")]
    split_large_requests: bool = true;

    /// Batch sizes run as soon as they can be formed, for models without
    /// their own `dynamic_batching` settings; each 1 to `max_batch_size`
    /// (flag: comma-separated or repeated; environment: `[8,16]`).
    #[setting(value = "N,N", default = "[]", list = true)]
    preferred_batch_sizes: Vec<usize> = Vec::new();

    /// Longest a request waits for others to join its batch (`500us`,
    /// `2ms`), for models without their own; 0 forms batches from what
    /// queues while the model is busy; at most 10 seconds.
    #[setting(value = "DURATION", default = "0s")]
    #[serde(with = "humantime_serde")]
    max_queue_delay: Duration = Duration::ZERO;

    /// Run a request on the thread that received it, skipping the model's
    /// queue and worker thread, when it finds the queue empty and an
    /// instance idle and the model's executions lately took less than this
    /// (`100us`): for small models the two thread hand-offs cost more CPU
    /// than the model. `0s` always queues; at most 1ms, as the thread is the
    /// async runtime's.
    #[setting(value = "DURATION", default = "100us")]
    #[serde(with = "humantime_serde")]
    inline_threshold: Duration = Duration::from_micros(100);

    /// Memory for Triton's response cache, shared by the models whose
    /// config.pbtxt sets `response_cache { enable: true }`: identical
    /// requests are answered from it without running the model; the least
    /// recently used answers are evicted. 0 turns the cache off.
    #[setting(value = "SIZE", default = "64MiB")]
    #[serde(with = "byte_size")]
    response_cache_size: usize = 64 * 1024 * 1024;

    /// Requests that may wait per model version before new ones are turned
    /// away at once with UNAVAILABLE, for models without their own queue
    /// policy; 1 to 1000000.
    #[setting(value = "N", default = "1024")]
    max_queue_size: usize = 1024;

    /// Whether the server reports ready only when every model in the
    /// repository loaded, as Triton does.
    #[setting(value = "BOOL", default = "true")]
    strict_readiness: bool = true;

    /// File of API keys, one per line (blank lines and lines starting with
    /// `#` are skipped): requests to a group in `protected_groups` must
    /// send `authorization: Bearer <key>` with one of them. The file is
    /// read again every 2 seconds; a change takes effect then, and a file
    /// that cannot be read or holds no valid key is logged and the keys in
    /// force stay.
    ///
    /// Unset: no API keys are checked, whatever `protected_groups` says.
    /// See docs/api-keys.md.
    #[setting(value = "FILE", default = "(off)")]
    api_keys: Option<PathBuf> = None;

    /// The API groups whose requests need a key from `api_keys`, by
    /// Triton's names: health, metadata (reflection too), inference,
    /// shared-memory, model-config, model-repository, statistics, trace,
    /// logging (flag: comma-separated or repeated; environment:
    /// `metadata,inference`).
    ///
    /// Default: every group but health, so that Kubernetes probes, which
    /// cannot send a key, keep working. An empty value protects nothing.
    #[setting(
        value = "GROUP,GROUP",
        default = "metadata,inference,shared-memory,model-config,model-repository,statistics,trace,logging",
        list = true
    )]
    #[serde(with = "crate::api_keys::group_list")]
    protected_groups: Vec<crate::api_keys::ApiGroup> = crate::api_keys::ApiGroup::default_protected();

    /// Log filter: `error`, `warn`, `info`, `debug`, `trace`, or a
    /// `tracing` directive such as `oxserve=debug,ort=warn`.
    #[setting(value = "FILTER", default = "info")]
    log_level: String = "info".to_string();

    /// Log format: `text` (human-readable) or `json` (one object per line,
    /// for log collectors).
    #[setting(value = "FORMAT", default = "text")]
    log_format: LogFormat = LogFormat::Text;

    /// Whether to serve Prometheus metrics.
    #[setting(value = "BOOL", default = "true")]
    metrics: bool = true;

    /// Address of the Prometheus endpoint (`GET /metrics`).
    #[setting(value = "HOST:PORT", default = "0.0.0.0:8002")]
    metrics_address: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 8002));

    // ---- TLS and connection limits (docs/security.md) ----

    /// PEM certificate chain (leaf first) for TLS on the gRPC and REST
    /// ports; needs `tls_key`. Re-read when the file changes (see
    /// `tls_reload_interval`).
    ///
    /// Unset: both ports speak plaintext (h2c), for a mesh or proxy that
    /// terminates TLS in front.
    #[setting(value = "FILE", default = "(plaintext)")]
    tls_cert: Option<PathBuf> = None;

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert`.
    #[setting(value = "FILE", default = "(none)")]
    tls_key: Option<PathBuf> = None;

    /// PEM CA certificates for mutual TLS: clients must present a
    /// certificate signed by one of them, or the handshake fails.
    ///
    /// Unset: clients present no certificate.
    #[setting(value = "FILE", default = "(no client certificates)")]
    tls_client_ca: Option<PathBuf> = None;

    /// How often the TLS files are re-read (`10s`, `500ms`, at least 100ms):
    /// when their contents change, new connections get the new certificate
    /// and open ones keep theirs; files that do not load are logged and the
    /// certificate in use stays.
    #[setting(value = "DURATION", default = "10s")]
    #[serde(with = "humantime_serde")]
    tls_reload_interval: Duration = Duration::from_secs(10);

    /// Whether the metrics port uses the same TLS (and client CA) as the
    /// gRPC and REST ports; needs `tls_cert`.
    #[setting(value = "BOOL", default = "false")]
    metrics_tls: bool = false;

    /// Address of an extra plaintext listener serving only
    /// `grpc.health.v1.Health`, for Kubernetes gRPC probes, which cannot
    /// present a client certificate or trust a private CA.
    ///
    /// Unset: no such listener; health is served on the gRPC port only.
    #[setting(value = "HOST:PORT", default = "(off)")]
    health_address: Option<SocketAddr> = None;

    /// Requests in flight at once on one HTTP/2 connection (gRPC and
    /// REST); a client opening more gets REFUSED_STREAM for the excess,
    /// which gRPC clients retry. 1 to 2147483647.
    #[setting(value = "N", default = "1024")]
    http2_max_concurrent_streams: u32 = 1024;

    /// Largest HTTP/2 header list (request metadata, decoded) accepted, in
    /// bytes or with a unit; 1 KiB to 16 MiB.
    #[setting(value = "SIZE", default = "16KiB")]
    #[serde(with = "byte_size")]
    http2_max_header_list_size: usize = 16 * 1024;

    /// How often the server sends an HTTP/2 PING on each connection to find
    /// peers that are gone or no longer read; `0s` sends none.
    #[setting(value = "DURATION", default = "60s")]
    #[serde(with = "humantime_serde")]
    http2_keepalive_interval: Duration = Duration::from_secs(60);

    /// How long a PING may go unanswered before the connection is closed.
    #[setting(value = "DURATION", default = "20s")]
    #[serde(with = "humantime_serde")]
    http2_keepalive_timeout: Duration = Duration::from_secs(20);

    /// Age at which a connection is sent GOAWAY, so that clients reconnect
    /// and spread over replicas added since (Triton issue #6177); each
    /// connection's age is varied by up to 10 % either way, as gRPC does, so
    /// that connections opened together do not all end together. `0s`:
    /// connections live as long as their clients keep them.
    #[setting(value = "DURATION", default = "0s")]
    #[serde(with = "humantime_serde")]
    max_connection_age: Duration = Duration::ZERO;

    /// After a connection's GOAWAY (maximum age or idle timeout), how long
    /// its requests in flight may take before it is closed anyway.
    #[setting(value = "DURATION", default = "30s")]
    #[serde(with = "humantime_serde")]
    max_connection_age_grace: Duration = Duration::from_secs(30);

    /// Connections open at once, per port (gRPC, REST, metrics, health);
    /// a connection over the limit is closed as soon as it is accepted.
    /// 1 to 1000000.
    #[setting(value = "N", default = "4096")]
    max_connections: usize = 4096;

    /// Time without a request in flight after which a connection is sent
    /// GOAWAY and closed; `0s`: no limit.
    #[setting(value = "DURATION", default = "0s")]
    #[serde(with = "humantime_serde")]
    connection_idle_timeout: Duration = Duration::ZERO;

    // ---- end of TLS and connection limits ----

    /// The name this server gives itself in every inference response's
    /// `served_by` parameter, so clients see which replica answered.
    ///
    /// Unset: the `POD_NAME` environment variable if set (the Kubernetes
    /// downward API), else the host name (a pod's host name is its name).
    #[setting(value = "NAME", default = "(pod or host name)")]
    served_by: Option<String> = None;

    /// Where to export OpenTelemetry traces (one span per request, with
    /// its receive, queue, execute and respond stages), over OTLP/gRPC:
    /// a collector's address such as `http://otel-collector:4317`.
    ///
    /// Unset: no traces are recorded or exported. A caller's W3C
    /// `traceparent` (gRPC metadata or HTTP header) makes the request's
    /// spans part of the caller's trace.
    #[setting(value = "URL", default = "(off)")]
    otlp_endpoint: Option<String> = None;

    /// Fraction of requests traced, 0 to 1, for requests whose caller sent
    /// no sampling decision (a `traceparent` decides for its own requests).
    /// Triton's `TraceSetting` `trace_rate` N changes it to 1/N at run time.
    #[setting(value = "RATIO", default = "1")]
    trace_sampling_ratio: f64 = 1.0;
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// The defaults that complete each model's configuration.
    pub(crate) fn model_defaults(&self) -> crate::model_config::Defaults {
        crate::model_config::Defaults {
            max_batch_size: self.max_batch_size,
            batch_latency_budget: self.batch_latency_budget,
            split_large_requests: self.split_large_requests,
            preferred_batch_sizes: self.preferred_batch_sizes.clone(),
            max_queue_delay: self.max_queue_delay,
            inline_threshold: self.inline_threshold,
            max_queue_size: self.max_queue_size,
            instances: self.instances,
            intra_op_threads: self.intra_op_threads,
            // Spinning burns CPU while idle and makes timings swing on a
            // shared node; a model may turn it on with
            // session.intra_op.allow_spinning.
            spinning: false,
            // Keeps resident memory bounded after bursts of large batches.
            shrink_arena: true,
        }
    }

    /// The name given in `served_by`: the setting, else `POD_NAME`, else the
    /// host name.
    pub fn served_by(&self) -> String {
        if let Some(name) = &self.served_by {
            return name.clone();
        }
        let from_env = |key| std::env::var(key).ok().filter(|v: &String| !v.is_empty());
        from_env("POD_NAME")
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
            })
            .or_else(|| from_env("HOSTNAME"))
            .unwrap_or_else(|| "oxserve".to_string())
    }

    /// The tracing filter for `log_level`. ONNX Runtime logs every graph
    /// transformation at info, so its target is held at `warn` unless the
    /// setting names it.
    pub fn log_filter(&self) -> tracing_subscriber::EnvFilter {
        // Validated at start (`validate`); fall back rather than panic.
        tracing_subscriber::EnvFilter::try_new(log_directives(&self.log_level))
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn"))
    }
}

/// The filter directives for a `log_level`: ONNX Runtime held at `warn`
/// unless the level names it.
pub(crate) fn log_directives(level: &str) -> String {
    if level.contains("ort") {
        level.to_string()
    } else {
        format!("{level},ort=warn")
    }
}

/// Every key, as written in the config file.
pub fn keys() -> Vec<&'static str> {
    SETTINGS.iter().map(|s| s.key).collect()
}

#[cfg(test)]
mod tests;
