//! Service-graph edges: who called whom within one trace.
//!
//! - `RequestReply`: a CLIENT span with a SERVER child in another service.
//! - `Messaging`: a PRODUCER span and a CONSUMER span in another service below it, with
//!   no SERVER or CONSUMER span between them.
//! - `ParentChild`: a parent and child in different services that are no such pair: the
//!   parent is not CLIENT or PRODUCER (those calls are described by their own pairs) and
//!   the child is UNSPECIFIED, INTERNAL or SERVER (a caller without client spans).
//! - A CLIENT span without a SERVER child (an uninstrumented dependency, or a callee
//!   that was down) is a `RequestReply` edge to the service named by its `peer.service`
//!   attribute, else `server.address`, else `db.system`; with none of them, no edge. Its
//!   callee side is the CLIENT span itself (latency, end, span id).
//!
//! Links through the synthetic root are not edges (the real parent is unknown).

use std::sync::Arc;

use super::tree::{Tree, NONE};
use crate::model::{AttrValue, Edge, EdgeKind, Span, SpanKind, StatusCode};

/// The edges, in span order, and for each node the service a CLIENT span calls (its
/// SERVER child's, else the peer's; `None` for other spans and unknown peers).
pub(super) fn edges(tree: &Tree<'_>, services: &[Arc<str>]) -> (Vec<Edge>, Vec<Option<Arc<str>>>) {
    let spans = tree.spans;
    let producer = producer_ancestors(tree);
    let mut edges = Vec::new();
    let mut callees: Vec<Option<Arc<str>>> = vec![None; tree.nodes()];
    for (i, s) in spans.iter().enumerate() {
        let parent = tree.real_parent(i);
        let pair = match (s.kind, parent) {
            (SpanKind::Server, Some(p)) if spans[p].kind == SpanKind::Client => {
                Some((p, EdgeKind::RequestReply))
            }
            (SpanKind::Consumer, _) => producer
                .as_ref()
                .map(|anc| anc[i])
                .filter(|&p| p != NONE)
                .map(|p| (p, EdgeKind::Messaging)),
            (SpanKind::Unspecified | SpanKind::Internal | SpanKind::Server, Some(p))
                if !matches!(spans[p].kind, SpanKind::Client | SpanKind::Producer) =>
            {
                Some((p, EdgeKind::ParentChild))
            }
            _ => None,
        };
        if let Some((p, kind)) = pair {
            let caller = &spans[p];
            if caller.resource.service_name != s.resource.service_name {
                edges.push(Edge {
                    client: caller.resource.service_name.clone(),
                    server: s.resource.service_name.clone(),
                    kind,
                    client_latency_ns: tree.len_ns(p),
                    server_latency_ns: tree.len_ns(i),
                    error: caller.status == StatusCode::Error || s.status == StatusCode::Error,
                    end_ns: tree.end[i],
                    server_span_id: s.span_id,
                });
            }
        }
        if s.kind != SpanKind::Client {
            continue;
        }
        let server = tree
            .children(i)
            .iter()
            .find(|&&c| spans[c].kind == SpanKind::Server);
        if let Some(&c) = server {
            callees[i] = Some(spans[c].resource.service_name.clone());
            continue;
        }
        let Some(peer) = peer_service(s, services) else {
            continue;
        };
        if peer != s.resource.service_name {
            edges.push(Edge {
                client: s.resource.service_name.clone(),
                server: peer.clone(),
                kind: EdgeKind::RequestReply,
                client_latency_ns: tree.len_ns(i),
                server_latency_ns: tree.len_ns(i),
                error: s.status == StatusCode::Error,
                end_ns: tree.end[i],
                server_span_id: s.span_id,
            });
        }
        callees[i] = Some(peer);
    }
    (edges, callees)
}

/// For each node, the PRODUCER span it was sent by: the nearest PRODUCER ancestor with
/// no SERVER or CONSUMER span between. `None` when the trace has no CONSUMER span.
fn producer_ancestors(tree: &Tree<'_>) -> Option<Vec<usize>> {
    if !tree.spans.iter().any(|s| s.kind == SpanKind::Consumer) {
        return None;
    }
    let mut anc = vec![NONE; tree.nodes()];
    for &v in &tree.order {
        let below = match tree.span(v).map(|s| s.kind) {
            Some(SpanKind::Producer) => v,
            Some(SpanKind::Server | SpanKind::Consumer) | None => NONE,
            Some(_) => anc[v],
        };
        for &c in tree.children(v) {
            anc[c] = below;
        }
    }
    Some(anc)
}

/// The service a CLIENT span names as its peer, shared with `services` when one of the
/// trace's services has that name.
fn peer_service(s: &Span, services: &[Arc<str>]) -> Option<Arc<str>> {
    const KEYS: [&str; 3] = ["peer.service", "server.address", "db.system"];
    let mut found: [Option<&str>; 3] = [None; 3];
    for (key, value) in s.attributes.iter() {
        if let (Some(k), AttrValue::Str(v)) = (KEYS.iter().position(|&x| x == key), value) {
            if !v.is_empty() && found[k].is_none() {
                found[k] = Some(v);
                if k == 0 {
                    break;
                }
            }
        }
    }
    let name = found.into_iter().flatten().next()?;
    Some(match services.binary_search_by(|x| (**x).cmp(name)) {
        Ok(at) => services[at].clone(),
        Err(_) => Arc::from(name),
    })
}
