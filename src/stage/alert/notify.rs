//! Emission: stale resolutions, group batches, inhibition, escalations and repeats.

use rustc_hash::{FxHashMap, FxHashSet};

use super::lifecycle::{Instance, Notice, Notification, Phase};
use super::AlertEngine;
use crate::model::Alert;
use crate::model::ESCALATED_FROM_ANNOTATION;

/// A firing alert's suspect and exemplars are recomputed at most this often (event
/// time), however often it is due (a held-back alert is due at every `advance`).
const CORRELATION_REFRESH_NS: i64 = 10_000_000_000;
/// Evidence for an alert is sought among traces ending from this long before its
/// condition began.
const CORRELATION_FOCUS_NS: i64 = 30_000_000_000;

impl AlertEngine {
    /// Ends a firing episode at `at`; its resolution goes out if it was announced.
    pub(super) fn resolve(&mut self, fp: u64, at: i64) {
        let inst = self.instances.get_mut(&fp).expect("instance");
        let rule = &self.settings.rules[inst.rule];
        // a stale resolution counts from the series' last window or score
        let incident = inst
            .notice
            .incident
            .as_ref()
            .map(|m| (m.id, inst.last_seen_ns.min(at)));
        if inst.notice.announced {
            self.outbox
                .push(inst.alert(rule, Notification::Resolved, Some(at)));
            self.stats.emitted_resolved += 1;
        } else if inst.firing() {
            self.stats.resolved_unemitted += 1;
        }
        inst.phase = Phase::Inactive;
        inst.notice = Notice::default();
        if let Some((id, last)) = incident {
            self.member_resolved(id, last);
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
        let repeat = self.settings.repeat_interval_ns;
        for (fp, inst) in &self.instances {
            if !inst.firing() {
                continue;
            }
            let n = &inst.notice;
            if !n.announced {
                if n.due_ns <= now {
                    due.push((n.due_ns, &inst.group_key, *fp));
                }
            } else if n.incident.as_ref().is_some_and(|m| !m.lead) {
                // a symptom of an incident: its lead repeats and escalates
            } else if now.saturating_sub(n.last_emit_ns) >= repeat
                || self.escalation_due(inst, now).is_some()
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
        let (mut free, mut waiting) = (Vec::new(), Vec::new());
        for fp in due {
            if self.hold(fp, &held) {
                waiting.push((fp, held[&fp]));
            } else {
                free.push(fp);
            }
        }
        self.file_due(&free, &waiting, now, out);
        let mut repeats = Vec::new();
        for fp in again {
            if self.hold(fp, &held) {
                continue;
            }
            match self.escalation_due(&self.instances[&fp], now) {
                Some(sev) => {
                    let (_, inst) = self.rule_and(fp);
                    let from = std::mem::replace(&mut inst.notice.severity, sev);
                    inst.notice.escalated = true;
                    let mut alert = self.emit(fp, Notification::Escalation, now);
                    alert
                        .annotations
                        .insert(ESCALATED_FROM_ANNOTATION.into(), from);
                    out.push(alert);
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

    /// The alerts firing whose `new` event went out, by fingerprint, as such an event
    /// would read now (for the HTTP API).
    pub fn firing(&self) -> Vec<Alert> {
        let mut v: Vec<Alert> = self
            .instances
            .values()
            .filter(|i| i.firing() && i.notice.announced)
            .map(|i| {
                let n = match &i.notice.incident {
                    Some(m) if !m.lead => Notification::Grouped,
                    _ => Notification::New,
                };
                i.alert(&self.settings.rules[i.rule], n, None)
            })
            .collect();
        v.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
        v
    }

    fn resolve_stale(&mut self, now: i64) {
        let timeout = self.settings.resolve_timeout_ns;
        let mut stale: Vec<u64> = self
            .instances
            .iter()
            .filter(|(_, i)| {
                i.phase != Phase::Inactive && now.saturating_sub(i.last_seen_ns) >= timeout
            })
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
            .filter(|(_, i)| {
                i.phase == Phase::Inactive && now.saturating_sub(i.last_seen_ns) >= expiry
            })
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

    /// Refreshes the correlation of firing alerts not correlated in the last
    /// [`CORRELATION_REFRESH_NS`].
    fn correlate_firing(&mut self, now: i64) {
        for inst in self.instances.values_mut().filter(|i| i.firing()) {
            let n = &mut inst.notice;
            if n.correlated_at_ns
                .is_some_and(|at| now.saturating_sub(at) < CORRELATION_REFRESH_NS)
            {
                continue;
            }
            let first: Vec<_> = inst.scored_traces.iter().copied().collect();
            let began = match inst.phase {
                Phase::Firing { since_ns } | Phase::Pending { since_ns } => since_ns,
                _ => now,
            };
            let focus = began.saturating_sub(CORRELATION_FOCUS_NS);
            n.correlation = self.correlator.correlate(
                inst.service.as_deref(),
                inst.symptom,
                now,
                focus,
                &first,
            );
            n.correlated_at_ns = Some(now);
        }
    }

    /// Firing alerts that inhibition holds back now, each with the alert holding it.
    fn inhibited(&self) -> FxHashMap<u64, u64> {
        let mut held = FxHashMap::default();
        if !self.settings.inhibit {
            return held;
        }
        let firing: Vec<(u64, &Instance)> = self
            .instances
            .iter()
            .filter(|(_, i)| i.firing())
            .map(|(f, i)| (*f, i))
            .collect();
        let graph = &self.correlator.graph;
        let reach: FxHashMap<&str, FxHashSet<std::sync::Arc<str>>> = firing
            .iter()
            .filter_map(|(_, i)| i.service.as_deref())
            .map(|s| (s, graph.downstream(s)))
            .collect();
        let raw = |a: &Instance, b: &Instance| -> bool {
            let rules = &self.settings.rules;
            let (Some(sa), Some(sb)) = (a.service.as_deref(), b.service.as_deref()) else {
                return false;
            };
            if sa == sb || rules[a.rule].group != rules[b.rule].group {
                return false;
            }
            // B is held when A is on B's cause, or when both blame one cause and A is
            // closer to it (an outage of an uninstrumented service alerts each caller)
            // A blaming its own service marks that service as a root cause: every alert of
            // a service that calls it is its symptom, whatever that alert's own evidence
            // says so far (slow traces through a slow dependency finish late)
            let blamed_b = b.notice.correlation.suspected.as_deref();
            let blamed_a = a.notice.correlation.suspected.as_deref();
            let same_cause = blamed_b.is_some() && blamed_b == blamed_a;
            // ... unless B's evidence blames B itself: then it is a cause of its own
            let a_is_cause = blamed_a == Some(sa) && blamed_b != Some(sb);
            (blamed_b == Some(sa) || same_cause || a_is_cause)
                && reach.get(sb).is_some_and(|d| d.contains(sa))
        };
        for (fb, b) in &firing {
            if let Some((fa, _)) = firing
                .iter()
                .filter(|(fa, a)| fa != fb && raw(a, b) && !raw(b, a))
                .min_by_key(|(fa, _)| *fa)
            {
                held.insert(*fb, *fa);
            }
        }
        held
    }

    /// True (and counted once per episode) when inhibition holds `fp` back.
    fn hold(&mut self, fp: u64, held: &FxHashMap<u64, u64>) -> bool {
        let inst = self.instances.get_mut(&fp).expect("instance");
        inst.notice.inhibited = held.contains_key(&fp);
        if inst.notice.inhibited && !inst.notice.inhibition_counted {
            inst.notice.inhibition_counted = true;
            self.stats.inhibited += 1;
        }
        inst.notice.inhibited
    }

    /// The raised severity when `inst` is due to escalate at `now` (none at the top of
    /// `severities`).
    pub(super) fn escalation_due(&self, inst: &Instance, now: i64) -> Option<String> {
        let Phase::Firing { since_ns } = inst.phase else {
            return None;
        };
        let after = self.settings.escalate_after_ns?;
        if inst.notice.escalated || now.saturating_sub(since_ns) < after {
            return None;
        }
        let sev = &self.settings.severities;
        let pos = sev.iter().position(|s| *s == inst.notice.severity)?;
        sev.get(pos + 1).cloned()
    }

    pub(super) fn emit(&mut self, fp: u64, n: Notification, now: i64) -> Alert {
        match n {
            Notification::New => self.stats.emitted_new += 1,
            Notification::Grouped => self.stats.emitted_grouped += 1,
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
        s.pending = self
            .instances
            .values()
            .filter(|i| matches!(i.phase, Phase::Pending { .. }))
            .count();
        s.firing = self.instances.values().filter(|i| i.firing()).count();
        s.evidence_traces = self.correlator.trace_count();
        s.graph_edges = self.correlator.graph.edge_count();
    }
}
