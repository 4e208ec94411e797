//! Root-cause ranking: which services the traces of an anomalous period point at, each
//! with a score and the evidence in words, measured against the traces of a normal
//! period of the same root operations.
//!
//! Every analysed trace leaves a [`Profile`]: its root operation; how often each span
//! operation (service and span name) occurs and which child operations each one calls;
//! each service's critical-path self time and each caller's wait on the services it
//! calls (see `rank_profile.rs`); the durations of each service's entry spans (spans
//! whose parent is in another service, and the root); and its error origin.
//! Profiles that leave the correlator's recent traces are folded into a baseline per
//! root operation (counts halve once it holds [`BASELINE_TRACES`] traces, so it follows
//! slow drift; time samples are the last `baseline_samples`).
//!
//! For an alert the anomalous period is the relevant traces that ended since the
//! condition began, the normal period the baseline of their root operations plus the
//! relevant traces that ended before. Per root operation with at least
//! [`MIN_ANOMALOUS`] anomalous and [`MIN_NORMAL`] normal traces the findings are:
//! - **call pattern**: a child operation called markedly less (missing spans) or more
//!   often per call of its parent operation (|z| ≥ [`Z_MIN`] for the count against a
//!   Poisson count at the normal rate, on Anscombe's square-root scale; relative change
//!   ≥ [`MIN_CHANGE`]): against the parent's service, whose behaviour
//!   changed (it returned early, failed half-way, retried);
//! - **self time**: a service's critical-path self time above its normal range (median
//!   plus the largest of 3 robust deviations, 50 % and 1 ms) in more anomalous traces
//!   than normal ones;
//! - **wait**: the same test on the critical-path time of a caller's calls into another
//!   service spent outside the callee's spans (a client span, or without span kinds a
//!   span whose one child is in another service, beyond its child): against the callee
//!   (a slow network to it, requests queueing before it), unless the caller waits longer
//!   on at least two and at least half of the services it calls: then against the
//!   caller, the common factor (slow to send and receive), which its callees then do
//!   not go before;
//! - **early return**: a service's entry spans markedly shorter than normal (slower entry
//!   spans are explained by self time, theirs or their callees');
//! - **error origin**: the service where the failed traces' errors originate, when it
//!   originates errors more often than normal.
//!
//! A finding's strength is in [0, 1]: the relative change of a call rate, or the share of
//! anomalous traces showing it beyond the share of normal ones. A service's score is the
//! noisy-or of its three strongest findings. Suspects are ranked by score, except that a
//! service called (directly or through others) by a suspect whose score is at most
//! [`CALLEE_MARGIN`] times its own goes before that suspect: a failure or slowdown shows
//! in its callers too, so of comparable suspects the deepest is the likelier cause.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet, FxHasher};
use smallvec::SmallVec;

use super::correlate::ServiceGraph;
use super::template::format_ns;
use crate::model::Suspect;

/// Suspects an alert names at most.
pub const MAX_SUSPECTS: usize = 5;
/// Findings quoted per suspect at most (and combined into its score).
const MAX_EVIDENCE: usize = 3;
/// Traces a root operation's baseline holds before its counts halve.
const BASELINE_TRACES: f64 = 2_000.0;
/// Anomalous traces of a root operation needed before it is compared.
pub const MIN_ANOMALOUS: usize = 3;
/// Normal traces of a root operation needed before it is compared.
pub const MIN_NORMAL: usize = 10;
/// Calls of a parent operation needed in each period before its call pattern is compared.
const MIN_CALLS: f64 = 3.0;
/// Standard scores a call rate must move by.
pub const Z_MIN: f64 = 4.0;
/// Relative change of a call rate that counts.
pub const MIN_CHANGE: f64 = 0.3;
/// Findings weaker than this are not quoted.
const MIN_STRENGTH: f64 = 0.1;
/// Suspects scoring less are not named.
const MIN_SCORE: f64 = 0.2;
/// How much more a caller may score and still go after its callee.
pub const CALLEE_MARGIN: f64 = 1.5;
/// Operations (service and span name) and calls remembered at most.
const MAX_NAMES: usize = 200_000;
/// Root operations with a baseline at most.
const MAX_ROOTS: usize = 10_000;
/// Entry spans of one trace whose durations are kept at most.
const MAX_ENTRIES: usize = 32;

/// What ranking keeps of one trace.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    root: u64,
    /// Operation id → spans of it.
    spans: SmallVec<[(u64, u32); 16]>,
    /// Call id (parent operation, child operation) → calls.
    calls: SmallVec<[(u64, u32); 16]>,
    /// Service → critical-path self time, ns.
    self_ns: SmallVec<[(Arc<str>, i64); 8]>,
    /// (Caller, callee service) → critical-path time of the caller's calls into the
    /// callee spent outside the callee's spans (network, queueing, the caller sending
    /// and receiving), ns.
    wait_ns: SmallVec<[(Call, i64); 8]>,
    /// Entry operation id → span duration, ns.
    entries: SmallVec<[(u64, i64); 8]>,
    pub error_origin: Option<Arc<str>>,
}

