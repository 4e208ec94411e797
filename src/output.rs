//! Encoding of output records, shared by the Kafka runner and `replay`.

mod aggregate_json;
mod trace_json;

use trace_json::trace_json;

use crate::codec::avro;
use crate::config::OutputFormat;
use crate::model::Analysis;
use crate::model::WindowAggregate;
use crate::model::{hex_trace_id, Alert, Span, Trace};

/// How one output topic is encoded.
#[derive(Debug, Clone)]
pub enum Encoding {
    /// Confluent Avro with these registered schema ids.
    Avro {
        key_schema_id: u32,
        value_schema_id: u32,
    },
    /// JSON value, trace id hex as the key.
    Json,
}

impl Encoding {
    /// The encoding for `format`, given the ids the registry gave (ignored for JSON).
    pub fn new(format: OutputFormat, ids: Option<(u32, u32)>) -> Self {
        match (format, ids) {
            (OutputFormat::Avro, Some((key_schema_id, value_schema_id))) => Encoding::Avro {
                key_schema_id,
                value_schema_id,
            },
            _ => Encoding::Json,
        }
    }

    fn key(&self, trace_id: u128, buf: &mut Vec<u8>) {
        match self {
            Encoding::Avro { key_schema_id, .. } => {
                avro::put_frame(buf, *key_schema_id);
                avro::write_key(buf, trace_id);
            }
            Encoding::Json => buf.extend_from_slice(hex_trace_id(trace_id).as_bytes()),
        }
    }

    /// Key and value of a trace record, with its analysis when there is one.
    pub fn trace(&self, trace: &Trace, analysis: Option<&Analysis>) -> (Vec<u8>, Vec<u8>) {
        let mut key = Vec::with_capacity(40);
        self.key(trace.trace_id, &mut key);
        let value = match self {
            Encoding::Avro {
                value_schema_id, ..
            } => {
                let mut buf = Vec::with_capacity(64 + trace.spans.len() * 256);
                avro::put_frame(&mut buf, *value_schema_id);
                avro::write_trace(&mut buf, trace, analysis);
                buf
            }
            Encoding::Json => trace_json(trace, analysis),
        };
        (key, value)
    }

    /// Key and value of an aggregate record (`schemas/aggregate.avsc`).
    pub fn aggregate(&self, w: &WindowAggregate) -> (Vec<u8>, Vec<u8>) {
        match self {
            Encoding::Avro {
                key_schema_id,
                value_schema_id,
            } => {
                let mut key = Vec::new();
                avro::put_frame(&mut key, *key_schema_id);
                crate::codec::avro_bin::put_str(&mut key, &w.key_string());
                let mut value = Vec::new();
                avro::put_frame(&mut value, *value_schema_id);
                let record = apache_avro::types::Value::Record(
                    aggregate_fields(w)
                        .into_iter()
                        .map(|(name, v)| (name.to_string(), v.into_avro()))
                        .collect(),
                );
                value.extend(
                    avro::write_value(&AGGREGATE, record).expect("aggregate matches its schema"),
                );
                (key, value)
            }
            Encoding::Json => (
                w.key_string().into_bytes(),
                aggregate_json::aggregate_json(w),
            ),
        }
    }

    /// Key and value of an alert record (`schemas/alert.avsc`), keyed by fingerprint.
    pub fn alert(&self, alert: &Alert) -> (Vec<u8>, Vec<u8>) {
        use apache_avro::types::Value;
        match self {
            Encoding::Avro {
                key_schema_id,
                value_schema_id,
            } => {
                let mut key = Vec::new();
                avro::put_frame(&mut key, *key_schema_id);
                crate::codec::avro_bin::put_str(&mut key, &alert.fingerprint);
                let map = |m: &std::collections::BTreeMap<String, String>| {
                    Value::Map(
                        m.iter()
                            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                            .collect(),
                    )
                };
                let opt = |v: Option<Value>| match v {
                    None => Value::Union(0, Box::new(Value::Null)),
                    Some(v) => Value::Union(1, Box::new(v)),
                };
                let status = match alert.status {
                    crate::model::AlertStatus::Firing => Value::Enum(0, "firing".into()),
                    crate::model::AlertStatus::Resolved => Value::Enum(1, "resolved".into()),
                };
                let record = Value::Record(vec![
                    (
                        "fingerprint".into(),
                        Value::String(alert.fingerprint.clone()),
                    ),
                    ("status".into(), status),
                    ("rule".into(), Value::String(alert.rule.clone())),
                    ("severity".into(), Value::String(alert.severity.clone())),
                    ("starts_at".into(), Value::Long(alert.starts_at_ms)),
                    ("ends_at".into(), opt(alert.ends_at_ms.map(Value::Long))),
                    ("labels".into(), map(&alert.labels)),
                    ("annotations".into(), map(&alert.annotations)),
                    ("summary".into(), Value::String(alert.summary.clone())),
                    (
                        "suspected_service".into(),
                        opt(alert.suspected_service.clone().map(Value::String)),
                    ),
                    ("score".into(), Value::Double(alert.score)),
                    (
                        "suspected_services".into(),
                        Value::Array(alert.suspected_services.iter().map(suspect_avro).collect()),
                    ),
                    (
                        "exemplar_trace_ids".into(),
                        Value::Array(
                            alert
                                .exemplar_trace_ids
                                .iter()
                                .cloned()
                                .map(Value::String)
                                .collect(),
                        ),
                    ),
                    ("value".into(), opt(alert.value.map(Value::Double))),
                ]);
                let mut value = Vec::new();
                avro::put_frame(&mut value, *value_schema_id);
                value.extend(avro::write_value(&ALERT, record).expect("alert matches its schema"));
                (key, value)
            }
            Encoding::Json => (alert.fingerprint.clone().into_bytes(), alert_json(alert)),
        }
    }

