//! What the analyze stage finds in a closed trace.

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
