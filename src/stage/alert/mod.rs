//! Alerting on aggregates, anomaly scores and traces: rules, an Alertmanager-like
//! lifecycle, grouping, repetition, escalation, inhibition and correlation.
//!
//! Pure and synchronous; every time is event time passed in (window ends, score times,
//! the `now_ns` of [`AlertEngine::advance`]).
//!
//! - **Series.** A rule watches aggregate series (`series:` scope, `match`, `window`) or
//!   trace anomaly scores (`traces:`; the series is the root operation). Each series is
//!   one alert instance with labels `alertname`, the key's dimensions (as label names:
//!   `attr.http.route` → `attr_http_route`) and for aggregates `scope` and `window`;
//!   trace series have `service` and `operation` (the root's). Then the rule's labels
//!   (templated with `{{label}}`; a series label of the same name wins). Severity is not
//!   a label, so escalation keeps the fingerprint.
//! - **Fingerprint**: 16 hex characters of FNV-1a over the rule name and the labels in
//!   name order. One instance per fingerprint, so at most one firing alert each.
//! - **Lifecycle.** A decision (window or score) with the condition holding makes an
//!   inactive instance pending; it fires on the first decision at least `for` after the
//!   first (immediately with `for: 0`); a decision without the condition makes it
//!   inactive again (a firing one resolves, `ends_at` is that decision's time). Windows
//!   without a value (latency of a window without calls, baseline warm-up, a cold
//!   score) decide nothing. A series with no decision for `resolve_timeout` resolves at
//!   the `now` of `advance`. Decisions older than the series' last one are ignored.
//! - **Grouping.** Alerts with equal values of the `group_by` labels form a group. The
//!   first alert of a group that starts firing opens a batch due `group_wait` later;
//!   alerts of the group that start firing until then join it; at the first `advance`
//!   at or after the due time the batch is emitted together (by fingerprint). An alert
//!   that resolves before its batch is emitted is never emitted (counted).
//! - **Events.** Every emitted alert carries the annotation `notification`: `new` (the
//!   first firing event of an episode), `repeat` (still firing, `repeat_interval` after
//!   the last event), `escalation` (once, when it has fired for `escalate_after`: the
//!   severity moves one step up `severities`; an alert first emitted after that time is
//!   emitted as `new` with the raised severity), `resolved`. So per fingerprint the
//!   events are `new (repeat|escalation)* resolved`, repeated. `value` and `threshold`
//!   annotations are added unless the rule defines them.
//! - **Inhibition** (`inhibit: true`): a firing alert B on service SB is held back while
//!   a firing alert A of the same rule group, on a service SA that SB calls (directly or
//!   through others, in the service graph learned from traces), is a root-cause alert:
//!   A names no other suspect than SA, or B names SA as its suspect. When both would
//!   inhibit each other (a cycle) neither does. An inhibited alert is not emitted (new,
//!   repeat or escalation); it is emitted as `new` once the inhibition ends while it is
//!   still firing. Resolutions of emitted alerts always go out.
//! - **Correlation**: each emitted alert names a suspected service and up to 5 exemplar
//!   trace ids, computed when it is emitted (see `correlate.rs`).
//!
//! Per `advance`: resolutions (in the order they happened), then due batches, then
//! escalations, then repeats.

mod config;
mod correlate;
mod eval;
mod lifecycle;
mod settings;
mod template;
mod validate;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_config;
#[cfg(test)]
mod tests_correlate;
#[cfg(test)]
mod tests_prop;

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::model::{Alert, AnomalyScore, Subject, Trace};
use crate::stage::aggregate::WindowAggregate;
use crate::stage::analyze::Analysis;

pub use config::{
    AlertConfig, AnomalyRuleConfig, Bound, CorrelationConfig, Direction, DynamicConfig,
    Indicator, RuleConfig, SeriesSelector, SloBurnConfig, ThresholdConfig, TraceSelector,
    TrendConfig,
};
pub use correlate::MAX_EXEMPLARS;
pub use lifecycle::Notification;
pub use settings::{AlertSettings, Condition, CorrelationSettings, Field, Rule, Select, Symptom};
pub use template::{fingerprint, glob_match, Template};
pub use validate::{NOTIFICATION_ANNOTATION, RESERVED_LABELS};

