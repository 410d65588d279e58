//! Distributed traces: OpenTelemetry spans for each request, exported over
//! OTLP/gRPC to `otlp_endpoint`, and the trace settings Triton's
//! `TraceSetting` reads and changes at run time.
//!
//! The request path stamps a [`Timeline`] as it goes (a few `Instant`s on
//! the stack, whether tracing is on or not); once the request is answered,
//! [`Traces::record`] turns it into a request span and its four stages
//! (receive, queue, execute, respond) with their real start and end times.
//! Nothing is built for a request that is not traced: with no endpoint or
//! with the level OFF, recording is one atomic load.

mod parent;
mod settings;
mod spans;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use opentelemetry::trace::{SpanKind, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{
    Sampler, SamplingResult, SdkTracer, SdkTracerProvider, ShouldSample,
};

pub(crate) use parent::{TRACEPARENT, TraceParent};
pub(crate) use settings::TraceSettings;
pub(crate) use spans::{Outcome, Ran, Timeline};

/// How long the last spans may take to reach the collector at shutdown.
const FLUSH_AT_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(5);

/// Why traces cannot be exported.
#[derive(Debug, thiserror::Error)]
#[error("cannot export traces to '{endpoint}': {reason}")]
pub struct ExportError {
    endpoint: String,
    reason: String,
}

/// Trace settings shared with the sampler, changed at run time.
#[derive(Debug)]
struct Knobs {
    /// Level TIMESTAMPS (true) or OFF (false).
    on: AtomicBool,
    /// Sampling ratio for requests without a caller's decision, as f64 bits.
    ratio: AtomicU64,
}

impl Knobs {
    fn ratio(&self) -> f64 {
        f64::from_bits(self.ratio.load(Ordering::Relaxed))
    }
}

/// The process's traces: settings, and the exporter when an endpoint is
/// configured.
#[derive(Debug)]
pub(crate) struct Traces {
    knobs: Arc<Knobs>,
    export: Option<(SdkTracerProvider, SdkTracer)>,
    endpoint: Option<String>,
    /// The configured ratio, restored by an empty `trace_rate`.
    initial_ratio: f64,
}

impl Traces {
    /// Traces exported to `endpoint` (none when `None`), sampling
    /// `ratio` of the requests whose caller did not decide. Must be called
    /// within the tokio runtime (the exporter's channel lives on it).
    pub(crate) fn new(endpoint: Option<&str>, ratio: f64) -> Result<Arc<Traces>, ExportError> {
        let ratio = ratio.clamp(0.0, 1.0);
        let knobs = Arc::new(Knobs {
            on: AtomicBool::new(true),
            ratio: AtomicU64::new(ratio.to_bits()),
        });
        let export = match endpoint {
            None => None,
            Some(endpoint) => Some(exporter(endpoint, &knobs)?),
        };
        Ok(Arc::new(Traces {
            knobs,
            export,
            endpoint: endpoint.map(str::to_string),
            initial_ratio: ratio,
        }))
    }

    /// Whether requests are traced at all now (an endpoint is configured
    /// and the level is not OFF); sampling decides for each request.
    pub(crate) fn recording(&self) -> bool {
        self.export.is_some() && self.knobs.on.load(Ordering::Relaxed)
    }

    /// Records the spans of one answered request, if it is sampled.
    pub(crate) fn record(
        &self,
        parent: Option<&TraceParent>,
        timeline: &Timeline,
        outcome: &Outcome<'_>,
    ) {
        if let Some((_, tracer)) = &self.export {
            spans::record(tracer, parent, timeline, outcome);
        }
    }

    /// Sends every finished span to the collector and stops the exporter,
    /// waiting at most a few seconds: a collector that is down must not
    /// hold the process after its drain. Blocking: call it on a blocking
    /// thread.
    pub(crate) fn shutdown(&self) {
        if let Some((provider, _)) = &self.export
            && let Err(e) = provider.shutdown_with_timeout(FLUSH_AT_SHUTDOWN)
        {
            tracing::warn!("traces not all exported at shutdown: {e}");
        }
    }
}

fn exporter(
    endpoint: &str,
    knobs: &Arc<Knobs>,
) -> Result<(SdkTracerProvider, SdkTracer), ExportError> {
    use opentelemetry::trace::TracerProvider;
    use opentelemetry_otlp::WithExportConfig;

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| ExportError {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("oxserve")
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(RatioNow(Arc::clone(knobs)))))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("oxserve");
    Ok((provider, tracer))
}

/// The root sampler: the trace-id ratio in force when the request arrives
/// (the caller's own decision, when it sent one, wins: see `ParentBased`).
#[derive(Debug, Clone)]
struct RatioNow(Arc<Knobs>);

impl ShouldSample for RatioNow {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[opentelemetry::trace::Link],
    ) -> SamplingResult {
        Sampler::TraceIdRatioBased(self.0.ratio()).should_sample(
            parent_context,
            trace_id,
            name,
            span_kind,
            attributes,
            links,
        )
    }
}
