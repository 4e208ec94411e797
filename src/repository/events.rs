//! Aggregate windows and alert events: stored idempotently, read by series, time,
//! fingerprint, rule and service.

use std::sync::Arc;

use rusqlite::{params, Row};
use serde::{Deserialize, Serialize};
use sketches_ddsketch::DDSketch;

use crate::model::{Alert, AlertStatus, ServerLatency, WindowAggregate};

use super::error::{Context, RepositoryError};
use super::Repository;

/// Version byte in front of window and alert bodies.
const BODY_VERSION: u8 = 1;

/// The window fields that are not columns.
#[derive(Serialize, Deserialize)]
struct WindowBody {
    count: u64,
    error_count: u64,
    min_ns: i64,
    max_ns: i64,
    sum_ns: i64,
    sketch: DDSketch,
    slo_latency_ns: i64,
    slo_good: u64,
    busy_ns: i64,
    concurrency_mean: f64,
    concurrency_max: f64,
    concurrency_profile: Vec<u32>,
    server: Option<(i64, i64, i64, DDSketch)>,
}

/// Aggregate windows of one series: a scope, a key and optionally a window size.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WindowQuery {
    pub scope: String,
    /// (dimension name, value) in the dimension set's order.
    pub key: Vec<(String, String)>,
    /// Only windows of this size; all sizes when `None`.
    pub window_size_ns: Option<i64>,
    /// Windows starting at or after this (unix nanos).
    pub from_ns: Option<i64>,
    /// Windows starting before this (unix nanos).
    pub to_ns: Option<i64>,
}

/// The windows of every series of one scope whose key has some dimension values (for
/// instance every operation of a service), in a time range.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScopeQuery {
    pub scope: String,
    /// (dimension name, value) pairs the key must contain; empty matches every series.
    pub matching: Vec<(String, String)>,
    /// Only windows of this size; all sizes when `None`.
    pub window_size_ns: Option<i64>,
    /// Windows starting at or after this (unix nanos).
    pub from_ns: Option<i64>,
    /// Windows starting before this (unix nanos).
    pub to_ns: Option<i64>,
}

/// The most windows one [`Repository::scope_windows`] call reads; a query that matches
/// more is refused (narrow the range, the series or the window size).
pub const MAX_SCOPE_WINDOWS: usize = 100_000;

/// Alert events by fingerprint, rule, service and time; unset fields match all.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertQuery {
    pub fingerprint: Option<String>,
    pub rule: Option<String>,
    /// The `service` label or the suspected service.
    pub service: Option<String>,
    /// Events at or after this (unix millis; a firing event's time is its start, a
    /// resolved event's its end).
    pub from_ms: Option<i64>,
    /// Events before this (unix millis).
    pub to_ms: Option<i64>,
    /// At most this many events; 0 means [`super::DEFAULT_SEARCH_LIMIT`], capped at
    /// [`super::MAX_SEARCH_LIMIT`].
    pub limit: usize,
}

/// The series column: the key as a JSON array of pairs.
fn series_of<K: AsRef<str>, V: AsRef<str>>(key: &[(K, V)]) -> String {
    let pairs: Vec<[&str; 2]> = key.iter().map(|(k, v)| [k.as_ref(), v.as_ref()]).collect();
    serde_json::to_string(&pairs).unwrap_or_default()
}

fn window_of(path: &std::path::Path, r: &Row<'_>) -> Result<WindowAggregate, RepositoryError> {
    const DURING: &str = "reading windows";
    let get = |i| r.get::<_, i64>(i).during(path, DURING);
    let scope: String = r.get(0).during(path, DURING)?;
    let series: String = r.get(1).during(path, DURING)?;
    let body: Vec<u8> = r.get(5).during(path, DURING)?;
    let bad = |e: String| RepositoryError::bad_record(path, DURING, e);
    let key: Vec<(String, String)> =
        serde_json::from_str(&series).map_err(|e| bad(e.to_string()))?;
    let b: WindowBody = match body.split_first() {
        Some((&BODY_VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|e| bad(e.to_string()))?
        }
        _ => return Err(bad("unknown window body version".into())),
    };
    Ok(WindowAggregate {
        window_size_ns: get(2)?,
        window_start_ns: get(3)?,
        window_end_ns: get(4)?,
        scope: Arc::from(scope),
        key: key
            .into_iter()
            .map(|(k, v)| (Arc::from(k), Arc::from(v)))
            .collect(),
        count: b.count,
        error_count: b.error_count,
        min_ns: b.min_ns,
        max_ns: b.max_ns,
        sum_ns: b.sum_ns,
        sketch: b.sketch,
        slo_latency_ns: b.slo_latency_ns,
        slo_good: b.slo_good,
        busy_ns: b.busy_ns,
        concurrency_mean: b.concurrency_mean,
        concurrency_max: b.concurrency_max,
        concurrency_profile: b.concurrency_profile,
        server: b
            .server
            .map(|(min_ns, max_ns, sum_ns, sketch)| ServerLatency {
                min_ns,
                max_ns,
                sum_ns,
                sketch,
            }),
    })
}