impl Profile {
    /// Its root operation (refined by the endpoint of a catch-all root).
    pub fn root(&self) -> u64 {
        self.root
    }
}

/// A caller and the service it calls.
type Call = (Arc<str>, Arc<str>);

/// A call whose rate per call of its parent operation moved between the normal and the
/// anomalous period.
#[derive(Debug, Clone, Copy)]
pub struct CallChange {
    parent: u64,
    child: u64,
    /// Standard scores the count moved by (negative: fewer calls).
    pub z: f64,
    /// The change relative to the larger of the two rates.
    pub change: f64,
    before: f64,
    now: f64,
}

/// The strongest call change of one root operation's recent traces.
#[derive(Debug, Clone, PartialEq)]
pub struct CallPattern {
    /// Its |z| (0 when no call rate moved by `min_change`).
    pub z: f64,
    /// The parent's service and the change in words, when one moved.
    pub finding: Option<(Arc<str>, String)>,
}

/// A root operation's normal period.
#[derive(Debug, Default)]
struct Normal {
    traces: f64,
    spans: FxHashMap<u64, f64>,
    calls: FxHashMap<u64, f64>,
    origins: FxHashMap<Arc<str>, f64>,
    self_ns: FxHashMap<Arc<str>, VecDeque<f64>>,
    wait_ns: FxHashMap<Call, VecDeque<f64>>,
    entries: FxHashMap<u64, VecDeque<f64>>,
}

/// Names of operations and calls, and the baselines of root operations.
#[derive(Debug)]
pub struct Ranker {
    samples: usize,
    ops: FxHashMap<u64, (Arc<str>, Arc<str>)>,
    calls: FxHashMap<u64, (u64, u64)>,
    roots: FxHashMap<u64, Normal>,
}

fn id(parts: &[&str]) -> u64 {
    let mut h = FxHasher::default();
    parts.hash(&mut h);
    h.finish()
}

fn push_sample(q: &mut VecDeque<f64>, v: f64, cap: usize) {
    if q.len() >= cap {
        q.pop_front();
    }
    q.push_back(v);
}

impl Ranker {
    /// A ranker whose time baselines hold `samples` values each.
    pub fn new(samples: usize) -> Self {
        Self {
            samples: samples.max(MIN_NORMAL),
            ops: FxHashMap::default(),
            calls: FxHashMap::default(),
            roots: FxHashMap::default(),
        }
    }

    fn op(&mut self, service: &Arc<str>, name: &Arc<str>) -> u64 {
        let k = id(&[service, name]);
        if self.ops.len() < MAX_NAMES {
            self.ops
                .entry(k)
                .or_insert_with(|| (service.clone(), name.clone()));
        }
        k
    }

    /// Adds a trace to the normal period of its root operation.
    pub fn fold(&mut self, p: &Profile) {
        if self.roots.len() >= MAX_ROOTS && !self.roots.contains_key(&p.root) {
            return;
        }
        let cap = self.samples;
        let n = self.roots.entry(p.root).or_default();
        if n.traces >= BASELINE_TRACES {
            n.traces /= 2.0;
            for map in [&mut n.spans, &mut n.calls] {
                map.values_mut().for_each(|v| *v /= 2.0);
                map.retain(|_, v| *v >= 0.25);
            }
            n.origins.values_mut().for_each(|v| *v /= 2.0);
            n.origins.retain(|_, v| *v >= 0.25);
        }
        n.traces += 1.0;
        for (k, c) in &p.spans {
            *n.spans.entry(*k).or_default() += f64::from(*c);
        }
        for (k, c) in &p.calls {
            *n.calls.entry(*k).or_default() += f64::from(*c);
        }
        if let Some(o) = &p.error_origin {
            *n.origins.entry(o.clone()).or_default() += 1.0;
        }
        for (s, ns) in &p.self_ns {
            push_sample(n.self_ns.entry(s.clone()).or_default(), *ns as f64, cap);
        }
        for (s, ns) in &p.wait_ns {
            push_sample(n.wait_ns.entry(s.clone()).or_default(), *ns as f64, cap);
        }
        for (k, ns) in &p.entries {
            push_sample(n.entries.entry(*k).or_default(), *ns as f64, cap);
        }
    }

    /// The service and name of a root operation (as refined by [`Ranker::profile`]).
    pub fn names(&self, op: u64) -> Option<(Arc<str>, Arc<str>)> {
        self.ops.get(&op).cloned()
    }

    /// The strongest change of a call rate in the recent traces of root operation
    /// `root` (`anomalous`) against its normal period (its baseline plus `before`), among
    /// calls whose rate moved by `min_change`; `None` when either period has too few
    /// traces to compare.
    pub fn call_pattern(
        &self,
        root: u64,
        anomalous: &[&Profile],
        before: &[&Profile],
        min_change: f64,
    ) -> Option<CallPattern> {
        let empty = Normal::default();
        let normal = self.roots.get(&root).unwrap_or(&empty);
        if anomalous.len() < MIN_ANOMALOUS
            || normal.traces + (before.len() as f64) < MIN_NORMAL as f64
        {
            return None;
        }
        let period = Period {
            ranker: self,
            root: self.label(root),
            a: anomalous,
            b: before,
            normal,
        };
        let strongest = period
            .call_changes(0.0, min_change)
            .into_iter()
            .max_by(|x, y| x.z.abs().total_cmp(&y.z.abs()));
        Some(CallPattern {
            z: strongest.map_or(0.0, |c| c.z.abs()),
            finding: strongest.and_then(|c| period.describe(&c)),
        })
    }

