//! The registry's pure in-memory state: subjects, versions, global schema ids and
//! compatibility levels. No I/O; the HTTP layer wraps a [`SchemaStore`] in a mutex.

use std::collections::{BTreeMap, HashMap};

use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::Schema;

use super::model::{CompatibilityLevel, StoreError, VersionSpec};

/// One version of a subject, as the registry reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredVersion {
    /// The subject, e.g. `spans-value`.
    pub subject: String,
    /// The version within the subject, from 1.
    pub version: u32,
    /// The global schema id, from 1.
    pub id: u32,
    /// The schema text as first registered under this id.
    pub schema: String,
}

struct StoredSchema {
    text: String,
    key: String,
    parsed: Schema,
}

#[derive(Debug, Clone, Copy)]
struct SubjectVersion {
    version: u32,
    id: u32,
    /// Soft-deleted: hidden unless asked for, until deleted permanently.
    deleted: bool,
}

/// Subjects, their versions and the global schema ids, in memory.
///
/// Deletes follow Confluent: a soft delete hides versions, a permanent delete of
/// soft-deleted ones removes them. Ids are never reused nor forgotten, so data written
/// with a deleted version stays decodable by id.
#[derive(Default)]
pub struct SchemaStore {
    /// Index `i` holds the schema with id `i + 1`.
    schemas: Vec<StoredSchema>,
    ids_by_key: HashMap<String, u32>,
    subjects: BTreeMap<String, Vec<SubjectVersion>>,
    subject_levels: HashMap<String, CompatibilityLevel>,
    global_level: CompatibilityLevel,
}

/// Parses an Avro schema and returns it with its identity key.
///
/// The key is the parsed schema written back as JSON: whitespace and key order do not
/// matter, but defaults, docs and logical types do. Avro's parsing canonical form drops
/// those, which would merge schemas that Confluent keeps apart.
fn parse_schema(text: &str) -> Result<(Schema, String), StoreError> {
    let parsed = Schema::parse_str(text).map_err(|e| StoreError::InvalidSchema(e.to_string()))?;
    let key =
        serde_json::to_string(&parsed).map_err(|e| StoreError::InvalidSchema(e.to_string()))?;
    Ok((parsed, key))
}

/// The error and its causes on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Why `reader` cannot always read data written with `writer`, if it cannot.
fn read_problem(writer: &Schema, reader: &Schema) -> Option<String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => None,
        // Confluent rejects what Avro calls partial: enum symbols or union branches the
        // reader lacks make some writer data unreadable.
        Ok(Compatibility::Partial) => Some(
            "only partially compatible: some enum symbols or union branches are missing".to_owned(),
        ),
        Err(e) => Some(error_chain(&e)),
    }
}

impl SchemaStore {
    /// An empty store with the global level BACKWARD.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `text` under `subject` and returns its version.
    ///
    /// A schema identical to a live version of the subject returns that version
    /// unchanged. Otherwise it must pass the subject's compatibility level against the
    /// live versions; it gets the global id of an identical schema registered anywhere
    /// before, or a new one, and the version after the subject's highest, deleted or not.
    pub fn register(&mut self, subject: &str, text: &str) -> Result<RegisteredVersion, StoreError> {
        let (parsed, key) = parse_schema(text)?;
        let live = self.visible(subject, false);
        if let Some(existing) = self.find(&live, &key) {
            return Ok(self.describe(subject, existing));
        }
        let level = self.effective_level(subject);
        let details = self.problems(level, &parsed, &live, level.transitive());
        if !details.is_empty() {
            return Err(StoreError::Incompatible {
                subject: subject.to_owned(),
                details,
            });
        }
        let id = match self.ids_by_key.get(&key) {
            Some(&id) => id,
            None => {
                self.schemas.push(StoredSchema {
                    text: text.to_owned(),
                    key: key.clone(),
                    parsed,
                });
                let id = u32::try_from(self.schemas.len()).unwrap_or(u32::MAX);
                self.ids_by_key.insert(key, id);
                id
            }
        };
        let versions = self.subjects.entry(subject.to_owned()).or_default();
        let version = versions.last().map_or(1, |v| v.version + 1);
        let added = SubjectVersion {
            version,
            id,
            deleted: false,
        };
        versions.push(added);
        Ok(self.describe(subject, added))
    }

    /// The version of `subject` whose schema is identical to `text`.
    pub fn lookup(
        &self,
        subject: &str,
        text: &str,
        include_deleted: bool,
    ) -> Result<RegisteredVersion, StoreError> {
        let versions = self.subject_versions(subject, include_deleted)?;
        let (_, key) = parse_schema(text)?;
        self.find(&versions, &key)
            .map(|v| self.describe(subject, v))
            .ok_or_else(|| StoreError::SchemaNotFound(subject.to_owned()))
    }

