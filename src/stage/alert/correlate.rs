//! Correlation of alerts with traces: the service graph learned from analysed traces,
//! recent traces as evidence, and the choice of a suspected service and exemplars.
//!
//! Every trace records, per service, its critical-path self-time share and how far that
//! share is above the median share of that service in traces of the same root service
//! (the baseline before this trace). A trace is *slow* when its duration is more than 3
//! robust deviations above the median of its root operation, *anomalous* when a trace
//! anomaly score of at least `evidence_score` named it, and has an *error origin* when
//! the analysis found one (the deepest failed span).
//!
//! For an alert on service S (label `service`, or `server` for service-graph edges), the
//! evidence is the recent traces rooted at or passing through S that show the symptom
//! (slow or anomalous for latency, an error origin for errors; every recent trace of S
//! when none does). The candidates are S and the services S reaches in the service
//! graph (every service of the evidence when the graph does not know S). The suspect
//! is, for errors, the most frequent error origin among candidates; otherwise (or
//! without error origins) the candidate whose share grew most on average over the
//! evidence (nothing when no share grew).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

use super::eval::RollingBaseline;
use super::rank::{CallPattern, Profile, Ranker};
use super::settings::{CorrelationSettings, Symptom};
use crate::model::{hex_trace_id, Suspect, Trace, TraceId};
use crate::stage::analyze::{Analysis, FindingKind, SYNTHETIC_SERVICE};

/// Exemplar trace ids an alert carries at most.
pub const MAX_EXEMPLARS: usize = 5;
/// Baselines (per root operation, per root service and service) kept at most.
const MAX_BASELINES: usize = 100_000;
/// Durations a root operation needs before a trace of it can be slow.
const MIN_DURATION_SAMPLES: usize = 16;
/// Shares a service needs before its baseline is used (before: a baseline of 0).
const MIN_SHARE_SAMPLES: usize = 4;
/// Baseline medians are recomputed every this many new values.
const BASELINE_REFRESH: usize = 8;

/// Calls between services, with the event time each was last seen.
#[derive(Debug, Default)]
pub struct ServiceGraph {
    callees: FxHashMap<Arc<str>, FxHashMap<Arc<str>, i64>>,
}

impl ServiceGraph {
    /// Records a call `client → server` at `at_ns`.
    pub fn add(&mut self, client: &Arc<str>, server: &Arc<str>, at_ns: i64) {
        if client == server {
            return;
        }
        let last = self
            .callees
            .entry(client.clone())
            .or_default()
            .entry(server.clone())
            .or_insert(at_ns);
        *last = (*last).max(at_ns);
    }

    /// Forgets calls last seen before `cutoff_ns`.
    pub fn prune(&mut self, cutoff_ns: i64) {
        self.callees.retain(|_, servers| {
            servers.retain(|_, at| *at >= cutoff_ns);
            !servers.is_empty()
        });
    }

    /// Services `from` calls, directly or through others (not `from` itself unless a
    /// cycle leads back).
    pub fn downstream(&self, from: &str) -> FxHashSet<Arc<str>> {
        let mut seen: FxHashSet<Arc<str>> = FxHashSet::default();
        let mut stack: Vec<&str> = vec![from];
        while let Some(s) = stack.pop() {
            for callee in self.callees.get(s).into_iter().flat_map(|m| m.keys()) {
                if seen.insert(callee.clone()) {
                    stack.push(callee);
                }
            }
        }
        seen
    }

    /// True when `service` calls or is called by any service.
    pub fn knows(&self, service: &str) -> bool {
        self.callees.contains_key(service) || self.callees.values().any(|m| m.contains_key(service))
    }

    /// Calls known.
    pub fn edge_count(&self) -> usize {
        self.callees.values().map(FxHashMap::len).sum()
    }
}

#[derive(Debug)]
struct TraceRecord {
    trace_id: TraceId,
    end_ns: i64,
    root: Option<Arc<str>>,
    /// Every service of the trace, with its critical-path share and that share minus
    /// the service's baseline.
    shares: SmallVec<[(Arc<str>, f32, f32); 8]>,
    slow: bool,
    /// What root-cause ranking keeps of it (with its error origin).
    profile: Profile,
}

