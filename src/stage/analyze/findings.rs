//! Recommendation rules over the repaired tree and the critical path.
//!
//! Siblings are children of one real span (never of the synthetic root), by start time;
//! "sequential" means each starts at or after the previous one ended.
//!
//! - N+1: a run of at least `n_plus_one_min_calls` consecutive siblings with the same
//!   service and name, each sequential to the previous (any kind; as Sentry's N+1
//!   detector, another sibling in between ends the run, so a loop of plan/act calls is
//!   not one).
//! - Parallelizable: a run of sequential sibling CLIENT calls, each to a service not yet
//!   in the run (other siblings in between do not matter; a call to an unknown service
//!   ends the run), of at least `parallelizable_min_siblings` calls, where running them
//!   concurrently saves (sum minus longest) at least the configured share of the trace.
//! - Dominant dependency: a service other than the root's with more than
//!   `dominant_dependency_share` of the critical path.
//! - Retry after error: an ERROR span and the first later sibling with the same service
//!   and name that starts after it ended.
//! - Error origin: the deepest ERROR span (ties: the earliest).

use std::cmp::Reverse;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use super::tree::Tree;
use super::{AnalyzeSettings, Finding, FindingKind};
use crate::model::{Span, SpanKind, StatusCode};

/// What the rules look at.
pub(super) struct Context<'a> {
    pub tree: &'a Tree<'a>,
    /// Per node, the service a CLIENT span calls.
    pub callees: &'a [Option<Arc<str>>],
    pub settings: &'a AnalyzeSettings,
    /// The whole trace's duration.
    pub duration_ns: i64,
}

/// Every finding, by kind. `shares` holds each service other than the root's with its
/// share of the critical path.
pub(super) fn find(
    ctx: &Context<'_>,
    path: &[(usize, i64)],
    shares: &[(Arc<str>, f64)],
) -> Vec<Finding> {
    let mut out = Vec::new();
    n_plus_one(ctx, &mut out);
    parallelizable(ctx, &mut out);
    dominant_dependency(ctx, path, shares, &mut out);
    retry_after_error(ctx, &mut out);
    error_origin(ctx, &mut out);
    out
}

fn same_op(a: &Span, b: &Span) -> bool {
    a.resource.service_name == b.resource.service_name && a.name == b.name
}

fn finding(kind: FindingKind, spans: &[Span], nodes: &[usize], message: String) -> Finding {
    Finding {
        kind,
        span_ids: nodes.iter().map(|&v| spans[v].span_id).collect(),
        service: spans[nodes[0]].resource.service_name.clone(),
        message,
    }
}

/// Milliseconds for messages: whole above 10 ms, else one decimal.
fn ms(ns: i64) -> String {
    let ms = ns as f64 / 1e6;
    if ms >= 10.0 {
        format!("{ms:.0}")
    } else {
        format!("{ms:.1}")
    }
}

fn n_plus_one(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let tree = ctx.tree;
    let spans = tree.spans;
    let min = ctx.settings.n_plus_one_min_calls.max(2);
    let mut emit = |run: &[usize]| {
        if run.len() >= min {
            let s = &spans[run[0]];
            let message = format!(
                "{} sequential calls to {} from {}: batch them into one call",
                run.len(),
                s.name,
                s.resource.service_name
            );
            out.push(finding(FindingKind::NPlusOne, spans, run, message));
        }
    };
    for v in 0..spans.len() {
        let kids = tree.children(v);
        if kids.len() < min {
            continue;
        }
        let mut from = 0;
        for i in 1..=kids.len() {
            let continues = i < kids.len() && {
                let (prev, cur) = (kids[i - 1], kids[i]);
                same_op(&spans[prev], &spans[cur]) && tree.start[cur] >= tree.end[prev]
            };
            if !continues {
                emit(&kids[from..i]);
                from = i;
            }
        }
    }
}

fn parallelizable(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let tree = ctx.tree;
    let spans = tree.spans;
    let min = ctx.settings.parallelizable_min_siblings.max(2);
    let mut run: Vec<usize> = Vec::new();
    let mut seen: FxHashSet<&str> = FxHashSet::default();
    for v in 0..spans.len() {
        let kids = tree.children(v);
        if kids.len() < min {
            continue;
        }
        let mut run_end = i64::MIN;
        for &c in kids {
            if spans[c].kind != SpanKind::Client {
                continue;
            }
            let callee = ctx.callees[c].as_deref();
            let extends = callee.is_some_and(|svc| !seen.contains(svc)) && tree.start[c] >= run_end;
            if !extends {
                close_parallel_run(ctx, &run, min, out);
                run.clear();
                seen.clear();
            }
            if let Some(svc) = callee {
                run.push(c);
                seen.insert(svc);
                run_end = tree.end[c];
            }
        }
        close_parallel_run(ctx, &run, min, out);
        run.clear();
        seen.clear();
    }
}

