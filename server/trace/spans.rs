//! One request's spans, built after it is answered from the times the
//! request path stamped.
//!
//! ```text
//! infer (SERVER, child of the caller's traceparent)
//! ├── receive   headers in → request decoded and validated
//! ├── queue     in the model's queue
//! ├── execute   the batch it ran in (input copy, model, output copy)
//! └── respond   outputs split off the batch → response handed to the transport
//! ```

use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;
use tokio::time::Instant;

use super::TraceParent;
use crate::metrics::code_name;

/// When a request reached each stage; stamped whether or not it is traced
/// (a few `Instant`s: nothing is allocated).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeline {
    /// Its headers arrived.
    pub received: Instant,
    /// It was decoded and validated, and queued.
    pub queued: Option<Instant>,
    /// It ran: time in the queue, the batch's compute time, batch rows and
    /// the instance.
    pub ran: Option<Ran>,
    /// The response (or error) was handed back to the transport.
    pub answered: Option<Instant>,
}

/// How a request ran.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ran {
    /// Time it waited in the queue.
    pub waited: Duration,
    /// The compute time of its execution.
    pub compute: Duration,
    /// Rows of that execution.
    pub batch_rows: usize,
    /// The instance that ran it.
    pub instance: usize,
}

impl Timeline {
    /// A request that arrived at `received`.
    pub(crate) fn new(received: Instant) -> Timeline {
        Timeline {
            received,
            queued: None,
            ran: None,
            answered: None,
        }
    }
}

/// What the request was and how it ended, for the span's attributes.
#[derive(Debug)]
pub(crate) struct Outcome<'a> {
    /// `grpc` or `http`.
    pub protocol: &'static str,
    /// Model asked for.
    pub model: &'a str,
    /// Version that served it, if one was found.
    pub version: Option<u64>,
    /// The client's request id.
    pub id: &'a str,
    /// The error message, if it failed, and its gRPC code.
    pub error: Option<(tonic::Code, String)>,
}

/// Maps monotonic instants onto wall-clock time, from one reading of both.
struct Clock {
    now: Instant,
    wall: SystemTime,
}

impl Clock {
    fn at(&self, t: Instant) -> SystemTime {
        match self.now.checked_duration_since(t) {
            Some(ago) => self.wall - ago,
            None => self.wall + t.duration_since(self.now),
        }
    }
}

pub(super) fn record(
    tracer: &SdkTracer,
    parent: Option<&TraceParent>,
    timeline: &Timeline,
    outcome: &Outcome<'_>,
) {
    let clock = Clock {
        now: Instant::now(),
        wall: SystemTime::now(),
    };
    let answered = timeline.answered.unwrap_or(clock.now);
    let parent_cx = match parent {
        Some(p) => Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(p.trace_id),
            SpanId::from_bytes(p.span_id),
            if p.sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            true,
            TraceState::default(),
        )),
        None => Context::new(),
    };
    let mut attributes = vec![
        KeyValue::new("rpc.system", outcome.protocol),
        KeyValue::new("oxserve.model", outcome.model.to_string()),
    ];
    if let Some(version) = outcome.version {
        attributes.push(KeyValue::new("oxserve.version", version as i64));
    }
    if !outcome.id.is_empty() {
        attributes.push(KeyValue::new("oxserve.request_id", outcome.id.to_string()));
    }
    let root = tracer
        .span_builder("infer")
        .with_kind(SpanKind::Server)
        .with_start_time(clock.at(timeline.received))
        .with_attributes(attributes)
        .start_with_context(tracer, &parent_cx);
    let cx = parent_cx.with_span(root);
    if !cx.span().is_recording() {
        // Not sampled: nothing else to build.
        return;
    }
    let stage = |name: &'static str, start: Instant, end: Instant, attributes: Vec<KeyValue>| {
        let mut span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(clock.at(start))
            .with_attributes(attributes)
            .start_with_context(tracer, &cx);
        opentelemetry::trace::Span::end_with_timestamp(&mut span, clock.at(end.max(start)));
    };
    let received_end = timeline.queued.unwrap_or(answered);
    stage("receive", timeline.received, received_end, Vec::new());
    if let (Some(queued), Some(ran)) = (timeline.queued, timeline.ran) {
        let dequeued = queued + ran.waited;
        let executed = dequeued + ran.compute;
        stage("queue", queued, dequeued, Vec::new());
        stage(
            "execute",
            dequeued,
            executed,
            vec![
                KeyValue::new("oxserve.batch_size", ran.batch_rows as i64),
                KeyValue::new("oxserve.instance", ran.instance as i64),
            ],
        );
        stage("respond", executed, answered, Vec::new());
    }
    let span = cx.span();
    // The core's answer as its gRPC code name, whatever the transport (a
    // REST status is derived from it).
    match &outcome.error {
        Some((code, message)) => {
            span.set_attribute(KeyValue::new("oxserve.code", code_name(*code)));
            span.set_status(Status::error(message.clone()));
        }
        None => span.set_attribute(KeyValue::new("oxserve.code", "OK")),
    }
    span.end_with_timestamp(clock.at(answered));
}