impl TraceRecord {
    fn has(&self, service: &str) -> bool {
        self.root.as_deref() == Some(service) || self.shares.iter().any(|s| &*s.0 == service)
    }

    fn delta(&self, service: &str) -> f64 {
        self.shares
            .iter()
            .find(|s| &*s.0 == service)
            .map_or(0.0, |s| f64::from(s.2))
    }
}

/// What an alert is correlated with.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Correlation {
    pub suspected: Option<String>,
    /// Ranked suspects, best first (`suspected` is the first one's service).
    #[serde(default)]
    pub suspects: Vec<Suspect>,
    /// Hex trace ids, at most [`MAX_EXEMPLARS`].
    pub exemplars: Vec<String>,
}

/// Recent traces, baselines and the service graph.
#[derive(Debug)]
pub struct Correlator {
    settings: CorrelationSettings,
    pub graph: ServiceGraph,
    traces: VecDeque<TraceRecord>,
    anomalous: FxHashMap<TraceId, i64>,
    shares: FxHashMap<(Arc<str>, Arc<str>), RollingBaseline>,
    durations: FxHashMap<(Arc<str>, Arc<str>), RollingBaseline>,
    ranker: Ranker,
}

impl Correlator {
    pub fn new(settings: CorrelationSettings) -> Self {
        let settings_samples = settings.baseline_samples;
        Self {
            settings,
            graph: ServiceGraph::default(),
            traces: VecDeque::new(),
            anomalous: FxHashMap::default(),
            shares: FxHashMap::default(),
            durations: FxHashMap::default(),
            ranker: Ranker::new(settings_samples),
        }
    }

    /// Traces remembered now.
    pub fn trace_count(&self) -> usize {
        self.traces.len()
    }

    /// Learns edges, baselines and evidence from one analysed trace. Amendments (late
    /// spans only) add their edges and nothing else. Returns the trace's root operation
    /// as ranking refines it (see [`Ranker::profile`]) when the trace was kept.
    pub fn observe(&mut self, trace: &Trace, analysis: &Analysis) -> Option<u64> {
        for e in &analysis.edges {
            self.graph.add(&e.client, &e.server, e.end_ns);
        }
        if trace.amendment || trace.spans.is_empty() {
            return None;
        }
        let root: Arc<str> = analysis
            .root_service
            .clone()
            .unwrap_or_else(|| Arc::from(""));
        let path_ns: i64 = analysis
            .critical_path
            .iter()
            .map(|s| s.self_time_ns.max(0))
            .sum();
        let mut shares: SmallVec<[(Arc<str>, f32, f32); 8]> = SmallVec::new();
        for svc in analysis
            .services
            .iter()
            .filter(|s| &***s != SYNTHETIC_SERVICE)
        {
            let own: i64 = analysis
                .critical_path
                .iter()
                .filter(|p| p.service == *svc)
                .map(|p| p.self_time_ns.max(0))
                .sum();
            let share = if path_ns > 0 {
                own as f64 / path_ns as f64
            } else {
                0.0
            };
            let base = baseline(
                &mut self.shares,
                (root.clone(), svc.clone()),
                self.settings.baseline_samples,
            );
            let median = match base {
                Some(b) => {
                    let m = if b.len() >= MIN_SHARE_SAMPLES {
                        b.median_scale_cached(BASELINE_REFRESH).map_or(0.0, |m| m.0)
                    } else {
                        0.0
                    };
                    b.push(share);
                    m
                }
                None => 0.0,
            };
            shares.push((svc.clone(), share as f32, (share - median) as f32));
        }
        let duration = analysis.duration_ns as f64;
        let op: Arc<str> = analysis.root_name.clone().unwrap_or_else(|| Arc::from(""));
        let mut slow = false;
        if let Some(b) = baseline(
            &mut self.durations,
            (root.clone(), op),
            self.settings.baseline_samples,
        ) {
            if b.len() >= MIN_DURATION_SAMPLES {
                if let Some((median, scale)) = b.median_scale_cached(BASELINE_REFRESH) {
                    slow = (duration - median) / scale.max(0.05 * median.abs()) > 3.0;
                }
            }
            b.push(duration);
        }
        let error_origin = analysis
            .findings
            .iter()
            .find(|f| f.kind == FindingKind::ErrorOrigin)
            .map(|f| f.service.clone());
        let profile = self.ranker.profile(trace, analysis, error_origin);
        let group = profile.root();
        self.traces.push_back(TraceRecord {
            trace_id: trace.trace_id,
            end_ns: trace.end_ns(),
            root: analysis.root_service.clone(),
            shares,
            slow,
            profile,
        });
        while self.traces.len() > self.settings.max_traces {
            self.forget_oldest();
        }
        Some(group)
    }

