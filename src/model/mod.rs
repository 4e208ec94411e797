//! The data spanline moves: spans, the traces assembled from them, and the compact
//! attribute encoding they share.

mod alert;
mod analysis;
mod attrs;
mod config_error;
pub mod duration;
mod intern;
mod live;
mod offsets;
mod record;
mod running;
mod span;
mod trace;
mod window;

pub use alert::{
    is_label_name, label_name, Alert, AlertStatus, AnomalyScore, Explanation, Subject, Suspect,
    ESCALATED_FROM_ANNOTATION, INCIDENT_ANNOTATION, INCIDENT_CAUSE_ANNOTATION,
    NOTIFICATION_ANNOTATION, RESERVED_LABELS, RESOLVED_SUMMARY_ANNOTATION,
};
pub use analysis::{
    Analysis, Bottleneck, Edge, EdgeKind, Finding, FindingKind, Oddities, PathSegment,
    CLOCK_SKEW_TOLERANCE_NS,
};
pub use attrs::{
    AttrValue, Attributes, AttributesBuilder, Events, EventsBuilder, RawAttribute, RawValue,
};
pub use config_error::{did_you_mean, ConfigError, ConfigErrors};
pub use intern::Interner;
pub use live::{LiveEvent, LiveWindow};
pub use offsets::{HoldOffsets, Holds, NoHolds, Origin};
pub use record::Record;
pub use running::{RunningRoot, RunningSnapshot, RunningTrace};
pub use span::{hex_span_id, hex_trace_id, Resource, Span, SpanId, SpanKind, StatusCode, TraceId};
pub use trace::{CloseReason, Trace};
pub use window::{
    sketch_config, ServerLatency, WindowAggregate, OVERFLOW_VALUE, PROFILE_SLOTS, SKETCH_MAX_BINS,
    SKETCH_RELATIVE_ACCURACY,
};
