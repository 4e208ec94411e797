//! Storing traces: the union of a trace's records, its summary, index terms,
//! operations and dependency counts, one transaction per batch.

use std::borrow::Cow;
use std::sync::Arc;

use rusqlite::{params, OptionalExtension, Transaction};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::model::{Analysis, CloseReason, Span, SpanId, SpanKind, StatusCode, TraceId};

use super::error::{Context, RepositoryError};
use super::postings::{kill_rows, BatchBuilder};
use super::{codec, terms, Repository, TraceRecord};

/// What a call to [`Repository::store_traces`] did, by trace id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreReport {
    /// Trace ids stored for the first time.
    pub inserted: usize,
    /// Stored trace ids that gained spans or a better analysis.
    pub updated: usize,
    /// Trace ids whose records added nothing (duplicates).
    pub unchanged: usize,
}

/// `flags` bits of a stored trace.
const INCOMPLETE: i64 = 1;
/// A record that was not an amendment was stored.
const SEEN_WHOLE: i64 = 2;
/// The stored analysis came from an amendment (it covers only late spans).
const ANALYSIS_FROM_AMENDMENT: i64 = 4;
const CLOSE_REASON_SHIFT: u32 = 8;

/// Bytes of the trace id column: the 16 bytes of the id, big endian.
pub(crate) fn id_bytes(id: TraceId) -> [u8; 16] {
    id.to_be_bytes()
}

pub(crate) fn close_reason_of(flags: i64) -> CloseReason {
    CloseReason::from_index(flags >> CLOSE_REASON_SHIFT).unwrap_or(CloseReason::Completed)
}

pub(crate) fn is_incomplete(flags: i64) -> bool {
    flags & INCOMPLETE != 0
}

/// The minute a trace's dependency calls are counted in.
pub(crate) const DEPENDENCY_BUCKET_NS: i64 = 60_000_000_000;

/// A trace as it will be stored: the union of its records.
struct Merged<'r> {
    spans: Cow<'r, [Span]>,
    /// The analysis and whether it came from an amendment.
    analysis: Option<(Cow<'r, Analysis>, bool)>,
    incomplete: bool,
    seen_whole: bool,
    close_reason: Option<CloseReason>,
}

impl<'r> Merged<'r> {
    fn empty() -> Self {
        Self {
            spans: Cow::Owned(Vec::new()),
            analysis: None,
            incomplete: false,
            seen_whole: false,
            close_reason: None,
        }
    }

    /// The stored trace, decoded.
    fn stored(spans: Vec<Span>, analysis: Option<Analysis>, flags: i64) -> Self {
        Self {
            spans: Cow::Owned(spans),
            analysis: analysis.map(|a| (Cow::Owned(a), flags & ANALYSIS_FROM_AMENDMENT != 0)),
            incomplete: flags & INCOMPLETE != 0,
            seen_whole: flags & SEEN_WHOLE != 0,
            close_reason: Some(close_reason_of(flags)),
        }
    }

    fn flags(&self) -> i64 {
        let mut f =
            (self.close_reason.unwrap_or(CloseReason::Completed) as i64) << CLOSE_REASON_SHIFT;
        if self.incomplete {
            f |= INCOMPLETE;
        }
        if self.seen_whole {
            f |= SEEN_WHOLE;
        }
        if matches!(self.analysis, Some((_, true))) {
            f |= ANALYSIS_FROM_AMENDMENT;
        }
        f
    }

    /// Adds a record's new spans (by span id), flags and analysis (when it ranks
    /// higher: from a whole trace over from an amendment, then made of more spans);
    /// true when anything changed.
    fn absorb(&mut self, r: &'r TraceRecord, ids: &mut FxHashSet<SpanId>) -> bool {
        let before = self.flags();
        let mut changed = false;
        for s in &r.trace.spans {
            if ids.insert(s.span_id) {
                self.spans.to_mut().push(s.clone());
                changed = true;
            }
        }
        let whole = !r.trace.amendment;
        self.incomplete |= r.trace.incomplete;
        if whole && !self.seen_whole {
            self.seen_whole = true;
            self.close_reason = Some(r.trace.close_reason);
        } else if self.close_reason.is_none() {
            self.close_reason = Some(r.trace.close_reason);
        }
        if let Some(a) = &r.analysis {
            let better = match &self.analysis {
                None => true,
                Some((cur, from_amendment)) => {
                    (whole, a.span_count) > (!*from_amendment, cur.span_count)
                }
            };
            if better {
                self.analysis = Some((Cow::Borrowed(a), !whole));
                changed = true;
            }
        }
        changed || self.flags() != before
    }
}

