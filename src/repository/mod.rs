//! The trace repository: closed traces (with their analysis), aggregate windows and
//! alert events in an embedded SQLite database on disk, indexed for Jaeger-style search,
//! with retention by age and by size.
//!
//! Writes are idempotent, so the repository can be fed at least once: a trace stored
//! twice, or in pieces (the assembler's amendments carry late spans under the same trace
//! id), is kept once with the union of its spans (by span id) and its summary
//! recomputed; windows are keyed by series and window, alerts by fingerprint, status and
//! start. A batch is one transaction: after a crash it is either all there or not at all.
//!
//! Storage: a trace is one row of summary columns and one compact blob of spans and
//! analysis (`codec/`); search goes through posting lists per stored batch and term
//! (service, service and operation, tag `key=value`), visited newest batch first
//! (`postings.rs`, `search.rs`). Callers should store traces in batches (hundreds to
//! thousands per call, as a consumer poll delivers them): each call is one transaction
//! and one posting list per distinct term. Synchronous and single-writer: the caller
//! owns the thread (a later step feeds it from Kafka and serves it over HTTP). Another
//! process or thread may read the same file with [`Repository::open_read_only`] while
//! it is written.
//!
//! Errors map SQLite's result codes to what a caller does: a full disk, a corrupt file,
//! a read-only file or a lock held elsewhere are distinct [`RepositoryError`] variants
//! after which the batch is counted as dropped ([`RepositoryError::is_drop`]).

mod bodies;
mod checkpointer;
mod codec;
mod error;
mod events;
mod ids;
mod postings;
mod prepare;
mod retention;
mod schema;
mod search;
mod terms;
mod write;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_bodies;
#[cfg(test)]
mod tests_codec;
#[cfg(test)]
mod tests_events;
#[cfg(test)]
mod tests_ids;
#[cfg(test)]
mod tests_search;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags};
use rustc_hash::FxHashSet;

use crate::model::{Analysis, CloseReason, Span, SpanKind, Trace, TraceId};

pub use error::RepositoryError;
pub use events::{AlertQuery, ScopeQuery, WindowQuery, MAX_SCOPE_WINDOWS};
pub use retention::RetentionReport;
pub use schema::SCHEMA_VERSION;
pub use search::{TraceQuery, DEFAULT_SEARCH_LIMIT, MAX_SEARCH_LIMIT};

use error::Context;

/// How much the repository keeps. `None` keeps everything on that axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionSettings {
    /// Traces, windows and alerts whose event time (trace start, window end, alert
    /// event time) is older than this, relative to the `now` given to
    /// [`Repository::enforce_retention`], are deleted.
    pub max_age_ns: Option<i64>,
    /// When the database's pages in use exceed this, the oldest traces are deleted (a
    /// stored batch at a time) until they fit, and the freed pages are returned to the
    /// filesystem. Dependency counts, windows and alerts are kept by age only.
    pub max_bytes: Option<u64>,
}

/// A closed trace as the pipeline publishes it on the traces topic: the trace, or an
/// amendment carrying late spans of it, and its analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRecord {
    pub trace: Trace,
    pub analysis: Option<Analysis>,
}

/// The summary of a stored trace, recomputed from the union of its spans.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSummary {
    pub trace_id: TraceId,
    /// Earliest span start (unix nanos).
    pub start_ns: i64,
    /// Latest span end minus earliest span start.
    pub duration_ns: i64,
    pub span_count: usize,
    /// Spans with status ERROR.
    pub error_count: usize,
    /// Service and name of the root span (the earliest root in span order), if any.
    pub root_service: Option<String>,
    pub root_name: Option<String>,
    /// Distinct service names, sorted.
    pub services: Vec<String>,
    /// Some record of the trace said spans were missing.
    pub incomplete: bool,
    /// Why the assembler closed it (of its first record that was not an amendment).
    pub close_reason: CloseReason,
}

/// A stored trace: summary, spans in canonical order, and analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTrace {
    pub summary: TraceSummary,
    /// Sorted by start time, then span id.
    pub spans: Vec<Span>,
    /// The analysis of the most complete record that carried one. When
    /// `analysis.span_count` is less than the number of spans, amendments added spans
    /// after it was made: a reader that needs it exact analyses `spans` again.
    pub analysis: Option<Analysis>,
}

/// One operation of a service (a span name with its kind).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Operation {
    pub name: String,
    pub span_kind: SpanKind,
}

/// Calls from one service to another (a span whose parent is in another service).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dependency {
    pub parent: String,
    pub child: String,
    pub call_count: u64,
}

