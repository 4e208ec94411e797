//! The blob encoding of a stored trace.

use std::sync::Arc;

use super::tests::{shop_trace, MS, T0};
use super::*;
use crate::model::{
    AttrValue, AttributesBuilder, Bottleneck, Edge, EdgeKind, EventsBuilder, Finding, FindingKind,
    Oddities, PathSegment, StatusCode,
};

pub(super) fn full_analysis() -> Analysis {
    let s: Arc<str> = Arc::from("checkout");
    Analysis {
        duration_ns: 10 * MS,
        span_count: 4,
        depth: 4,
        error_count: 1,
        services: vec![Arc::from("gateway"), s.clone()],
        root_service: Some(Arc::from("gateway")),
        root_name: Some(Arc::from("GET /buy")),
        critical_path: vec![PathSegment {
            span_id: 1,
            service: Arc::from("gateway"),
            name: Arc::from("GET /buy"),
            self_time_ns: 3 * MS,
        }],
        bottleneck: Some(Bottleneck {
            span_id: 3,
            service: s.clone(),
            name: Arc::from("checkout.Buy"),
            self_time_ns: 4 * MS,
            share: 0.4,
        }),
        bottleneck_service: Some((s.clone(), 0.4)),
        edges: vec![Edge {
            client: Arc::from("gateway"),
            server: s.clone(),
            kind: EdgeKind::RequestReply,
            client_latency_ns: 8 * MS,
            server_latency_ns: 6 * MS,
            error: true,
            end_ns: T0 + 9 * MS,
            server_span_id: 3,
        }],
        findings: vec![Finding {
            kind: FindingKind::ErrorOrigin,
            span_ids: vec![3, 4],
            service: s,
            message: "payments failed".into(),
        }],
        oddities: Oddities {
            clock_skew: 1,
            orphans: 2,
            synthetic_root: true,
            ..Default::default()
        },
    }
}

#[test]
fn blob_round_trips_spans_events_and_analysis() {
    let mut spans = shop_trace(7, 0, 0);
    let mut ev = EventsBuilder::default();
    let mut ea = AttributesBuilder::default();
    ea.push("exception.type", AttrValue::Str("Timeout"))
        .push("ratio", AttrValue::Double(0.25));
    ev.push(T0 + 4 * MS, "exception", &ea.build());
    spans[3].events = ev.build();
    spans[3].status = StatusCode::Error;
    spans[3].status_message = Some("card declined".into());
    // a parent that is not in the trace, and a negative duration
    spans[2].parent_span_id = 0xdead_beef;
    spans[1].end_ns = spans[1].start_ns - 5;
    let analysis = full_analysis();
    let blob = codec::encode(&spans, Some(&analysis));
    let (back, a) = codec::decode(7, &blob).unwrap();
    assert_eq!(back, spans);
    assert_eq!(a, Some(analysis));
    // truncation anywhere is an error, never a panic
    for cut in 0..blob.len() {
        assert!(codec::decode(7, &blob[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn attributes_met_again_are_written_and_listed_as_the_first_time() {
    let mut spans = shop_trace(9, 0, 0);
    let mut shared = AttributesBuilder::default();
    shared
        .push("http.method", AttrValue::Str("GET"))
        .push("retry", AttrValue::Bool(true))
        .push("http.status_code", AttrValue::Int(-503))
        .push("ratio", AttrValue::Double(0.25));
    let shared = shared.build();
    // the first time in an event (not listed), then on spans (listed)
    let mut ev = EventsBuilder::default();
    ev.push(T0 + MS, "retrying", &shared);
    spans[0].events = ev.build();
    for s in &mut spans[1..] {
        s.attributes = shared.clone();
    }
    let mut listed = Vec::new();
    let mut buf = String::new();
    let blob = codec::encode_listing(&spans, None, &mut |key, value| {
        listed.push(terms::value_term(key, value, &mut buf));
    });
    let (back, _) = codec::decode(9, &blob).unwrap();
    assert_eq!(back, spans);
    let mut expected: Vec<i64> = spans
        .iter()
        .flat_map(|s| s.attributes.iter().chain(s.resource.attributes.iter()))
        .map(|(k, v)| {
            let text = match v {
                AttrValue::Str(s) => s.to_string(),
                AttrValue::Bool(b) => b.to_string(),
                AttrValue::Int(i) => i.to_string(),
                AttrValue::Double(d) => d.to_string(),
            };
            terms::tag_term(k, &text)
        })
        .collect();
    expected.sort_unstable();
    expected.dedup();
    listed.sort_unstable();
    assert_eq!(listed, expected, "each distinct attribute listed once");
    assert!(listed.contains(&terms::tag_term("http.status_code", "-503")));
}
