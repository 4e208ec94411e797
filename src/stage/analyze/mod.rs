//! Analysis of one closed trace: summary, critical path, bottleneck, service-graph
//! edges, findings (recommendations), and what was wrong with the trace's structure.
//!
//! Pure and synchronous; linear or n·log n in the number of spans, with explicit stacks
//! (no recursion), so traces of any shape and size are safe.
//!
//! Semantics worth knowing:
//!
//! - **Repaired tree.** A span whose parent is not in the trace (an orphan), a span whose
//!   parent links form a cycle (the member that starts first is cut from its parent), and
//!   every root when there is not exactly one, hang under a *synthetic root* covering the
//!   whole trace (`Oddities::synthetic_root`). It is not a span: on the critical path it
//!   is the segment with span id 0 and service [`SYNTHETIC_SERVICE`], and it is never the
//!   bottleneck. A span that ends before it starts is treated as lasting 0. Of spans
//!   sharing a span id, the first (in span order) is the parent of their children.
//! - **Critical path** (as in Jaeger's critical-path view): from the top span's end,
//!   repeatedly take the child that finished last at or before the cursor (ties: the
//!   one that started first), charge the gap to the parent, descend into that child,
//!   then continue in the parent from the child's start; children ending after the
//!   cursor (they overlap what is already covered) are skipped. Every child is first
//!   clamped to its parent's (clamped) interval, so the end-to-end latency is the top
//!   span's own interval: async work that outlives its parent (a CONSUMER after its
//!   PRODUCER ended) counts only while the parent runs, and not at all when it starts
//!   after the parent ended. Children that clamp to an empty or zero-length interval
//!   are off the path. The segments' self times sum to the top span's duration;
//!   segments are listed by clamped start (the parent before a child starting with
//!   it), root first.
//! - **Shares** (bottleneck, services, dominant dependency) are of the top span's
//!   duration, the length of the critical path; the parallelizable saving is compared
//!   with the whole trace's `duration_ns`.
//! - **Edges**: CLIENT→SERVER child, PRODUCER→CONSUMER descendant, and cross-service
//!   parent/child links without client/producer kinds; a CLIENT span without a SERVER
//!   child points at the peer named by `peer.service`, `server.address` or `db.system`
//!   (that edge's callee side is the CLIENT span itself). Details in `edges.rs`; the
//!   finding rules are described in `findings.rs`.

mod config;
mod edges;
mod findings;
mod path;
mod tree;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_broken;
#[cfg(test)]
mod tests_findings;
#[cfg(test)]
mod tests_workload;

use std::sync::{Arc, LazyLock};

use serde::Serialize;

use crate::model::{Span, Trace};

pub use crate::model::{
    Analysis, Bottleneck, Finding, FindingKind, Oddities, PathSegment, CLOCK_SKEW_TOLERANCE_NS,
};

use tree::Tree;

pub use config::AnalyzeConfig;

/// Service of the synthetic root's critical-path segment.
pub const SYNTHETIC_SERVICE: &str = "(synthetic)";
/// Name of the synthetic root's critical-path segment.
pub const SYNTHETIC_NAME: &str = "(synthetic root)";

static SYNTHETIC_SERVICE_ARC: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(SYNTHETIC_SERVICE));
static SYNTHETIC_NAME_ARC: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(SYNTHETIC_NAME));

/// Thresholds of the finding rules.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnalyzeSettings {
    /// Consecutive sequential sibling calls to one operation that make an N+1 finding
    /// (at least 2).
    pub n_plus_one_min_calls: usize,
    /// Share of the critical path above which a service other than the root's is a
    /// dominant dependency.
    pub dominant_dependency_share: f64,
    /// Sequential sibling CLIENT calls to different services that make a parallelizable
    /// finding (at least 2).
    pub parallelizable_min_siblings: usize,
    /// Report parallelizable calls only when running them concurrently would save at
    /// least this share of the trace's duration.
    pub parallelizable_min_saving_share: f64,
}

