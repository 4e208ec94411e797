//! Query parameters of spanline's own API (`/api/spanline/…`): times as RFC 3339
//! (`2026-01-01T00:00:00Z`), unix milliseconds, `now`, or relative to now (`-1h`,
//! `now-15m`); window sizes as durations (`10s`, `1m`); names of bounded length.

use crate::repository::{AlertQuery, MAX_SEARCH_LIMIT};

use super::params::{go_duration, BadParam};
use crate::serve::trend::Field;

fn bad(parameter: &'static str, detail: impl Into<String>) -> BadParam {
    BadParam {
        parameter,
        detail: detail.into(),
    }
}

/// The longest name (service, operation, rule, fingerprint, scope) a request may give.
pub const MAX_NAME_LEN: usize = 512;
/// Series an answer of `series`, `compare` or `trend` holds by default.
pub const DEFAULT_SERIES_LIMIT: usize = 100;
/// The most series one answer holds.
pub const MAX_SERIES_LIMIT: usize = 1000;
/// The time range `series` and `trend` read when none is given.
pub const DEFAULT_RANGE_MS: i64 = 3600 * 1000;

fn last<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, v)| k == name && !v.trim().is_empty())
        .map(|(_, v)| v.trim())
}

/// A name parameter: trimmed, at most [`MAX_NAME_LEN`] bytes.
pub fn name(params: &[(String, String)], p: &'static str) -> Result<Option<String>, BadParam> {
    match last(params, p) {
        Some(v) if v.len() > MAX_NAME_LEN => {
            Err(bad(p, format!("longer than {MAX_NAME_LEN} bytes")))
        }
        v => Ok(v.map(str::to_string)),
    }
}

/// Parses a time: unix milliseconds, RFC 3339 in UTC (`2026-01-01T10:00:00Z`, fractions
/// allowed), `now`, or `-<duration>` / `now-<duration>` before `now_ms`. Unix millis.
pub fn time(text: &str, now_ms: i64) -> Result<i64, String> {
    let t = text.trim();
    if t.bytes().all(|b| b.is_ascii_digit()) && !t.is_empty() {
        return t
            .parse::<i64>()
            .map_err(|_| format!("`{t}` is out of range"));
    }
    if t == "now" {
        return Ok(now_ms);
    }
    if let Some(ago) = t.strip_prefix("now-").or_else(|| t.strip_prefix('-')) {
        let ns = go_duration(ago)?;
        return Ok(now_ms.saturating_sub(ns / 1_000_000));
    }
    let at = humantime::parse_rfc3339_weak(t).map_err(|_| {
        format!("`{t}` is not a time: RFC 3339 (2026-01-01T10:00:00Z), unix milliseconds or -1h")
    })?;
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("`{t}` is before 1970"))?
        .as_millis();
    i64::try_from(ms).map_err(|_| format!("`{t}` is out of range"))
}

/// A range `[start, end)` in unix millis from two time parameters (relative times are
/// before `now_ms`); `end` defaults to `default_end_ms`, `start` to `default_len_ms`
/// before `end`.
pub fn range(
    params: &[(String, String)],
    (start_p, end_p): (&'static str, &'static str),
    now_ms: i64,
    (default_end_ms, default_len_ms): (i64, i64),
) -> Result<(i64, i64), BadParam> {
    let end = last(params, end_p)
        .map(|v| time(v, now_ms).map_err(|e| bad(end_p, e)))
        .transpose()?
        .unwrap_or(default_end_ms);
    let start = last(params, start_p)
        .map(|v| time(v, now_ms).map_err(|e| bad(start_p, e)))
        .transpose()?
        .unwrap_or(end.saturating_sub(default_len_ms));
    if start >= end {
        return Err(bad(start_p, format!("must be before {end_p}")));
    }
    Ok((start, end))
}

/// Unix millis as nanos (saturating).
pub fn ms_to_ns(ms: i64) -> i64 {
    ms.saturating_mul(1_000_000)
}

/// `window`: a window size such as `10s` or `1m`, as nanos.
pub fn window(params: &[(String, String)]) -> Result<Option<i64>, BadParam> {
    last(params, "window")
        .map(|v| match go_duration(v) {
            Ok(ns) if ns > 0 => Ok(ns),
            Ok(_) => Err(bad("window", "must be positive")),
            Err(e) => Err(bad("window", e)),
        })
        .transpose()
}

/// `limit`: a positive count, default `default`, capped at `max`.
pub fn limit(params: &[(String, String)], default: usize, max: usize) -> Result<usize, BadParam> {
    match last(params, "limit") {
        None => Ok(default),
        Some(v) => match v.parse::<u64>() {
            Ok(0) => Ok(default),
            Ok(n) => Ok(usize::try_from(n).unwrap_or(max).min(max)),
            Err(_) => Err(bad("limit", format!("`{v}` is not a positive integer"))),
        },
    }
}

/// `scope`: a dimension set name (letters, digits, `_`, `-`, `.`).
pub fn scope(params: &[(String, String)]) -> Result<Option<String>, BadParam> {
    let s = name(params, "scope")?;
    if let Some(s) = &s {
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(bad("scope", format!("`{s}` is not a dimension set name")));
        }
    }
    Ok(s)
}

/// `field` of `trend` (default `p99`).
pub fn field(params: &[(String, String)]) -> Result<Field, BadParam> {
    match last(params, "field") {
        None => Ok(Field::P99),
        Some(v) => Field::parse(v).ok_or_else(|| {
            bad(
                "field",
                format!("`{v}` is not one of {}", Field::NAMES.join(", ")),
            )
        }),
    }
}

