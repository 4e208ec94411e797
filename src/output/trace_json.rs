//! The JSON trace record: the trace's fields, then the analysis fields under the same
//! names as in `schemas/trace.avsc` (span ids as hex), every object's keys in the order
//! of their names (as a JSON object map orders them). The analysis is written straight
//! from the [`Analysis`], merged into the trace's map by name.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use crate::model::{Analysis, SpanId, Trace};

/// The analysis fields, in the order of their names.
const ANALYSIS_KEYS: [&str; 7] = [
    "bottleneck",
    "bottleneck_service",
    "bottleneck_service_share",
    "critical_path",
    "depth",
    "findings",
    "oddities",
];

/// The JSON value of a trace record.
pub(super) fn trace_json(trace: &Trace, analysis: Option<&Analysis>) -> Vec<u8> {
    let value = serde_json::to_value(trace).expect("trace serialises");
    match (analysis, value.as_object()) {
        (Some(analysis), Some(fields)) => serde_json::to_vec(&WithAnalysis { fields, analysis }),
        _ => serde_json::to_vec(&value),
    }
    .expect("trace serialises")
}

/// A span id as 16 hex digits, written without an intermediate string.
struct Hex(SpanId);

impl Serialize for Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:016x}", self.0))
    }
}

#[derive(Serialize)]
struct PathSpanJson<'a> {
    name: &'a str,
    self_time_ns: i64,
    service: &'a str,
    span_id: Hex,
}

#[derive(Serialize)]
struct BottleneckJson<'a> {
    name: &'a str,
    self_time_ns: i64,
    service: &'a str,
    share: f64,
    span_id: Hex,
}

#[derive(Serialize)]
struct FindingJson<'a> {
    kind: &'a str,
    message: &'a str,
    service: &'a str,
    span_ids: HexIds<'a>,
}

struct HexIds<'a>(&'a [SpanId]);

impl Serialize for HexIds<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for id in self.0 {
            seq.serialize_element(&Hex(*id))?;
        }
        seq.end()
    }
}

/// The trace's fields (a map, so in the order of their names) with the analysis fields
/// placed among them by name.
struct WithAnalysis<'a> {
    fields: &'a serde_json::Map<String, serde_json::Value>,
    analysis: &'a Analysis,
}

impl WithAnalysis<'_> {
    /// Writes the analysis field `ANALYSIS_KEYS[i]`.
    fn entry<M: SerializeMap>(&self, i: usize, m: &mut M) -> Result<(), M::Error> {
        let a = self.analysis;
        let key = ANALYSIS_KEYS[i];
        match key {
            "bottleneck" => m.serialize_entry(
                key,
                &a.bottleneck.as_ref().map(|b| BottleneckJson {
                    name: &b.name,
                    self_time_ns: b.self_time_ns,
                    service: &b.service,
                    share: b.share,
                    span_id: Hex(b.span_id),
                }),
            ),
            "bottleneck_service" => {
                m.serialize_entry(key, &a.bottleneck_service.as_ref().map(|(s, _)| &**s))
            }
            "bottleneck_service_share" => {
                m.serialize_entry(key, &a.bottleneck_service.as_ref().map_or(0.0, |b| b.1))
            }
            "critical_path" => m.serialize_entry(
                key,
                &a.critical_path
                    .iter()
                    .map(|s| PathSpanJson {
                        name: &s.name,
                        self_time_ns: s.self_time_ns,
                        service: &s.service,
                        span_id: Hex(s.span_id),
                    })
                    .collect::<Vec<_>>(),
            ),
            "depth" => m.serialize_entry(key, &a.depth),
            "findings" => m.serialize_entry(
                key,
                &a.findings
                    .iter()
                    .map(|f| FindingJson {
                        kind: f.kind.as_str(),
                        message: &f.message,
                        service: &f.service,
                        span_ids: HexIds(&f.span_ids),
                    })
                    .collect::<Vec<_>>(),
            ),
            "oddities" => {
                let mut odd: Vec<(&str, u32)> =
                    a.oddities.labels().filter(|(_, n)| *n > 0).collect();
                odd.sort_unstable_by_key(|(k, _)| *k);
                m.serialize_entry(key, &Oddities(&odd))
            }
            other => unreachable!("{other} is not in ANALYSIS_KEYS"),
        }
    }
}

struct Oddities<'a>(&'a [(&'a str, u32)]);

impl Serialize for Oddities<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, n) in self.0 {
            m.serialize_entry(k, n)?;
        }
        m.end()
    }
}

