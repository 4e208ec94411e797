//! The `assemble` stage in a pipeline file: its keys, their checks, and the settings
//! built from them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{duration, ConfigErrors};

use super::Settings;

/// Settings of the `assemble` stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AssembleConfig {
    /// How far behind the newest span of a partition event time may still arrive in
    /// order: the partition's watermark is its latest span end minus this.
    #[serde(default = "d_out_of_orderness", with = "duration")]
    pub out_of_orderness: Duration,
    /// A trace whose root span has ended closes once the watermark passes its last span
    /// by this much.
    #[serde(default = "d_idle_gap", with = "duration")]
    pub idle_gap: Duration,
    /// A trace closes at the latest this long (event time) after its first span started,
    /// root or not.
    #[serde(default = "d_max_duration", with = "duration")]
    pub max_duration: Duration,
    /// How long after closing a trace still takes late spans as amendments; later spans
    /// go to `outputs.late` (or are counted as dropped).
    #[serde(default = "d_grace", with = "duration")]
    pub grace: Duration,
    /// Processing time after which a partition with no records stops holding the
    /// watermark back.
    #[serde(default = "d_idle_partition", with = "duration")]
    pub idle_partition_timeout: Duration,
    /// Open traces at most; beyond it the trace due first is emitted as incomplete.
    #[serde(default = "d_max_open")]
    pub max_open_traces: usize,
    /// Spans per trace at most; a trace reaching it is emitted as incomplete.
    #[serde(default = "d_max_spans")]
    pub max_spans_per_trace: usize,
    /// Bytes one buffered span may take; bigger spans are dead-lettered.
    #[serde(default = "d_max_span_bytes")]
    pub max_span_bytes: usize,
    /// On shutdown, emit open traces as incomplete (`true`) or leave them to be rebuilt
    /// from the committed offsets on restart (`false`, the at-least-once default).
    #[serde(default)]
    pub flush_on_shutdown: bool,
}

fn d_out_of_orderness() -> Duration {
    Duration::from_secs(2)
}
fn d_idle_gap() -> Duration {
    Duration::from_secs(5)
}
fn d_max_duration() -> Duration {
    Duration::from_secs(300)
}
fn d_grace() -> Duration {
    Duration::from_secs(60)
}
fn d_idle_partition() -> Duration {
    Duration::from_secs(10)
}
fn d_max_open() -> usize {
    200_000
}
fn d_max_spans() -> usize {
    10_000
}
fn d_max_span_bytes() -> usize {
    65_536
}

impl AssembleConfig {
    /// The assembler's settings; `late_output` says whether `outputs.late` is set.
    pub fn settings(&self, late_output: bool) -> Settings {
        let ns = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Settings {
            out_of_orderness_ns: ns(self.out_of_orderness),
            idle_gap_ns: ns(self.idle_gap),
            max_duration_ns: ns(self.max_duration),
            grace_ns: ns(self.grace),
            idle_partition_timeout_ms: i64::try_from(self.idle_partition_timeout.as_millis())
                .unwrap_or(i64::MAX),
            max_open_traces: self.max_open_traces,
            max_spans_per_trace: self.max_spans_per_trace,
            max_span_bytes: self.max_span_bytes,
            late_output,
        }
    }
}

impl AssembleConfig {
    /// Records every problem of these settings under `path`.
    pub fn validate(&self, path: &str, errors: &mut ConfigErrors) {
        if self.idle_gap.is_zero() {
            errors.push(format!("{path}.idle_gap"), "must be more than 0", "e.g. 5s");
        }
        if self.idle_gap >= self.max_duration {
            errors.push(
                format!("{path}.idle_gap"),
                format!(
                    "must be less than max_duration ({})",
                    humantime::format_duration(self.max_duration)
                ),
                "raise max_duration or lower idle_gap",
            );
        }
        if self.idle_partition_timeout.is_zero() {
            errors.push(
                format!("{path}.idle_partition_timeout"),
                "must be more than 0",
                "e.g. 10s",
            );
        }
        if self.max_open_traces == 0 {
            errors.push(
                format!("{path}.max_open_traces"),
                "must be at least 1",
                "e.g. 200000",
            );
        }
        if self.max_spans_per_trace < 2 {
            errors.push(
                format!("{path}.max_spans_per_trace"),
                "must be at least 2",
                "e.g. 10000",
            );
        }
        if self.max_span_bytes < 256 {
            errors.push(
                format!("{path}.max_span_bytes"),
                "must be at least 256",
                "e.g. 65536",
            );
        }
    }
}
