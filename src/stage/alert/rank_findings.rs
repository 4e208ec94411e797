//! The kinds of findings of one root operation's anomalous period (see `rank.rs`).

use std::collections::VecDeque;
use std::hash::Hash;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

use super::{format_ns, median_scale, Period, MIN_ANOMALOUS, MIN_CALLS, MIN_CHANGE, MIN_NORMAL};
use super::{CallChange, Profile, MIN_STRENGTH, Z_MIN};

type Findings = FxHashMap<Arc<str>, Vec<(f64, String)>>;

fn pct(share: f64) -> String {
    format!("{:.0} %", 100.0 * share)
}

fn add(out: &mut Findings, service: &Arc<str>, strength: f64, text: String) {
    if strength >= MIN_STRENGTH {
        out.entry(service.clone())
            .or_default()
            .push((strength, text));
    }
}

/// A count of the normal period: the baseline's plus those of the recent traces before.
fn normal_count<'p>(
    baseline: &FxHashMap<u64, f64>,
    before: impl Iterator<Item = &'p SmallVec<[(u64, u32); 16]>>,
    key: u64,
) -> f64 {
    baseline.get(&key).copied().unwrap_or(0.0)
        + before
            .flatten()
            .filter(|(k, _)| *k == key)
            .map(|(_, n)| f64::from(*n))
            .sum::<f64>()
}