impl Default for AnalyzeSettings {
    fn default() -> Self {
        Self {
            n_plus_one_min_calls: 3,
            dominant_dependency_share: 0.5,
            parallelizable_min_siblings: 2,
            parallelizable_min_saving_share: 0.1,
        }
    }
}

/// Analyses one closed trace. Never panics, whatever the parent links and times.
pub fn analyze(trace: &Trace, settings: &AnalyzeSettings) -> Analysis {
    let spans = &trace.spans;
    if spans.is_empty() {
        return Analysis::default();
    }
    let tree = Tree::build(spans);
    let services = services(spans);
    let root = tree.primary_root.map(|r| &spans[r]);
    let root_service = root.map(|r| r.resource.service_name.clone());

    let path = path::critical_path(&tree);
    let path_ns = tree.len_ns(tree.top);
    let share = |ns: i64| {
        if path_ns > 0 {
            ns as f64 / path_ns as f64
        } else {
            0.0
        }
    };
    let by_service = path::self_time_by_service(&tree, &path);
    let bottleneck = path::bottleneck(&tree, &path).map(|(node, self_ns)| {
        let s = &spans[node];
        Bottleneck {
            span_id: s.span_id,
            service: s.resource.service_name.clone(),
            name: s.name.clone(),
            self_time_ns: self_ns,
            share: share(self_ns),
        }
    });
    let bottleneck_service = by_service
        .iter()
        .filter(|t| t.1 > 0)
        .fold(None::<&(Arc<str>, i64)>, |best, t| match best {
            Some(b) if b.1 >= t.1 => Some(b),
            _ => Some(t),
        })
        .map(|(svc, ns)| (svc.clone(), share(*ns)));

    let (edges, callees) = edges::edges(&tree, &services);
    let duration_ns = tree.duration_ns();
    let ctx = findings::Context {
        tree: &tree,
        callees: &callees,
        settings,
        duration_ns,
    };
    let dominant: Vec<(Arc<str>, f64)> = by_service
        .iter()
        .filter(|(svc, _)| root_service.as_deref() != Some(&**svc))
        .map(|(svc, ns)| (svc.clone(), share(*ns)))
        .collect();
    let findings = findings::find(&ctx, &path, &dominant);

    Analysis {
        duration_ns,
        span_count: spans.len(),
        depth: tree.max_depth(),
        error_count: trace.error_count(),
        services,
        root_service,
        root_name: root.map(|r| r.name.clone()),
        critical_path: path
            .iter()
            .map(|&(node, self_ns)| segment(&tree, node, self_ns))
            .collect(),
        bottleneck,
        bottleneck_service,
        edges,
        findings,
        oddities: tree.oddities,
    }
}

fn segment(tree: &Tree<'_>, node: usize, self_time_ns: i64) -> PathSegment {
    match tree.span(node) {
        Some(s) => PathSegment {
            span_id: s.span_id,
            service: s.resource.service_name.clone(),
            name: s.name.clone(),
            self_time_ns,
        },
        None => PathSegment {
            span_id: 0,
            service: SYNTHETIC_SERVICE_ARC.clone(),
            name: SYNTHETIC_NAME_ARC.clone(),
            self_time_ns,
        },
    }
}

/// Distinct service names, sorted (shared, not copied).
fn services(spans: &[Span]) -> Vec<Arc<str>> {
    let mut all: Vec<&Arc<str>> = Vec::with_capacity(16);
    for s in spans {
        let svc = &s.resource.service_name;
        // spans of one resource share one Arc: skip the common run cheaply
        if all.last().is_none_or(|last| !Arc::ptr_eq(last, svc)) {
            all.push(svc);
        }
    }
    all.sort_unstable();
    all.dedup_by(|a, b| a == b);
    all.into_iter().cloned().collect()
}