    fn label(&self, op: u64) -> String {
        self.ops
            .get(&op)
            .map_or_else(|| "?".to_string(), |(s, n)| format!("{s} {n}"))
    }

    /// The ranked suspects of an anomalous period (`anomalous`) against the normal one
    /// (the baselines plus `before`), among the services `candidate` accepts.
    pub fn rank(
        &self,
        anomalous: &[&Profile],
        before: &[&Profile],
        candidate: &dyn Fn(&str) -> bool,
        graph: &ServiceGraph,
    ) -> Vec<Suspect> {
        let mut groups: FxHashMap<u64, (Vec<&Profile>, Vec<&Profile>)> = FxHashMap::default();
        for p in anomalous {
            groups.entry(p.root).or_default().0.push(p);
        }
        for p in before {
            if let Some(g) = groups.get_mut(&p.root) {
                g.1.push(p);
            }
        }
        let mut findings: FxHashMap<Arc<str>, Vec<(f64, String)>> = FxHashMap::default();
        // callers that wait longer on most of their callees: the common factor
        let mut slow_callers: FxHashSet<Arc<str>> = FxHashSet::default();
        let empty = Normal::default();
        for (root, (a, b)) in &groups {
            let normal = self.roots.get(root).unwrap_or(&empty);
            if a.len() < MIN_ANOMALOUS || normal.traces + (b.len() as f64) < MIN_NORMAL as f64 {
                continue;
            }
            let period = Period {
                ranker: self,
                root: self.label(*root),
                a,
                b,
                normal,
            };
            period.calls(&mut findings);
            period.self_time(&mut findings);
            period.wait_time(&mut findings, &mut slow_callers);
            period.early_returns(&mut findings);
            period.error_origins(&mut findings);
        }
        let mut suspects: Vec<Suspect> = findings
            .into_iter()
            .filter(|(s, _)| candidate(s))
            .map(|(service, mut f)| {
                f.sort_by(|x, y| y.0.total_cmp(&x.0).then_with(|| x.1.cmp(&y.1)));
                f.truncate(MAX_EVIDENCE);
                let miss: f64 = f.iter().map(|(s, _)| 1.0 - s.clamp(0.0, 1.0)).product();
                Suspect {
                    service: service.to_string(),
                    score: 1.0 - miss,
                    evidence: f.into_iter().map(|(_, e)| e).collect(),
                }
            })
            .filter(|s| s.score >= MIN_SCORE)
            .collect();
        suspects.sort_by(|x, y| {
            y.score
                .total_cmp(&x.score)
                .then_with(|| x.service.cmp(&y.service))
        });
        callee_first(&mut suspects, graph, &|s| slow_callers.contains(s));
        suspects.truncate(MAX_SUSPECTS);
        suspects
    }
}

/// Moves a suspect's comparable callees before it (see the module doc), except before
/// a suspect `stays` keeps first (a caller waiting longer on most of its callees: their
/// own findings do not explain that).
pub fn callee_first(suspects: &mut [Suspect], graph: &ServiceGraph, stays: &dyn Fn(&str) -> bool) {
    let n = suspects.len();
    let mut i = 0;
    let mut moves = 0;
    while i < n && moves < n * n {
        if stays(&suspects[i].service) {
            i += 1;
            continue;
        }
        let below = graph.downstream(&suspects[i].service);
        let callee = (i + 1..n).find(|&j| {
            suspects[j].score * CALLEE_MARGIN >= suspects[i].score
                && below.contains(suspects[j].service.as_str())
                && !graph
                    .downstream(&suspects[j].service)
                    .contains(suspects[i].service.as_str())
        });
        match callee {
            Some(j) => {
                suspects[i..=j].rotate_right(1);
                moves += 1;
            }
            None => i += 1,
        }
    }
}

/// Robust centre and scale of samples: the median and 1.4826 × the median absolute
/// deviation.
fn median_scale(values: &mut [f64]) -> (f64, f64) {
    let median = |v: &mut [f64]| {
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        }
    };
    let m = median(values);
    let mut dev: Vec<f64> = values.iter().map(|v| (v - m).abs()).collect();
    (m, 1.4826 * median(&mut dev))
}

/// One root operation's anomalous and normal traces.
struct Period<'a> {
    ranker: &'a Ranker,
    root: String,
    a: &'a [&'a Profile],
    b: &'a [&'a Profile],
    normal: &'a Normal,
}

#[path = "rank_findings.rs"]
mod findings;
#[path = "rank_profile.rs"]
mod profile;
