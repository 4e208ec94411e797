//! Reading traces: search by service, operation, tags, duration and time (newest
//! first), a trace by id, the services and operations seen, and service dependencies.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rusqlite::{params, OptionalExtension, Row};

use crate::model::{SpanKind, TraceId};

use super::codec::DecodeError;
use super::error::{Context, RepositoryError};
use super::ids::ROW_OF_ID;
use super::prepare::DEPENDENCY_BUCKET_NS;
use super::write::{close_reason_of, id_bytes, is_incomplete};
use super::{codec, postings, terms, Dependency, Operation, Repository, StoredTrace, TraceSummary};

/// Traces a search returns when the query sets no limit.
pub const DEFAULT_SEARCH_LIMIT: usize = 20;
/// The most traces one search returns (Jaeger UI's largest choice).
pub const MAX_SEARCH_LIMIT: usize = 1500;

/// A trace search, as Jaeger's `/api/traces` takes it. Every given criterion must hold;
/// results are the newest traces (by start) first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TraceQuery {
    /// A span of this service.
    pub service: Option<String>,
    /// A span of `service` with this name (needs `service`).
    pub operation: Option<String>,
    /// Each `key=value` is a span attribute or resource attribute of some span of the
    /// trace (values compared as text: `true`, `503`, `0.25`), or `error=true` (a span
    /// with status ERROR) or `span.kind=server` (and the other kinds in lowercase).
    pub tags: Vec<(String, String)>,
    /// With `service` (and `operation`): the longest span of that service (operation)
    /// lasted at least / at most this; without: the trace's duration did.
    pub min_duration_ns: Option<i64>,
    pub max_duration_ns: Option<i64>,
    /// The trace started at or after this (unix nanos).
    pub start_ns: Option<i64>,
    /// The trace started at or before this (unix nanos).
    pub end_ns: Option<i64>,
    /// At most this many traces; 0 means [`DEFAULT_SEARCH_LIMIT`], capped at
    /// [`MAX_SEARCH_LIMIT`].
    pub limit: usize,
}

const SUMMARY_COLUMNS: &str = "trace_id, start_ns, duration_ns, span_count, error_count, flags, \
     root_service, root_name, services";

fn summary_of(r: &Row<'_>) -> rusqlite::Result<TraceSummary> {
    let id: Vec<u8> = r.get(0)?;
    let services: String = r.get(8)?;
    let flags: i64 = r.get(5)?;
    Ok(TraceSummary {
        trace_id: <[u8; 16]>::try_from(id.as_slice()).map_or(0, TraceId::from_be_bytes),
        start_ns: r.get(1)?,
        duration_ns: r.get(2)?,
        span_count: r.get::<_, i64>(3)?.max(0) as usize,
        error_count: r.get::<_, i64>(4)?.max(0) as usize,
        root_service: r.get(6)?,
        root_name: r.get(7)?,
        services: serde_json::from_str(&services).unwrap_or_default(),
        incomplete: is_incomplete(flags),
        close_reason: close_reason_of(flags),
    })
}

