//! The critical path: the chain of spans that determines end-to-end latency.

use std::cmp::Reverse;
use std::sync::Arc;

use super::tree::Tree;

/// (node, self time on the path), root first, then by clamped start (parents before
/// children starting with them). Self times sum to the top node's duration.
pub(super) fn critical_path(tree: &Tree<'_>) -> Vec<(usize, i64)> {
    let nodes = tree.nodes();
    // each node's interval clamped to its parent's clamped interval; empty ones are
    // off the path with their whole subtree
    let mut eff_start = vec![0i64; nodes];
    let mut eff_end = vec![0i64; nodes];
    let mut on = vec![false; nodes];
    eff_start[tree.top] = tree.start[tree.top];
    eff_end[tree.top] = tree.end[tree.top];
    on[tree.top] = true;
    // children that can be on the path, per node, latest end first
    let mut off = vec![0usize; nodes + 1];
    let mut kids = Vec::with_capacity(nodes);
    for &v in &tree.order {
        if !on[v] {
            continue;
        }
        for &c in tree.children(v) {
            let s = tree.start[c].max(eff_start[v]);
            let e = tree.end[c].min(eff_end[v]);
            if s < e {
                eff_start[c] = s;
                eff_end[c] = e;
                on[c] = true;
            }
        }
    }
    for v in 0..nodes {
        off[v] = kids.len();
        if on[v] {
            let from = kids.len();
            kids.extend(tree.children(v).iter().copied().filter(|&c| on[c]));
            kids[from..].sort_unstable_by_key(|&c| (Reverse(eff_end[c]), eff_start[c], c));
        }
    }
    off[nodes] = kids.len();

    struct Frame {
        node: usize,
        /// Time down to which the node is already accounted for.
        cursor: i64,
        /// Next candidate in `kids`.
        next: usize,
        /// Index in `segments`.
        seg: usize,
    }
    let mut segments: Vec<(usize, i64)> = vec![(tree.top, 0)];
    let mut stack = vec![Frame {
        node: tree.top,
        cursor: eff_end[tree.top],
        next: off[tree.top],
        seg: 0,
    }];
    while let Some(f) = stack.last_mut() {
        let last = off[f.node + 1];
        // children ending after the cursor overlap covered time; the cursor only moves
        // back, so they never fit later either
        while f.next < last && eff_end[kids[f.next]] > f.cursor {
            f.next += 1;
        }
        if f.next < last {
            let c = kids[f.next];
            f.next += 1;
            let seg = &mut segments[f.seg].1;
            *seg = seg.saturating_add(f.cursor.saturating_sub(eff_end[c]));
            f.cursor = eff_start[c];
            segments.push((c, 0));
            let seg = segments.len() - 1;
            stack.push(Frame {
                node: c,
                cursor: eff_end[c],
                next: off[c],
                seg,
            });
        } else {
            let seg = &mut segments[f.seg].1;
            *seg = seg.saturating_add(f.cursor.saturating_sub(eff_start[f.node]));
            stack.pop();
        }
    }
    segments.sort_unstable_by_key(|&(v, _)| (eff_start[v], tree.depth[v], v));
    segments
}

/// Critical-path self time per service (the synthetic root left out), by service name.
pub(super) fn self_time_by_service(tree: &Tree<'_>, path: &[(usize, i64)]) -> Vec<(Arc<str>, i64)> {
    let mut items: Vec<(&Arc<str>, i64)> = path
        .iter()
        .filter_map(|&(v, ns)| tree.span(v).map(|s| (&s.resource.service_name, ns)))
        .collect();
    items.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut out: Vec<(Arc<str>, i64)> = Vec::new();
    for (svc, ns) in items {
        match out.last_mut() {
            Some(last) if *last.0 == **svc => last.1 = last.1.saturating_add(ns),
            _ => out.push((svc.clone(), ns)),
        }
    }
    out
}

/// The real span with the largest positive self time (ties: the deeper, then the
/// earlier on the path).
pub(super) fn bottleneck(tree: &Tree<'_>, path: &[(usize, i64)]) -> Option<(usize, i64)> {
    let mut best: Option<(usize, i64)> = None;
    for &(v, ns) in path {
        if ns <= 0 || tree.span(v).is_none() {
            continue;
        }
        let better = match best {
            None => true,
            Some((b, bns)) => ns > bns || (ns == bns && tree.depth[v] > tree.depth[b]),
        };
        if better {
            best = Some((v, ns));
        }
    }
    best
}
