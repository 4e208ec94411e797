//! Tests of the generated workload: structure, topology, attributes and faults.

use std::collections::BTreeSet;
use std::time::Duration;

use rustc_hash::{FxHashMap, FxHashSet};

use super::*;
use crate::model::{AttrValue, SpanKind, StatusCode, TraceId};

const SEC: i64 = 1_000_000_000;

fn config(seed: u64, faults: &str) -> WorkloadConfig {
    WorkloadConfig {
        seed,
        traces_per_second: 50.0,
        start_ns: 1_000 * SEC,
        faults: parse_faults(faults).unwrap(),
    }
}

/// The traces in `spans`, each a contiguous run, checking that no trace id comes back.
fn traces(spans: &[Span]) -> Vec<&[Span]> {
    let mut out: Vec<&[Span]> = Vec::new();
    let mut seen = FxHashSet::default();
    let mut from = 0;
    for i in 1..=spans.len() {
        if i == spans.len() || spans[i].trace_id != spans[from].trace_id {
            assert!(
                seen.insert(spans[from].trace_id),
                "spans of a trace are not together"
            );
            out.push(&spans[from..i]);
            from = i;
        }
    }
    out
}

fn root(trace: &[Span]) -> &Span {
    trace.iter().find(|s| s.is_root()).expect("a root")
}

fn str_attr<'a>(s: &'a Span, key: &str) -> Option<&'a str> {
    match s.attributes.get(key) {
        Some(AttrValue::Str(v)) => Some(v),
        _ => None,
    }
}

#[test]
fn same_seed_same_spans_other_seed_other_spans() {
    let a = Workload::new(config(42, "latency:redis@1s+2s")).generate_traces(200);
    let b = Workload::new(config(42, "latency:redis@1s+2s")).generate_traces(200);
    assert_eq!(a, b);
    let c = Workload::new(config(43, "latency:redis@1s+2s")).generate_traces(200);
    assert_ne!(a, c);
}

#[test]
fn traces_are_well_formed_trees() {
    let mut w = Workload::new(config(1, ""));
    let spans = w.generate_traces(1500);
    let all = traces(&spans);
    assert_eq!(all.len(), 1500);
    assert_eq!(w.traces_generated(), 1500);
    let mut last_root_start = i64::MIN;
    for trace in all {
        assert_ne!(trace[0].trace_id, 0);
        let by_id: FxHashMap<u64, &Span> = trace.iter().map(|s| (s.span_id, s)).collect();
        assert_eq!(by_id.len(), trace.len(), "span ids are unique");
        assert_eq!(
            trace.iter().filter(|s| s.is_root()).count(),
            1,
            "exactly one root"
        );
        let r = root(trace);
        assert!(r.start_ns >= last_root_start, "traces come in root order");
        last_root_start = r.start_ns;
        assert_eq!((r.service(), r.kind), ("api-gateway", SpanKind::Server));
        for s in trace {
            assert_ne!(s.span_id, 0);
            assert!(s.end_ns >= s.start_ns);
            if s.is_root() {
                continue;
            }
            let parent = by_id.get(&s.parent_span_id).expect("parent in trace");
            match s.kind {
                SpanKind::Consumer => {
                    assert_eq!(parent.kind, SpanKind::Producer);
                    assert!(s.start_ns >= parent.end_ns, "consumed after produced");
                }
                _ => assert!(
                    parent.start_ns <= s.start_ns && s.end_ns <= parent.end_ns,
                    "{} inside {}",
                    s.name,
                    parent.name
                ),
            }
            if s.kind == SpanKind::Server {
                assert_eq!(parent.kind, SpanKind::Client);
                assert_eq!(str_attr(parent, "peer.service"), Some(s.service()));
            }
        }
    }
}

