//! The data spanline moves: spans, the traces assembled from them, and the compact
//! attribute encoding they share.

mod alert;
mod analysis;
mod attrs;
mod intern;
mod offsets;
mod record;
mod span;
mod trace;

pub use alert::{Alert, AlertStatus, AnomalyScore, Explanation, Subject};
pub use analysis::{Edge, EdgeKind};
pub use attrs::{AttrValue, Attributes, AttributesBuilder, Events, EventsBuilder};
pub use intern::Interner;
pub use offsets::{HoldOffsets, Holds, NoHolds, Origin};
pub use record::Record;
pub use span::{hex_span_id, hex_trace_id, Resource, Span, SpanId, SpanKind, StatusCode, TraceId};
pub use trace::{CloseReason, Trace};
