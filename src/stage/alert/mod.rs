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
//!   severity moves one step up `severities`, and the annotation `escalated_from` names
//!   the one it left; an alert first emitted after that time is emitted as `new` with
//!   the raised severity), `resolved`. So per fingerprint the
//!   events are `new (repeat|escalation)* resolved`, repeated. `value` and `threshold`
//!   annotations are added unless the rule defines them.
//! - **Inhibition** (`inhibit: true`): a firing alert B on service SB is held back while
//!   its suspected service SA (see correlation) has a firing alert A of the same rule
//!   group (`group`, default the rule name) and SB calls SA, directly or through others,
//!   in the service graph learned from traces: the symptom upstream is left to the
//!   alert on its cause. Likewise when A blames its own service (a root cause), or when
//!   A and B blame the same suspected service, and SB calls SA: A is closer to the cause (an outage of a service that emits no spans
//!   alerts each of its callers; only the nearest is kept). Two alerts blaming each other's service (a cycle) inhibit
//!   neither. An inhibited alert is counted once per episode and goes out as `grouped`
//!   under the incident of the alert holding it back (visible, but no one is notified
//!   again); while that alert is not out yet it waits, and it is filed like any other
//!   once the inhibition ends. Resolutions of emitted alerts always go out.
//! - **Incidents**: each alert is filed under an incident when it first goes out; the
//!   alerts of one fault share one incident named after its most likely root cause,
//!   and only its lead is `new` (see `incident.rs`).
//! - **Correlation**: each emitted alert names a suspected service and up to 5 exemplar
//!   trace ids, computed when it is emitted (see `correlate.rs`).
//!
//! Per `advance`: resolutions (in the order they happened), then due batches, then
//! escalations, then repeats.

mod config;
mod correlate;
mod eval;
mod incident;
mod lifecycle;
mod notify;
mod rank;
mod series;
mod settings;
mod state;
mod template;
mod validate;
mod validate_condition;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_calls;
#[cfg(test)]
mod tests_config;
#[cfg(test)]
mod tests_correlate;
#[cfg(test)]
mod tests_incident;
#[cfg(test)]
mod tests_lifecycle;
#[cfg(test)]
mod tests_prop;
#[cfg(test)]
mod tests_rank;
#[cfg(test)]
mod tests_trend_slo;
#[cfg(test)]
mod tests_units;

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::model::Analysis;
use crate::model::WindowAggregate;
use crate::model::{Alert, AnomalyScore, Subject, Trace};

pub use crate::model::{
    label_name, ESCALATED_FROM_ANNOTATION, NOTIFICATION_ANNOTATION, RESERVED_LABELS,
};
pub use config::{
    AlertConfig, AnomalyRuleConfig, Bound, CallPatternConfig, CorrelationConfig, Direction,
    DynamicConfig, Indicator, RuleConfig, SeriesSelector, SloBurnConfig, ThresholdConfig,
    TraceSelector, TrendConfig,
};
pub use correlate::MAX_EXEMPLARS;
pub use incident::{Incident, Membership};
pub use lifecycle::{Instance, Notification, Phase};
pub use settings::{AlertSettings, Condition, CorrelationSettings, Field, Rule, Select, Symptom};
pub use state::{LifecycleMeta, Restored};
pub use template::{fingerprint, glob_match, Template};

