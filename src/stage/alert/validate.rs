//! Checks of an alert configuration that the types cannot express, without I/O. Every
//! problem is recorded with its path and a hint.

use std::collections::HashSet;

use super::config::{AlertConfig, RuleConfig, SeriesSelector};
use super::template::Template;
use crate::model::ConfigErrors;
use crate::model::{
    is_label_name, ESCALATED_FROM_ANNOTATION, NOTIFICATION_ANNOTATION, RESERVED_LABELS,
};
use crate::stage::aggregate::AggregateConfig;
use crate::stage::aggregate::SERVICE_GRAPH_SCOPE;

/// Variables annotations may use besides the labels.
pub const VALUE_VARS: [&str; 3] = ["value", "threshold", "eta"];

const KINDS: &str = "threshold, dynamic, anomaly, trend, slo_burn or call_pattern";
const EDGE_DIMENSIONS: [&str; 3] = ["client", "server", "connection_type"];

impl AlertConfig {
    /// Checks the stage's settings; every problem goes to `errors` under `path`
    /// (e.g. `stages[3]`).
    pub fn validate(&self, path: &str, errors: &mut ConfigErrors) {
        if self.rules.is_empty() {
            errors.push(
                format!("{path}.rules"),
                "must list at least one rule",
                "e.g. - {name: high_error_rate, series: {scope: service}, threshold: {field: error_rate, above: 0.05}}",
            );
        }
        let mut names = HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let p = format!("{path}.rules[{i}]");
            if !rule.name.trim().is_empty() && !names.insert(rule.name.as_str()) {
                errors.push(
                    format!("{p}.name"),
                    format!("`{}` is used twice", rule.name),
                    "give each rule its own name",
                );
            }
            self.validate_rule(rule, &p, errors);
        }
        for (i, label) in self.group_by.iter().enumerate() {
            if !is_label_name(label) {
                errors.push(
                    format!("{path}.group_by[{i}]"),
                    format!("`{label}` is not a label name"),
                    "letters, digits and _, e.g. service",
                );
            }
        }
        if self.severities.is_empty() {
            errors.push(
                format!("{path}.severities"),
                "must list at least one severity",
                "e.g. [info, warning, critical]",
            );
        }
        let mut seen = HashSet::new();
        for (i, s) in self.severities.iter().enumerate() {
            if s.trim().is_empty() || !seen.insert(s) {
                errors.push(
                    format!("{path}.severities[{i}]"),
                    format!("`{s}` is empty or listed twice"),
                    "list distinct severities from lowest to highest",
                );
            }
        }
        for (key, d) in [
            ("repeat_interval", self.repeat_interval),
            ("resolve_timeout", self.resolve_timeout),
            ("series_expiry", self.series_expiry),
            ("correlation.window", self.correlation.window),
            (
                "correlation.service_graph_ttl",
                self.correlation.service_graph_ttl,
            ),
        ] {
            if d.is_zero() {
                errors.push(format!("{path}.{key}"), "must be more than 0", "e.g. 5m");
            }
        }
        if let Some(e) = self.escalate_after {
            if e.is_zero() {
                errors.push(
                    format!("{path}.escalate_after"),
                    "must be more than 0",
                    "e.g. 15m, or leave it out to never escalate",
                );
            }
            if self.severities.len() < 2 {
                errors.push(
                    format!("{path}.escalate_after"),
                    "needs at least two severities to escalate between",
                    "e.g. severities: [warning, critical]",
                );
            }
        }
        if self.max_series_per_rule == 0 {
            errors.push(
                format!("{path}.max_series_per_rule"),
                "must be at least 1",
                "e.g. 10000",
            );
        }
        let c = &self.correlation;
        if c.max_traces == 0 {
            errors.push(
                format!("{path}.correlation.max_traces"),
                "must be at least 1",
                "e.g. 10000",
            );
        }
        if !(0.0..=1.0).contains(&c.evidence_score) {
            errors.push(
                format!("{path}.correlation.evidence_score"),
                "must be between 0 and 1",
                "a score, e.g. 0.8",
            );
        }
        if c.baseline_samples < 8 {
            errors.push(
                format!("{path}.correlation.baseline_samples"),
                "must be at least 8",
                "e.g. 256",
            );
        }
    }

    /// Checks the rules' series selectors against the aggregate stage that feeds them:
    /// the scope exists, `match` names its dimensions, `window` is one of its sizes.
    pub fn validate_with_aggregate(
        &self,
        path: &str,
        aggregate: &AggregateConfig,
        errors: &mut ConfigErrors,
    ) {
        for (i, rule) in self.rules.iter().enumerate() {
            let Some(s) = &rule.series else { continue };
            let p = format!("{path}.rules[{i}].series");
            let dims: Vec<&str> = if s.scope == SERVICE_GRAPH_SCOPE && aggregate.service_graph {
                EDGE_DIMENSIONS.to_vec()
            } else if let Some(d) = aggregate.dimensions.get(&s.scope) {
                d.iter().map(String::as_str).collect()
            } else {
                let mut known: Vec<&str> =
                    aggregate.dimensions.keys().map(String::as_str).collect();
                if aggregate.service_graph {
                    known.push(SERVICE_GRAPH_SCOPE);
                }
                errors.push(
                    format!("{p}.scope"),
                    format!("`{}` is not a scope of the aggregate stage", s.scope),
                    hint_for(&s.scope, &known),
                );
                continue;
            };
            for key in s.match_.keys() {
                if !dims.contains(&key.as_str()) {
                    errors.push(
                        format!("{p}.match.{key}"),
                        format!("`{key}` is not a dimension of scope `{}`", s.scope),
                        hint_for(key, &dims),
                    );
                }
            }
            if let Some(w) = s.window {
                if !aggregate.windows.contains(&w) {
                    let sizes: Vec<String> = aggregate
                        .windows
                        .iter()
                        .map(|d| humantime::format_duration(*d).to_string())
                        .collect();
                    errors.push(
                        format!("{p}.window"),
                        format!(
                            "{} is not a window size of the aggregate stage",
                            humantime::format_duration(w)
                        ),
                        format!("one of: {}", sizes.join(", ")),
                    );
                }
            }
        }
    }

    fn validate_rule(&self, rule: &RuleConfig, p: &str, errors: &mut ConfigErrors) {
        if rule.name.trim().is_empty() {
            errors.push(
                format!("{p}.name"),
                "must not be empty",
                "e.g. high_error_rate",
            );
        }
        if !self.severities.contains(&rule.severity) {
            errors.push(
                format!("{p}.severity"),
                format!("`{}` is not one of severities", rule.severity),
                hint_for(
                    &rule.severity,
                    &self
                        .severities
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>(),
                ),
            );
        }
        for (name, value) in &rule.labels {
            let lp = format!("{p}.labels.{name}");
            if !is_label_name(name) {
                errors.push(lp.clone(), "is not a label name", "letters, digits and _");
            } else if RESERVED_LABELS.contains(&name.as_str()) {
                errors.push(
                    lp.clone(),
                    "is set by the alert stage",
                    "choose another label name",
                );
            }
            match Template::parse(value) {
                Err(e) => errors.push(lp, e.to_string(), "write {{label}}, e.g. {{service}}"),
                Ok(t) => {
                    if let Some(v) = t.vars().find(|v| VALUE_VARS.contains(v)) {
                        errors.push(
                            lp,
                            format!("`{{{{{v}}}}}` changes with every window and would change the fingerprint"),
                            "use it in annotations, not labels",
                        );
                    }
                }
            }
        }
        for (name, value) in &rule.annotations {
            let ap = format!("{p}.annotations.{name}");
            if name.trim().is_empty() {
                errors.push(
                    ap.clone(),
                    "annotation name must not be empty",
                    "e.g. summary",
                );
            } else if name == NOTIFICATION_ANNOTATION || name == ESCALATED_FROM_ANNOTATION {
                errors.push(
                    ap.clone(),
                    "is set by the alert stage",
                    "choose another annotation name",
                );
            }
            if let Err(e) = Template::parse(value) {
                errors.push(ap, e.to_string(), "write {{label}} or {{value}}");
            }
        }
        let kinds = rule.conditions();
        if kinds.len() != 1 {
            let message = if kinds.is_empty() {
                "needs a condition".to_string()
            } else {
                format!("has {} conditions ({})", kinds.len(), kinds.join(", "))
            };
            errors.push(
                p.to_string(),
                message,
                format!("give exactly one of {KINDS}"),
            );
        }
        let anomaly = rule.anomaly.is_some();
        let calls = rule.call_pattern.is_some();
        match (&rule.series, &rule.traces) {
            (Some(_), Some(_)) => errors.push(
                format!("{p}.traces"),
                "a rule watches series or traces, not both",
                "remove one of series and traces",
            ),
            (None, None) => errors.push(
                format!("{p}.series"),
                "is missing",
                if calls {
                    "add `traces: {}`"
                } else if anomaly {
                    "add `series: {scope: service}` or `traces: {}`"
                } else {
                    "add e.g. `series: {scope: service, window: 1m}`"
                },
            ),
            (None, Some(_)) if !anomaly && !calls && !kinds.is_empty() => errors.push(
                format!("{p}.traces"),
                "only anomaly and call_pattern rules watch traces",
                "use `series:` for aggregate conditions",
            ),
            (Some(_), None) if calls => errors.push(
                format!("{p}.series"),
                "call_pattern rules watch traces, not aggregate series",
                "replace `series:` with `traces: {}`",
            ),
            _ => {}
        }
        if let Some(s) = &rule.series {
            validate_series(s, &format!("{p}.series"), errors);
        }
        self.validate_condition(rule, p, errors);
    }
}

fn validate_series(s: &SeriesSelector, p: &str, errors: &mut ConfigErrors) {
    if s.scope.trim().is_empty() {
        errors.push(format!("{p}.scope"), "must not be empty", "e.g. service");
    }
    if s.window.is_some_and(|w| w.is_zero()) {
        errors.push(format!("{p}.window"), "must be more than 0", "e.g. 1m");
    }
    for (k, v) in &s.match_ {
        if k.trim().is_empty() || v.is_empty() {
            errors.push(
                format!("{p}.match"),
                "dimension names and values must not be empty",
                "e.g. {service: checkout}",
            );
        }
    }
}

pub(super) fn hint_for(got: &str, known: &[&str]) -> String {
    crate::model::did_you_mean(got, known, "one of")
}