fn close_parallel_run(ctx: &Context<'_>, run: &[usize], min: usize, out: &mut Vec<Finding>) {
    if run.len() < min {
        return;
    }
    let tree = ctx.tree;
    let (sum, longest) = run.iter().fold((0i64, 0i64), |(sum, max), &c| {
        let d = tree.len_ns(c);
        (sum.saturating_add(d), max.max(d))
    });
    let saving = sum.saturating_sub(longest);
    let needed = ctx.settings.parallelizable_min_saving_share * ctx.duration_ns as f64;
    if saving <= 0 || (saving as f64) < needed {
        return;
    }
    const LISTED: usize = 4;
    let mut callees = String::new();
    for (k, &c) in run.iter().take(LISTED).enumerate() {
        if k > 0 {
            callees.push_str(", ");
        }
        callees.push_str(ctx.callees[c].as_deref().unwrap_or_default());
    }
    if run.len() > LISTED {
        callees.push_str(&format!(" and {} more", run.len() - LISTED));
    }
    let message = format!(
        "{} sequential calls from {} to {} could run concurrently: saves ~{} ms",
        run.len(),
        tree.spans[run[0]].resource.service_name,
        callees,
        ms(saving)
    );
    out.push(finding(
        FindingKind::Parallelizable,
        tree.spans,
        run,
        message,
    ));
}

fn dominant_dependency(
    ctx: &Context<'_>,
    path: &[(usize, i64)],
    shares: &[(Arc<str>, f64)],
    out: &mut Vec<Finding>,
) {
    let tree = ctx.tree;
    let mut dominant: Vec<&(Arc<str>, f64)> = shares
        .iter()
        .filter(|(_, share)| *share > ctx.settings.dominant_dependency_share)
        .collect();
    dominant.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (svc, share) in dominant {
        let span_ids = path
            .iter()
            .filter_map(|&(v, ns)| {
                tree.span(v)
                    .filter(|s| ns > 0 && s.resource.service_name == *svc)
            })
            .map(|s| s.span_id)
            .collect();
        out.push(Finding {
            kind: FindingKind::DominantDependency,
            span_ids,
            service: svc.clone(),
            message: format!("{svc} takes {:.0}% of the critical path", share * 100.0),
        });
    }
}

fn retry_after_error(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let tree = ctx.tree;
    let spans = tree.spans;
    let failed_child =
        |i: usize| spans[i].status == StatusCode::Error && tree.real_parent(i).is_some();
    if !(0..spans.len()).any(failed_child) {
        return;
    }
    // siblings grouped by operation, by start: (parent, operation, start, node)
    let mut ops: FxHashMap<(&str, &str), u32> = FxHashMap::default();
    let mut sib: Vec<(usize, u32, i64, usize)> = Vec::with_capacity(spans.len());
    for (i, s) in spans.iter().enumerate() {
        if let Some(p) = tree.real_parent(i) {
            let next = ops.len() as u32;
            let op = *ops
                .entry((&s.resource.service_name, &s.name))
                .or_insert(next);
            sib.push((p, op, tree.start[i], i));
        }
    }
    sib.sort_unstable();
    let mut found: Vec<[usize; 2]> = Vec::new();
    let mut from = 0;
    while from < sib.len() {
        let key = (sib[from].0, sib[from].1);
        let to = from + sib[from..].partition_point(|x| (x.0, x.1) == key);
        let group = &sib[from..to];
        for (k, &(_, _, _, e)) in group.iter().enumerate() {
            if spans[e].status != StatusCode::Error {
                continue;
            }
            let later = &group[k + 1..];
            let at = later.partition_point(|x| x.2 < tree.end[e]);
            if let Some(&(_, _, _, retry)) = later.get(at) {
                found.push([e, retry]);
            }
        }
        from = to;
    }
    found.sort_unstable_by_key(|&[e, _]| e);
    for pair in found {
        let message = format!("retry of {} after an error", spans[pair[0]].name);
        out.push(finding(FindingKind::RetryAfterError, spans, &pair, message));
    }
}

fn error_origin(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let tree = ctx.tree;
    let spans = tree.spans;
    let origin = (0..spans.len())
        .filter(|&i| spans[i].status == StatusCode::Error)
        .max_by_key(|&i| (tree.depth[i], Reverse(tree.start[i]), Reverse(i)));
    if let Some(v) = origin {
        let s = &spans[v];
        // a failed call that reached no instrumented server: the callee is the origin
        // (an outage leaves only the caller's CLIENT span behind)
        let unanswered = (s.kind == SpanKind::Client && tree.children(v).is_empty())
            .then(|| ctx.callees[v].clone())
            .flatten()
            .filter(|peer| **peer != *s.resource.service_name);
        match unanswered {
            Some(peer) => {
                let message = format!(
                    "{peer} failed to answer {} {}: it is the likely origin of the error",
                    s.resource.service_name, s.name
                );
                let mut f = finding(FindingKind::ErrorOrigin, spans, &[v], message);
                f.service = peer;
                out.push(f);
            }
            None => {
                let message = format!(
                    "{} {} is the likely origin of the error",
                    s.resource.service_name, s.name
                );
                out.push(finding(FindingKind::ErrorOrigin, spans, &[v], message));
            }
        }
    }
}
