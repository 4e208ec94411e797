//! Checks of each rule condition's fields, bounds and parameters.

use super::config::{AlertConfig, Bound, RuleConfig};
use super::settings::{bound_value, nanos, Field};
use super::validate::hint_for;
use crate::model::ConfigErrors;

impl AlertConfig {
    pub(super) fn validate_condition(&self, rule: &RuleConfig, p: &str, errors: &mut ConfigErrors) {
        if let Some(t) = &rule.threshold {
            let cp = format!("{p}.threshold");
            if let Some(field) = check_field(&t.field, &cp, errors) {
                let above = check_bound(&t.above, field, &format!("{cp}.above"), errors);
                let below = check_bound(&t.below, field, &format!("{cp}.below"), errors);
                if t.above.is_none() && t.below.is_none() {
                    errors.push(cp.clone(), "needs `above` or `below`", "e.g. above: 0.05");
                }
                if let (Some(a), Some(b)) = (above, below) {
                    if b >= a {
                        errors.push(
                            format!("{cp}.below"),
                            "must be less than above (the rule fires outside [below, above])",
                            "swap the bounds, or keep one",
                        );
                    }
                }
            }
        }
        if let Some(d) = &rule.dynamic {
            let cp = format!("{p}.dynamic");
            let field = check_field(&d.field, &cp, errors);
            if !(d.k.is_finite() && d.k > 0.0) {
                errors.push(format!("{cp}.k"), "must be more than 0", "e.g. 3");
            }
            if d.min_samples < 3 {
                errors.push(format!("{cp}.min_samples"), "must be at least 3", "e.g. 10");
            }
            if d.samples < d.min_samples {
                errors.push(
                    format!("{cp}.samples"),
                    format!("must be at least min_samples ({})", d.min_samples),
                    "e.g. 60",
                );
            }
            if let (Some(field), Some(b)) = (field, &d.min_delta) {
                match bound_value(b, field.is_nanos()) {
                    Ok(v) if v < 0.0 => {
                        errors.push(format!("{cp}.min_delta"), "must not be negative", "e.g. 0")
                    }
                    Ok(_) => {}
                    Err(e) => errors.push(format!("{cp}.min_delta"), e, bound_hint(field)),
                }
            }
        }
        if let Some(a) = &rule.anomaly {
            let cp = format!("{p}.anomaly");
            if !(a.score > 0.0 && a.score < 1.0) {
                errors.push(
                    format!("{cp}.score"),
                    "must be between 0 and 1 (exclusive)",
                    "e.g. 0.8",
                );
            }
            if a.windows == 0 {
                errors.push(format!("{cp}.windows"), "must be at least 1", "e.g. 3");
            }
        }
        if let Some(c) = &rule.call_pattern {
            let cp = format!("{p}.call_pattern");
            if !(c.z.is_finite() && c.z > 0.0) {
                errors.push(format!("{cp}.z"), "must be more than 0", "e.g. 4");
            }
            if !(c.min_change > 0.0 && c.min_change < 1.0) {
                errors.push(
                    format!("{cp}.min_change"),
                    "must be between 0 and 1 (exclusive)",
                    "e.g. 0.3",
                );
            }
            if c.window.is_zero() {
                errors.push(format!("{cp}.window"), "must be more than 0", "e.g. 1m");
            }
        }
        if let Some(t) = &rule.trend {
            let cp = format!("{p}.trend");
            if let Some(field) = check_field(&t.field, &cp, errors) {
                check_bound(&t.above, field, &format!("{cp}.above"), errors);
                check_bound(&t.below, field, &format!("{cp}.below"), errors);
            }
            if t.above.is_some() == t.below.is_some() {
                errors.push(
                    cp.clone(),
                    "needs exactly one of `above` and `below`",
                    "e.g. above: 2s",
                );
            }
            if t.windows < 3 {
                errors.push(format!("{cp}.windows"), "must be at least 3", "e.g. 10");
            }
            if t.horizon.is_zero() {
                errors.push(format!("{cp}.horizon"), "must be more than 0", "e.g. 30m");
            }
        }
        if let Some(s) = &rule.slo_burn {
            let cp = format!("{p}.slo_burn");
            if !(s.objective > 0.0 && s.objective < 1.0) {
                errors.push(
                    format!("{cp}.objective"),
                    "must be between 0 and 1 (exclusive)",
                    "a share of good calls, e.g. 0.999",
                );
            } else if s.factor.is_finite() && s.factor * (1.0 - s.objective) > 1.0 {
                errors.push(
                    format!("{cp}.factor"),
                    "can never fire: factor × (1 − objective) is more than 1",
                    "lower the factor, e.g. 14.4 with objective 0.999",
                );
            }
            if !(s.factor.is_finite() && s.factor > 0.0) {
                errors.push(format!("{cp}.factor"), "must be more than 0", "e.g. 14.4");
            }
            if s.short.is_zero() || s.short >= s.long {
                errors.push(
                    format!("{cp}.short"),
                    format!(
                        "must be more than 0 and less than long ({})",
                        humantime::format_duration(s.long)
                    ),
                    "e.g. long: 1h with short: 5m",
                );
            }
            if let Some(w) = rule.series.as_ref().and_then(|s| s.window) {
                if nanos(w) > nanos(s.short) {
                    errors.push(
                        format!("{cp}.short"),
                        format!(
                            "is shorter than the series window ({})",
                            humantime::format_duration(w)
                        ),
                        "burn windows must hold whole aggregate windows",
                    );
                }
            }
        }
    }
}

fn check_field(name: &str, cp: &str, errors: &mut ConfigErrors) -> Option<Field> {
    let field = Field::parse(name);
    if field.is_none() {
        let known: Vec<&str> = Field::ALL.iter().map(|(n, _)| *n).collect();
        errors.push(
            format!("{cp}.field"),
            format!("unknown field `{name}`"),
            hint_for(name, &known),
        );
    }
    field
}

fn check_bound(
    b: &Option<Bound>,
    field: Field,
    bp: &str,
    errors: &mut ConfigErrors,
) -> Option<f64> {
    let v = match bound_value(b.as_ref()?, field.is_nanos()) {
        Ok(v) => v,
        Err(e) => {
            errors.push(bp, e, bound_hint(field));
            return None;
        }
    };
    if field.is_ratio() && !(0.0..=1.0).contains(&v) {
        errors.push(
            bp,
            format!(
                "{} is a share: the bound must be between 0 and 1",
                field.name()
            ),
            "e.g. 0.05",
        );
        return None;
    }
    if v < 0.0 {
        errors.push(
            bp,
            format!("{} is never negative", field.name()),
            bound_hint(field),
        );
        return None;
    }
    Some(v)
}

fn bound_hint(field: Field) -> &'static str {
    if field.is_nanos() {
        "a duration (e.g. 750ms) or nanoseconds"
    } else if field.is_ratio() {
        "a share, e.g. 0.05"
    } else {
        "a number, e.g. 100"
    }
}