    /// Key and value of a single-span record (late spans).
    pub fn span(&self, span: &Span) -> (Vec<u8>, Vec<u8>) {
        let mut key = Vec::with_capacity(40);
        self.key(span.trace_id, &mut key);
        let value = match self {
            Encoding::Avro {
                value_schema_id, ..
            } => {
                let mut buf = Vec::with_capacity(256);
                avro::put_frame(&mut buf, *value_schema_id);
                avro::write_span(&mut buf, span);
                buf
            }
            Encoding::Json => serde_json::to_vec(span).expect("span serialises"),
        };
        (key, value)
    }
}

static AGGREGATE: std::sync::LazyLock<apache_avro::Schema> = std::sync::LazyLock::new(|| {
    apache_avro::Schema::parse_str(avro::AGGREGATE_SCHEMA).expect("schemas/aggregate.avsc is valid")
});

/// A field value of an aggregate record (the Avro encoding; the JSON one is written
/// straight from the window, see `aggregate_json`).
enum Field {
    Long(i64),
    Double(f64),
    Str(String),
    Dimensions(Vec<(String, String)>),
}

impl Field {
    fn into_avro(self) -> apache_avro::types::Value {
        use apache_avro::types::Value;
        match self {
            Field::Long(v) => Value::Long(v),
            Field::Double(v) => Value::Double(v),
            Field::Str(v) => Value::String(v),
            Field::Dimensions(dims) => Value::Array(
                dims.into_iter()
                    .map(|(n, v)| {
                        Value::Record(vec![
                            ("name".into(), Value::String(n)),
                            ("value".into(), Value::String(v)),
                        ])
                    })
                    .collect(),
            ),
        }
    }
}

/// The fields of `schemas/aggregate.avsc`, in order.
fn aggregate_fields(w: &WindowAggregate) -> Vec<(&'static str, Field)> {
    vec![
        ("window_start_unix_nano", Field::Long(w.window_start_ns)),
        ("window_end_unix_nano", Field::Long(w.window_end_ns)),
        ("window_size_ns", Field::Long(w.window_size_ns)),
        ("scope", Field::Str(w.scope.to_string())),
        (
            "dimensions",
            Field::Dimensions(
                w.key
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
            ),
        ),
        ("count", Field::Long(w.count as i64)),
        ("error_count", Field::Long(w.error_count as i64)),
        ("error_rate", Field::Double(w.error_rate())),
        ("throughput_per_s", Field::Double(w.throughput_per_s())),
        ("latency_min_ns", Field::Long(w.min_ns)),
        ("latency_max_ns", Field::Long(w.max_ns)),
        ("latency_sum_ns", Field::Long(w.sum_ns)),
        ("latency_p50_ns", Field::Double(w.quantile(0.5))),
        ("latency_p90_ns", Field::Double(w.quantile(0.9))),
        ("latency_p95_ns", Field::Double(w.quantile(0.95))),
        ("latency_p99_ns", Field::Double(w.quantile(0.99))),
        ("concurrency_mean", Field::Double(w.concurrency_mean)),
        ("concurrency_max", Field::Double(w.concurrency_max)),
        ("slo_latency_ns", Field::Long(w.slo_latency_ns)),
        ("slo_compliance", Field::Double(w.slo_compliance())),
    ]
}

static ALERT: std::sync::LazyLock<apache_avro::Schema> = std::sync::LazyLock::new(|| {
    apache_avro::Schema::parse_str(avro::ALERT_SCHEMA).expect("schemas/alert.avsc is valid")
});

