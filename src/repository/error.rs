//! What can go wrong with the repository's database file, by what a caller does about it.

use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;
use thiserror::Error;

/// An error of the trace repository. Every variant names the database file and what was
/// being done; [`RepositoryError::is_drop`] tells the errors after which a caller counts
/// the batch as dropped and goes on.
#[derive(Debug, Error)]
pub enum RepositoryError {
    /// The disk (or the database's `max_page_count`) is full.
    #[error(
        "trace repository {path} is full while {during}: free disk space or lower retention max_bytes"
    )]
    Full { path: PathBuf, during: &'static str },
    /// The file is not a database, or its pages are damaged.
    #[error(
        "trace repository {path} is corrupt or not a database while {during} ({detail}): move the file away and restart to start an empty repository"
    )]
    Corrupt {
        path: PathBuf,
        during: &'static str,
        detail: String,
    },
    /// The file or its directory cannot be written.
    #[error(
        "trace repository {path} is read-only while {during}: check the file's and directory's permissions and the filesystem's mount options"
    )]
    ReadOnly { path: PathBuf, during: &'static str },
    /// Another process holds the database's write lock for longer than the busy timeout.
    #[error(
        "trace repository {path} is locked by another process while {during}: run one writer per repository path"
    )]
    Locked { path: PathBuf, during: &'static str },
    /// The file was written by a newer spanline (or another program using `user_version`).
    #[error(
        "trace repository {path} has schema version {found}, this spanline reads version {supported}: upgrade spanline or point it at another path"
    )]
    UnknownVersion {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// The file or its directory cannot be opened or created.
    #[error("cannot open trace repository {path}: {source}: check that the directory exists and is writable")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// A stored record could not be decoded.
    #[error("trace repository {path} holds a damaged record while {during}: {detail}")]
    BadRecord {
        path: PathBuf,
        during: &'static str,
        detail: String,
    },
    /// A query parameter that cannot be answered as given.
    #[error("invalid query parameter {parameter}: {detail}")]
    InvalidQuery {
        parameter: &'static str,
        detail: String,
    },
    /// Any other database error.
    #[error("trace repository {path}: {during} failed: {source}")]
    Sqlite {
        path: PathBuf,
        during: &'static str,
        #[source]
        source: rusqlite::Error,
    },
}

impl RepositoryError {
    /// True for the errors after which a writer drops the batch, counts it and goes on
    /// (the database stays usable or the operator must act; retrying at once does not help).
    pub fn is_drop(&self) -> bool {
        matches!(
            self,
            Self::Full { .. }
                | Self::Corrupt { .. }
                | Self::ReadOnly { .. }
                | Self::Locked { .. }
                | Self::BadRecord { .. }
        )
    }

    /// A short reason, fit for a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Full { .. } => "full",
            Self::Corrupt { .. } => "corrupt",
            Self::ReadOnly { .. } => "read_only",
            Self::Locked { .. } => "locked",
            Self::UnknownVersion { .. } => "unknown_version",
            Self::Open { .. } => "open",
            Self::BadRecord { .. } => "bad_record",
            Self::InvalidQuery { .. } => "invalid_query",
            Self::Sqlite { .. } => "sqlite",
        }
    }

    /// Classifies a SQLite error by its result code.
    pub(crate) fn from_sqlite(path: &Path, during: &'static str, e: rusqlite::Error) -> Self {
        let path = path.to_path_buf();
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => Self::Full { path, during },
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => Self::Corrupt {
                path,
                during,
                detail: e.to_string(),
            },
            Some(ErrorCode::ReadOnly) => Self::ReadOnly { path, during },
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                Self::Locked { path, during }
            }
            _ => Self::Sqlite {
                path,
                during,
                source: e,
            },
        }
    }

    pub(crate) fn bad_record(path: &Path, during: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRecord {
            path: path.to_path_buf(),
            during,
            detail: detail.into(),
        }
    }
}

/// Adds the repository's path and the operation to SQLite errors.
pub(crate) trait Context<T> {
    fn during(self, path: &Path, during: &'static str) -> Result<T, RepositoryError>;
}

impl<T> Context<T> for Result<T, rusqlite::Error> {
    fn during(self, path: &Path, during: &'static str) -> Result<T, RepositoryError> {
        self.map_err(|e| RepositoryError::from_sqlite(path, during, e))
    }
}
