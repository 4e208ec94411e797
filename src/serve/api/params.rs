//! Query parameters of the Jaeger API, parsed as Jaeger's query service parses them:
//! times in microseconds (`start`, `end`) or milliseconds (`endTs`, `lookback`),
//! durations in Go's syntax (`1.2ms`, `100ms`, `1m30s`), tags as a JSON object
//! (`tags={"http.status_code":"500"}`), as `key:value` pairs (`tag=error:true`,
//! repeatable) or as logfmt (`tags=error=true span.kind=server`).

use thiserror::Error;

use crate::model::TraceId;
use crate::repository::{TraceQuery, DEFAULT_SEARCH_LIMIT, MAX_SEARCH_LIMIT};

/// A parameter that cannot be used as given; answered with 400.
#[derive(Debug, Error, PartialEq)]
#[error("invalid parameter '{parameter}': {detail}")]
pub struct BadParam {
    pub parameter: &'static str,
    pub detail: String,
}

fn bad(parameter: &'static str, detail: impl Into<String>) -> BadParam {
    BadParam {
        parameter,
        detail: detail.into(),
    }
}

/// How long Jaeger's dependencies endpoint looks back by default.
pub const DEFAULT_DEPENDENCY_LOOKBACK_MS: i64 = 24 * 3600 * 1000;

/// A parsed `/api/traces` request: a search, or trace ids to fetch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TraceSearch {
    pub query: TraceQuery,
    /// `traceID=` parameters: fetch these instead of searching.
    pub trace_ids: Vec<TraceId>,
}

fn last<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, v)| k == name && !v.trim().is_empty())
        .map(|(_, v)| v.trim())
}

/// Parses the parameters of `/api/traces`.
pub fn trace_search(params: &[(String, String)]) -> Result<TraceSearch, BadParam> {
    let mut q = TraceQuery {
        service: last(params, "service").map(str::to_string),
        operation: last(params, "operation").map(str::to_string),
        ..Default::default()
    };
    if q.operation.is_some() && q.service.is_none() {
        return Err(bad("operation", "needs a service parameter"));
    }
    q.start_ns = last(params, "start")
        .map(|v| micros_to_ns("start", v))
        .transpose()?;
    q.end_ns = last(params, "end")
        .map(|v| micros_to_ns("end", v))
        .transpose()?;
    if let (Some(s), Some(e)) = (q.start_ns, q.end_ns) {
        if s > e {
            return Err(bad("start", "is after end"));
        }
    }
    q.min_duration_ns = last(params, "minDuration")
        .map(|v| go_duration(v).map_err(|e| bad("minDuration", e)))
        .transpose()?;
    q.max_duration_ns = last(params, "maxDuration")
        .map(|v| go_duration(v).map_err(|e| bad("maxDuration", e)))
        .transpose()?;
    if let (Some(min), Some(max)) = (q.min_duration_ns, q.max_duration_ns) {
        if max < min {
            return Err(bad("maxDuration", "must be greater than minDuration"));
        }
    }
    q.limit = match last(params, "limit") {
        None => DEFAULT_SEARCH_LIMIT,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n > 0 => usize::try_from(n)
                .unwrap_or(MAX_SEARCH_LIMIT)
                .min(MAX_SEARCH_LIMIT),
            Ok(0) => DEFAULT_SEARCH_LIMIT,
            _ => return Err(bad("limit", format!("`{v}` is not a positive integer"))),
        },
    };
    for (k, v) in params {
        match k.as_str() {
            "tags" if !v.trim().is_empty() => q.tags.extend(tags(v)?),
            "tag" if !v.trim().is_empty() => {
                let (key, value) = v
                    .split_once(':')
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| bad("tag", format!("`{v}` is not key:value")))?;
                q.tags.push((key.to_string(), value.to_string()));
            }
            _ => {}
        }
    }
    if q.tags.len() > MAX_TAGS {
        return Err(bad("tags", format!("at most {MAX_TAGS} tags")));
    }
    let trace_ids = params
        .iter()
        .filter(|(k, v)| k == "traceID" && !v.is_empty())
        .map(|(_, v)| trace_id("traceID", v))
        .collect::<Result<Vec<_>, _>>()?;
    if trace_ids.len() > MAX_SEARCH_LIMIT {
        return Err(bad("traceID", format!("at most {MAX_SEARCH_LIMIT} ids")));
    }
    Ok(TraceSearch {
        query: q,
        trace_ids,
    })
}