    /// The service and name of a root operation returned by [`Self::observe`].
    pub fn root_names(&self, root: u64) -> Option<(Arc<str>, Arc<str>)> {
        self.ranker.names(root)
    }

    /// The strongest call change of root operation `root` in its traces that ended in
    /// the `window_ns` before `now_ns`, against its normal period (see
    /// [`Ranker::call_pattern`]).
    pub fn call_pattern(
        &self,
        root: u64,
        now_ns: i64,
        window_ns: i64,
        min_change: f64,
    ) -> Option<CallPattern> {
        let since = now_ns.saturating_sub(window_ns);
        let (mut recent, mut before) = (Vec::new(), Vec::new());
        for r in self.traces.iter().filter(|r| r.profile.root() == root) {
            if r.end_ns >= since {
                recent.push(&r.profile);
            } else {
                before.push(&r.profile);
            }
        }
        self.ranker.call_pattern(root, &recent, &before, min_change)
    }

    /// Moves the oldest recent trace into the baselines of root-cause ranking.
    fn forget_oldest(&mut self) {
        if let Some(r) = self.traces.pop_front() {
            self.ranker.fold(&r.profile);
        }
    }

    /// Marks a trace anomalous (a trace score of at least `evidence_score`).
    pub fn mark_anomalous(&mut self, trace_id: TraceId, at_ns: i64) {
        self.anomalous.insert(trace_id, at_ns);
    }

    /// The configured evidence score.
    pub fn evidence_score(&self) -> f64 {
        self.settings.evidence_score
    }

    /// Forgets traces and marks older than the correlation window and stale edges.
    pub fn prune(&mut self, now_ns: i64) {
        let cutoff = now_ns.saturating_sub(self.settings.window_ns);
        while self.traces.front().is_some_and(|t| t.end_ns < cutoff) {
            self.forget_oldest();
        }
        self.anomalous.retain(|_, at| *at >= cutoff);
        self.graph
            .prune(now_ns.saturating_sub(self.settings.service_graph_ttl_ns));
    }

