//! Tests over many calls: determinism on the synthetic workload, quantile accuracy, and
//! the throughput figure.

use rand::{Rng, SeedableRng};

use super::tests::{find, settings, span, trace, MS, S};
use super::*;
use crate::model::{CloseReason, Trace};
use crate::workload::{Workload, WorkloadConfig};

fn workload_traces(n: usize, seed: u64) -> Vec<Trace> {
    let spans = Workload::new(WorkloadConfig {
        seed,
        ..WorkloadConfig::default()
    })
    .generate_traces(n);
    let mut traces: Vec<Trace> = Vec::new();
    for s in spans {
        match traces.last_mut() {
            Some(t) if t.trace_id == s.trace_id => t.spans.push(s),
            _ => traces.push(Trace {
                trace_id: s.trace_id,
                spans: vec![s],
                amendment: false,
                close_reason: CloseReason::Completed,
                incomplete: false,
            }),
        }
    }
    traces
}

/// Adds `traces`, advancing the watermark every 100 traces to the start of the last
/// one added (traces come in start order, so no later span ends before it).
fn run(agg: &mut Aggregator, traces: &[Trace], out: &mut Vec<WindowAggregate>) {
    for (i, t) in traces.iter().enumerate() {
        agg.add_trace(t, &[]);
        if i % 100 == 99 {
            agg.advance(t.start_ns(), out);
        }
    }
    agg.flush(out);
}

#[test]
fn replaying_the_same_input_gives_the_same_output() {
    let traces = workload_traces(3_000, 3);
    let outputs: Vec<Vec<WindowAggregate>> = (0..2)
        .map(|_| {
            let mut agg = Aggregator::new(AggregateSettings::default());
            let mut out = Vec::new();
            run(&mut agg, &traces, &mut out);
            assert_eq!(agg.stats().late_spans, 0);
            out
        })
        .collect();
    assert_eq!(outputs[0], outputs[1]);
    let out = &outputs[0];
    assert!(out.len() > 100);
    assert!(out
        .windows(2)
        .all(|w| w[0].window_end_ns <= w[1].window_end_ns));
    let spans: usize = traces.iter().map(|t| t.spans.len()).sum();
    for scope in ["service", "operation", "agent"] {
        let per_size = out
            .iter()
            .filter(|a| &*a.scope == scope && a.window_size_ns == 60 * S);
        assert_eq!(
            per_size.map(|a| a.count).sum::<u64>(),
            spans as u64,
            "{scope}"
        );
    }
    let agents: std::collections::BTreeSet<&str> = out
        .iter()
        .filter(|a| &*a.scope == "agent")
        .map(|a| &*a.key[0].1)
        .collect();
    assert!(agents.contains("") && agents.len() > 2, "{agents:?}");
    let keys: std::collections::BTreeSet<String> = out.iter().map(|a| a.key_string()).collect();
    assert_eq!(keys.len(), out.len(), "one aggregate per series window");
}

/// The exact value at the rank the sketch reports: `floor(q * (n - 1))`.
fn exact(sorted: &[i64], q: f64) -> f64 {
    sorted[(q * (sorted.len() - 1) as f64) as usize] as f64
}

fn check_quantiles(latencies: &[i64]) {
    let mut agg = Aggregator::new(AggregateSettings {
        windows: vec![WindowSpec::tumbling(3_600 * S)],
        ..settings()
    });
    let spans = latencies
        .iter()
        .map(|&l| span("a", "get", S - l, S))
        .collect();
    agg.add_trace(&trace(spans), &[]);
    let mut out = Vec::new();
    agg.flush(&mut out);
    let a = find(&out, "service", &[("service", "a")]);
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    for q in [0.5, 0.9, 0.95, 0.99] {
        let (got, want) = (a.quantile(q), exact(&sorted, q));
        assert!(
            (got - want).abs() <= 0.01 * want,
            "p{q}: {got} vs exact {want}"
        );
    }
}

#[test]
fn quantiles_are_within_one_percent_on_lognormal_latencies() {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
    let latencies: Vec<i64> = (0..50_000)
        .map(|_| {
            // Box-Muller: a standard normal from two uniforms; median 20 ms, sigma 1
            let (u1, u2): (f64, f64) = (1.0 - rng.random::<f64>(), rng.random());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            (20.0 * MS as f64 * z.exp()) as i64
        })
        .collect();
    check_quantiles(&latencies);
}

#[test]
fn quantiles_are_within_one_percent_on_uniform_latencies() {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(12);
    let latencies: Vec<i64> = (0..50_000)
        .map(|_| rng.random_range(1_000..2 * S))
        .collect();
    check_quantiles(&latencies);
}

/// `cargo test --release --lib aggregate -- --ignored --nocapture`
#[test]
#[ignore = "throughput figure; run in release"]
fn throughput() {
    let traces = workload_traces(100_000, 5);
    let spans: usize = traces.iter().map(|t| t.spans.len()).sum();
    let settings = AggregateSettings {
        service_graph: false,
        ..AggregateSettings::default()
    };
    let mut best = f64::MAX;
    let mut emitted = 0;
    for _ in 0..5 {
        let mut agg = Aggregator::new(settings.clone());
        let mut out = Vec::new();
        let t0 = std::time::Instant::now();
        run(&mut agg, &traces, &mut out);
        best = best.min(t0.elapsed().as_secs_f64());
        emitted = out.len();
        assert_eq!(agg.stats().spans, spans as u64);
    }
    println!(
        "aggregate: {spans} spans, 2 windows x 3 dimension sets, {emitted} aggregates: {:.0} spans/s",
        spans as f64 / best
    );
}

#[test]
fn partials_from_three_instances_merge_into_the_windows_of_one() {
    let traces = workload_traces(3_000, 5);
    let mut whole = Aggregator::new(AggregateSettings::default());
    let mut want = Vec::new();
    for t in &traces {
        whole.add_trace(t, &[]);
    }
    whole.flush(&mut want);
    // each instance counts the traces it assembled and hands over what it counted
    // every 250 traces; the owner merges the partials in whatever order they come
    let mut combiners: Vec<Aggregator> = (0..3)
        .map(|_| Aggregator::new(AggregateSettings::default()))
        .collect();
    let mut owner = Aggregator::new(AggregateSettings::default());
    let mut partials = Vec::new();
    for (i, t) in traces.iter().enumerate() {
        combiners[i % 3].add_trace(t, &[]);
        if i % 250 == 249 {
            for c in &mut combiners {
                partials.extend(c.take_partials(t.start_ns()));
            }
        }
    }
    for c in &mut combiners {
        partials.extend(c.take_partials(i64::MIN));
        assert_eq!(c.stats().open_windows, 0);
    }
    partials.reverse();
    for p in partials {
        assert_eq!(owner.merge_window(p), 0, "every series placed");
    }
    let mut got = Vec::new();
    owner.flush(&mut got);
    assert_eq!(got.len(), want.len());
    assert_eq!(
        got, want,
        "counts, sums, extremes, profiles and sketches all exact"
    );
    // a partial of a window already emitted is late, not merged
    let mut late = Aggregator::new(AggregateSettings::default());
    late.add_trace(&traces[0], &[]);
    let stale = late.take_partials(i64::MIN);
    let dropped: usize = stale.into_iter().map(|p| owner.merge_window(p)).sum();
    assert!(dropped > 0);
    assert_eq!(owner.stats().late_partials, dropped as u64);
}
