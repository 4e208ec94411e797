//! The stage types of a pipeline file. Each type's name is written once, in the table
//! below: serde reads it from there, and so do the checks that name the known types.

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::model::ConfigErrors;
use crate::stage::aggregate::AggregateConfig;
use crate::stage::alert::AlertConfig;
use crate::stage::analyze::AnalyzeConfig;
use crate::stage::assemble::AssembleConfig;
use crate::stage::detect::DetectConfig;

/// Declares [`StageConfig`] from one table of `name => Variant(Settings)`.
macro_rules! stage_types {
    ($($(#[$doc:meta])* $name:literal => $variant:ident($config:ty),)+) => {
        /// A processing stage, chosen by `type`.
        #[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
        #[serde(tag = "type", deny_unknown_fields)]
        pub enum StageConfig {
            $($(#[$doc])* #[serde(rename = $name)] $variant($config),)+
        }

        impl StageConfig {
            /// The `type` names, in the order of the table.
            pub const TYPES: &'static [&'static str] = &[$($name),+];

            /// The `type` name.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(StageConfig::$variant(_) => $name,)+
                }
            }

            /// Checks the keys of one stage item (without its `type`) against the
            /// settings of type `name`, so that paths and hints name that type's fields;
            /// false when `name` is not a stage type.
            pub(super) fn check_body(
                name: &str,
                body: &mut Value,
                path: &str,
                errors: &mut ConfigErrors,
            ) -> bool {
                match name {
                    $($name => super::load::check_as::<$config>(body, path, errors),)+
                    _ => return false,
                }
                true
            }
        }
    };
}

stage_types! {
    /// Groups spans into traces by trace id in event time.
    "assemble" => Assemble(AssembleConfig),
    /// Explains each closed trace: summary, critical path, bottleneck, service-graph
    /// edges, findings.
    "analyze" => Analyze(AnalyzeConfig),
    /// RED figures per event-time window and monitoring scope.
    "aggregate" => Aggregate(AggregateConfig),
    /// Anomaly scores for aggregate series and traces (robust baselines and linfa models).
    "detect" => Detect(DetectConfig),
    /// Alert rules with an Alertmanager-like lifecycle.
    "alert" => Alert(AlertConfig),
}