    /// The suspected service and exemplars for an alert on `service` (any service when
    /// `None`) showing `symptom`, from traces ending in the window before `now_ns`;
    /// flagged traces ending at or after `focus_ns` (around when the condition began)
    /// are the evidence when there are any, so the traces from before the change do not
    /// outvote it. `first` are trace ids that go first among the exemplars (the scored
    /// traces of a trace anomaly rule).
    pub fn correlate(
        &self,
        service: Option<&str>,
        symptom: Symptom,
        now_ns: i64,
        focus_ns: i64,
        first: &[TraceId],
    ) -> Correlation {
        let since = now_ns.saturating_sub(self.settings.window_ns);
        let relevant: Vec<&TraceRecord> = self
            .traces
            .iter()
            .filter(|r| r.end_ns >= since && service.is_none_or(|s| r.has(s)))
            .collect();
        let flagged: Vec<&TraceRecord> = relevant
            .iter()
            .copied()
            .filter(|r| {
                let anomalous = self.anomalous.contains_key(&r.trace_id);
                match symptom {
                    Symptom::Latency => r.slow || anomalous,
                    Symptom::Errors => r.profile.error_origin.is_some(),
                    Symptom::Other => r.slow || anomalous || r.profile.error_origin.is_some(),
                }
            })
            .collect();
        let focused: Vec<&TraceRecord> = flagged
            .iter()
            .copied()
            .filter(|r| r.end_ns >= focus_ns)
            .collect();
        let evidence = if !focused.is_empty() {
            &focused
        } else if flagged.is_empty() {
            &relevant
        } else {
            &flagged
        };
        // a service the graph has never seen could call anything: then every service
        // of the evidence is a candidate
        let downstream = service
            .filter(|s| self.graph.knows(s))
            .map(|s| (s, self.graph.downstream(s)));
        let candidate = |x: &str| match &downstream {
            Some((s, d)) => x == *s || d.contains(x),
            None => true,
        };
        let anomalous: Vec<&Profile> = relevant
            .iter()
            .filter(|r| r.end_ns >= focus_ns)
            .map(|r| &r.profile)
            .collect();
        let before: Vec<&Profile> = relevant
            .iter()
            .filter(|r| r.end_ns < focus_ns)
            .map(|r| &r.profile)
            .collect();
        let mut suspects = self
            .ranker
            .rank(&anomalous, &before, &candidate, &self.graph);
        let mut suspected = suspects.first().map(|s| s.service.clone());
        if suspected.is_none() && symptom == Symptom::Errors {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for origin in evidence
                .iter()
                .filter_map(|r| r.profile.error_origin.as_deref())
            {
                if candidate(origin) {
                    *counts.entry(origin).or_default() += 1;
                }
            }
            let failed = counts.values().sum::<usize>().max(1) as f64;
            if let Some((service, n)) = argmax(counts.into_iter().map(|(k, n)| (k, n as f64)), 0.0)
            {
                suspects.push(Suspect {
                    service: service.clone(),
                    evidence: vec![format!(
                        "error origin in {:.0} % of {failed} failed traces",
                        100.0 * n / failed
                    )],
                    score: n / failed,
                });
                suspected = Some(service);
            }
        }
        if suspected.is_none() && !evidence.is_empty() {
            let mut growth: BTreeMap<&str, f64> = BTreeMap::new();
            for r in evidence.iter() {
                for (svc, _, delta) in r.shares.iter().filter(|s| candidate(&s.0)) {
                    *growth.entry(svc).or_default() += f64::from(*delta);
                }
            }
            let n = evidence.len() as f64;
            let grown = growth.into_iter().map(|(k, g)| (k, g / n));
            if let Some((service, g)) = argmax(grown, 1e-3) {
                suspects.push(Suspect {
                    service: service.clone(),
                    evidence: vec![format!(
                        "{service}'s share of the critical path grew by {:.0} points \
                         in {} traces",
                        100.0 * g,
                        evidence.len()
                    )],
                    score: g.min(1.0),
                });
                suspected = Some(service);
            }
        }
        let mut ranked: Vec<&TraceRecord> = evidence.to_vec();
        let suspect = suspected.as_deref();
        ranked.sort_by(|a, b| {
            let key = |r: &TraceRecord| {
                let shows = suspect.is_some_and(|s| {
                    r.profile.error_origin.as_deref() == Some(s) || r.delta(s) > 0.0
                });
                (shows, r.end_ns, r.trace_id)
            };
            key(b).cmp(&key(a))
        });
        let mut exemplars: Vec<String> = Vec::with_capacity(MAX_EXEMPLARS);
        let ids = first
            .iter()
            .copied()
            .chain(ranked.iter().map(|r| r.trace_id));
        for id in ids {
            let hex = hex_trace_id(id);
            if exemplars.len() == MAX_EXEMPLARS {
                break;
            }
            if !exemplars.contains(&hex) {
                exemplars.push(hex);
            }
        }
        Correlation {
            suspected,
            suspects,
            exemplars,
        }
    }
}

fn baseline(
    map: &mut FxHashMap<(Arc<str>, Arc<str>), RollingBaseline>,
    key: (Arc<str>, Arc<str>),
    samples: usize,
) -> Option<&mut RollingBaseline> {
    if map.len() >= MAX_BASELINES && !map.contains_key(&key) {
        return None;
    }
    Some(
        map.entry(key)
            .or_insert_with(|| RollingBaseline::new(samples)),
    )
}

/// The name with the largest score above `min` (the first by name on ties).
fn argmax<'a>(scores: impl Iterator<Item = (&'a str, f64)>, min: f64) -> Option<(String, f64)> {
    scores
        .filter(|(_, s)| *s > min)
        .fold(None::<(&str, f64)>, |best, (k, s)| match best {
            Some((_, b)) if b >= s => best,
            _ => Some((k, s)),
        })
        .map(|(k, s)| (k.to_string(), s))
}
