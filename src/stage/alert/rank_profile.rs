//! The profile ranking keeps of one analysed trace (see `rank.rs`).

use std::hash::{Hash, Hasher};
use std::ops::AddAssign;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHasher};
use smallvec::SmallVec;

use super::{Profile, Ranker, MAX_ENTRIES, MAX_NAMES};
use crate::model::{Analysis, SpanKind, Trace};
use crate::stage::analyze::SYNTHETIC_SERVICE;

fn pair_id(a: u64, b: u64) -> u64 {
    let mut h = FxHasher::default();
    (a, b, 0x5eed_u16).hash(&mut h);
    h.finish()
}

/// A root operation refined by its endpoint (salted apart from [`pair_id`], which names
/// the same two operations as a call context).
fn group_id(root: u64, endpoint: u64) -> u64 {
    let mut h = FxHasher::default();
    (root, endpoint, 0x6e0d_u16).hash(&mut h);
    h.finish()
}

/// Adds `v` to `key`'s entry of a small list of totals.
fn add<A, K, V>(list: &mut SmallVec<A>, key: K, v: V)
where
    A: smallvec::Array<Item = (K, V)>,
    K: PartialEq,
    V: AddAssign,
{
    match list.iter_mut().find(|(k, _)| *k == key) {
        Some((_, total)) => *total += v,
        None => list.push((key, v)),
    }
}

impl Ranker {
    /// The profile of an analysed trace (not an amendment).
    pub fn profile(
        &mut self,
        trace: &Trace,
        a: &Analysis,
        error_origin: Option<Arc<str>>,
    ) -> Profile {
        let root_service = a.root_service.clone().unwrap_or_else(|| Arc::from(""));
        let root_name = a.root_name.clone().unwrap_or_else(|| Arc::from(""));
        let mut p = Profile {
            root: self.op(&root_service, &root_name),
            error_origin,
            ..Profile::default()
        };
        let index: FxHashMap<u64, usize> = trace
            .spans
            .iter()
            .enumerate()
            .map(|(i, s)| (s.span_id, i))
            .collect();
        let parents: Vec<Option<usize>> = trace
            .spans
            .iter()
            .enumerate()
            .map(|(i, s)| index.get(&s.parent_span_id).copied().filter(|&j| j != i))
            .collect();
        let ops: Vec<u64> = trace
            .spans
            .iter()
            .map(|s| self.op(&s.resource.service_name, &s.name))
            .collect();
        // an operation in the context of its caller's: a generic span name (a commit, an
        // HTTP client call) means different work under different callers
        let context: Vec<u64> = (0..ops.len())
            .map(|i| parents[i].map_or(ops[i], |j| pair_id(ops[j], ops[i])))
            .collect();
        // per span: its first child by start and how many it has
        let mut children: Vec<Option<(usize, u32)>> = vec![None; trace.spans.len()];
        for (i, s) in trace.spans.iter().enumerate() {
            if let Some(j) = parents[i] {
                let first = children[j].get_or_insert((i, 0));
                first.1 += 1;
                if s.start_ns < trace.spans[first.0].start_ns {
                    first.0 = i;
                }
            }
            if context[i] != ops[i] && self.ops.len() < MAX_NAMES {
                let named = self.ops.get(&ops[i]).cloned();
                if let Some(n) = named {
                    self.ops.entry(context[i]).or_insert(n);
                }
            }
            add(&mut p.spans, context[i], 1);
            if let Some(j) = parents[i] {
                let call = pair_id(context[j], ops[i]);
                if self.calls.len() < MAX_NAMES {
                    self.calls.entry(call).or_insert((context[j], ops[i]));
                }
                add(&mut p.calls, call, 1);
            }
            let entry = parents[i].is_none_or(|j| trace.spans[j].service() != s.service());
            if entry && p.entries.len() < MAX_ENTRIES {
                p.entries.push((context[i], (s.end_ns - s.start_ns).max(0)));
            }
        }
        // traces of a catch-all root (a gateway's `/*`) differ by the first operation of
        // another service they reach: that is their endpoint
        let first_other = trace
            .spans
            .iter()
            .enumerate()
            .filter(|(_, s)| *s.resource.service_name != *root_service)
            .filter(|(i, _)| {
                parents[*i].is_some_and(|j| *trace.spans[j].resource.service_name == *root_service)
            })
            .min_by_key(|(i, s)| (s.start_ns, *i))
            .map(|(i, _)| ops[i]);
        if let Some(endpoint) = first_other {
            let group = group_id(p.root, endpoint);
            if self.ops.len() < MAX_NAMES {
                let (rs, rn) = (root_service.clone(), root_name.clone());
                let label = self
                    .ops
                    .get(&endpoint)
                    .map(|(s, n)| format!("{rn} → {s} {n}"));
                if let Some(l) = label {
                    self.ops.entry(group).or_insert((rs, Arc::from(l)));
                }
            }
            p.root = group;
        }
        // a client span whose child is in another service is a call into it: its own
        // time on the critical path is the wait for that service (network, queueing),
        // not work; without a span kind, a span whose one child is in another service
        let callee = |i: usize| {
            let (k, n) = children[i]?;
            let (s, child) = (&trace.spans[i], &trace.spans[k]);
            let call = match s.kind {
                SpanKind::Client | SpanKind::Producer => true,
                SpanKind::Unspecified => n == 1,
                _ => false,
            };
            (call && child.service() != s.service()).then_some(&child.resource.service_name)
        };
        for seg in a
            .critical_path
            .iter()
            .filter(|s| &*s.service != SYNTHETIC_SERVICE)
        {
            let ns = seg.self_time_ns.max(0);
            let into = index.get(&seg.span_id).and_then(|&i| callee(i));
            match into {
                Some(callee) => add(&mut p.wait_ns, (seg.service.clone(), callee.clone()), ns),
                None => add(&mut p.self_ns, seg.service.clone(), ns),
            }
        }
        p
    }
}