    /// The schema text with global id `id`; ids outlive deleted versions.
    pub fn schema_by_id(&self, id: u32) -> Result<&str, StoreError> {
        self.stored(id).map(|s| s.text.as_str())
    }

    /// Every `(subject, version)` that uses global id `id`.
    pub fn versions_by_id(
        &self,
        id: u32,
        include_deleted: bool,
    ) -> Result<Vec<(String, u32)>, StoreError> {
        self.stored(id)?;
        let mut found = Vec::new();
        for (subject, versions) in &self.subjects {
            for v in versions
                .iter()
                .filter(|v| v.id == id && (include_deleted || !v.deleted))
            {
                found.push((subject.clone(), v.version));
            }
        }
        Ok(found)
    }

    /// All subjects with at least one version, sorted.
    pub fn subjects(&self, include_deleted: bool) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(_, versions)| include_deleted || versions.iter().any(|v| !v.deleted))
            .map(|(subject, _)| subject.clone())
            .collect()
    }

    /// The version numbers of `subject`, oldest first.
    pub fn versions(&self, subject: &str, include_deleted: bool) -> Result<Vec<u32>, StoreError> {
        let versions = self.subject_versions(subject, include_deleted)?;
        Ok(versions.iter().map(|v| v.version).collect())
    }

    /// One version of `subject`.
    pub fn version(
        &self,
        subject: &str,
        spec: VersionSpec,
        include_deleted: bool,
    ) -> Result<RegisteredVersion, StoreError> {
        let found = self.resolve(subject, spec, include_deleted)?;
        Ok(self.describe(subject, found))
    }

    /// Deletes `subject`; returns the deleted version numbers.
    ///
    /// A soft delete hides the live versions; a permanent one removes soft-deleted
    /// versions, and the subject's compatibility level with them.
    pub fn delete_subject(
        &mut self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<u32>, StoreError> {
        let versions = self
            .subjects
            .get_mut(subject)
            .ok_or_else(|| StoreError::SubjectNotFound(subject.to_owned()))?;
        if permanent {
            if versions.iter().any(|v| !v.deleted) {
                return Err(StoreError::SubjectNotSoftDeleted(subject.to_owned()));
            }
            let deleted = versions.iter().map(|v| v.version).collect();
            self.subjects.remove(subject);
            self.subject_levels.remove(subject);
            return Ok(deleted);
        }
        let mut deleted = Vec::new();
        for v in versions.iter_mut().filter(|v| !v.deleted) {
            v.deleted = true;
            deleted.push(v.version);
        }
        if deleted.is_empty() {
            return Err(StoreError::SubjectSoftDeleted(subject.to_owned()));
        }
        Ok(deleted)
    }

    /// Deletes one version of `subject`; returns its number.
    ///
    /// A soft delete hides a live version; a permanent one removes a soft-deleted one.
    pub fn delete_version(
        &mut self,
        subject: &str,
        spec: VersionSpec,
        permanent: bool,
    ) -> Result<u32, StoreError> {
        // `latest` means the latest live version for a soft delete; numbers find deleted
        // versions too, so deleting one twice says so.
        let include_deleted = permanent || matches!(spec, VersionSpec::Number(_));
        let found = self.resolve(subject, spec, include_deleted)?;
        let version = found.version;
        match (permanent, found.deleted) {
            (false, true) => {
                return Err(StoreError::VersionSoftDeleted {
                    subject: subject.to_owned(),
                    version,
                })
            }
            (true, false) => {
                return Err(StoreError::VersionNotSoftDeleted {
                    subject: subject.to_owned(),
                    version,
                })
            }
            _ => {}
        }
        if let Some(versions) = self.subjects.get_mut(subject) {
            if permanent {
                versions.retain(|v| v.version != version);
                if versions.is_empty() {
                    self.subjects.remove(subject);
                }
            } else if let Some(v) = versions.iter_mut().find(|v| v.version == version) {
                v.deleted = true;
            }
        }
        Ok(version)
    }

    /// The global compatibility level.
    pub fn global_level(&self) -> CompatibilityLevel {
        self.global_level
    }

    /// Sets the global compatibility level.
    pub fn set_global_level(&mut self, level: CompatibilityLevel) {
        self.global_level = level;
    }

    /// The level set on `subject` itself, if any.
    pub fn subject_level(&self, subject: &str) -> Option<CompatibilityLevel> {
        self.subject_levels.get(subject).copied()
    }

    /// Sets the level of `subject`, which need not have versions yet.
    pub fn set_subject_level(&mut self, subject: &str, level: CompatibilityLevel) {
        self.subject_levels.insert(subject.to_owned(), level);
    }

    /// Removes the level of `subject`, so the global one applies; returns the removed one.
    pub fn delete_subject_level(
        &mut self,
        subject: &str,
    ) -> Result<CompatibilityLevel, StoreError> {
        self.subject_levels
            .remove(subject)
            .ok_or_else(|| StoreError::SubjectLevelNotConfigured(subject.to_owned()))
    }

    /// The level that applies to `subject`: its own, else the global one.
    pub fn effective_level(&self, subject: &str) -> CompatibilityLevel {
        self.subject_level(subject).unwrap_or(self.global_level)
    }

    /// Checks `text` against `subject` under the subject's level; returns the problems
    /// found, empty when compatible.
    ///
    /// With a version, checks against that version only; without, against the latest
    /// live version (or every one for transitive levels), and a missing subject is
    /// compatible.
    pub fn check_compatibility(
        &self,
        subject: &str,
        text: &str,
        version: Option<VersionSpec>,
    ) -> Result<Vec<String>, StoreError> {
        let level = self.effective_level(subject);
        let against = match version {
            Some(spec) => vec![self.resolve(subject, spec, false)?],
            None => self.visible(subject, false),
        };
        let (parsed, _) = parse_schema(text)?;
        let transitive = version.is_none() && level.transitive();
        Ok(self.problems(level, &parsed, &against, transitive))
    }

    /// The compatibility problems of `candidate` against `versions` (all of them when
    /// `transitive`, else only the last).
    fn problems(
        &self,
        level: CompatibilityLevel,
        candidate: &Schema,
        versions: &[SubjectVersion],
        transitive: bool,
    ) -> Vec<String> {
        let checked = if transitive {
            versions
        } else {
            versions
                .last()
                .map(std::slice::from_ref)
                .unwrap_or_default()
        };
        let mut details = Vec::new();
        for v in checked {
            let Ok(old) = self.stored(v.id) else { continue };
            if level.backward() {
                if let Some(problem) = read_problem(&old.parsed, candidate) {
                    details.push(format!(
                        "{{compatibility: '{level}', oldSchemaVersion: {}, description: 'the new schema cannot read data written with version {}: {problem}'}}",
                        v.version, v.version
                    ));
                }
            }
            if level.forward() {
                if let Some(problem) = read_problem(candidate, &old.parsed) {
                    details.push(format!(
                        "{{compatibility: '{level}', oldSchemaVersion: {}, description: 'version {} cannot read data written with the new schema: {problem}'}}",
                        v.version, v.version
                    ));
                }
            }
        }
        details
    }

    fn stored(&self, id: u32) -> Result<&StoredSchema, StoreError> {
        usize::try_from(id)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| self.schemas.get(i))
            .ok_or(StoreError::SchemaIdNotFound(id))
    }

    /// The versions of `subject`, oldest first; soft-deleted ones only if asked for.
    fn visible(&self, subject: &str, include_deleted: bool) -> Vec<SubjectVersion> {
        self.subjects
            .get(subject)
            .map(|versions| {
                versions
                    .iter()
                    .filter(|v| include_deleted || !v.deleted)
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Like [`Self::visible`], but a subject without such versions is not found.
    fn subject_versions(
        &self,
        subject: &str,
        include_deleted: bool,
    ) -> Result<Vec<SubjectVersion>, StoreError> {
        let versions = self.visible(subject, include_deleted);
        if versions.is_empty() {
            return Err(StoreError::SubjectNotFound(subject.to_owned()));
        }
        Ok(versions)
    }

    fn resolve(
        &self,
        subject: &str,
        spec: VersionSpec,
        include_deleted: bool,
    ) -> Result<SubjectVersion, StoreError> {
        let versions = self.subject_versions(subject, include_deleted)?;
        let found = match spec {
            VersionSpec::Latest => versions.last(),
            VersionSpec::Number(n) => versions.iter().find(|v| v.version == n),
        };
        found.copied().ok_or_else(|| StoreError::VersionNotFound {
            subject: subject.to_owned(),
            version: spec.to_string(),
        })
    }

    fn find(&self, versions: &[SubjectVersion], key: &str) -> Option<SubjectVersion> {
        versions
            .iter()
            .find(|v| self.stored(v.id).is_ok_and(|s| s.key == key))
            .copied()
    }

    fn describe(&self, subject: &str, v: SubjectVersion) -> RegisteredVersion {
        RegisteredVersion {
            subject: subject.to_owned(),
            version: v.version,
            id: v.id,
            schema: self.schema_by_id(v.id).unwrap_or_default().to_owned(),
        }
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