/// `bound` of `trend`: a finite number.
pub fn bound(params: &[(String, String)]) -> Result<Option<f64>, BadParam> {
    last(params, "bound")
        .map(|v| match v.parse::<f64>() {
            Ok(b) if b.is_finite() => Ok(b),
            _ => Err(bad("bound", format!("`{v}` is not a number"))),
        })
        .transpose()
}

/// The parameters of `alerts`: the query, and whether only active alerts are wanted.
pub fn alerts(params: &[(String, String)], now_ms: i64) -> Result<(AlertQuery, bool), BadParam> {
    let active = match last(params, "active") {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => return Err(bad("active", format!("`{v}` is not true or false"))),
    };
    let t = |p: &'static str| {
        last(params, p)
            .map(|v| time(v, now_ms).map_err(|e| bad(p, e)))
            .transpose()
    };
    let q = AlertQuery {
        fingerprint: name(params, "fingerprint")?,
        rule: name(params, "rule")?,
        service: name(params, "service")?,
        from_ms: t("start")?,
        to_ms: t("end")?,
        limit: limit(
            params,
            crate::repository::DEFAULT_SEARCH_LIMIT,
            MAX_SEARCH_LIMIT,
        )?,
    };
    if let (Some(s), Some(e)) = (q.from_ms, q.to_ms) {
        if s >= e {
            return Err(bad("start", "must be before end"));
        }
    }
    Ok((q, active))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600_000;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn times_in_every_accepted_form() {
        assert_eq!(time("1767225600000", 0), Ok(NOW));
        assert_eq!(time("2026-01-01T00:00:00Z", 0), Ok(NOW));
        assert_eq!(time("2026-01-01T00:00:01.5Z", 0), Ok(NOW + 1500));
        assert_eq!(time("now", NOW), Ok(NOW));
        assert_eq!(time("-1h", NOW), Ok(NOW - 3_600_000));
        assert_eq!(time("now-90s", NOW), Ok(NOW - 90_000));
        assert!(time("yesterday", NOW).is_err());
        assert!(time("99999999999999999999", NOW).is_err());
    }

    #[test]
    fn ranges_default_and_name_the_bad_parameter() {
        assert_eq!(
            range(&p(&[]), ("start", "end"), NOW, (NOW, 1000)),
            Ok((NOW - 1000, NOW))
        );
        // relative times are before now, whatever the default end
        let names = ("baselineStart", "baselineEnd");
        assert_eq!(
            range(
                &p(&[("baselineStart", "-2h")]),
                names,
                NOW,
                (NOW - 60_000, 1000)
            ),
            Ok((NOW - 7_200_000, NOW - 60_000))
        );
        let e = range(
            &p(&[("start", "-1h"), ("end", "-2h")]),
            ("start", "end"),
            NOW,
            (NOW, 1),
        )
        .unwrap_err();
        assert_eq!(e.parameter, "start");
        let e = range(
            &p(&[("baselineEnd", "soon")]),
            ("baselineStart", "baselineEnd"),
            NOW,
            (NOW, 1),
        )
        .unwrap_err();
        assert_eq!(e.parameter, "baselineEnd");
    }

    #[test]
    fn windows_limits_scopes_fields_and_bounds() {
        assert_eq!(window(&p(&[("window", "10s")])), Ok(Some(10_000_000_000)));
        assert_eq!(
            window(&p(&[("window", "0s")])).unwrap_err().parameter,
            "window"
        );
        assert_eq!(limit(&p(&[("limit", "5000")]), 100, 1000), Ok(1000));
        assert_eq!(
            limit(&p(&[("limit", "-1")]), 100, 1000)
                .unwrap_err()
                .parameter,
            "limit"
        );
        assert_eq!(
            scope(&p(&[("scope", "operation")])),
            Ok(Some("operation".into()))
        );
        assert_eq!(
            scope(&p(&[("scope", "a'b")])).unwrap_err().parameter,
            "scope"
        );
        assert_eq!(field(&p(&[])), Ok(Field::P99));
        assert_eq!(
            field(&p(&[("field", "p42")])).unwrap_err().parameter,
            "field"
        );
        assert_eq!(bound(&p(&[("bound", "250")])), Ok(Some(250.0)));
        assert_eq!(
            bound(&p(&[("bound", "inf")])).unwrap_err().parameter,
            "bound"
        );
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            name(&p(&[("service", &long)]), "service")
                .unwrap_err()
                .parameter,
            "service"
        );
    }

    #[test]
    fn alert_parameters() {
        let (q, active) = alerts(
            &p(&[
                ("rule", "r"),
                ("service", "s"),
                ("active", "true"),
                ("start", "-1h"),
            ]),
            NOW,
        )
        .unwrap();
        assert!(active);
        assert_eq!(
            (q.rule.as_deref(), q.service.as_deref()),
            (Some("r"), Some("s"))
        );
        assert_eq!(
            (q.from_ms, q.to_ms, q.limit),
            (Some(NOW - 3_600_000), None, 20)
        );
        assert_eq!(
            alerts(&p(&[("active", "yes")]), NOW).unwrap_err().parameter,
            "active"
        );
        assert_eq!(
            alerts(&p(&[("end", "x")]), NOW).unwrap_err().parameter,
            "end"
        );
    }
}
