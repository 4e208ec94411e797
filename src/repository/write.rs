//! Storing traces: the union of a trace's records, its summary, index terms,
//! operations and dependency counts, one transaction per batch.

use std::borrow::Cow;
use std::sync::Arc;

use rayon::prelude::*;
use rusqlite::{params, Transaction};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::model::{Analysis, CloseReason, Span, SpanId, SpanKind, TraceId};

use super::bodies::Bodies;
use super::error::{Context, RepositoryError};
use super::ids::KnownIds;
use super::postings::{kill_rows, BatchBuilder};
use super::prepare::{
    canonical, count_dependencies, prepare, summarize, DependencyDeltas, Prepared,
};
use super::{codec, ids, Repository, TraceRecord};

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

    /// A trace's one record, its spans canonical: taken as they are, with no span id to
    /// compare.
    fn of(r: &'r TraceRecord) -> Self {
        let mut merged = Self::empty();
        merged.spans = Cow::Borrowed(&r.trace.spans);
        merged.absorb_summary(r);
        merged
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

    /// Adds a record's new spans (by span id), flags and analysis (see
    /// [`Merged::absorb_summary`]); true when anything changed.
    fn absorb(&mut self, r: &'r TraceRecord, ids: &mut FxHashSet<SpanId>) -> bool {
        let mut changed = false;
        for s in &r.trace.spans {
            if ids.insert(s.span_id) {
                self.spans.to_mut().push(s.clone());
                changed = true;
            }
        }
        self.absorb_summary(r) || changed
    }

    /// Adds a record's flags and analysis (when it ranks higher: from a whole trace
    /// over from an amendment, then made of more spans); true when anything changed.
    fn absorb_summary(&mut self, r: &'r TraceRecord) -> bool {
        let before = self.flags();
        let mut changed = false;
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

/// Traces prepared per task of the thread pool and handed to the writing thread.
const PREPARE_CHUNK: usize = 64;

/// A trace of the batch once its stored row (if any) has been read: what to write.
struct Pending<'r> {
    key: [u8; 16],
    merged: Merged<'r>,
    /// The row it had and that row's dependency counts, negated, when it was stored.
    replaces: Option<(i64, DependencyDeltas)>,
}

impl Repository {
    /// Stores a batch of trace records in one transaction (see the module docs for
    /// how records of one trace id combine). On error nothing of the batch is stored.
    ///
    /// The rows, index terms and dependency counts of the batch's new traces are
    /// prepared on the thread pool, a chunk at a time, while this thread reads the
    /// stored rows of the batch's trace ids and then writes the chunks prepared, in the
    /// batch's order; a trace that was stored or comes in several records is prepared
    /// here once merged.
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
        let mut report = StoreReport::default();
        let mut batch = BatchBuilder::new(self.next_row);
        let mut deltas = DependencyDeltas::default();
        let mut killed = Vec::new();
        let (groups, order) = (&groups, &order);
        let (conn, checkpointer) = (&mut self.conn, self.checkpointer.as_ref());
        let known_ids = &mut self.known_ids;
        let bodies = &mut self.bodies;
        let dictionary = bodies.current();
        let dictionary = dictionary.as_deref();
        // bytes of the batch's body encodings, and as stored
        let (mut encoded, mut stored) = (0, 0);
        let tx = std::thread::scope(|scope| {
            // most traces of a batch are new and come in one record: those are prepared
            // on the thread pool from the start, while this thread waits for the log
            // and reads the stored rows; the others are prepared here once merged
            let (send, receive) = std::sync::mpsc::sync_channel::<Vec<Option<Prepared>>>(
                order.len() / PREPARE_CHUNK + 1,
            );
            scope.spawn(move || {
                for chunk in order.chunks(PREPARE_CHUNK) {
                    let prepared = chunk
                        .par_iter()
                        .map(|id| match groups.get(id).map(Vec::as_slice) {
                            Some([only]) if canonical(&only.trace.spans) => Some(prepare(
                                Cow::Borrowed(&only.trace.spans),
                                only.analysis.as_ref(),
                                dictionary,
                            )),
                            _ => None,
                        })
                        .collect();
                    if send.send(prepared).is_err() {
                        return; // the writer stopped at an error
                    }
                }
            });
            if let Some(c) = checkpointer {
                c.drain(); // see `Repository::before_write`
            }
            let tx = conn.transaction().during(&path, DURING)?;
            let mut pending = Vec::with_capacity(order.len());
            let mut ids = FxHashSet::default();
            for (index, &id) in order.iter().enumerate() {
                let group = groups.get(&id).map(Vec::as_slice).unwrap_or_default();
                let known = known_ids.as_ref();
                match merge_one(&tx, &path, id, group, known, bodies, &mut ids)? {
                    None => report.unchanged += 1,
                    Some(p) => {
                        if p.replaces.is_some() {
                            report.updated += 1;
                        } else {
                            report.inserted += 1;
                        }
                        pending.push((index, p));
                    }
                }
            }
            let mut speculative = receive.into_iter().flatten();
            let mut next = 0;
            for (index, p) in pending {
                let mut ready = None;
                while next <= index {
                    ready = speculative.next().flatten();
                    next += 1;
                }
                let flags = p.merged.flags();
                let prepared = match (ready, &p.replaces) {
                    (Some(ready), None) => ready,
                    _ => prepare(
                        p.merged.spans,
                        p.merged.analysis.as_ref().map(|a| &*a.0),
                        dictionary,
                    ),
                };
                bodies.sample(&prepared.body);
                encoded += prepared.encoded_len;
                stored += prepared.body.len();
                if let Some((row, old_dependencies)) = p.replaces {
                    // the trace moves to a row of this batch; its old row's postings go stale
                    tx.prepare_cached("DELETE FROM traces WHERE id = ?1")
                        .and_then(|mut st| st.execute([row]))
                        .during(&path, DURING)?;
                    killed.push(row);
                    for (k, v) in old_dependencies {
                        *deltas.entry(k).or_insert(0) += v;
                    }
                }
                let row = batch.next_row();
                insert_row(&tx, row, &p.key, flags, &prepared).during(&path, DURING)?;
                ids::record(&tx, known_ids.as_mut(), &p.key, row).during(&path, DURING)?;
                batch.add(prepared.start_ns, prepared.duration_ns, &prepared.terms);
                for (k, v) in prepared.dependencies {
                    *deltas.entry(k).or_insert(0) += v;
                }
            }
            Ok::<_, RepositoryError>(tx)
        })?;
        let next_row = batch.next_row();
        batch.write(&tx).during(&path, DURING)?;
        kill_rows(&tx, &killed).during(&path, DURING)?;
        write_dependencies(&tx, &deltas).during(&path, DURING)?;
        let recent_ids = ids::merge_if_over(
            &tx,
            self.recent_ids + report.inserted + report.updated,
            self.recent_ids_max,
        )
        .during(&path, DURING)?;
        let new_operations =
            write_operations(&tx, &self.known_operations, records).during(&path, DURING)?;
        let trained = self
            .bodies
            .after_batch(&tx, encoded, stored)
            .during(&path, DURING)?;
        tx.commit().during(&path, DURING)?;
        self.committed();
        self.bodies.committed(trained);
        self.next_row = next_row;
        self.recent_ids = recent_ids;
        // remembered only once committed: a rolled-back batch must write them again
        if self.known_operations.len() + new_operations.len() > KNOWN_OPERATIONS_CAP {
            self.known_operations.clear();
        }
        self.known_operations.extend(new_operations);
        Ok(report)
    }
}