impl Serialize for WithAnalysis<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.fields.len() + ANALYSIS_KEYS.len()))?;
        let mut next = 0;
        for (key, value) in self.fields {
            while next < ANALYSIS_KEYS.len() && ANALYSIS_KEYS[next] < key.as_str() {
                self.entry(next, &mut m)?;
                next += 1;
            }
            // a trace field of an analysis field's name would be replaced by it
            if ANALYSIS_KEYS.get(next) == Some(&key.as_str()) {
                continue;
            }
            m.serialize_entry(key, value)?;
        }
        for i in next..ANALYSIS_KEYS.len() {
            self.entry(i, &mut m)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{hex_span_id, Finding, FindingKind};
    use crate::stage::analyze::{analyze, AnalyzeSettings};
    use crate::testkit::completed_traces;
    use crate::workload::{Workload, WorkloadConfig};

    /// The record as a map of maps (the encoding this one replaced).
    fn from_value(trace: &Trace, analysis: Option<&Analysis>) -> Vec<u8> {
        let mut value = serde_json::to_value(trace).unwrap();
        if let (Some(a), Some(map)) = (analysis, value.as_object_mut()) {
            let path: Vec<serde_json::Value> = a
                .critical_path
                .iter()
                .map(|s| {
                    serde_json::json!({"span_id": hex_span_id(s.span_id), "service": &*s.service, "name": &*s.name, "self_time_ns": s.self_time_ns})
                })
                .collect();
            map.insert("depth".into(), a.depth.into());
            map.insert("critical_path".into(), path.into());
            map.insert(
                "bottleneck".into(),
                a.bottleneck.as_ref().map_or(serde_json::Value::Null, |b| {
                    serde_json::json!({"span_id": hex_span_id(b.span_id), "service": &*b.service, "name": &*b.name, "self_time_ns": b.self_time_ns, "share": b.share})
                }),
            );
            let service = a.bottleneck_service.as_ref();
            map.insert(
                "bottleneck_service".into(),
                service.map(|(s, _)| s.to_string()).into(),
            );
            map.insert(
                "bottleneck_service_share".into(),
                service.map_or(0.0, |(_, v)| *v).into(),
            );
            let findings: Vec<serde_json::Value> = a
                .findings
                .iter()
                .map(|f| {
                    let ids: Vec<String> = f.span_ids.iter().map(|id| hex_span_id(*id)).collect();
                    serde_json::json!({"kind": f.kind.as_str(), "service": &*f.service, "span_ids": ids, "message": f.message})
                })
                .collect();
            map.insert("findings".into(), findings.into());
            let odd: serde_json::Map<String, serde_json::Value> = a
                .oddities
                .labels()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| (k.to_string(), n.into()))
                .collect();
            map.insert("oddities".into(), odd.into());
        }
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn the_record_is_the_map_of_the_trace_and_its_analysis_byte_for_byte() {
        let config = WorkloadConfig {
            seed: 5,
            ..WorkloadConfig::default()
        };
        let all = completed_traces(Workload::new(config).generate_traces(300));
        let settings = AnalyzeSettings::default();
        let mut with_findings = 0;
        for (i, t) in all.iter().enumerate() {
            let mut a = analyze(t, &settings);
            with_findings += usize::from(!a.findings.is_empty());
            assert_eq!(trace_json(t, None), from_value(t, None));
            assert_eq!(trace_json(t, Some(&a)), from_value(t, Some(&a)));
            // what the workload's traces lack: oddities, no bottleneck, an undefined
            // share, text to escape
            match i % 3 {
                0 => {
                    a.oddities.orphans = 2;
                    a.oddities.zero_durations = 1;
                    a.oddities.synthetic_root = true;
                    a.bottleneck = None;
                }
                1 => {
                    a.bottleneck_service = Some(("db \"eu\" ✓".into(), f64::NAN));
                    if let Some(b) = &mut a.bottleneck {
                        b.share = f64::INFINITY;
                    }
                }
                _ => {
                    a.bottleneck_service = None;
                    a.findings.push(Finding {
                        kind: FindingKind::NPlusOne,
                        span_ids: vec![0, u64::MAX, 0xabc],
                        service: "a\nb".into(),
                        message: "\u{1}\"quoted\"\\".into(),
                    });
                }
            }
            assert_eq!(trace_json(t, Some(&a)), from_value(t, Some(&a)));
        }
        assert!(with_findings > 0, "no workload trace has a finding");
    }
}