use correlate::Correlator;
use eval::EvalState;
use lifecycle::{Instance, Notice, Phase, Transition};
use template::{format_ns, hex64, label_name, Fnv};

/// Counters and gauges of the alert stage, read by the metrics exporter.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AlertStats {
    /// Aggregate windows, anomaly scores and traces observed.
    pub windows: u64,
    pub scores: u64,
    pub traces: u64,
    /// Decisions made (a rule on a series at one time).
    pub decisions: u64,
    /// Windows or scores older than their series' last decision: ignored.
    pub out_of_order: u64,
    /// Series not tracked because their rule had `max_series_per_rule` already.
    pub series_dropped: u64,
    /// Quiet series forgotten after `series_expiry`.
    pub series_expired: u64,
    /// Transitions to firing.
    pub fired: u64,
    /// Events emitted, by `notification`.
    pub emitted_new: u64,
    pub emitted_repeat: u64,
    pub emitted_escalation: u64,
    pub emitted_resolved: u64,
    /// Episodes that ended before any event was emitted (group wait, inhibition).
    pub resolved_unemitted: u64,
    /// Episodes resolved by `resolve_timeout`.
    pub resolved_stale: u64,
    /// Alerts held back by inhibition (once per episode).
    pub inhibited: u64,
    /// Series tracked now.
    pub series: usize,
    /// Instances pending or firing now.
    pub pending: usize,
    pub firing: usize,
    /// Traces kept as evidence and calls in the service graph now.
    pub evidence_traces: usize,
    pub graph_edges: usize,
}

/// The alert stage: feed it traces, windows and scores, then `advance` event time.
#[derive(Debug)]
pub struct AlertEngine {
    settings: AlertSettings,
    instances: FxHashMap<u64, Instance>,
    /// Series id (rule and series identity) to fingerprint.
    series: FxHashMap<u64, u64>,
    per_rule: Vec<usize>,
    /// Group key to the due time of its open batch.
    groups: FxHashMap<String, i64>,
    /// Resolutions waiting for the next `advance`.
    outbox: Vec<Alert>,
    correlator: Correlator,
    now_ns: i64,
    stats: AlertStats,
}

impl AlertEngine {
    /// An engine without state.
    pub fn new(settings: AlertSettings) -> Self {
        Self {
            per_rule: vec![0; settings.rules.len()],
            correlator: Correlator::new(settings.correlation.clone()),
            settings,
            instances: FxHashMap::default(),
            series: FxHashMap::default(),
            groups: FxHashMap::default(),
            outbox: Vec::new(),
            now_ns: i64::MIN,
            stats: AlertStats::default(),
        }
    }

    /// The settings it runs.
    pub fn settings(&self) -> &AlertSettings {
        &self.settings
    }

    /// Counters and gauges.
    pub fn stats(&self) -> &AlertStats {
        &self.stats
    }

    /// Learns the service graph, baselines and evidence from one analysed trace.
    pub fn observe_trace(&mut self, trace: &Trace, analysis: &Analysis) {
        self.stats.traces += 1;
        self.correlator.observe(trace, analysis);
    }

    /// Evaluates the rules watching this window's series, at the window's end.
    pub fn observe_window(&mut self, w: &WindowAggregate) {
        self.stats.windows += 1;
        let at = w.window_end_ns;
        for ri in 0..self.settings.rules.len() {
            let rule = &self.settings.rules[ri];
            if matches!(rule.condition, Condition::Anomaly { .. }) || !selects_window(&rule.select, w) {
                continue;
            }
            let sid = window_series_id(ri, w.window_size_ns, &w.scope, &w.key);
            let Some(fp) = self.instance(ri, sid, || window_labels(w)) else { continue };
            let (rule, inst) = (&self.settings.rules[ri], self.instances.get_mut(&fp).expect("instance"));
            if at < inst.last_seen_ns {
                self.stats.out_of_order += 1;
                continue;
            }
            inst.last_seen_ns = at;
            let decision = eval::on_window(&rule.condition, &mut inst.eval, w);
            self.stats.decisions += u64::from(decision.is_some());
            self.apply(fp, decision, at);
        }
    }

