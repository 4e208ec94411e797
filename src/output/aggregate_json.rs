//! The JSON aggregate record, written straight from the window: the fields of
//! `schemas/aggregate.avsc` under their names, in the order of the names (as a JSON
//! object map orders them), an undefined figure (NaN) as `null`.

use serde::Serialize;

use crate::model::WindowAggregate;

#[derive(Serialize)]
struct Dimension<'a> {
    name: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
struct AggregateJson<'a> {
    concurrency_max: Option<f64>,
    concurrency_mean: Option<f64>,
    count: u64,
    dimensions: Vec<Dimension<'a>>,
    error_count: u64,
    error_rate: Option<f64>,
    latency_max_ns: i64,
    latency_min_ns: i64,
    latency_p50_ns: Option<f64>,
    latency_p90_ns: Option<f64>,
    latency_p95_ns: Option<f64>,
    latency_p99_ns: Option<f64>,
    latency_sum_ns: i64,
    scope: &'a str,
    slo_compliance: Option<f64>,
    slo_latency_ns: i64,
    throughput_per_s: Option<f64>,
    window_end_unix_nano: i64,
    window_size_ns: i64,
    window_start_unix_nano: i64,
}

/// JSON has no NaN or infinity.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// The JSON value of an aggregate record.
pub(super) fn aggregate_json(w: &WindowAggregate) -> Vec<u8> {
    let record = AggregateJson {
        concurrency_max: finite(w.concurrency_max),
        concurrency_mean: finite(w.concurrency_mean),
        count: w.count,
        dimensions: w
            .key
            .iter()
            .map(|(name, value)| Dimension { name, value })
            .collect(),
        error_count: w.error_count,
        error_rate: finite(w.error_rate()),
        latency_max_ns: w.max_ns,
        latency_min_ns: w.min_ns,
        latency_p50_ns: finite(w.quantile(0.5)),
        latency_p90_ns: finite(w.quantile(0.9)),
        latency_p95_ns: finite(w.quantile(0.95)),
        latency_p99_ns: finite(w.quantile(0.99)),
        latency_sum_ns: w.sum_ns,
        scope: &w.scope,
        slo_compliance: finite(w.slo_compliance()),
        slo_latency_ns: w.slo_latency_ns,
        throughput_per_s: finite(w.throughput_per_s()),
        window_end_unix_nano: w.window_end_ns,
        window_size_ns: w.window_size_ns,
        window_start_unix_nano: w.window_start_ns,
    };
    serde_json::to_vec(&record).expect("aggregate serialises")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::{aggregate_fields, Field};
    use super::*;

    /// The record as a map of the schema's fields (the encoding this one replaced).
    fn from_fields(w: &WindowAggregate) -> Vec<u8> {
        let map: serde_json::Map<String, serde_json::Value> = aggregate_fields(w)
            .into_iter()
            .map(|(name, v)| {
                let v = match v {
                    Field::Long(v) => v.into(),
                    Field::Double(v) => {
                        serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into)
                    }
                    Field::Str(v) => v.into(),
                    Field::Dimensions(dims) => dims
                        .into_iter()
                        .map(|(n, v)| serde_json::json!({"name": n, "value": v}))
                        .collect::<Vec<_>>()
                        .into(),
                };
                (name.to_string(), v)
            })
            .collect();
        serde_json::to_vec(&map).unwrap()
    }

    #[test]
    fn the_json_record_has_every_field_of_the_schema_as_a_map_of_them_would() {
        let mut w = WindowAggregate::empty(
            1_700_000_000_000_000_000,
            10_000_000_000,
            Arc::from("operation"),
            vec![
                (Arc::from("service"), Arc::from("checkout \"eu\"")),
                (Arc::from("operation"), Arc::from("POST /pay")),
            ],
            2_000_000_000,
        );
        // empty: undefined quantiles
        assert_eq!(aggregate_json(&w), from_fields(&w));
        for latency in [12, 7, 250, 3_000].map(|ms: i64| ms * 1_000_000) {
            w.count += 1;
            w.min_ns = w.min_ns.min(latency);
            w.max_ns = w.max_ns.max(latency);
            w.sum_ns += latency;
            w.sketch.add(latency as f64);
        }
        w.error_count = 1;
        w.concurrency_mean = 1.25;
        w.concurrency_max = 3.0;
        let json = aggregate_json(&w);
        assert_eq!(json, from_fields(&w));
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["count"], 4);
        assert_eq!(v["dimensions"][0]["value"], "checkout \"eu\"");
    }
}