/// The repository: one SQLite database file (plus its `-wal` and `-shm` files).
pub struct Repository {
    conn: Connection,
    path: PathBuf,
    retention: RetentionSettings,
    /// The row id of the next trace written.
    next_row: i64,
    /// Operations already written to the `operations` table by this connection.
    known_operations: FxHashSet<(Arc<str>, Arc<str>, SpanKind)>,
    /// The writer's checkpoint thread (none for a reader).
    checkpointer: Option<checkpointer::Checkpointer>,
    /// Ids in the recent level of the id index (an upper bound), and how many it holds
    /// before they are merged (see `ids.rs`).
    recent_ids: usize,
    recent_ids_max: usize,
    /// The ids that may be stored (the writer's; a reader has none).
    known_ids: Option<ids::KnownIds>,
    /// The dictionaries trace bodies are compressed with.
    bodies: bodies::Bodies,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("path", &self.path)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl Repository {
    /// Opens the database at `path`, creating it and its schema when the file does not
    /// exist. A file that is not a database, or whose schema version this code does not
    /// know, is an error (never overwritten).
    pub fn open(
        path: impl AsRef<Path>,
        retention: RetentionSettings,
    ) -> Result<Self, RepositoryError> {
        let path = path.as_ref().to_path_buf();
        let mut conn = Connection::open(&path).map_err(|e| match e.sqlite_error_code() {
            Some(_) => RepositoryError::from_sqlite(&path, "opening", e),
            None => RepositoryError::Open {
                path: path.clone(),
                source: e,
            },
        })?;
        schema::prepare(&mut conn, &path)?;
        let next_row = next_row(&conn, &path)?;
        let recent_ids = ids::recent_count(&conn).during(&path, "reading the id index")?;
        let known_ids = ids::KnownIds::load(&conn).during(&path, "reading the id index")?;
        let bodies = bodies::Bodies::load(&conn).during(&path, "reading the dictionaries")?;
        let checkpointer = checkpointer::Checkpointer::start(&path);
        if checkpointer.is_some() {
            conn.execute_batch("PRAGMA wal_autocheckpoint = 0")
                .during(&path, "setting pragmas")?;
        }
        Ok(Self {
            conn,
            path,
            retention,
            next_row,
            known_operations: FxHashSet::default(),
            checkpointer,
            recent_ids,
            recent_ids_max: ids::RECENT_MAX,
            known_ids: Some(known_ids),
            bodies,
        })
    }

    /// Opens an existing repository for reading only (for instance from a query server
    /// beside the writer); every write through it fails with
    /// [`RepositoryError::ReadOnly`].
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self, RepositoryError> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| RepositoryError::Open {
            path: path.clone(),
            source: e,
        })?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .during(&path, "reading the schema version")?;
        if version != SCHEMA_VERSION {
            return Err(RepositoryError::UnknownVersion {
                path,
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA cache_size = -65536;")
            .during(&path, "setting pragmas")?;
        Ok(Self {
            conn,
            path,
            retention: RetentionSettings::default(),
            next_row: i64::MAX,
            known_operations: FxHashSet::default(),
            checkpointer: None,
            recent_ids: 0,
            recent_ids_max: ids::RECENT_MAX,
            known_ids: None,
            bodies: bodies::Bodies::reader(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The retention rules [`Repository::enforce_retention`] applies.
    pub fn retention(&self) -> RetentionSettings {
        self.retention
    }

    /// Bytes of database pages in use (the file may be larger until space is reclaimed).
    pub fn used_bytes(&self) -> Result<u64, RepositoryError> {
        let (pages, free, size): (i64, i64, i64) = self
            .conn
            .query_row(
                "SELECT (SELECT page_count FROM pragma_page_count()), \
                        (SELECT freelist_count FROM pragma_freelist_count()), \
                        (SELECT page_size FROM pragma_page_size())",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .during(&self.path, "measuring the database")?;
        Ok(u64::try_from((pages - free).max(0) * size).unwrap_or(0))
    }

    /// Number of stored traces.
    pub fn trace_count(&self) -> Result<u64, RepositoryError> {
        self.conn
            .query_row("SELECT count(*) FROM traces", [], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
            .during(&self.path, "counting traces")
    }

    /// Copies the write-ahead log into the database file and truncates the log (also
    /// done by retention; call it on shutdown to leave one file).
    pub fn checkpoint(&self) -> Result<(), RepositoryError> {
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .during(&self.path, "checkpointing")
    }

    /// Before a write transaction: lets the checkpoint thread catch up with a long log
    /// so that the transaction starts it over (see `checkpointer.rs`).
    fn before_write(&self) {
        if let Some(c) = &self.checkpointer {
            c.drain();
        }
    }

    /// Tells the checkpoint thread that a transaction was committed.
    fn committed(&self) {
        if let Some(c) = &self.checkpointer {
            c.committed();
        }
    }

    /// Bodies (and bytes of them) to sample before training a dictionary, encoded bytes
    /// per window of the compression ratio and windows before a dictionary may be
    /// replaced; for tests, which store fewer.
    #[cfg(test)]
    pub(crate) fn set_dictionary_training(
        &mut self,
        samples: (usize, usize),
        window: usize,
        n: usize,
    ) {
        self.bodies.set_training(samples, window, n);
    }

    /// Runs a SQL statement on the connection; for tests that provoke errors.
    #[cfg(test)]
    pub(crate) fn execute_raw(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.execute_batch(sql)
    }
}

/// One past the largest trace row of any batch or trace.
fn next_row(conn: &Connection, path: &Path) -> Result<i64, RepositoryError> {
    conn.query_row(
        "SELECT max(coalesce((SELECT max(last_row) FROM batches), 0), \
                coalesce((SELECT max(id) FROM traces), 0)) + 1",
        [],
        |r| r.get(0),
    )
    .during(path, "reading the last trace row")
}
