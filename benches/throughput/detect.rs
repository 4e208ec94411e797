//! Figure 7b: the detect stage's per-window scoring latency.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spanline::stage::aggregate::WindowAggregate;

use super::common::pipeline_config;

/// Series and windows of the scoring benchmark.
pub const SCORE_SERIES: usize = 200;
const SCORE_WINDOWS: i64 = 400;

/// Per-window scoring latency of the detect stage with the default pipeline's settings:
/// `SCORE_SERIES` service series of 10 s windows (100 calls each, lognormal-ish latency,
/// a few errors), every window closing for all series at once; models trained inline
/// between windows (not timed; the pipeline trains on the blocking pool). Returns the
/// sorted per-series-window times and the per-closed-window totals, both of warm,
/// model-backed windows only.
pub fn detect_scoring() -> (Vec<Duration>, Vec<Duration>) {
    use rand::{Rng, SeedableRng};
    use spanline::stage::detect::Detector;
    let config = pipeline_config();
    let mut det = Detector::new(
        config
            .detect()
            .expect("the default pipeline detects")
            .settings(),
    );
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let size = 10_000_000_000i64;
    let t0 = 1_700_000_000_000_000_000i64;
    let services: Vec<Arc<str>> = (0..SCORE_SERIES)
        .map(|i| Arc::from(format!("svc-{i:03}")))
        .collect();
    let (mut per_series, mut per_window) = (Vec::new(), Vec::new());
    let mut out = Vec::new();
    for i in 0..SCORE_WINDOWS {
        let windows: Vec<WindowAggregate> = services
            .iter()
            .map(|svc| {
                let mut w = WindowAggregate::empty(
                    t0 + i * size,
                    size,
                    Arc::from("service"),
                    vec![(Arc::from("service"), svc.clone())],
                    500_000_000,
                );
                for _ in 0..100 {
                    let ms = 100.0 * (1.0 + rng.random::<f64>()).powi(3);
                    let ns = ms * 1e6;
                    w.sketch.add(ns);
                    w.min_ns = w.min_ns.min(ns as i64);
                    w.max_ns = w.max_ns.max(ns as i64);
                    w.sum_ns = w.sum_ns.saturating_add(ns as i64);
                    w.slo_good += u64::from(ns <= 500e6);
                }
                w.count = 100;
                w.error_count = rng.random_range(0..3);
                w
            })
            .collect();
        let mut total = Duration::ZERO;
        let mut warm = true;
        for w in &windows {
            out.clear();
            let started = Instant::now();
            det.observe_window(w, &mut out);
            let took = started.elapsed();
            black_box(&out);
            let scored = out.first().is_some_and(|s| s.warm && s.model != "mad");
            warm &= scored;
            if scored {
                per_series.push(took);
            }
            total += took;
        }
        if warm {
            per_window.push(total);
        }
        det.train_inline();
    }
    per_series.sort();
    per_window.sort();
    (per_series, per_window)
}
