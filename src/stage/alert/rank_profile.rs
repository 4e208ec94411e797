//! The profile ranking keeps of one analysed trace (see `rank.rs`).

use std::hash::{Hash, Hasher};
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

fn bump(list: &mut SmallVec<[(u64, u32); 16]>, key: u64) {
    match list.iter_mut().find(|(k, _)| *k == key) {
        Some((_, n)) => *n += 1,
        None => list.push((key, 1)),
    }
}

fn add_ns<K: PartialEq>(list: &mut SmallVec<[(K, i64); 8]>, key: K, ns: i64) {
    match list.iter_mut().find(|(k, _)| *k == key) {
        Some((_, total)) => *total += ns,
        None => list.push((key, ns)),
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
        for (i, s) in trace.spans.iter().enumerate() {
            if context[i] != ops[i] && self.ops.len() < MAX_NAMES {
                let named = self.ops.get(&ops[i]).cloned();
                if let Some(n) = named {
                    self.ops.entry(context[i]).or_insert(n);
                }
            }
            bump(&mut p.spans, context[i]);
            if let Some(j) = parents[i] {
                let call = pair_id(context[j], ops[i]);
                if self.calls.len() < MAX_NAMES {
                    self.calls.entry(call).or_insert((context[j], ops[i]));
                }
                bump(&mut p.calls, call);
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
        let mut children: FxHashMap<usize, (usize, u32)> = FxHashMap::default();
        for (i, parent) in parents.iter().enumerate() {
            if let Some(j) = *parent {
                let first = children.entry(j).or_insert((i, 0));
                first.1 += 1;
                if trace.spans[i].start_ns < trace.spans[first.0].start_ns {
                    first.0 = i;
                }
            }
        }
        let callee = |i: usize| {
            let &(k, n) = children.get(&i)?;
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
                Some(callee) => add_ns(&mut p.wait_ns, (seg.service.clone(), callee.clone()), ns),
                None => add_ns(&mut p.self_ns, seg.service.clone(), ns),
            }
        }
        p
    }
}