/// The most tags one search may give.
pub const MAX_TAGS: usize = 32;

/// Parses `tags`: a JSON object of strings (numbers and booleans are taken as their
/// text), or whitespace-separated `key=value` / `key:value` pairs.
pub fn tags(text: &str) -> Result<Vec<(String, String)>, BadParam> {
    let text = text.trim();
    if text.starts_with('{') {
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
            .map_err(|e| bad("tags", format!("malformed JSON object: {e}")))?;
        return map
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => Ok((k, s)),
                serde_json::Value::Bool(_) | serde_json::Value::Number(_) => Ok((k, v.to_string())),
                _ => Err(bad("tags", format!("value of `{k}` is not a string"))),
            })
            .collect();
    }
    text.split_whitespace()
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .or_else(|| pair.split_once(':'))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| bad("tags", format!("`{pair}` is not key=value")))?;
            Ok((k.to_string(), v.trim_matches('"').to_string()))
        })
        .collect()
}

/// Microseconds since the epoch, as Jaeger's `start` and `end`.
fn micros_to_ns(name: &'static str, v: &str) -> Result<i64, BadParam> {
    let us: i64 = v
        .parse()
        .map_err(|_| bad(name, format!("`{v}` is not microseconds since the epoch")))?;
    us.checked_mul(1_000)
        .ok_or_else(|| bad(name, format!("`{v}` is out of range")))
}

/// Parses a Go duration (`300ms`, `1.5h`, `2h45m`, `1.2ms`, `10us`, `0`) into nanoseconds.
pub fn go_duration(text: &str) -> Result<i64, String> {
    let err = || format!("`{text}` is not a duration such as 100ms, 1.5s or 2m");
    let mut s = text.trim();
    let negative = s.starts_with('-');
    s = s.trim_start_matches(['-', '+']);
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(err());
    }
    let mut total: f64 = 0.0;
    while !s.is_empty() {
        let n = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let value: f64 = s[..n].parse().map_err(|_| err())?;
        s = &s[n..];
        let u = s
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(s.len());
        let scale = match &s[..u] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err()),
        };
        total += value * scale;
        s = &s[u..];
    }
    if !total.is_finite() || total > i64::MAX as f64 {
        return Err(err());
    }
    let ns = total.round() as i64;
    Ok(if negative { -ns } else { ns })
}

/// A trace id of 1 to 32 hex digits (Jaeger drops leading zeros of 64-bit ids).
pub fn trace_id(name: &'static str, v: &str) -> Result<TraceId, BadParam> {
    let v = v.trim();
    if v.is_empty() || v.len() > 32 || !v.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad(
            name,
            format!("`{v}` is not a trace id of 1 to 32 hex digits"),
        ));
    }
    let id = u128::from_str_radix(v, 16).map_err(|e| bad(name, e.to_string()))?;
    if id == 0 {
        return Err(bad(name, "the all-zero trace id is not valid"));
    }
    Ok(id)
}

/// `endTs` and `lookback` of `/api/dependencies` (both milliseconds), as nanoseconds;
/// `endTs` defaults to `now_ms`, `lookback` to 24 hours.
pub fn dependencies(params: &[(String, String)], now_ms: i64) -> Result<(i64, i64), BadParam> {
    let ms = |name: &'static str, default: i64| -> Result<i64, BadParam> {
        match last(params, name) {
            None => Ok(default),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n >= 0 => Ok(n),
                _ => Err(bad(
                    name,
                    format!("`{v}` is not a non-negative number of milliseconds"),
                )),
            },
        }
    };
    let end = ms("endTs", now_ms)?;
    let lookback = ms("lookback", DEFAULT_DEPENDENCY_LOOKBACK_MS)?;
    let ns = |name, v: i64| {
        v.checked_mul(1_000_000)
            .ok_or_else(|| bad(name, format!("`{v}` is out of range")))
    };
    Ok((ns("endTs", end)?, ns("lookback", lookback)?))
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod tests;
