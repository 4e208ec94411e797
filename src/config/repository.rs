//! The `repository:` section: where the trace repository keeps the pipeline's traces,
//! aggregate windows and alerts, and for how long.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::{duration, ConfigErrors};

/// The trace repository, fed from the pipeline's traces, aggregates and alerts topics
/// by the consumer group `<group_id>-repository-<instance>` and served by the query API under
/// `/api/` on the `http:` listener. `run` and `demo` run it beside the pipeline unless
/// `enabled: false`; `spanline serve` runs only it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// Run the repository and the query API beside the pipeline.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// The SQLite database file (created with its directory when missing). Default
    /// `spanline-data/<pipeline name>.db` in the working directory. One process writes
    /// a file: give each `serve` process its own.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Delete traces, windows and alert events whose event time is older than this
    /// (against the wall clock). Default 24h; `0s` keeps them.
    #[serde(default = "default_max_age", with = "duration")]
    pub max_age: Duration,
    /// Delete the oldest traces while the database is larger than this: bytes, or a
    /// size such as `512MiB`, `2GB`. Default `1GiB`; `0` keeps them.
    #[serde(default = "default_max_bytes", deserialize_with = "deserialize_size")]
    pub max_bytes: u64,
    /// How often retention runs.
    #[serde(default = "default_retention_interval", with = "duration")]
    pub retention_interval: Duration,
    /// Store at most this many records per database transaction (a batch is also
    /// stored when the consumer has nothing more for a moment).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

fn default_enabled() -> bool {
    true
}

fn default_max_age() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_max_bytes() -> u64 {
    1 << 30
}

fn default_retention_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_batch_size() -> usize {
    500
}

impl Default for RepositoryConfig {
    fn default() -> Self {
        Self {
            enabled: default_enabled(),
            path: None,
            max_age: default_max_age(),
            max_bytes: default_max_bytes(),
            retention_interval: default_retention_interval(),
            batch_size: default_batch_size(),
        }
    }
}

impl RepositoryConfig {
    /// The database file of pipeline `name`.
    pub fn path_for(&self, name: &str) -> PathBuf {
        self.path.clone().unwrap_or_else(|| {
            let file: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            PathBuf::from("spanline-data").join(format!("{file}.db"))
        })
    }

    /// Checks what the types cannot.
    pub fn validate(&self, errors: &mut ConfigErrors) {
        if self.path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            errors.push(
                "repository.path",
                "must not be empty",
                "e.g. path: /var/lib/spanline/traces.db, or leave it out",
            );
        }
        if self.retention_interval < Duration::from_secs(1) {
            errors.push(
                "repository.retention_interval",
                "must be at least 1s",
                "e.g. retention_interval: 1m",
            );
        }
        if !(1..=100_000).contains(&self.batch_size) {
            errors.push(
                "repository.batch_size",
                format!("{} is outside 1..=100000", self.batch_size),
                "e.g. batch_size: 500",
            );
        }
    }
}

/// Parses `1048576`, `512KiB`, `512MiB`, `2GiB`, `2GB`, `100MB`, `1TB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use B, KB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(bytes as u64)
}

fn deserialize_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(n) => Ok(n),
        Size::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }

    #[test]
    fn the_default_path_is_named_after_the_pipeline() {
        let c = RepositoryConfig::default();
        assert_eq!(
            c.path_for("trace analytics/1"),
            PathBuf::from("spanline-data/trace_analytics_1.db")
        );
    }

    #[test]
    fn sections_deserialize_and_validate() {
        let c: RepositoryConfig =
            serde_yaml::from_str("{path: /tmp/x.db, max_age: 1h, max_bytes: 64MiB}").unwrap();
        assert_eq!(c.max_bytes, 64 << 20);
        assert_eq!(c.max_age, Duration::from_secs(3600));
        assert!(c.enabled);
        let bad: RepositoryConfig =
            serde_yaml::from_str("{batch_size: 0, retention_interval: 10ms}").unwrap();
        let mut errors = ConfigErrors::default();
        bad.validate(&mut errors);
        assert_eq!(errors.0.len(), 2, "{errors:?}");
        assert!(serde_yaml::from_str::<RepositoryConfig>("{pth: x}").is_err());
    }
}

#[cfg(test)]
mod pipeline_tests {
    use crate::config::load_str;

    const PIPELINE: &str = "name: p\nkafka: {brokers: embedded, group_id: g}\n\
        sources: [{name: s, topics: [spans], format: otlp_json}]\n\
        stages: [{type: assemble}]\noutputs: {traces: {topic: traces, format: json}}\n";

    #[test]
    fn pipelines_take_a_repository_section_with_errors_by_path() {
        let c = load_str(PIPELINE, |_| None).unwrap();
        assert!(c.repository.enabled);
        let c = load_str(
            &format!("{PIPELINE}repository: {{enabled: false}}\n"),
            |_| None,
        )
        .unwrap();
        assert!(!c.repository.enabled);
        let e = load_str(
            &format!("{PIPELINE}repository: {{max_bytes: lots}}\n"),
            |_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("repository"), "{e}");
    }
}