#[test]
fn every_root_operation_appears_with_its_own_shape() {
    let spans = Workload::new(config(2, "")).generate_traces(2000);
    let mut sizes: FxHashMap<String, Vec<usize>> = FxHashMap::default();
    for t in traces(&spans) {
        sizes
            .entry(root(t).name.to_string())
            .or_default()
            .push(t.len());
    }
    for op in root_operations() {
        assert!(
            sizes.get(*op).is_some_and(|v| v.len() > 100),
            "{op} is rare or missing"
        );
    }
    let mean = |op: &str| sizes[op].iter().sum::<usize>() as f64 / sizes[op].len() as f64;
    assert!(mean("GET /v1/history") < 12.0);
    assert!(mean("POST /v1/chat") > 25.0);
    assert!(mean("POST /v1/agents/run") > mean("POST /v1/chat"));
    assert!(sizes["POST /v1/chat"].len() > sizes["POST /v1/agents/run"].len());
}

#[test]
fn observed_edges_equal_the_topology() {
    let spans = Workload::new(config(3, "")).generate_traces(3000);
    let mut seen = BTreeSet::new();
    for t in traces(&spans) {
        let by_id: FxHashMap<u64, &Span> = t.iter().map(|s| (s.span_id, s)).collect();
        for s in t
            .iter()
            .filter(|s| matches!(s.kind, SpanKind::Server | SpanKind::Consumer) && !s.is_root())
        {
            let p = by_id[&s.parent_span_id];
            seen.insert((p.service().to_string(), s.service().to_string()));
        }
    }
    let want: BTreeSet<(String, String)> = topology_edges()
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(seen, want);
    let services_seen: BTreeSet<&str> = spans.iter().map(|s| s.service()).collect();
    assert_eq!(services_seen, services().iter().copied().collect());
}

#[test]
fn spans_carry_the_expected_attributes() {
    let spans = Workload::new(config(4, "")).generate_traces(300);
    let (mut agents, mut llm_calls, mut db_calls) = (0, 0, 0);
    for s in &spans {
        let res = &s.resource.attributes;
        assert_eq!(
            res.get("service.namespace"),
            Some(AttrValue::Str(NAMESPACE))
        );
        assert_eq!(
            res.get("deployment.environment"),
            Some(AttrValue::Str(ENVIRONMENT))
        );
        for key in ["service.version", "host.name", "module"] {
            assert!(matches!(res.get(key), Some(AttrValue::Str(_))), "{key}");
        }
        if s.name.starts_with("invoke_agent") {
            agents += 1;
            assert!(
                str_attr(s, "agent.id").is_some() && str_attr(s, "gen_ai.agent.name").is_some()
            );
        }
        if s.kind == SpanKind::Client {
            assert!(str_attr(s, "peer.service").is_some());
            if str_attr(s, "gen_ai.system").is_some() {
                llm_calls += 1;
                assert!(str_attr(s, "gen_ai.request.model").is_some());
                assert!(
                    matches!(s.attributes.get("gen_ai.usage.input_tokens"), Some(AttrValue::Int(n)) if n > 0)
                );
            }
            if str_attr(s, "db.system").is_some() {
                db_calls += 1;
            } else if s.status != StatusCode::Error {
                assert_eq!(
                    str_attr(s, "http.request.method").map(|m| m.len() >= 3),
                    Some(true)
                );
                assert!(matches!(
                    s.attributes.get("http.response.status_code"),
                    Some(AttrValue::Int(200))
                ));
            }
        }
    }
    assert!(
        agents > 100 && llm_calls > 100 && db_calls > 100,
        "{agents} {llm_calls} {db_calls}"
    );
}

