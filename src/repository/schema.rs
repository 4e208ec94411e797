//! The database's tables and pragmas, and the check of its schema version.

use std::path::Path;

use rusqlite::Connection;

use super::error::{Context, RepositoryError};

/// The schema version this code writes and reads (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 4;

/// Pragmas of every connection: WAL so that readers do not block the writer, NORMAL
/// sync (a power loss may lose the last transactions, never corrupt the file; the
/// writer's input is replayed from Kafka offsets that were not committed), a page cache
/// of 64 MiB, temporary b-trees in memory, a busy timeout for a second connection, and
/// checkpoints every 1024 pages (32 MiB) with the log truncated to 64 MiB after.
const CONNECTION_PRAGMAS: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA cache_size = -65536;
PRAGMA journal_size_limit = 268435456;
PRAGMA temp_store = MEMORY;
PRAGMA foreign_keys = OFF;
PRAGMA busy_timeout = 5000;
PRAGMA wal_autocheckpoint = 1024;
";

/// The traces table, its index and the two levels of the trace id index, as version 3
/// creates them (a new file, and the migration from version 2).
macro_rules! traces_tables {
    () => {
        "
CREATE TABLE traces (
    id INTEGER PRIMARY KEY,
    trace_id BLOB NOT NULL,
    start_ns INTEGER NOT NULL,
    duration_ns INTEGER NOT NULL,
    span_count INTEGER NOT NULL,
    error_count INTEGER NOT NULL,
    flags INTEGER NOT NULL,
    root_service TEXT,
    root_name TEXT,
    services TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX traces_start ON traces (start_ns);
CREATE TABLE trace_ids (trace_id BLOB PRIMARY KEY, id INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE trace_ids_recent (trace_id BLOB PRIMARY KEY, id INTEGER NOT NULL) WITHOUT ROWID;
"
    };
}

/// Version 3, which with [`MIGRATE_V3`] is version 4 (version 1 keyed `postings` by
/// term first, see [`MIGRATE_V1`]; version 2 had a unique index on `traces.trace_id`,
/// see [`MIGRATE_V2`]).
///
/// - `traces`: one row per trace, the summary columns then the spans and analysis blob
///   (see `codec/`, compressed as `bodies.rs` says). Row ids are assigned by the
///   writer, consecutively per batch.
/// - `dictionaries`: the zstd dictionaries bodies are compressed with (`bodies.rs`).
/// - `trace_ids_recent` and `trace_ids`: the trace id index in two levels (see
///   `ids.rs`), the ids of the last batches and the ids merged from them.
/// - `batches`: one row per stored batch (`batch` is its first trace row, `last_row`
///   its last), its start range, and `traces`: per row, the trace's start and duration
///   or a mark that the row was deleted or moved (see `postings.rs`).
/// - `postings`: the search index, per batch and term (hash of a service, a service and
///   span name, or a tag `key=value`), the rows of the batch that have it (with the
///   longest span's duration for service and operation terms). Keyed by batch first, so
///   a batch's lists are appended at the end of the table instead of scattered over
///   every term's range (which rewrote most of the table's pages at each batch).
/// - `operations`: the distinct (service, span name, span kind) seen.
/// - `dependencies`: parent service to child service calls per minute of trace start.
/// - `windows` and `alerts`: aggregate windows and alert events as the pipeline wrote them.
const SCHEMA_V3: &str = concat!(
    traces_tables!(),
    "
CREATE TABLE batches (
    batch INTEGER PRIMARY KEY,
    last_row INTEGER NOT NULL,
    min_start INTEGER NOT NULL,
    max_start INTEGER NOT NULL,
    traces BLOB NOT NULL
);
CREATE INDEX batches_max_start ON batches (max_start);
CREATE TABLE postings (
    batch INTEGER NOT NULL,
    term INTEGER NOT NULL,
    list BLOB NOT NULL,
    PRIMARY KEY (batch, term)
) WITHOUT ROWID;
CREATE TABLE operations (
    service TEXT NOT NULL,
    name TEXT NOT NULL,
    kind INTEGER NOT NULL,
    PRIMARY KEY (service, name, kind)
) WITHOUT ROWID;
CREATE TABLE dependencies (
    minute_ns INTEGER NOT NULL,
    parent TEXT NOT NULL,
    child TEXT NOT NULL,
    calls INTEGER NOT NULL,
    PRIMARY KEY (minute_ns, parent, child)
) WITHOUT ROWID;
CREATE TABLE windows (
    scope TEXT NOT NULL,
    series TEXT NOT NULL,
    size_ns INTEGER NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (scope, series, size_ns, start_ns)
) WITHOUT ROWID;
CREATE INDEX windows_end ON windows (end_ns);
CREATE TABLE alerts (
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    starts_at_ms INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    rule TEXT NOT NULL,
    service TEXT,
    suspected_service TEXT,
    body BLOB NOT NULL,
    PRIMARY KEY (fingerprint, status, starts_at_ms)
) WITHOUT ROWID;
CREATE INDEX alerts_at ON alerts (at_ms);
CREATE INDEX alerts_rule ON alerts (rule, at_ms);
"
);

/// From version 3: the dictionaries that trace bodies are compressed with (see
/// `bodies.rs`); a new file gets it after [`SCHEMA_V3`] as well.
const MIGRATE_V3: &str = "
CREATE TABLE dictionaries (id INTEGER PRIMARY KEY, dict BLOB NOT NULL);
";

/// From version 1: the posting lists keyed by batch first.
const MIGRATE_V1: &str = "
CREATE TABLE postings_v2 (
    batch INTEGER NOT NULL,
    term INTEGER NOT NULL,
    list BLOB NOT NULL,
    PRIMARY KEY (batch, term)
) WITHOUT ROWID;
INSERT INTO postings_v2 (batch, term, list) SELECT batch, term, list FROM postings ORDER BY batch, term;
DROP TABLE postings;
ALTER TABLE postings_v2 RENAME TO postings;
";

/// From version 2: `traces` without its unique index on trace ids, which move to the
/// two-level index (all into `trace_ids`, in one sorted pass).
const MIGRATE_V2: &str = concat!(
    "
ALTER TABLE traces RENAME TO traces_v2;
DROP INDEX traces_start;
",
    traces_tables!(),
    "
INSERT INTO traces (id, trace_id, start_ns, duration_ns, span_count, error_count, flags, \
    root_service, root_name, services, body) \
    SELECT id, trace_id, start_ns, duration_ns, span_count, error_count, flags, \
    root_service, root_name, services, body FROM traces_v2 ORDER BY id;
DROP TABLE traces_v2;
INSERT INTO trace_ids (trace_id, id) SELECT trace_id, id FROM traces ORDER BY trace_id;
"
);

/// Sets the pragmas, then creates the schema of a new file or checks the version of an
/// existing one.
pub(crate) fn prepare(conn: &mut Connection, path: &Path) -> Result<(), RepositoryError> {
    // the first read of a file that is not a database fails here with NOTADB
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .during(path, "reading the schema version")?;
    if !(0..=SCHEMA_VERSION).contains(&version) {
        return Err(RepositoryError::UnknownVersion {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version == 0 {
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .during(path, "reading the schema")?;
        if tables > 0 {
            // a database of some other program: refuse rather than mix tables into it
            return Err(RepositoryError::UnknownVersion {
                path: path.to_path_buf(),
                found: 0,
                supported: SCHEMA_VERSION,
            });
        }
        // must precede the first table to take effect; a trace row is a few KB, so
        // large pages hold several rows each instead of one row and a gap
        conn.execute_batch("PRAGMA page_size = 32768; PRAGMA auto_vacuum = INCREMENTAL")
            .during(path, "setting auto_vacuum")?;
    }
    conn.execute_batch(CONNECTION_PRAGMAS)
        .during(path, "setting pragmas")?;
    let steps: &[(&str, &str)] = match version {
        0 => &[
            (SCHEMA_V3, "creating the schema"),
            (MIGRATE_V3, "creating the schema"),
        ],
        1 => &[
            (MIGRATE_V1, "migrating the schema from version 1"),
            (MIGRATE_V2, "migrating the schema from version 2"),
            (MIGRATE_V3, "migrating the schema from version 3"),
        ],
        2 => &[
            (MIGRATE_V2, "migrating the schema from version 2"),
            (MIGRATE_V3, "migrating the schema from version 3"),
        ],
        3 => &[(MIGRATE_V3, "migrating the schema from version 3")],
        _ => return Ok(()),
    };
    let during = steps[0].1;
    let tx = conn.transaction().during(path, during)?;
    for (script, during) in steps {
        tx.execute_batch(script).during(path, during)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .during(path, during)?;
    tx.commit().during(path, during)?;
    Ok(())
}