    /// Evaluates the anomaly rules watching this score's subject, at its time. A warm
    /// trace score of at least `correlation.evidence_score` also marks the trace as
    /// evidence for correlation.
    pub fn observe_score(&mut self, s: &AnomalyScore) {
        self.stats.scores += 1;
        if let Subject::Trace { trace_id, .. } = &s.subject {
            if s.warm && s.score >= self.correlator.evidence_score() {
                self.correlator.mark_anomalous(*trace_id, s.at_ns);
            }
        }
        for ri in 0..self.settings.rules.len() {
            let rule = &self.settings.rules[ri];
            if !matches!(rule.condition, Condition::Anomaly { .. }) {
                continue;
            }
            let (sid, labels): (u64, Box<dyn Fn() -> Vec<(String, String)>>) = match (&rule.select, &s.subject) {
                (Select::Series { .. }, Subject::Series { window_size_ns, scope, key }) => {
                    if !selects_series(&rule.select, *window_size_ns, scope, key, u64::MAX) {
                        continue;
                    }
                    let sid = window_series_id(ri, *window_size_ns, scope, key);
                    (sid, Box::new(move || series_labels(*window_size_ns, scope, key)))
                }
                (Select::Traces { root_service, root_operation }, Subject::Trace { root_service: svc, root_operation: op, .. }) => {
                    let ok = |g: &Option<String>, v: &str| g.as_deref().is_none_or(|g| glob_match(g, v));
                    if !ok(root_service, svc) || !ok(root_operation, op) {
                        continue;
                    }
                    let sid = Fnv::default().bytes(&(ri as u64).to_le_bytes()).str("trace").str(svc).str(op).finish();
                    (sid, Box::new(move || vec![("service".into(), svc.to_string()), ("operation".into(), op.to_string())]))
                }
                _ => continue,
            };
            let Some(fp) = self.instance(ri, sid, labels) else { continue };
            let (rule, inst) = (&self.settings.rules[ri], self.instances.get_mut(&fp).expect("instance"));
            if s.at_ns < inst.last_seen_ns {
                self.stats.out_of_order += 1;
                continue;
            }
            inst.last_seen_ns = s.at_ns;
            let decision = eval::on_score(&rule.condition, &mut inst.eval, s);
            if let (Some(d), Some(top)) = (decision, s.explanations.first()) {
                if d.value > d.threshold {
                    inst.feature = Some(top.feature.clone());
                    inst.symptom = if top.feature.contains("error") { Symptom::Errors } else { Symptom::Latency };
                    if let Subject::Trace { trace_id, .. } = &s.subject {
                        inst.scored_traces.push_front(*trace_id);
                        inst.scored_traces.truncate(MAX_EXEMPLARS);
                    }
                }
            }
            self.stats.decisions += u64::from(decision.is_some());
            self.apply(fp, decision, s.at_ns);
        }
    }