#[test]
fn generate_until_returns_each_trace_once_in_event_time() {
    let cfg = config(5, "");
    let start = cfg.start_ns;
    let mut w = Workload::new(cfg);
    let first = w.generate_until(start + 10 * SEC);
    let second = w.generate_until(start + 20 * SEC);
    assert!(w.generate_until(start + 20 * SEC).is_empty());
    assert_eq!(
        root(&first).start_ns,
        start,
        "the first trace starts at start_ns"
    );
    let roots = |s: &[Span]| {
        s.iter()
            .filter(|s| s.is_root())
            .map(|s| s.start_ns)
            .collect::<Vec<_>>()
    };
    let (a, b) = (roots(&first), roots(&second));
    assert!(
        a.iter().all(|&t| t < start + 10 * SEC)
            && b.iter()
                .all(|&t| t >= start + 10 * SEC && t < start + 20 * SEC)
    );
    let n = (a.len() + b.len()) as f64;
    assert!(
        (n - 1000.0).abs() < 150.0,
        "about 50 traces/s, got {n} in 20 s"
    );
    assert_eq!(w.traces_generated() as usize, a.len() + b.len());
    let mut again = Workload::new(config(5, ""));
    assert_eq!(
        again.generate_until(start + 20 * SEC),
        [first, second].concat()
    );
}

/// Spans of `service` of `kind`, split by whether they start inside `[from, to)`.
fn split<'a>(
    spans: &'a [Span],
    service: &str,
    kind: SpanKind,
    from: i64,
    to: i64,
) -> (Vec<&'a Span>, Vec<&'a Span>) {
    spans
        .iter()
        .filter(|s| s.service() == service && s.kind == kind)
        .partition(|s| s.start_ns >= from && s.start_ns < to)
}

fn mean_log_duration(spans: &[&Span]) -> f64 {
    spans
        .iter()
        .map(|s| ((s.end_ns - s.start_ns).max(1) as f64).ln())
        .sum::<f64>()
        / spans.len() as f64
}

fn error_share(spans: &[&Span]) -> f64 {
    spans
        .iter()
        .filter(|s| s.status == StatusCode::Error)
        .count() as f64
        / spans.len().max(1) as f64
}

#[test]
fn latency_spike_slows_the_service_by_its_factor_only_in_its_window() {
    let cfg = config(6, "latency:llm-openai*8@30s+30s");
    let (from, to) = cfg.faults[0].window_ns(cfg.start_ns);
    let spans = Workload::new(cfg.clone()).generate_until(cfg.start_ns + 90 * SEC);
    let (inside, outside) = split(&spans, "llm-openai", SpanKind::Server, from, to);
    let shift = mean_log_duration(&inside) - mean_log_duration(&outside);
    assert!(
        (shift - 8f64.ln()).abs() < 0.25,
        "log shift {shift}, want {}",
        8f64.ln()
    );
    let (vin, vout) = split(&spans, "vector-store", SpanKind::Server, from, to);
    assert!(
        (mean_log_duration(&vin) - mean_log_duration(&vout)).abs() < 0.2,
        "other services unaffected"
    );
    let (mut rin, mut rout) = split(&spans, "api-gateway", SpanKind::Server, from, to);
    rin.retain(|s| &*s.name == "POST /v1/chat");
    rout.retain(|s| &*s.name == "POST /v1/chat");
    assert!(
        mean_log_duration(&rin) > mean_log_duration(&rout) + 0.5,
        "ancestors slow down too"
    );
}

#[test]
fn error_burst_fails_the_service_and_its_callers_retry() {
    let cfg = config(7, "errors:vector-store*0.5@30s+30s");
    let (from, to) = cfg.faults[0].window_ns(cfg.start_ns);
    let spans = Workload::new(cfg.clone()).generate_until(cfg.start_ns + 90 * SEC);
    let (inside, outside) = split(&spans, "vector-store", SpanKind::Server, from, to);
    assert!(
        (error_share(&inside) - 0.5).abs() < 0.08,
        "{}",
        error_share(&inside)
    );
    assert!(error_share(&outside) < 0.01, "{}", error_share(&outside));
    let clients: Vec<&Span> = spans
        .iter()
        .filter(|s| {
            s.kind == SpanKind::Client && str_attr(s, "peer.service") == Some("vector-store")
        })
        .filter(|s| s.start_ns >= from && s.start_ns < to)
        .collect();
    assert!((error_share(&clients) - 0.5).abs() < 0.08);
    let retries = clients
        .iter()
        .filter(|s| s.attributes.get("http.request.resend_count").is_some())
        .count();
    assert!(
        retries > clients.len() / 5,
        "{retries} retries of {}",
        clients.len()
    );
    let (rin, mut rout) = split(&spans, "api-gateway", SpanKind::Server, from, to);
    rout.retain(|s| s.end_ns < from || s.start_ns >= to);
    assert!(
        error_share(&rin) > 0.05 && error_share(&rout) < 0.02,
        "{} {}",
        error_share(&rin),
        error_share(&rout)
    );
}