impl Period<'_> {
    fn normal_spans(&self, op: u64) -> f64 {
        normal_count(&self.normal.spans, self.b.iter().map(|p| &p.spans), op)
    }

    fn normal_calls(&self, call: u64) -> f64 {
        normal_count(&self.normal.calls, self.b.iter().map(|p| &p.calls), call)
    }

    /// Child operations called markedly less or more often per call of their parent:
    /// each call whose count moved by at least `z_min` standard scores and
    /// `min_change` of its rate.
    pub(super) fn call_changes(&self, z_min: f64, min_change: f64) -> Vec<CallChange> {
        let mut spans: FxHashMap<u64, f64> = FxHashMap::default();
        let mut calls: FxHashMap<u64, f64> = FxHashMap::default();
        for p in self.a {
            for (k, n) in &p.spans {
                *spans.entry(*k).or_default() += f64::from(*n);
            }
            for (k, n) in &p.calls {
                *calls.entry(*k).or_default() += f64::from(*n);
            }
        }
        // every call of a parent seen in the anomalous period, whether or not it happened
        let mut keys: Vec<u64> = calls.keys().copied().collect();
        let parent_seen = |call: &u64| {
            self.ranker
                .calls
                .get(call)
                .is_some_and(|(parent, _)| spans.get(parent).is_some_and(|n| *n >= MIN_CALLS))
        };
        keys.extend(self.normal.calls.keys().filter(|k| parent_seen(k)));
        keys.extend(
            self.b
                .iter()
                .flat_map(|p| p.calls.iter().map(|(k, _)| *k))
                .filter(|k| parent_seen(k)),
        );
        keys.sort_unstable();
        keys.dedup();
        let mut out = Vec::new();
        for call in keys {
            let Some(&(parent, child)) = self.ranker.calls.get(&call) else {
                continue;
            };
            let na = spans.get(&parent).copied().unwrap_or(0.0);
            let nb = self.normal_spans(parent);
            if na < MIN_CALLS || nb < MIN_CALLS {
                continue;
            }
            let ca = calls.get(&call).copied().unwrap_or(0.0);
            let rb = self.normal_calls(call) / nb;
            let ra = ca / na;
            // Anscombe: 2√(x + 3/8) of a Poisson count is about normal with variance 1
            let expected = rb * na;
            let z = 2.0 * ((ca + 0.375).sqrt() - (expected + 0.375).sqrt());
            let change = (ra - rb).abs() / ra.max(rb);
            if z.abs() < z_min || change < min_change || (ra > rb && ca < MIN_CALLS) {
                continue;
            }
            out.push(CallChange {
                parent,
                child,
                z,
                change,
                before: rb,
                now: ra,
            });
        }
        out
    }

    /// The parent operation's service and the finding's words for a call change.
    pub(super) fn describe(&self, c: &CallChange) -> Option<(Arc<str>, String)> {
        let (p_svc, p_name) = self.ranker.ops.get(&c.parent)?;
        let (c_svc, c_name) = self.ranker.ops.get(&c.child)?;
        let (rb, ra) = (c.before, c.now);
        let text = if ra < rb {
            format!(
                "span {c_name} of {c_svc} missing from {} of {p_name} calls of {p_svc} \
                 ({rb:.2} per call before, {ra:.2} now) in traces of {}",
                pct(c.change),
                self.root
            )
        } else {
            format!(
                "{p_svc} {p_name} calls {c_name} of {c_svc} {ra:.2} times per call \
                 ({rb:.2} before) in traces of {}",
                self.root
            )
        };
        Some((p_svc.clone(), text))
    }

    /// Findings of [`Self::call_changes`] at the ranking's thresholds, against the
    /// parent's service, whose behaviour changed (it returned early, failed half-way,
    /// retried).
    pub(super) fn calls(&self, out: &mut Findings) {
        for c in self.call_changes(Z_MIN, MIN_CHANGE) {
            if let Some((service, text)) = self.describe(&c) {
                add(out, &service, c.change, text);
            }
        }
    }

    /// Services whose critical-path self time is above its normal range.
    pub(super) fn self_time(&self, out: &mut Findings) {
        for (service, strength, times) in self.times_above(|p| &p.self_ns, &self.normal.self_ns) {
            let text = format!("{service} self time on the critical path {times}");
            add(out, service, strength, text);
        }
    }

    /// Waits outside the callee's spans that grew (the caller's client span beyond the
    /// callee's server span): when a caller waits longer on most of the services it
    /// calls (at least two), the caller is slow to send and receive; otherwise each
    /// callee whose calls wait longer is (a slow network to it, requests queueing
    /// before it).
    /// Such callers go into `slow_callers`.
    pub(super) fn wait_time(&self, out: &mut Findings, slow_callers: &mut FxHashSet<Arc<str>>) {
        let grown = self.times_above(|p| &p.wait_ns, &self.normal.wait_ns);
        let mut called: FxHashMap<&Arc<str>, FxHashSet<&Arc<str>>> = FxHashMap::default();
        for ((caller, callee), _) in self.a.iter().flat_map(|p| p.wait_ns.iter()) {
            called.entry(caller).or_default().insert(callee);
        }
        type Waits<'w> = Vec<(&'w Arc<str>, f64, String)>;
        let mut by_caller: FxHashMap<&Arc<str>, Waits> = FxHashMap::default();
        for ((caller, callee), strength, times) in grown {
            by_caller
                .entry(caller)
                .or_default()
                .push((callee, strength, times));
        }
        for (caller, mut waits) in by_caller {
            let callees = called.get(caller).map_or(0, FxHashSet::len);
            if waits.len() >= 2 && 2 * waits.len() >= callees {
                waits.sort_by(|x, y| y.1.total_cmp(&x.1).then_with(|| x.0.cmp(y.0)));
                let names: Vec<&str> = waits.iter().map(|w| &**w.0).collect();
                let text = format!(
                    "{caller} waits longer on {} of the {callees} services it calls ({}): \
                     {} {}",
                    waits.len(),
                    names.join(", "),
                    waits[0].0,
                    waits[0].2
                );
                add(out, caller, waits[0].1, text);
                slow_callers.insert(caller.clone());
            } else {
                for (callee, strength, times) in waits {
                    let text = format!(
                        "calls from {caller} to {callee} wait outside its spans (network, \
                         queueing) on the critical path {times}"
                    );
                    add(out, callee, strength, text);
                }
            }
        }
    }

    /// Keys (a service, a caller and callee) whose time per trace (`times` of each
    /// profile) is above its normal range (median plus the largest of 3 robust
    /// deviations, 50 % and 1 ms) in more anomalous traces than normal ones: each with
    /// the share beyond the normal one and "<normal> → <typical> in <share> of <n>
    /// traces of <root>".
    fn times_above<'k, K: Eq + Hash + 'k>(
        &'k self,
        times: impl Fn(&'k Profile) -> &'k [(K, i64)],
        baseline: &FxHashMap<K, VecDeque<f64>>,
    ) -> Vec<(&'k K, f64, String)> {
        let mut values: FxHashMap<&K, Vec<f64>> = FxHashMap::default();
        for p in self.a {
            for (k, ns) in times(p) {
                values.entry(k).or_default().push(*ns as f64);
            }
        }
        let mut found = Vec::new();
        for (key, now) in values {
            let mut normal: Vec<f64> = baseline
                .get(key)
                .into_iter()
                .flatten()
                .copied()
                .chain(
                    self.b
                        .iter()
                        .flat_map(|p| times(p).iter())
                        .filter(|(k, _)| k == key)
                        .map(|(_, ns)| *ns as f64),
                )
                .collect();
            if normal.len() < MIN_NORMAL || now.len() < MIN_ANOMALOUS {
                continue;
            }
            let (median, scale) = median_scale(&mut normal);
            let bound = median + (3.0 * scale).max(0.5 * median).max(1e6);
            let mut above: Vec<f64> = now.iter().copied().filter(|v| *v > bound).collect();
            if above.len() < MIN_ANOMALOUS {
                continue;
            }
            let share = above.len() as f64 / now.len() as f64;
            let normal_share =
                normal.iter().filter(|v| **v > bound).count() as f64 / normal.len() as f64;
            let (typical, _) = median_scale(&mut above);
            let times = format!(
                "{} → {} in {} of {} traces of {}",
                format_ns(median),
                format_ns(typical),
                pct(share),
                now.len(),
                self.root
            );
            found.push((key, share - normal_share, times));
        }
        found
    }

    /// Services whose entry spans are markedly shorter than normal.
    pub(super) fn early_returns(&self, out: &mut Findings) {
        let mut values: FxHashMap<u64, Vec<f64>> = FxHashMap::default();
        for p in self.a {
            for (op, ns) in &p.entries {
                values.entry(*op).or_default().push(*ns as f64);
            }
        }
        for (op, now) in values {
            let Some((service, name)) = self.ranker.ops.get(&op) else {
                continue;
            };
            let mut normal: Vec<f64> = self
                .normal
                .entries
                .get(&op)
                .into_iter()
                .flatten()
                .copied()
                .chain(
                    self.b
                        .iter()
                        .flat_map(|p| p.entries.iter())
                        .filter(|(k, _)| *k == op)
                        .map(|(_, ns)| *ns as f64),
                )
                .collect();
            if normal.len() < MIN_NORMAL || now.len() < MIN_ANOMALOUS {
                continue;
            }
            let (median, scale) = median_scale(&mut normal);
            let bound = median - (3.0 * scale).max(0.3 * median).max(1e6);
            let mut below: Vec<f64> = now.iter().copied().filter(|v| *v < bound).collect();
            if below.len() < MIN_ANOMALOUS {
                continue;
            }
            let share = below.len() as f64 / now.len() as f64;
            let normal_share =
                normal.iter().filter(|v| **v < bound).count() as f64 / normal.len() as f64;
            let (typical, _) = median_scale(&mut below);
            add(
                out,
                service,
                share - normal_share,
                format!(
                    "{name} of {service} returns after {} instead of {} in {} of {} calls \
                     in traces of {}",
                    format_ns(typical),
                    format_ns(median),
                    pct(share),
                    now.len(),
                    self.root
                ),
            );
        }
    }

    /// Services that originate the failed traces' errors more often than normal.
    pub(super) fn error_origins(&self, out: &mut Findings) {
        let mut origins: FxHashMap<&Arc<str>, f64> = FxHashMap::default();
        for o in self.a.iter().filter_map(|p| p.error_origin.as_ref()) {
            *origins.entry(o).or_default() += 1.0;
        }
        let failed: f64 = origins.values().sum();
        let traces_b = self.normal.traces + self.b.len() as f64;
        for (service, n) in origins {
            if n < MIN_ANOMALOUS as f64 {
                continue;
            }
            let before = self.normal.origins.get(service).copied().unwrap_or(0.0)
                + self
                    .b
                    .iter()
                    .filter(|p| p.error_origin.as_ref() == Some(service))
                    .count() as f64;
            let rate = n / self.a.len() as f64;
            let normal_rate = before / traces_b;
            if rate <= 2.0 * normal_rate {
                continue;
            }
            let share = n / failed;
            add(
                out,
                service,
                share * (1.0 - normal_rate / rate),
                format!(
                    "error origin in {} of {} failed traces of {} ({} of all, {} before)",
                    pct(share),
                    failed,
                    self.root,
                    pct(rate),
                    pct(normal_rate)
                ),
            );
        }
    }
}