fn alert_filters(q: &AlertQuery) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut sql = String::new();
    let mut args = Vec::new();
    let mut add = |cond: &str, v: Value| {
        sql.push_str(" AND ");
        sql.push_str(&cond.replace('?', &format!("?{}", args.len() + 1)));
        args.push(v);
    };
    if let Some(f) = &q.fingerprint {
        add("a.fingerprint = ?", Value::Text(f.clone()));
    }
    if let Some(r) = &q.rule {
        add("a.rule = ?", Value::Text(r.clone()));
    }
    if let Some(s) = &q.service {
        add(
            "(a.service = ? OR a.suspected_service = ?)",
            Value::Text(s.clone()),
        );
    }
    if let Some(t) = q.from_ms {
        add("a.at_ms >= ?", Value::Integer(t));
    }
    if let Some(t) = q.to_ms {
        add("a.at_ms < ?", Value::Integer(t));
    }
    (sql, args)
}

/// The firing events whose episode has no resolution (a resolved event of the same
/// fingerprint starting at or after it) and no later episode.
const ACTIVE: &str = "a.status = 0 \
     AND NOT EXISTS (SELECT 1 FROM alerts r WHERE r.fingerprint = a.fingerprint \
         AND r.status = 1 AND r.starts_at_ms >= a.starts_at_ms) \
     AND NOT EXISTS (SELECT 1 FROM alerts n WHERE n.fingerprint = a.fingerprint \
         AND n.status = 0 AND n.starts_at_ms > a.starts_at_ms)";

