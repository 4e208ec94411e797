//! The registry's vocabulary: store errors with their Confluent codes, compatibility
//! levels and version selectors.

use std::fmt;
use std::str::FromStr;

/// An error of the schema store, each with its Confluent `error_code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The subject has no versions (or only soft-deleted ones, unless those are asked for).
    #[error("subject {0:?} not found")]
    SubjectNotFound(String),
    /// The subject exists but not with this version.
    #[error("version {version} not found for subject {subject:?}")]
    VersionNotFound {
        /// The subject asked for.
        subject: String,
        /// The version asked for, as given.
        version: String,
    },
    /// Every version of the subject is already soft-deleted.
    #[error("subject {0:?} was soft-deleted; delete it with permanent=true to remove it")]
    SubjectSoftDeleted(String),
    /// A permanent delete of a subject that still has live versions.
    #[error("subject {0:?} must be soft-deleted before it is deleted permanently")]
    SubjectNotSoftDeleted(String),
    /// The version is already soft-deleted.
    #[error("version {version} of subject {subject:?} was soft-deleted; delete it with permanent=true to remove it")]
    VersionSoftDeleted {
        /// The subject asked for.
        subject: String,
        /// The version asked for.
        version: u32,
    },
    /// A permanent delete of a version that is not soft-deleted.
    #[error("version {version} of subject {subject:?} must be soft-deleted before it is deleted permanently")]
    VersionNotSoftDeleted {
        /// The subject asked for.
        subject: String,
        /// The version asked for.
        version: u32,
    },
    /// No schema has this global id.
    #[error("schema {0} not found")]
    SchemaIdNotFound(u32),
    /// The schema is valid but not registered under the subject.
    #[error("schema not found under subject {0:?}")]
    SchemaNotFound(String),
    /// The subject has no compatibility level of its own.
    #[error("subject {0:?} has no subject-level compatibility configured")]
    SubjectLevelNotConfigured(String),
    /// The schema text is not a valid Avro schema.
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    /// A version that is neither a positive number, `latest` nor `-1`.
    #[error("invalid version {0:?}: use a number from 1 to 2147483647, \"latest\" or -1")]
    InvalidVersion(String),
    /// A compatibility level name that is not known.
    #[error(
        "invalid compatibility level {0:?}: use one of NONE, BACKWARD, BACKWARD_TRANSITIVE, \
         FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE"
    )]
    InvalidLevel(String),
    /// The schema breaks the subject's compatibility level (wording as Confluent's).
    #[error(
        "Schema being registered is incompatible with an earlier schema for subject {subject:?}, details: [{}]",
        .details.join(", ")
    )]
    Incompatible {
        /// The subject registered under.
        subject: String,
        /// One entry per failed check.
        details: Vec<String>,
    },
}

impl StoreError {
    /// The Confluent Schema Registry `error_code` for this error.
    pub fn error_code(&self) -> u32 {
        match self {
            StoreError::SubjectNotFound(_) => 40401,
            StoreError::VersionNotFound { .. } => 40402,
            StoreError::SchemaIdNotFound(_) | StoreError::SchemaNotFound(_) => 40403,
            StoreError::SubjectSoftDeleted(_) => 40404,
            StoreError::SubjectNotSoftDeleted(_) => 40405,
            StoreError::VersionSoftDeleted { .. } => 40406,
            StoreError::VersionNotSoftDeleted { .. } => 40407,
            StoreError::SubjectLevelNotConfigured(_) => 40408,
            StoreError::InvalidSchema(_) => 42201,
            StoreError::InvalidVersion(_) => 42202,
            StoreError::InvalidLevel(_) => 42203,
            StoreError::Incompatible { .. } => 409,
        }
    }
}

/// A compatibility level, as Confluent names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompatibilityLevel {
    /// No checks.
    None,
    /// The new schema can read data written with the latest version.
    #[default]
    Backward,
    /// The new schema can read data written with every version.
    BackwardTransitive,
    /// The latest version can read data written with the new schema.
    Forward,
    /// Every version can read data written with the new schema.
    ForwardTransitive,
    /// Backward and forward against the latest version.
    Full,
    /// Backward and forward against every version.
    FullTransitive,
}

impl CompatibilityLevel {
    /// The Confluent name, e.g. `BACKWARD_TRANSITIVE`.
    pub fn as_str(self) -> &'static str {
        match self {
            CompatibilityLevel::None => "NONE",
            CompatibilityLevel::Backward => "BACKWARD",
            CompatibilityLevel::BackwardTransitive => "BACKWARD_TRANSITIVE",
            CompatibilityLevel::Forward => "FORWARD",
            CompatibilityLevel::ForwardTransitive => "FORWARD_TRANSITIVE",
            CompatibilityLevel::Full => "FULL",
            CompatibilityLevel::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Whether the new schema must read data written with older ones.
    pub fn backward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Backward
                | CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }

    /// Whether older schemas must read data written with the new one.
    pub fn forward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Forward
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }

    /// Whether every version is checked, not only the latest.
    pub fn transitive(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CompatibilityLevel {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let level = match s.to_ascii_uppercase().as_str() {
            "NONE" => CompatibilityLevel::None,
            "BACKWARD" => CompatibilityLevel::Backward,
            "BACKWARD_TRANSITIVE" => CompatibilityLevel::BackwardTransitive,
            "FORWARD" => CompatibilityLevel::Forward,
            "FORWARD_TRANSITIVE" => CompatibilityLevel::ForwardTransitive,
            "FULL" => CompatibilityLevel::Full,
            "FULL_TRANSITIVE" => CompatibilityLevel::FullTransitive,
            _ => return Err(StoreError::InvalidLevel(s.to_owned())),
        };
        Ok(level)
    }
}

/// Which version of a subject a request means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    /// The newest version (`latest` or `-1`).
    Latest,
    /// A version number, 1 or more.
    Number(u32),
}

impl FromStr for VersionSpec {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("latest") || s == "-1" {
            return Ok(VersionSpec::Latest);
        }
        match s.parse::<i32>() {
            Ok(n) if n >= 1 => Ok(VersionSpec::Number(n.unsigned_abs())),
            _ => Err(StoreError::InvalidVersion(s.to_owned())),
        }
    }
}

impl fmt::Display for VersionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionSpec::Latest => f.write_str("latest"),
            VersionSpec::Number(n) => write!(f, "{n}"),
        }
    }
}