    /// Moves event time to `now_ns` (never backwards) and appends the alert events due:
    /// resolutions, group batches, escalations, repeats.
    pub fn advance(&mut self, now_ns: i64, out: &mut Vec<Alert>) {
        let now = now_ns.max(self.now_ns);
        self.now_ns = now;
        self.resolve_stale(now);
        self.correlator.prune(now);
        self.groups.retain(|_, due| *due >= now);
        self.expire(now);
        out.append(&mut self.outbox);

        let mut due: Vec<(i64, &str, u64)> = Vec::new();
        let mut again: Vec<u64> = Vec::new();
        let (repeat, escalate) = (self.settings.repeat_interval_ns, self.settings.escalate_after_ns);
        for (fp, inst) in &self.instances {
            let Phase::Firing { since_ns } = inst.phase else { continue };
            let n = &inst.notice;
            if !n.announced {
                if n.due_ns <= now {
                    due.push((n.due_ns, &inst.group_key, *fp));
                }
            } else if now.saturating_sub(n.last_emit_ns) >= repeat
                || (!n.escalated && escalate.is_some_and(|e| now.saturating_sub(since_ns) >= e))
            {
                again.push(*fp);
            }
        }
        if due.is_empty() && again.is_empty() {
            self.refresh_gauges();
            return;
        }
        due.sort_unstable();
        again.sort_unstable();
        let due: Vec<u64> = due.into_iter().map(|d| d.2).collect();
        self.correlate_firing(now);
        let held = self.inhibited();
        for fp in due {
            if self.hold(fp, &held) {
                continue;
            }
            let escalated = self.escalation_due(fp, now);
            let (_, inst) = self.rule_and(fp);
            if let Some(sev) = escalated {
                inst.notice.severity = sev;
                inst.notice.escalated = true;
            }
            inst.notice.announced = true;
            out.push(self.emit(fp, Notification::New, now));
        }
        let mut repeats = Vec::new();
        for fp in again {
            if self.hold(fp, &held) {
                continue;
            }
            match self.escalation_due(fp, now) {
                Some(sev) => {
                    let (_, inst) = self.rule_and(fp);
                    inst.notice.severity = sev;
                    inst.notice.escalated = true;
                    out.push(self.emit(fp, Notification::Escalation, now));
                }
                None => repeats.push(fp),
            }
        }
        for fp in repeats {
            if now.saturating_sub(self.instances[&fp].notice.last_emit_ns) >= repeat {
                out.push(self.emit(fp, Notification::Repeat, now));
            }
        }
        self.refresh_gauges();
    }

    /// The alerts firing and emitted now, by fingerprint (for the HTTP API).
    pub fn firing(&self) -> Vec<Alert> {
        let mut v: Vec<Alert> = self
            .instances
            .values()
            .filter(|i| i.firing() && i.notice.announced)
            .map(|i| i.alert(&self.settings.rules[i.rule], Notification::New, None))
            .collect();
        v.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
        v
    }

    fn rule_and(&mut self, fp: u64) -> (&Rule, &mut Instance) {
        let inst = self.instances.get_mut(&fp).expect("instance");
        (&self.settings.rules[inst.rule], inst)
    }

