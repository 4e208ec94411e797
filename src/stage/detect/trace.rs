//! Scoring of traces: each closed trace against the baseline of its root operation, with
//! a share feature per service on its critical path (the first ones seen).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{Analysis, AnomalyScore, Subject, Trace};

use super::core::Core;
use super::features;
use super::{tracked, Detector, Target, TraceKey};

/// A root operation's state: the shared core and the services whose shares it tracks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TraceState {
    pub(super) core: Core,
    pub(super) services: Vec<Arc<str>>,
}

impl Detector {
    /// Scores a closed trace against its root operation's baseline and learns from it.
    /// Amendments and traces without a root are not scored.
    pub fn observe_trace(&mut self, t: &Trace, a: &Analysis, out: &mut Vec<AnomalyScore>) {
        if !self.settings.traces || t.amendment {
            return;
        }
        let (Some(service), Some(name)) = (&a.root_service, &a.root_name) else {
            return;
        };
        let key = TraceKey {
            root_service: service.clone(),
            root_operation: name.clone(),
        };
        let settings = &self.settings;
        let Some(state) = tracked(&mut self.traces, &key, settings, &mut self.stats, || {
            TraceState {
                core: Core::new(&features::trace_specs(), true, settings),
                services: Vec::new(),
            }
        }) else {
            return;
        };
        let (fixed, shares) = features::trace_features(a);
        for (svc, _) in &shares {
            if state.services.len() < features::MAX_SHARE_SERVICES && !state.services.contains(svc)
            {
                state.core.add_feature(&features::share_spec(svc), settings);
                state.services.push(svc.clone());
            }
        }
        let mut raw: Vec<f64> = fixed.to_vec();
        raw.extend(state.services.iter().map(|svc| {
            shares
                .iter()
                .find(|(s, _)| s == svc)
                .map_or(0.0, |(_, v)| *v)
        }));
        let at_ns = t.end_ns();
        let outcome = state.core.observe(
            at_ns,
            &raw,
            Some(features::structure_signature(t)),
            settings,
        );
        let subject = Subject::Trace {
            root_service: key.root_service.clone(),
            root_operation: key.root_operation.clone(),
            trace_id: t.trace_id,
        };
        self.finish(Target::Trace(key), subject, at_ns, outcome, out);
    }
}