impl Repository {
    /// Stores closed windows in one transaction; a window already stored (same scope,
    /// key, size and start) is replaced.
    pub fn store_windows(&mut self, windows: &[WindowAggregate]) -> Result<(), RepositoryError> {
        const DURING: &str = "storing windows";
        self.before_write();
        let tx = self.conn.transaction().during(&self.path, DURING)?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO windows (scope, series, size_ns, start_ns, end_ns, body) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .during(&self.path, DURING)?;
            for w in windows {
                let body = WindowBody {
                    count: w.count,
                    error_count: w.error_count,
                    min_ns: w.min_ns,
                    max_ns: w.max_ns,
                    sum_ns: w.sum_ns,
                    sketch: w.sketch.clone(),
                    slo_latency_ns: w.slo_latency_ns,
                    slo_good: w.slo_good,
                    busy_ns: w.busy_ns,
                    concurrency_mean: w.concurrency_mean,
                    concurrency_max: w.concurrency_max,
                    concurrency_profile: w.concurrency_profile.clone(),
                    server: w
                        .server
                        .as_ref()
                        .map(|s| (s.min_ns, s.max_ns, s.sum_ns, s.sketch.clone())),
                };
                let bytes = postcard::to_extend(&body, vec![BODY_VERSION])
                    .map_err(|e| RepositoryError::bad_record(&self.path, DURING, e.to_string()))?;
                st.execute(params![
                    &*w.scope,
                    series_of(&w.key),
                    w.window_size_ns,
                    w.window_start_ns,
                    w.window_end_ns,
                    bytes
                ])
                .during(&self.path, DURING)?;
            }
        }
        tx.commit().during(&self.path, DURING)?;
        self.committed();
        Ok(())
    }

    /// The windows of a series, by size then start.
    pub fn windows(&self, q: &WindowQuery) -> Result<Vec<WindowAggregate>, RepositoryError> {
        const DURING: &str = "reading windows";
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT scope, series, size_ns, start_ns, end_ns, body FROM windows \
                 WHERE scope = ?1 AND series = ?2 AND size_ns >= ?3 AND size_ns <= ?4 \
                 AND start_ns >= ?5 AND start_ns < ?6 ORDER BY size_ns, start_ns",
            )
            .during(&self.path, DURING)?;
        let size = q.window_size_ns.map_or((i64::MIN, i64::MAX), |s| (s, s));
        let mut rows = st
            .query(params![
                q.scope,
                series_of(&q.key),
                size.0,
                size.1,
                q.from_ns.unwrap_or(i64::MIN),
                q.to_ns.unwrap_or(i64::MAX)
            ])
            .during(&self.path, DURING)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().during(&self.path, DURING)? {
            out.push(window_of(&self.path, r)?);
        }
        Ok(out)
    }

    /// The windows of every series of `q.scope` that match, by series, size, then start.
    /// More than [`MAX_SCOPE_WINDOWS`] is [`RepositoryError::InvalidQuery`] on `start`.
    pub fn scope_windows(&self, q: &ScopeQuery) -> Result<Vec<WindowAggregate>, RepositoryError> {
        const DURING: &str = "reading windows";
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT scope, series, size_ns, start_ns, end_ns, body FROM windows \
                 WHERE scope = ?1 AND size_ns >= ?2 AND size_ns <= ?3 \
                 AND start_ns >= ?4 AND start_ns < ?5 ORDER BY series, size_ns, start_ns",
            )
            .during(&self.path, DURING)?;
        let size = q.window_size_ns.map_or((i64::MIN, i64::MAX), |s| (s, s));
        let mut rows = st
            .query(params![
                q.scope,
                size.0,
                size.1,
                q.from_ns.unwrap_or(i64::MIN),
                q.to_ns.unwrap_or(i64::MAX)
            ])
            .during(&self.path, DURING)?;
        let mut out = Vec::new();
        let mut last_series = String::new();
        let mut last_match = false;
        while let Some(r) = rows.next().during(&self.path, DURING)? {
            let series: String = r.get(1).during(&self.path, DURING)?;
            if series != last_series {
                let key: Vec<(String, String)> = serde_json::from_str(&series)
                    .map_err(|e| RepositoryError::bad_record(&self.path, DURING, e.to_string()))?;
                last_match = q.matching.iter().all(|m| key.contains(m));
                last_series = series;
            }
            if !last_match {
                continue;
            }
            if out.len() == MAX_SCOPE_WINDOWS {
                return Err(RepositoryError::InvalidQuery {
                    parameter: "start",
                    detail: format!(
                        "more than {MAX_SCOPE_WINDOWS} windows match: narrow the time range, \
                         the series or the window size"
                    ),
                });
            }
            out.push(window_of(&self.path, r)?);
        }
        Ok(out)
    }

    /// Stores alert events in one transaction; an event already stored (same
    /// fingerprint, status and start) is replaced by the newer one (a repeat or an
    /// escalation of a firing alert).
    pub fn store_alerts(&mut self, alerts: &[Alert]) -> Result<(), RepositoryError> {
        const DURING: &str = "storing alerts";
        self.before_write();
        let tx = self.conn.transaction().during(&self.path, DURING)?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO alerts (fingerprint, status, starts_at_ms, at_ms, rule, \
                     service, suspected_service, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .during(&self.path, DURING)?;
            for a in alerts {
                let (status, at_ms) = match a.status {
                    AlertStatus::Firing => (0, a.starts_at_ms),
                    AlertStatus::Resolved => (1, a.ends_at_ms.unwrap_or(a.starts_at_ms)),
                };
                let body = postcard::to_extend(a, vec![BODY_VERSION])
                    .map_err(|e| RepositoryError::bad_record(&self.path, DURING, e.to_string()))?;
                st.execute(params![
                    a.fingerprint,
                    status,
                    a.starts_at_ms,
                    at_ms,
                    a.rule,
                    a.labels.get("service"),
                    a.suspected_service,
                    body
                ])
                .during(&self.path, DURING)?;
            }
        }
        tx.commit().during(&self.path, DURING)?;
        self.committed();
        Ok(())
    }

    /// Alert events matching `q`, newest first.
    pub fn alerts(&self, q: &AlertQuery) -> Result<Vec<Alert>, RepositoryError> {
        self.query_alerts("1", q, "reading alerts")
    }

    /// Alerts firing now: per fingerprint, the latest firing event without a later
    /// resolution, matching `q`, newest first.
    pub fn active_alerts(&self, q: &AlertQuery) -> Result<Vec<Alert>, RepositoryError> {
        self.query_alerts(ACTIVE, q, "reading active alerts")
    }

    fn query_alerts(
        &self,
        condition: &str,
        q: &AlertQuery,
        during: &'static str,
    ) -> Result<Vec<Alert>, RepositoryError> {
        let (filters, mut args) = alert_filters(q);
        let limit = match q.limit {
            0 => super::DEFAULT_SEARCH_LIMIT,
            n => n.min(super::MAX_SEARCH_LIMIT),
        };
        args.push(rusqlite::types::Value::Integer(limit as i64));
        let sql = format!(
            "SELECT a.body FROM alerts a WHERE {condition}{filters} \
             ORDER BY a.at_ms DESC, a.fingerprint, a.status LIMIT ?{}",
            args.len()
        );
        let mut st = self.conn.prepare_cached(&sql).during(&self.path, during)?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, Vec<u8>>(0))
            .during(&self.path, during)?;
        let mut out = Vec::new();
        for body in rows {
            let body = body.during(&self.path, during)?;
            let alert = match body.split_first() {
                Some((&BODY_VERSION, rest)) => postcard::from_bytes(rest)
                    .map_err(|e| RepositoryError::bad_record(&self.path, during, e.to_string()))?,
                _ => {
                    return Err(RepositoryError::bad_record(
                        &self.path,
                        during,
                        "unknown alert body version",
                    ))
                }
            };
            out.push(alert);
        }
        Ok(out)
    }
}