/// One ranked suspect as an Avro `Suspect` record.
fn suspect_avro(s: &crate::model::Suspect) -> apache_avro::types::Value {
    use apache_avro::types::Value;
    Value::Record(vec![
        ("service".into(), Value::String(s.service.clone())),
        ("score".into(), Value::Double(s.score)),
        (
            "evidence".into(),
            Value::Array(s.evidence.iter().cloned().map(Value::String).collect()),
        ),
    ])
}

/// The JSON alert record: the fields of `schemas/alert.avsc`.
fn alert_json(a: &Alert) -> Vec<u8> {
    let score = serde_json::Number::from_f64(a.score).map_or(serde_json::Value::Null, Into::into);
    serde_json::to_vec(&serde_json::json!({
        "fingerprint": a.fingerprint,
        "status": a.status.as_str(),
        "rule": a.rule,
        "severity": a.severity,
        "starts_at": a.starts_at_ms,
        "ends_at": a.ends_at_ms,
        "labels": a.labels,
        "annotations": a.annotations,
        "summary": a.summary,
        "suspected_service": a.suspected_service,
        "suspected_services": a.suspected_services,
        "score": score,
        "exemplar_trace_ids": a.exemplar_trace_ids,
        "value": a.value.and_then(serde_json::Number::from_f64),
    }))
    .expect("alert serialises")
}

#[cfg(test)]
mod tests {
    use apache_avro::types::Value;

    use super::*;
    use crate::model::AlertStatus;

    fn field(v: &Value, name: &str) -> Value {
        let Value::Record(fields) = v else {
            panic!("not a record")
        };
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    }

    #[test]
    fn alert_records_are_avro_of_the_alert_schema_and_json() {
        let alert = Alert {
            fingerprint: "00ff".into(),
            status: AlertStatus::Resolved,
            rule: "latency".into(),
            severity: "critical".into(),
            starts_at_ms: 1_000,
            ends_at_ms: Some(2_000),
            labels: [("service".to_string(), "orders".to_string())].into(),
            annotations: Default::default(),
            summary: "p99 above 1s".into(),
            suspected_service: Some("db".into()),
            suspected_services: vec![crate::model::Suspect {
                service: "db".into(),
                score: 0.75,
                evidence: vec!["db self time on the critical path 2ms → 40ms".into()],
            }],
            score: 0.9,
            value: Some(1.5e9),
            exemplar_trace_ids: vec!["0".repeat(32)],
        };
        let enc = Encoding::Avro {
            key_schema_id: 1,
            value_schema_id: 2,
        };
        let (key, value) = enc.alert(&alert);
        let (id, datum) = avro::unframe(&value).unwrap();
        assert_eq!(id, 2);
        let v = avro::read_value(&ALERT, None, datum).unwrap();
        assert_eq!(field(&v, "status"), Value::Enum(1, "resolved".into()));
        assert_eq!(
            field(&v, "ends_at"),
            Value::Union(1, Box::new(Value::Long(2_000)))
        );
        assert_eq!(
            field(&v, "suspected_service"),
            Value::Union(1, Box::new(Value::String("db".into())))
        );
        assert_eq!(
            field(&v, "value"),
            Value::Union(1, Box::new(Value::Double(1.5e9)))
        );
        let (_, key_datum) = avro::unframe(&key).unwrap();
        let key_schema = apache_avro::Schema::parse_str(avro::ALERT_KEY_SCHEMA).unwrap();
        assert_eq!(
            field(
                &avro::read_value(&key_schema, None, key_datum).unwrap(),
                "fingerprint"
            ),
            Value::String("00ff".into())
        );
        let json: serde_json::Value =
            serde_json::from_slice(&Encoding::Json.alert(&alert).1).unwrap();
        assert_eq!(json["status"], "resolved");
        assert_eq!(json["labels"]["service"], "orders");
        assert_eq!(json["suspected_services"][0]["service"], "db");
        assert_eq!(json["suspected_services"][0]["score"], 0.75);
        let Value::Array(suspects) = field(&v, "suspected_services") else {
            panic!("suspected_services is not an array")
        };
        assert_eq!(field(&suspects[0], "service"), Value::String("db".into()));
        assert_eq!(field(&suspects[0], "score"), Value::Double(0.75));
        assert_eq!(
            field(&suspects[0], "evidence"),
            Value::Array(vec![Value::String(
                "db self time on the critical path 2ms → 40ms".into()
            )])
        );
        // both records read back with their suspects
        let from_avro = crate::codec::records::alert_avro(&value).unwrap();
        assert_eq!(from_avro.suspected_services, alert.suspected_services);
        let from_json = crate::codec::records::alert_json(&Encoding::Json.alert(&alert).1).unwrap();
        assert_eq!(from_json.suspected_services, alert.suspected_services);
    }
}