/// True when the spans are in canonical order with distinct span ids.
fn canonical(spans: &[Span]) -> bool {
    let ordered = spans
        .windows(2)
        .all(|w| (w[0].start_ns, w[0].span_id) < (w[1].start_ns, w[1].span_id));
    if !ordered {
        return false;
    }
    let mut ids = FxHashSet::default();
    ids.reserve(spans.len());
    spans.iter().all(|s| ids.insert(s.span_id))
}

/// The summary columns of a trace, from its spans.
pub(crate) struct Summary<'s> {
    pub start_ns: i64,
    pub duration_ns: i64,
    pub error_count: usize,
    pub root: Option<&'s Span>,
    pub services: Vec<&'s str>,
}

pub(crate) fn summarize(spans: &[Span]) -> Summary<'_> {
    let start_ns = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let end_ns = spans.iter().map(|s| s.end_ns).max().unwrap_or(0);
    let mut services: Vec<&str> = spans.iter().map(|s| s.service()).collect();
    services.sort_unstable();
    services.dedup();
    Summary {
        start_ns,
        duration_ns: end_ns.saturating_sub(start_ns).max(0),
        error_count: spans
            .iter()
            .filter(|s| s.status == StatusCode::Error)
            .count(),
        root: spans.iter().find(|s| s.is_root()),
        services,
    }
}

type DependencyDeltas = FxHashMap<(i64, Arc<str>, Arc<str>), i64>;

/// Adds `sign` times the trace's cross-service parent/child calls to `deltas`.
fn count_dependencies(spans: &[Span], start_ns: i64, sign: i64, deltas: &mut DependencyDeltas) {
    let minute = start_ns.div_euclid(DEPENDENCY_BUCKET_NS) * DEPENDENCY_BUCKET_NS;
    let mut service_of: FxHashMap<SpanId, &Arc<str>> = FxHashMap::default();
    service_of.reserve(spans.len());
    for s in spans {
        service_of
            .entry(s.span_id)
            .or_insert(&s.resource.service_name);
    }
    for s in spans.iter().filter(|s| !s.is_root()) {
        if let Some(parent) = service_of.get(&s.parent_span_id) {
            if **parent != s.resource.service_name {
                *deltas
                    .entry((
                        minute,
                        Arc::clone(parent),
                        Arc::clone(&s.resource.service_name),
                    ))
                    .or_insert(0) += sign;
            }
        }
    }
}

/// Scratch space reused across the traces of a batch, and the batch's index.
struct Scratch {
    terms: FxHashMap<i64, Option<i64>>,
    ids: FxHashSet<SpanId>,
    deltas: DependencyDeltas,
    batch: BatchBuilder,
    /// Rows of earlier batches whose traces moved into this one.
    killed: Vec<i64>,
}

impl Repository {
    /// Stores a batch of trace records in one transaction (see the module docs for
    /// how records of one trace id combine). On error nothing of the batch is stored.
    pub fn store_traces(
        &mut self,
        records: &[TraceRecord],
    ) -> Result<StoreReport, RepositoryError> {
        const DURING: &str = "storing traces";
        let mut groups: FxHashMap<TraceId, Vec<&TraceRecord>> = FxHashMap::default();
        let mut order = Vec::new();
        for r in records {
            let g = groups.entry(r.trace.trace_id).or_default();
            if g.is_empty() {
                order.push(r.trace.trace_id);
            }
            g.push(r);
        }
        let path = self.path.clone();
        let tx = self.conn.transaction().during(&path, DURING)?;
        let mut report = StoreReport::default();
        let mut scratch = Scratch {
            terms: FxHashMap::default(),
            ids: FxHashSet::default(),
            deltas: DependencyDeltas::default(),
            batch: BatchBuilder::new(self.next_row),
            killed: Vec::new(),
        };
        for id in order {
            let group = groups.get(&id).map(Vec::as_slice).unwrap_or_default();
            match store_one(&tx, &path, id, group, &mut scratch)? {
                Outcome::Inserted => report.inserted += 1,
                Outcome::Updated => report.updated += 1,
                Outcome::Unchanged => report.unchanged += 1,
            }
        }
        let next_row = scratch.batch.next_row();
        scratch.batch.write(&tx).during(&path, DURING)?;
        kill_rows(&tx, &scratch.killed).during(&path, DURING)?;
        write_dependencies(&tx, &scratch.deltas).during(&path, DURING)?;
        let new_operations =
            write_operations(&tx, &self.known_operations, records).during(&path, DURING)?;
        tx.commit().during(&path, DURING)?;
        self.next_row = next_row;
        // remembered only once committed: a rolled-back batch must write them again
        if self.known_operations.len() + new_operations.len() > KNOWN_OPERATIONS_CAP {
            self.known_operations.clear();
        }
        self.known_operations.extend(new_operations);
        Ok(report)
    }
}

enum Outcome {
    Inserted,
    Updated,
    Unchanged,
}