use correlate::Correlator;
use eval::EvalState;
use lifecycle::{Notice, Transition};
use series::SeriesRef;
use template::hex64;

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
    pub emitted_grouped: u64,
    pub emitted_repeat: u64,
    pub emitted_escalation: u64,
    pub emitted_resolved: u64,
    /// Episodes that ended before any event was emitted (group wait, inhibition).
    pub resolved_unemitted: u64,
    /// Episodes resolved by `resolve_timeout`.
    pub resolved_stale: u64,
    /// Alerts held back by inhibition (once per episode).
    pub inhibited: u64,
    /// Incidents opened.
    pub incidents: u64,
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
    /// Live incidents, oldest first.
    incidents: Vec<Incident>,
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
            incidents: Vec::new(),
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

    /// Learns the service graph, baselines and evidence from one analysed trace, then
    /// evaluates the `call_pattern` rules watching its root operation, at its end.
    pub fn observe_trace(&mut self, trace: &Trace, analysis: &Analysis) {
        self.stats.traces += 1;
        let Some(root) = self.correlator.observe(trace, analysis) else {
            return;
        };
        let at = trace.end_ns();
        let mut names = None;
        for ri in 0..self.settings.rules.len() {
            let Condition::CallPattern {
                z,
                min_change,
                window_ns,
                every_ns,
            } = self.settings.rules[ri].condition
            else {
                continue;
            };
            let Some((service, operation)) = names
                .get_or_insert_with(|| self.correlator.root_names(root))
                .clone()
            else {
                return;
            };
            let series = SeriesRef::Root {
                service: &service,
                operation: &operation,
            };
            if !series.selected_by(&self.settings.rules[ri].select, u64::MAX) {
                continue;
            }
            let last = self
                .series
                .get(&series.id(ri))
                .and_then(|fp| self.instances.get(fp))
                .map_or(i64::MIN, |inst| inst.last_seen_ns);
            if at < last.saturating_add(every_ns) {
                continue;
            }
            let found = self
                .correlator
                .call_pattern(root, at, window_ns, min_change);
            self.decide(ri, &series, at, |_, inst| {
                let found = found?;
                let active = found.z >= z;
                if active {
                    if let Some((service, text)) = found.finding {
                        // the service whose calls changed: correlation looks below it,
                        // incidents file the alert by it
                        inst.service = Some(service.to_string());
                        inst.feature = Some(text);
                    }
                    inst.symptom = Symptom::Other;
                }
                let ln_p = crate::stage::detect::ln_gauss_two_sided(found.z);
                inst.anomaly_score = Some(crate::stage::detect::score_of_ln_p(ln_p));
                Some(eval::Eval::new(active, found.z, z))
            });
        }
    }

    /// Evaluates the rules watching this window's series, at the window's end.
    pub fn observe_window(&mut self, w: &WindowAggregate) {
        self.stats.windows += 1;
        let series = SeriesRef::Aggregate {
            size_ns: w.window_size_ns,
            scope: &w.scope,
            key: &w.key,
        };
        for ri in 0..self.settings.rules.len() {
            let rule = &self.settings.rules[ri];
            if matches!(
                rule.condition,
                Condition::Anomaly { .. } | Condition::CallPattern { .. }
            ) || !series.selected_by(&rule.select, w.count)
            {
                continue;
            }
            self.decide(ri, &series, w.window_end_ns, |cond, inst| {
                eval::on_window(cond, &mut inst.eval, w)
            });
        }
    }

    /// Evaluates the anomaly rules watching this score's subject, at its time. A warm
    /// trace score of at least `correlation.evidence_score` also marks the trace as
    /// evidence for correlation.
    pub fn observe_score(&mut self, s: &AnomalyScore) {
        self.stats.scores += 1;
        let series = match &s.subject {
            Subject::Series {
                window_size_ns,
                scope,
                key,
            } => SeriesRef::Aggregate {
                size_ns: *window_size_ns,
                scope,
                key,
            },
            Subject::Trace {
                root_service,
                root_operation,
                trace_id,
            } => {
                if s.warm && s.score >= self.correlator.evidence_score() {
                    self.correlator.mark_anomalous(*trace_id, s.at_ns);
                }
                SeriesRef::Root {
                    service: root_service,
                    operation: root_operation,
                }
            }
        };
        for ri in 0..self.settings.rules.len() {
            let rule = &self.settings.rules[ri];
            if !series.selected_by(&rule.select, u64::MAX) {
                continue;
            }
            if matches!(rule.condition, Condition::CallPattern { .. }) {
                continue;
            }
            if !matches!(rule.condition, Condition::Anomaly { .. }) {
                // a rule on measured values reports the series' score with its alerts
                let fp = self.series.get(&series.id(ri));
                if let (true, Some(inst)) = (s.warm, fp.and_then(|fp| self.instances.get_mut(fp))) {
                    inst.anomaly_score = Some(s.score);
                }
                continue;
            }
            self.decide(ri, &series, s.at_ns, |cond, inst| {
                let decision = eval::on_score(cond, &mut inst.eval, s);
                let above = decision.is_some_and(|d| d.value > d.threshold);
                if let (true, Some(top)) = (above, s.explanations.first()) {
                    inst.feature = Some(top.feature.clone());
                    inst.symptom = if top.feature.contains("error") {
                        Symptom::Errors
                    } else {
                        Symptom::Latency
                    };
                }
                if let (true, Subject::Trace { trace_id, .. }) = (above, &s.subject) {
                    inst.scored_traces.push_front(*trace_id);
                    inst.scored_traces.truncate(MAX_EXEMPLARS);
                }
                decision
            });
        }
    }

    /// One decision of rule `ri` on a series at `at`, made by `decide` on its instance.
    fn decide(
        &mut self,
        ri: usize,
        series: &SeriesRef<'_>,
        at: i64,
        decide: impl FnOnce(&Condition, &mut Instance) -> Option<eval::Eval>,
    ) {
        let Some(fp) = self.instance(ri, series) else {
            return;
        };
        let inst = self.instances.get_mut(&fp).expect("instance");
        if at < inst.last_seen_ns {
            self.stats.out_of_order += 1;
            return;
        }
        inst.last_seen_ns = at;
        let decision = decide(&self.settings.rules[ri].condition, inst);
        self.stats.decisions += u64::from(decision.is_some());
        self.apply(fp, decision, at);
    }

    fn rule_and(&mut self, fp: u64) -> (&Rule, &mut Instance) {
        let inst = self.instances.get_mut(&fp).expect("instance");
        (&self.settings.rules[inst.rule], inst)
    }

    /// The instance of a series, created with its labels when new; `None` past the cap.
    fn instance(&mut self, ri: usize, series: &SeriesRef<'_>) -> Option<u64> {
        let sid = series.id(ri);
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
        let mut map: BTreeMap<String, String> = series.labels().into_iter().collect();
        map.insert("alertname".into(), rule.name.clone());
        let extra: Vec<(String, String)> = rule
            .labels
            .iter()
            .filter(|(k, _)| !map.contains_key(k))
            .map(|(k, t)| {
                let v = t.render(|n| {
                    map.get(n)
                        .or_else(|| map.get(&label_name(n)))
                        .map(String::as_str)
                });
                (k.clone(), v)
            })
            .collect();
        map.extend(extra);
        let fp = fingerprint(
            &rule.name,
            map.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
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
            Condition::SloBurn {
                indicator: Indicator::Latency,
                ..
            } => Symptom::Latency,
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
                anomaly_score: None,
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
}