impl Repository {
    /// The traces matching `query`, newest first.
    pub fn search(&self, query: &TraceQuery) -> Result<Vec<TraceSummary>, RepositoryError> {
        const DURING: &str = "searching traces";
        let limit = match query.limit {
            0 => DEFAULT_SEARCH_LIMIT,
            n => n.min(MAX_SEARCH_LIMIT),
        };
        let lo = query.start_ns.unwrap_or(i64::MIN);
        let hi = query.end_ns.unwrap_or(i64::MAX);
        let dur = (
            query.min_duration_ns.unwrap_or(i64::MIN),
            query.max_duration_ns.unwrap_or(i64::MAX),
        );
        if let (Some(_), None) = (&query.operation, &query.service) {
            return Err(RepositoryError::InvalidQuery {
                parameter: "operation",
                detail: "an operation needs a service".into(),
            });
        }
        if lo > hi || dur.0 > dur.1 {
            return Ok(Vec::new());
        }
        let no_filter = (i64::MIN, i64::MAX);
        let mut wanted: Vec<(i64, (i64, i64))> = Vec::with_capacity(1 + query.tags.len());
        match (&query.service, &query.operation) {
            (Some(s), Some(op)) => wanted.push((terms::operation_term(s, op), dur)),
            (Some(s), None) => wanted.push((terms::service_term(s), dur)),
            _ => {}
        }
        // without a service the duration filter is on the whole trace
        let trace_dur = if wanted.is_empty() { dur } else { no_filter };
        wanted.extend(
            query
                .tags
                .iter()
                .map(|(k, v)| (terms::tag_term(k, v), no_filter)),
        );
        let rows = if wanted.is_empty() {
            self.scan_by_start(lo, hi, dur, limit)
                .during(&self.path, DURING)?
        } else {
            self.search_batches(&wanted, lo, hi, trace_dur, limit)?
        };
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM traces WHERE id = ?1"
            ))
            .during(&self.path, DURING)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(s) = st
                .query_row([row], summary_of)
                .optional()
                .during(&self.path, DURING)?
            {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// The newest `limit` rows that have every term (within its duration filter),
    /// started within [lo, hi] and lasted within `trace_dur`: batches are visited
    /// newest first until none can hold a newer row than the ones found.
    fn search_batches(
        &self,
        wanted: &[(i64, (i64, i64))],
        lo: i64,
        hi: i64,
        trace_dur: (i64, i64),
        limit: usize,
    ) -> Result<Vec<i64>, RepositoryError> {
        const DURING: &str = "searching traces";
        let path = &self.path;
        let bad = |e: DecodeError| RepositoryError::bad_record(path, DURING, e.0);
        let mut batches = self
            .conn
            .prepare_cached(
                "SELECT batch, max_start FROM batches WHERE max_start >= ?1 AND min_start <= ?2 \
                 ORDER BY max_start DESC",
            )
            .during(path, DURING)?;
        let mut list = self
            .conn
            .prepare_cached("SELECT list FROM postings WHERE batch = ?2 AND term = ?1")
            .during(path, DURING)?;
        let mut batch_rows = self
            .conn
            .prepare_cached("SELECT min_start, traces FROM batches WHERE batch = ?1")
            .during(path, DURING)?;
        // the newest rows found so far, the oldest of them on top
        let mut best: BinaryHeap<Reverse<(i64, i64)>> = BinaryHeap::with_capacity(limit + 1);
        let mut found = Vec::new();
        let mut other = Vec::new();
        let mut candidates = batches.query([lo, hi]).during(path, DURING)?;
        'batches: while let Some(b) = candidates.next().during(path, DURING)? {
            let (batch, max_start): (i64, i64) = (
                b.get(0).during(path, DURING)?,
                b.get(1).during(path, DURING)?,
            );
            if best.len() >= limit && best.peek().is_some_and(|Reverse(w)| w.0 > max_start) {
                break;
            }
            for (k, &(term, dur)) in wanted.iter().enumerate() {
                let blob: Option<Vec<u8>> = list
                    .query_row([term, batch], |r| r.get(0))
                    .optional()
                    .during(path, DURING)?;
                let Some(blob) = blob else {
                    continue 'batches;
                };
                if k == 0 {
                    postings::decode_list(&blob, dur, &mut found).map_err(bad)?;
                } else {
                    postings::decode_list(&blob, dur, &mut other).map_err(bad)?;
                    intersect(&mut found, &other);
                }
                if found.is_empty() {
                    continue 'batches;
                }
            }
            let (min_start, blob): (i64, Vec<u8>) = batch_rows
                .query_row([batch], |r| Ok((r.get(0)?, r.get(1)?)))
                .during(path, DURING)?;
            let rows = postings::decode_rows(min_start, &blob).map_err(bad)?;
            for &offset in &found {
                let Some(Some((start, d))) = rows.get(offset as usize) else {
                    continue;
                };
                if *start < lo || *start > hi || *d < trace_dur.0 || *d > trace_dur.1 {
                    continue;
                }
                best.push(Reverse((*start, batch + i64::from(offset))));
                if best.len() > limit {
                    best.pop();
                }
            }
        }
        let mut out: Vec<(i64, i64)> = best.into_iter().map(|Reverse(p)| p).collect();
        out.sort_unstable_by(|a, b| b.cmp(a));
        Ok(out.into_iter().map(|(_, row)| row).collect())
    }

    fn scan_by_start(
        &self,
        lo: i64,
        hi: i64,
        dur: (i64, i64),
        limit: usize,
    ) -> rusqlite::Result<Vec<i64>> {
        let mut st = self.conn.prepare_cached(
            "SELECT id FROM traces WHERE start_ns >= ?1 AND start_ns <= ?2 \
             AND duration_ns >= ?3 AND duration_ns <= ?4 ORDER BY start_ns DESC, id DESC LIMIT ?5",
        )?;
        let rows = st.query_map(params![lo, hi, dur.0, dur.1, limit as i64], |r| r.get(0))?;
        rows.collect()
    }

    /// The stored trace with this id.
    pub fn get_trace(&self, trace_id: TraceId) -> Result<Option<StoredTrace>, RepositoryError> {
        const DURING: &str = "reading a trace";
        let key = id_bytes(trace_id);
        let found = self
            .conn
            .prepare_cached(&format!(
                "SELECT {SUMMARY_COLUMNS}, body FROM traces WHERE {ROW_OF_ID}"
            ))
            .and_then(|mut st| {
                st.query_row([&key[..]], |r| {
                    Ok((summary_of(r)?, r.get::<_, Vec<u8>>(9)?))
                })
                .optional()
            })
            .during(&self.path, DURING)?;
        let Some((summary, body)) = found else {
            return Ok(None);
        };
        let bad = |e| RepositoryError::bad_record(&self.path, DURING, e);
        let body = self.bodies.open(&self.conn, &body).map_err(bad)?;
        let (spans, analysis) = codec::decode(trace_id, &body).map_err(|e| bad(e.0))?;
        Ok(Some(StoredTrace {
            summary,
            spans,
            analysis,
        }))
    }

    /// The services that emitted spans, sorted.
    pub fn services(&self) -> Result<Vec<String>, RepositoryError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT DISTINCT service FROM operations ORDER BY service")
            .during(&self.path, "listing services")?;
        let rows = st
            .query_map([], |r| r.get(0))
            .during(&self.path, "listing services")?;
        rows.collect::<rusqlite::Result<_>>()
            .during(&self.path, "listing services")
    }

    /// The operations (span names with their kinds) of `service`, sorted.
    pub fn operations(&self, service: &str) -> Result<Vec<Operation>, RepositoryError> {
        const DURING: &str = "listing operations";
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT name, kind FROM operations WHERE service = ?1 ORDER BY name, kind",
            )
            .during(&self.path, DURING)?;
        let rows = st
            .query_map([service], |r| {
                Ok(Operation {
                    name: r.get(0)?,
                    span_kind: SpanKind::from_index(r.get(1)?).unwrap_or_default(),
                })
            })
            .during(&self.path, DURING)?;
        rows.collect::<rusqlite::Result<_>>()
            .during(&self.path, DURING)
    }

    /// Calls from parent to child service in traces that started within `lookback_ns`
    /// before `end_ns` (counted per minute: the minutes overlapping the range), as
    /// Jaeger's `/api/dependencies`.
    pub fn dependencies(
        &self,
        end_ns: i64,
        lookback_ns: i64,
    ) -> Result<Vec<Dependency>, RepositoryError> {
        const DURING: &str = "reading dependencies";
        let from = end_ns
            .saturating_sub(lookback_ns.max(0))
            .div_euclid(DEPENDENCY_BUCKET_NS)
            * DEPENDENCY_BUCKET_NS;
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT parent, child, sum(calls) FROM dependencies \
                 WHERE minute_ns >= ?1 AND minute_ns <= ?2 \
                 GROUP BY parent, child HAVING sum(calls) > 0 ORDER BY parent, child",
            )
            .during(&self.path, DURING)?;
        let rows = st
            .query_map([from, end_ns], |r| {
                Ok(Dependency {
                    parent: r.get(0)?,
                    child: r.get(1)?,
                    call_count: r.get::<_, i64>(2)?.max(0) as u64,
                })
            })
            .during(&self.path, DURING)?;
        rows.collect::<rusqlite::Result<_>>()
            .during(&self.path, DURING)
    }
}

/// Keeps the entries of `a` that are also in `b` (both ascending).
fn intersect(a: &mut Vec<u32>, b: &[u32]) {
    let mut j = 0;
    a.retain(|x| {
        while j < b.len() && b[j] < *x {
            j += 1;
        }
        j < b.len() && b[j] == *x
    });
}
