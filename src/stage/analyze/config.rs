//! The `analyze` stage in a pipeline file: its keys, their checks, and the settings
//! built from them.

use serde::{Deserialize, Serialize};

use crate::model::ConfigErrors;

use super::AnalyzeSettings;

/// Settings of the `analyze` stage: thresholds of the finding rules.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeConfig {
    /// Sequential sibling calls to one operation that make an N+1 finding.
    #[serde(default = "d_n_plus_one")]
    pub n_plus_one_min_calls: usize,
    /// Critical-path share above which a downstream service is a dominant dependency.
    #[serde(default = "d_dominant")]
    pub dominant_dependency_share: f64,
    /// Sequential sibling calls to different services that make a parallelizable finding.
    #[serde(default = "d_parallel_siblings")]
    pub parallelizable_min_siblings: usize,
    /// Report parallelizable calls only when running them concurrently would save at
    /// least this share of the trace's duration.
    #[serde(default = "d_parallel_saving")]
    pub parallelizable_min_saving_share: f64,
}

fn d_n_plus_one() -> usize {
    3
}
fn d_dominant() -> f64 {
    0.5
}
fn d_parallel_siblings() -> usize {
    2
}
fn d_parallel_saving() -> f64 {
    0.1
}

impl AnalyzeConfig {
    /// The analyzer's settings.
    pub fn settings(&self) -> AnalyzeSettings {
        AnalyzeSettings {
            n_plus_one_min_calls: self.n_plus_one_min_calls,
            dominant_dependency_share: self.dominant_dependency_share,
            parallelizable_min_siblings: self.parallelizable_min_siblings,
            parallelizable_min_saving_share: self.parallelizable_min_saving_share,
        }
    }

    /// Records every problem of these settings under `path`.
    pub fn validate(&self, path: &str, errors: &mut ConfigErrors) {
        if self.n_plus_one_min_calls < 2 {
            errors.push(
                format!("{path}.n_plus_one_min_calls"),
                "must be at least 2",
                "e.g. 3",
            );
        }
        if self.parallelizable_min_siblings < 2 {
            errors.push(
                format!("{path}.parallelizable_min_siblings"),
                "must be at least 2",
                "e.g. 2",
            );
        }
        for (key, v) in [
            ("dominant_dependency_share", self.dominant_dependency_share),
            (
                "parallelizable_min_saving_share",
                self.parallelizable_min_saving_share,
            ),
        ] {
            if !(0.0..=1.0).contains(&v) {
                errors.push(
                    format!("{path}.{key}"),
                    "must be between 0 and 1",
                    "a share, e.g. 0.5",
                );
            }
        }
    }
}