/// Combines a trace's records with its stored row, if any (looked up unless `known`
/// says the id is not stored); `None` when they add nothing to what is stored.
fn merge_one<'r>(
    tx: &Transaction<'_>,
    path: &std::path::Path,
    id: TraceId,
    group: &[&'r TraceRecord],
    known: Option<&KnownIds>,
    bodies: &Bodies,
    ids: &mut FxHashSet<SpanId>,
) -> Result<Option<Pending<'r>>, RepositoryError> {
    const DURING: &str = "storing traces";
    let key = id_bytes(id);
    let existing = if known.is_none_or(|k| k.may_hold(&key)) {
        ids::find(tx, &key).during(path, DURING)?
    } else {
        None
    };
    ids.clear();
    let Some((row, flags, body)) = existing else {
        let merged = match group {
            // the common case, a new trace in one record: taken as it is
            [only] if canonical(&only.trace.spans) => Merged::of(only),
            _ => {
                let mut merged = Merged::empty();
                for r in group {
                    merged.absorb(r, ids);
                }
                merged
            }
        };
        return Ok(Some(Pending {
            key,
            merged,
            replaces: None,
        }));
    };
    let bad = |e| RepositoryError::bad_record(path, DURING, e);
    let body = bodies.open(tx, &body).map_err(bad)?;
    let (spans, analysis) = codec::decode(id, &body).map_err(|e| bad(e.0))?;
    let mut old_dependencies = DependencyDeltas::default();
    count_dependencies(
        &spans,
        summarize(&spans).start_ns,
        -1,
        &mut old_dependencies,
    );
    ids.extend(spans.iter().map(|s| s.span_id));
    let mut merged = Merged::stored(spans, analysis, flags);
    let mut changed = false;
    for r in group {
        changed |= merged.absorb(r, ids);
    }
    Ok(changed.then_some(Pending {
        key,
        merged,
        replaces: Some((row, old_dependencies)),
    }))
}

fn insert_row(
    tx: &Transaction<'_>,
    row: i64,
    key: &[u8; 16],
    flags: i64,
    p: &Prepared,
) -> rusqlite::Result<usize> {
    tx.prepare_cached(
        "INSERT INTO traces (id, trace_id, start_ns, duration_ns, span_count, error_count, \
         flags, root_service, root_name, services, body) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        row,
        &key[..],
        p.start_ns,
        p.duration_ns,
        p.span_count as i64,
        p.error_count as i64,
        flags,
        p.root_service.as_deref(),
        p.root_name.as_deref(),
        p.services,
        p.body
    ])
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
