//! The analysis of the synthetic workload: its topology, its faults, and the speed.

use std::collections::BTreeSet;
use std::time::Instant;

use super::*;
use crate::model::EdgeKind;
use crate::workload::{parse_faults, topology_edges, Workload, WorkloadConfig};

const SEC: i64 = 1_000_000_000;

fn config(seed: u64, faults: &str) -> WorkloadConfig {
    WorkloadConfig {
        seed,
        traces_per_second: 50.0,
        start_ns: 1_000 * SEC,
        faults: parse_faults(faults).unwrap(),
    }
}

/// Closed traces as the assembler emits them: spans of one trace, sorted.
fn traces(spans: Vec<Span>) -> Vec<Trace> {
    crate::testkit::completed_traces(spans)
}

fn edge_set<'a>(all: impl Iterator<Item = &'a Analysis>) -> BTreeSet<(String, String)> {
    all.flat_map(|a| a.edges.iter())
        .map(|e| (e.client.to_string(), e.server.to_string()))
        .collect()
}

fn topology() -> BTreeSet<(String, String)> {
    topology_edges()
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn the_workload_topology_is_found_exactly() {
    let all = traces(Workload::new(config(11, "")).generate_traces(3000));
    assert_eq!(all.len(), 3000);
    let settings = AnalyzeSettings::default();
    let analyses: Vec<Analysis> = all.iter().map(|t| analyze(t, &settings)).collect();
    assert_eq!(edge_set(analyses.iter()), topology());
    for (t, a) in all.iter().zip(&analyses) {
        assert!(!a.oddities.any(), "{:?} in {:?}", a.oddities, t);
        assert_eq!(a.root_service.as_deref(), Some("api-gateway"));
        let sum: i64 = a.critical_path.iter().map(|s| s.self_time_ns).sum();
        let root = t.root().unwrap();
        assert_eq!(sum, root.end_ns - root.start_ns);
        assert!(a.edges.iter().all(|e| e.kind != EdgeKind::ParentChild));
        assert!(a
            .edges
            .iter()
            .all(|e| e.client_latency_ns >= e.server_latency_ns || e.kind == EdgeKind::Messaging));
    }
    let messaging = analyses
        .iter()
        .flat_map(|a| &a.edges)
        .filter(|e| e.kind == EdgeKind::Messaging)
        .count();
    assert!(messaging > 0);
    // the LLM calls dominate; the synthesis loop repeats an LLM call often enough
    let kinds: BTreeSet<FindingKind> = analyses
        .iter()
        .flat_map(|a| a.findings.iter().map(|f| f.kind))
        .collect();
    assert!(
        kinds.contains(&FindingKind::DominantDependency),
        "{kinds:?}"
    );
    assert!(kinds.contains(&FindingKind::NPlusOne), "{kinds:?}");
}

#[test]
fn an_outage_leaves_client_spans_that_still_point_at_the_dead_service() {
    let cfg = config(
        8,
        "outage:search-agent@10s+20s,errors:llm-openai*0.5@10s+20s",
    );
    let spans = Workload::new(cfg.clone()).generate_until(cfg.start_ns + 40 * SEC);
    let settings = AnalyzeSettings::default();
    let analyses: Vec<Analysis> = traces(spans)
        .iter()
        .map(|t| analyze(t, &settings))
        .collect();
    assert!(edge_set(analyses.iter()).is_subset(&topology()));
    let refused = analyses
        .iter()
        .flat_map(|a| &a.edges)
        .filter(|e| {
            &*e.server == "search-agent" && e.error && e.client_latency_ns == e.server_latency_ns
        })
        .count();
    assert!(
        refused > 0,
        "calls to the dead service are edges with errors"
    );
    let kinds: BTreeSet<FindingKind> = analyses
        .iter()
        .flat_map(|a| a.findings.iter().map(|f| f.kind))
        .collect();
    assert!(kinds.contains(&FindingKind::ErrorOrigin), "{kinds:?}");
    assert!(kinds.contains(&FindingKind::RetryAfterError), "{kinds:?}");
    let origins: BTreeSet<&str> = analyses
        .iter()
        .flat_map(|a| &a.findings)
        .filter(|f| f.kind == FindingKind::ErrorOrigin)
        .map(|f| &*f.service)
        .collect();
    assert!(origins.contains("llm-openai"), "{origins:?}");
}

/// `cargo test --release --lib analyze -- --ignored --nocapture`
#[test]
#[ignore = "a measurement; run in release mode"]
fn analysis_speed_on_workload_traces() {
    let all = traces(Workload::new(config(3, "")).generate_traces(40_000));
    let spans: usize = all.iter().map(|t| t.spans.len()).sum();
    let settings = AnalyzeSettings::default();
    let mut best = f64::MAX;
    let mut sink = 0usize;
    for _ in 0..5 {
        let t0 = Instant::now();
        for t in &all {
            let a = analyze(t, &settings);
            sink += a.critical_path.len() + a.edges.len() + a.findings.len();
        }
        best = best.min(t0.elapsed().as_secs_f64());
    }
    let rate = spans as f64 / best;
    println!(
        "analyze: {} traces, {spans} spans ({:.1} per trace) in {:.3} s: {:.0} spans/s, {:.0} traces/s ({sink})",
        all.len(),
        spans as f64 / all.len() as f64,
        best,
        rate,
        all.len() as f64 / best
    );
    if !cfg!(debug_assertions) {
        assert!(rate >= 300_000.0, "{rate:.0} spans/s");
    }
}