#[test]
fn outage_fails_calls_fast_and_the_service_emits_nothing_in_its_window() {
    let cfg = config(
        8,
        "outage:search-agent@30s+30s,outage:indexer-worker@30s+30s",
    );
    let (from, to) = cfg.faults[0].window_ns(cfg.start_ns);
    let spans = Workload::new(cfg.clone()).generate_until(cfg.start_ns + 90 * SEC);
    let (inside, outside) = split(&spans, "search-agent", SpanKind::Server, from, to);
    assert!(inside.is_empty());
    assert!(outside.iter().any(|s| s.start_ns < from) && outside.iter().any(|s| s.start_ns >= to));
    let (cin, _) = split(&spans, "indexer-worker", SpanKind::Consumer, from, to);
    assert!(cin.is_empty(), "queued documents wait for the consumer");
    let mut failed_traces: FxHashSet<TraceId> = FxHashSet::default();
    let mut calls = 0;
    for s in spans.iter().filter(|s| {
        s.kind == SpanKind::Client && str_attr(s, "peer.service") == Some("search-agent")
    }) {
        if s.start_ns >= from && s.start_ns < to {
            calls += 1;
            assert_eq!(s.status, StatusCode::Error);
            assert!(s.end_ns - s.start_ns < 20_000_000, "fails fast");
            failed_traces.insert(s.trace_id);
        }
    }
    assert!(calls > 100, "{calls}");
    for t in traces(&spans)
        .into_iter()
        .filter(|t| failed_traces.contains(&t[0].trace_id))
    {
        assert_eq!(
            root(t).status,
            StatusCode::Error,
            "the failure reaches the root"
        );
    }
}

#[test]
fn gateway_outage_means_no_traces_and_generate_traces_still_counts_traces() {
    let cfg = config(9, "outage:api-gateway@0s+10s");
    let mut w = Workload::new(cfg.clone());
    assert!(w.generate_until(cfg.start_ns + 10 * SEC).is_empty());
    let spans = w.generate_traces(10);
    assert_eq!(traces(&spans).len(), 10);
    assert!(spans
        .iter()
        .all(|s| !s.is_root() || s.start_ns >= cfg.start_ns + 10 * SEC));
}

#[test]
fn config_validation_reports_bad_rates_and_faults() {
    assert!(config(1, "outage:redis@1s+1s").validate().is_ok());
    let bad_rate = WorkloadConfig {
        traces_per_second: 0.0,
        ..config(1, "")
    };
    assert_eq!(bad_rate.validate(), Err(WorkloadError::BadRate(0.0)));
    let fault = Fault {
        kind: FaultKind::Outage,
        service: "nope".into(),
        start: Duration::ZERO,
        duration: Duration::from_secs(1),
    };
    let bad_fault = WorkloadConfig {
        faults: vec![fault],
        ..config(1, "")
    };
    assert!(bad_fault
        .validate()
        .unwrap_err()
        .to_string()
        .contains("unknown service `nope`"));
}

/// `cargo test --release --lib workload -- --ignored --nocapture`
#[test]
#[ignore = "throughput measurement, run in release"]
fn generation_throughput() {
    let mut w = Workload::new(config(10, ""));
    let started = std::time::Instant::now();
    let mut spans = 0;
    let mut buf = Vec::new();
    while started.elapsed() < Duration::from_secs(3) {
        buf.clear();
        w.generate_traces_into(1000, &mut buf);
        spans += buf.len();
    }
    let rate = spans as f64 / started.elapsed().as_secs_f64();
    println!("{rate:.0} spans/s");
    assert!(rate > 1e6, "{rate:.0} spans/s");
}
