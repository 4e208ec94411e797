//! The alert stage's lifecycle as state a changelog keeps: every instance (phase and
//! since when, the group batch it waits for, what was emitted and when, escalation,
//! inhibition, incident membership, the rule's memory of the series) and the engine's
//! open group batches, waiting resolutions and live incidents. The correlator's evidence (recent traces, the service graph,
//! self-time baselines) is not kept: it is learnt again from the traces that follow.

use serde::{Deserialize, Serialize};

use super::eval::EvalState;
use super::template::hex64;
use super::{fingerprint, AlertEngine, Incident, Instance};
use crate::model::Alert;

/// The engine's lifecycle state besides its instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifecycleMeta {
    /// The event time of the last `advance`.
    pub now_ns: i64,
    /// Open group batches: group key and due time, by key.
    pub groups: Vec<(String, i64)>,
    /// Resolutions waiting for the next `advance`.
    pub outbox: Vec<Alert>,
    /// Live incidents, oldest first.
    pub incidents: Vec<Incident>,
}

/// What restoring an instance did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restored {
    Instance,
    /// No rule of this pipeline makes that fingerprint any more (the rules changed
    /// between runs): dropped.
    UnknownRule,
}

impl AlertEngine {
    /// Every alert instance, by fingerprint.
    pub fn instances(&self) -> impl Iterator<Item = (u64, &Instance)> {
        self.instances.iter().map(|(fp, i)| (*fp, i))
    }

    /// The lifecycle state besides the instances.
    pub fn lifecycle_meta(&self) -> LifecycleMeta {
        let mut groups: Vec<(String, i64)> =
            self.groups.iter().map(|(k, d)| (k.clone(), *d)).collect();
        groups.sort();
        LifecycleMeta {
            now_ns: self.now_ns,
            groups,
            outbox: self.outbox.clone(),
            incidents: self.incidents.clone(),
        }
    }

    /// Puts an instance back as it was checkpointed. Its rule is found by index and
    /// checked by fingerprint; a rule whose condition changed kind starts the series'
    /// memory afresh.
    pub fn restore_instance(&mut self, mut inst: Instance) -> Restored {
        let Some(rule) = self.settings.rules.get(inst.rule) else {
            return Restored::UnknownRule;
        };
        let fp = fingerprint(
            &rule.name,
            inst.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        if hex64(fp) != inst.fingerprint {
            return Restored::UnknownRule;
        }
        let fresh = EvalState::new(&rule.condition);
        if std::mem::discriminant(&fresh) != std::mem::discriminant(&inst.eval) {
            inst.eval = fresh;
        }
        self.series.insert(inst.series_id, fp);
        let ri = inst.rule;
        if self.instances.insert(fp, inst).is_none() {
            self.per_rule[ri] += 1;
        }
        Restored::Instance
    }

    /// Forgets the instance of `fp` (its changelog record was deleted).
    pub fn forget_instance(&mut self, fp: u64) {
        if let Some(inst) = self.instances.remove(&fp) {
            self.per_rule[inst.rule] = self.per_rule[inst.rule].saturating_sub(1);
        }
    }

    /// Puts back the lifecycle state besides the instances.
    pub fn restore_meta(&mut self, meta: LifecycleMeta) {
        self.now_ns = self.now_ns.max(meta.now_ns);
        self.groups.extend(meta.groups);
        self.outbox.extend(meta.outbox);
        for inc in meta.incidents {
            if !self.incidents.iter().any(|i| i.id == inc.id) {
                self.incidents.push(inc);
            }
        }
    }

    /// Forgets the lifecycle (it is kept in a changelog and restored by the next owner);
    /// the correlator's evidence stays.
    pub fn clear_lifecycle(&mut self) {
        self.instances.clear();
        self.series.clear();
        self.per_rule.iter_mut().for_each(|n| *n = 0);
        self.groups.clear();
        self.outbox.clear();
        self.incidents.clear();
        self.now_ns = i64::MIN;
    }
}
