//! What the analyze stage finds in a closed trace: its shape, critical path, bottleneck,
//! service-graph edges and findings.

use std::sync::Arc;

use serde::Serialize;

use super::span::SpanId;

/// How a service-graph edge was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    /// A CLIENT span with a SERVER child in another service.
    RequestReply,
    /// A PRODUCER span with a CONSUMER descendant in another service.
    Messaging,
    /// A parent and child in different services without client/server kinds.
    ParentChild,
}

impl EdgeKind {
    /// The label value (`connection_type` in OpenTelemetry's servicegraph connector).
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeKind::RequestReply => "request_reply",
            EdgeKind::Messaging => "messaging_system",
            EdgeKind::ParentChild => "parent_child",
        }
    }
}

/// One call between two services within a trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Edge {
    pub client: Arc<str>,
    pub server: Arc<str>,
    pub kind: EdgeKind,
    /// The caller-side duration (CLIENT or PRODUCER span, or the parent for parent/child).
    pub client_latency_ns: i64,
    /// The callee-side duration (SERVER or CONSUMER span, or the child; for a CLIENT
    /// span to an uninstrumented peer, the CLIENT span itself).
    pub server_latency_ns: i64,
    /// Either side failed.
    pub error: bool,
    /// Event time of the call: the end of the callee-side span (as above).
    pub end_ns: i64,
    /// The callee-side span (as above).
    pub server_span_id: SpanId,
}

/// What the analyze stage found in one trace.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Analysis {
    /// Latest span end minus earliest span start, never negative.
    pub duration_ns: i64,
    pub span_count: usize,
    /// Spans on the longest root-to-leaf chain (a lone root is 1; the synthetic root
    /// does not count).
    pub depth: usize,
    /// Spans with status ERROR.
    pub error_count: usize,
    /// Distinct service names, sorted.
    pub services: Vec<Arc<str>>,
    /// Service and name of the root span (as `Trace::root`: the first in span order,
    /// the earliest in a closed trace).
    pub root_service: Option<Arc<str>>,
    pub root_name: Option<Arc<str>>,
    /// The spans that determine the end-to-end latency, root first.
    pub critical_path: Vec<PathSegment>,
    /// The critical-path span with the largest self time (none when all are 0).
    pub bottleneck: Option<Bottleneck>,
    /// The service with the largest summed critical-path self time, and its share of
    /// the critical path.
    pub bottleneck_service: Option<(Arc<str>, f64)>,
    /// Calls between services.
    pub edges: Vec<Edge>,
    /// Recommendations, by kind, then in span order.
    pub findings: Vec<Finding>,
    /// What was wrong with the trace's structure or times.
    pub oddities: Oddities,
}

/// One span on the critical path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathSegment {
    /// 0 for the synthetic root.
    pub span_id: SpanId,
    pub service: Arc<str>,
    pub name: Arc<str>,
    /// Time on the critical path spent in this span and not in its children.
    pub self_time_ns: i64,
}

/// The critical-path span with the largest self time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bottleneck {
    pub span_id: SpanId,
    pub service: Arc<str>,
    pub name: Arc<str>,
    pub self_time_ns: i64,
    /// `self_time_ns` over the critical path's length.
    pub share: f64,
}

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Consecutive sequential calls to one operation under one parent.
    NPlusOne,
    /// Sequential calls to different services that could run concurrently.
    Parallelizable,
    /// A service other than the root's dominates the critical path.
    DominantDependency,
    /// A failed span followed by a sibling doing the same operation.
    RetryAfterError,
    /// The deepest failed span.
    ErrorOrigin,
}

impl FindingKind {
    /// All kinds, in the order findings are listed.
    pub const ALL: [FindingKind; 5] = [
        FindingKind::NPlusOne,
        FindingKind::Parallelizable,
        FindingKind::DominantDependency,
        FindingKind::RetryAfterError,
        FindingKind::ErrorOrigin,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::NPlusOne => "n_plus_one",
            FindingKind::Parallelizable => "parallelizable",
            FindingKind::DominantDependency => "dominant_dependency",
            FindingKind::RetryAfterError => "retry_after_error",
            FindingKind::ErrorOrigin => "error_origin",
        }
    }
}

/// A recommendation about some spans of a trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// The spans it is about, in time order.
    pub span_ids: Vec<SpanId>,
    /// The service that should act on it.
    pub service: Arc<str>,
    /// One line, lowercase, no trailing period.
    pub message: String,
}

/// Structural problems of a trace, counted (spans, or cycles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Oddities {
    /// Children starting before their parent starts or ending after it ends, by more
    /// than [`CLOCK_SKEW_TOLERANCE_NS`] (children of PRODUCER spans and CONSUMER spans
    /// are asynchronous and not counted).
    pub clock_skew: u32,
    /// Spans whose parent is not in the trace.
    pub orphans: u32,
    /// Cycles in parent links (each cut once).
    pub cycles: u32,
    /// Roots beyond the first.
    pub extra_roots: u32,
    /// Spans ending before they start (treated as lasting 0).
    pub negative_durations: u32,
    /// Spans ending exactly when they start.
    pub zero_durations: u32,
    /// Orphans, cycles, extra roots or a missing root made the analysis add a root.
    pub synthetic_root: bool,
}

/// Clock skew below this is ignored.
pub const CLOCK_SKEW_TOLERANCE_NS: i64 = 1_000_000;

impl Oddities {
    /// The metric label values of [`Oddities::labels`], in its order.
    pub const REASONS: [&'static str; 7] = [
        "clock_skew",
        "orphans",
        "cycles",
        "extra_roots",
        "negative_durations",
        "zero_durations",
        "synthetic_root",
    ];

    /// True when anything was odd.
    pub fn any(&self) -> bool {
        self.labels().any(|(_, n)| n > 0)
    }

    /// Every reason with its count (`synthetic_root` is 0 or 1), zeros included.
    pub fn labels(&self) -> impl Iterator<Item = (&'static str, u32)> {
        let counts = [
            self.clock_skew,
            self.orphans,
            self.cycles,
            self.extra_roots,
            self.negative_durations,
            self.zero_durations,
            u32::from(self.synthetic_root),
        ];
        Self::REASONS.into_iter().zip(counts)
    }
}