fn store_one(
    tx: &Transaction<'_>,
    path: &std::path::Path,
    id: TraceId,
    group: &[&TraceRecord],
    scratch: &mut Scratch,
) -> Result<Outcome, RepositoryError> {
    const DURING: &str = "storing traces";
    let key = id_bytes(id);
    let existing: Option<(i64, i64, Vec<u8>)> = tx
        .prepare_cached("SELECT id, flags, body FROM traces WHERE trace_id = ?1")
        .and_then(|mut st| {
            st.query_row([&key[..]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .during(path, DURING)?;
    scratch.ids.clear();
    let (mut merged, outcome) = match existing {
        None => {
            let mut m = Merged::empty();
            if let [only] = group {
                if canonical(&only.trace.spans) {
                    m.spans = Cow::Borrowed(&only.trace.spans);
                    scratch
                        .ids
                        .extend(only.trace.spans.iter().map(|s| s.span_id));
                }
            }
            for r in group {
                m.absorb(r, &mut scratch.ids);
            }
            (m, Outcome::Inserted)
        }
        Some((row, flags, body)) => {
            let (spans, analysis) = codec::decode(id, &body)
                .map_err(|e| RepositoryError::bad_record(path, DURING, e.0))?;
            let mut old_dependencies = DependencyDeltas::default();
            count_dependencies(
                &spans,
                summarize(&spans).start_ns,
                -1,
                &mut old_dependencies,
            );
            scratch.ids.extend(spans.iter().map(|s| s.span_id));
            let mut m = Merged::stored(spans, analysis, flags);
            let mut changed = false;
            for r in group {
                changed |= m.absorb(r, &mut scratch.ids);
            }
            if !changed {
                return Ok(Outcome::Unchanged);
            }
            for (k, v) in old_dependencies {
                *scratch.deltas.entry(k).or_insert(0) += v;
            }
            // the trace moves to a row of this batch; its old row's postings go stale
            tx.prepare_cached("DELETE FROM traces WHERE id = ?1")
                .and_then(|mut st| st.execute([row]))
                .during(path, DURING)?;
            scratch.killed.push(row);
            (m, Outcome::Updated)
        }
    };
    if let Cow::Owned(spans) = &mut merged.spans {
        spans.sort_unstable_by_key(|s| (s.start_ns, s.span_id));
    }
    let spans: &[Span] = &merged.spans;
    let summary = summarize(spans);
    let body = codec::encode(spans, merged.analysis.as_ref().map(|(a, _)| &**a));
    let services = serde_json::to_string(&summary.services).unwrap_or_default();
    let row = scratch.batch.next_row();
    tx.prepare_cached(
        "INSERT INTO traces (id, trace_id, start_ns, duration_ns, span_count, error_count, \
         flags, root_service, root_name, services, body) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .and_then(|mut st| {
        st.execute(params![
            row,
            &key[..],
            summary.start_ns,
            summary.duration_ns,
            spans.len() as i64,
            summary.error_count as i64,
            merged.flags(),
            summary.root.map(|r| r.service()),
            summary.root.map(|r| &*r.name),
            services,
            body
        ])
    })
    .during(path, DURING)?;
    terms::collect(spans, &mut scratch.terms);
    scratch
        .batch
        .add(summary.start_ns, summary.duration_ns, &scratch.terms);
    count_dependencies(spans, summary.start_ns, 1, &mut scratch.deltas);
    Ok(outcome)
}

pub(crate) fn write_dependencies(
    tx: &Transaction<'_>,
    deltas: &DependencyDeltas,
) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT INTO dependencies (minute_ns, parent, child, calls) VALUES (?1, ?2, ?3, ?4)          ON CONFLICT DO UPDATE SET calls = calls + excluded.calls",
    )?;
    for ((minute, parent, child), &calls) in deltas {
        if calls != 0 {
            st.execute(params![minute, &**parent, &**child, calls])?;
        }
    }
    Ok(())
}

/// Operations remembered per connection before the set starts again (bounding memory
/// under unbounded span-name cardinality; the table's primary key keeps it correct).
const KNOWN_OPERATIONS_CAP: usize = 65_536;

type OperationKey = (Arc<str>, Arc<str>, SpanKind);

/// Writes the operations not in `known`; returns them.
fn write_operations(
    tx: &Transaction<'_>,
    known: &FxHashSet<OperationKey>,
    records: &[TraceRecord],
) -> rusqlite::Result<FxHashSet<OperationKey>> {
    let mut new = FxHashSet::default();
    for s in records.iter().flat_map(|r| &r.trace.spans) {
        let key = (
            Arc::clone(&s.resource.service_name),
            Arc::clone(&s.name),
            s.kind,
        );
        if known.contains(&key) || new.contains(&key) {
            continue;
        }
        tx.prepare_cached(
            "INSERT OR IGNORE INTO operations (service, name, kind) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![&*key.0, &*key.1, key.2 as i64])?;
        new.insert(key);
    }
    Ok(new)
}