    /// The instance of a series, created with its labels when new; `None` past the cap.
    fn instance(&mut self, ri: usize, sid: u64, labels: impl FnOnce() -> Vec<(String, String)>) -> Option<u64> {
        if let Some(fp) = self.series.get(&sid) {
            if self.instances.contains_key(fp) {
                return Some(*fp);
            }
        }
        if self.per_rule[ri] >= self.settings.max_series_per_rule {
            self.stats.series_dropped += 1;
            return None;
        }
        let rule = &self.settings.rules[ri];
        let mut map: BTreeMap<String, String> = labels().into_iter().collect();
        map.insert("alertname".into(), rule.name.clone());
        let extra: Vec<(String, String)> = rule
            .labels
            .iter()
            .filter(|(k, _)| !map.contains_key(k))
            .map(|(k, t)| {
                let v = t.render(|n| map.get(n).or_else(|| map.get(&label_name(n))).map(String::as_str));
                (k.clone(), v)
            })
            .collect();
        map.extend(extra);
        let fp = fingerprint(&rule.name, map.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.series.insert(sid, fp);
        if self.instances.contains_key(&fp) {
            return Some(fp);
        }
        let group_key = self
            .settings
            .group_by
            .iter()
            .map(|l| map.get(l).map_or("", String::as_str))
            .collect::<Vec<_>>()
            .join("\u{1f}");
        let service = map.get("service").or_else(|| map.get("server")).cloned();
        let symptom = match &rule.condition {
            Condition::SloBurn { indicator: Indicator::Latency, .. } => Symptom::Latency,
            Condition::SloBurn { .. } => Symptom::Errors,
            c => c.field().map_or(Symptom::Latency, Field::symptom),
        };
        self.per_rule[ri] += 1;
        self.instances.insert(
            fp,
            Instance {
                rule: ri,
                fingerprint: hex64(fp),
                series_id: sid,
                labels: map,
                group_key,
                service,
                eval: EvalState::new(&rule.condition),
                phase: Phase::Inactive,
                last_seen_ns: i64::MIN,
                last: None,
                symptom,
                feature: None,
                scored_traces: Default::default(),
                notice: Notice::default(),
            },
        );
        Some(fp)
    }

    fn apply(&mut self, fp: u64, decision: Option<eval::Eval>, at: i64) {
        let inst = self.instances.get_mut(&fp).expect("instance");
        let rule = &self.settings.rules[inst.rule];
        match inst.step(decision, at, rule.for_ns) {
            Transition::None => {}
            Transition::Fired => {
                self.stats.fired += 1;
                let due = match self.groups.get(&inst.group_key) {
                    Some(d) if at <= *d => *d,
                    _ => {
                        let d = at.saturating_add(self.settings.group_wait_ns);
                        self.groups.insert(inst.group_key.clone(), d);
                        d
                    }
                };
                inst.notice = Notice {
                    due_ns: due,
                    severity: rule.severity.clone(),
                    ..Notice::default()
                };
            }
            Transition::Resolved => self.resolve(fp, at),
        }
    }

    /// Ends a firing episode at `at`; its resolution goes out if it was announced.
    fn resolve(&mut self, fp: u64, at: i64) {
        let inst = self.instances.get_mut(&fp).expect("instance");
        let rule = &self.settings.rules[inst.rule];
        if inst.notice.announced {
            self.outbox.push(inst.alert(rule, Notification::Resolved, Some(at)));
            self.stats.emitted_resolved += 1;
        } else if inst.firing() {
            self.stats.resolved_unemitted += 1;
        }
        inst.phase = Phase::Inactive;
        inst.notice = Notice::default();
    }

    fn resolve_stale(&mut self, now: i64) {
        let timeout = self.settings.resolve_timeout_ns;
        let mut stale: Vec<u64> = self
            .instances
            .iter()
            .filter(|(_, i)| i.phase != Phase::Inactive && now.saturating_sub(i.last_seen_ns) >= timeout)
            .map(|(fp, _)| *fp)
            .collect();
        stale.sort_unstable();
        for fp in stale {
            if self.instances[&fp].firing() {
                self.stats.resolved_stale += 1;
            }
            self.resolve(fp, now);
        }
    }

    fn expire(&mut self, now: i64) {
        let expiry = self.settings.series_expiry_ns;
        let old: Vec<u64> = self
            .instances
            .iter()
            .filter(|(_, i)| i.phase == Phase::Inactive && now.saturating_sub(i.last_seen_ns) >= expiry)
            .map(|(fp, _)| *fp)
            .collect();
        for fp in old {
            if let Some(inst) = self.instances.remove(&fp) {
                self.series.remove(&inst.series_id);
                self.per_rule[inst.rule] = self.per_rule[inst.rule].saturating_sub(1);
                self.stats.series_expired += 1;
            }
        }
        if self.series.len() > 2 * self.instances.len() + 64 {
            let live = &self.instances;
            self.series.retain(|_, fp| live.contains_key(fp));
        }
    }

    fn correlate_firing(&mut self, now: i64) {
        for inst in self.instances.values_mut().filter(|i| i.firing()) {
            let first: Vec<_> = inst.scored_traces.iter().copied().collect();
            inst.notice.correlation = self.correlator.correlate(inst.service.as_deref(), inst.symptom, now, &first);
        }
    }

    /// Fingerprints of firing alerts that inhibition holds back now.
    fn inhibited(&self) -> FxHashSet<u64> {
        let mut held = FxHashSet::default();
        if !self.settings.inhibit {
            return held;
        }
        let firing: Vec<(u64, &Instance)> = self.instances.iter().filter(|(_, i)| i.firing()).map(|(f, i)| (*f, i)).collect();
        let graph = &self.correlator.graph;
        let reach: FxHashMap<&str, FxHashSet<std::sync::Arc<str>>> = firing
            .iter()
            .filter_map(|(_, i)| i.service.as_deref())
            .map(|s| (s, graph.downstream(s)))
            .collect();
        let raw = |a: &Instance, b: &Instance| -> bool {
            let rules = &self.settings.rules;
            let (Some(sa), Some(sb)) = (a.service.as_deref(), b.service.as_deref()) else { return false };
            if sa == sb || rules[a.rule].group != rules[b.rule].group {
                return false;
            }
            let a_root = a.notice.correlation.suspected.as_deref().is_none_or(|s| s == sa);
            let b_blames_a = b.notice.correlation.suspected.as_deref() == Some(sa);
            (a_root || b_blames_a) && reach.get(sb).is_some_and(|d| d.contains(sa))
        };
        for (fb, b) in &firing {
            if firing.iter().any(|(fa, a)| fa != fb && raw(a, b) && !raw(b, a)) {
                held.insert(*fb);
            }
        }
        held
    }

    /// True (and counted once per episode) when inhibition holds `fp` back.
    fn hold(&mut self, fp: u64, held: &FxHashSet<u64>) -> bool {
        let inst = self.instances.get_mut(&fp).expect("instance");
        inst.notice.inhibited = held.contains(&fp);
        if inst.notice.inhibited && !inst.notice.inhibition_counted {
            inst.notice.inhibition_counted = true;
            self.stats.inhibited += 1;
        }
        inst.notice.inhibited
    }

    /// The raised severity when `fp` is due to escalate at `now`.
    fn escalation_due(&self, fp: u64, now: i64) -> Option<String> {
        let inst = &self.instances[&fp];
        let Phase::Firing { since_ns } = inst.phase else { return None };
        let after = self.settings.escalate_after_ns?;
        if inst.notice.escalated || now.saturating_sub(since_ns) < after {
            return None;
        }
        let sev = &self.settings.severities;
        let pos = sev.iter().position(|s| *s == inst.notice.severity)?;
        sev.get(pos + 1).cloned()
    }

    fn emit(&mut self, fp: u64, n: Notification, now: i64) -> Alert {
        match n {
            Notification::New => self.stats.emitted_new += 1,
            Notification::Repeat => self.stats.emitted_repeat += 1,
            Notification::Escalation => self.stats.emitted_escalation += 1,
            Notification::Resolved => self.stats.emitted_resolved += 1,
        }
        let (rule, inst) = self.rule_and(fp);
        inst.notice.last_emit_ns = now;
        inst.alert(rule, n, None)
    }

    fn refresh_gauges(&mut self) {
        let s = &mut self.stats;
        s.series = self.instances.len();
        s.pending = self.instances.values().filter(|i| matches!(i.phase, Phase::Pending { .. })).count();
        s.firing = self.instances.values().filter(|i| i.firing()).count();
        s.evidence_traces = self.correlator.trace_count();
        s.graph_edges = self.correlator.graph.edge_count();
    }
}

fn selects_window(select: &Select, w: &WindowAggregate) -> bool {
    selects_series(select, w.window_size_ns, &w.scope, &w.key, w.count)
}

fn selects_series(select: &Select, size_ns: i64, scope: &str, key: &[(std::sync::Arc<str>, std::sync::Arc<str>)], count: u64) -> bool {
    let Select::Series { scope: s, matchers, window_ns, min_count } = select else { return false };
    s == scope
        && window_ns.is_none_or(|n| n == size_ns)
        && count >= *min_count
        && matchers.iter().all(|(dim, glob)| {
            key.iter().any(|(k, v)| **k == **dim && glob_match(glob, v))
        })
}

fn window_series_id(ri: usize, size_ns: i64, scope: &str, key: &[(std::sync::Arc<str>, std::sync::Arc<str>)]) -> u64 {
    let mut h = Fnv::default().bytes(&(ri as u64).to_le_bytes()).bytes(&size_ns.to_le_bytes()).str(scope);
    for (k, v) in key {
        h = h.str(k).str(v);
    }
    h.finish()
}

fn window_labels(w: &WindowAggregate) -> Vec<(String, String)> {
    series_labels(w.window_size_ns, &w.scope, &w.key)
}

fn series_labels(size_ns: i64, scope: &str, key: &[(std::sync::Arc<str>, std::sync::Arc<str>)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = key.iter().map(|(k, val)| (label_name(k), val.to_string())).collect();
    v.push(("scope".into(), scope.to_string()));
    v.push(("window".into(), format_ns(size_ns as f64)));
    v
}
