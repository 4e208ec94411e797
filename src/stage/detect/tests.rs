//! Series detection on hand-built windows: anomalies are scored and explained in the
//! features' units, nothing is scored during warm-up, flagged windows are not learnt
//! from, and training is handed out as jobs on the `retrain_every` schedule.
//!
//! Noise comes from seeded RNGs, so every run sees the same windows. The cost of
//! scoring a window is measured by the `throughput` benchmark, not here (timing
//! assertions are flaky on shared machines).

use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::model::{Explanation, WindowAggregate};

pub(super) const S: i64 = 1_000_000_000;
pub(super) const MS: f64 = 1e6;
/// Event-time origin.
pub(super) const T0: i64 = 1_700_000_000 * S;
/// Window size of the series.
pub(super) const SIZE: i64 = 10 * S;

/// The window of scope `service`, key `service=<service>`, ending `i` windows after T0,
/// with these latencies (ns), `errors` of them failed.
pub(super) fn window_of(
    service: &str,
    i: i64,
    latencies_ns: &[f64],
    errors: u64,
) -> WindowAggregate {
    let mut w = WindowAggregate::empty(
        T0 + (i - 1) * SIZE,
        SIZE,
        Arc::from("service"),
        vec![(Arc::from("service"), Arc::from(service))],
        500_000_000,
    );
    for ns in latencies_ns {
        w.sketch.add(*ns);
        w.min_ns = w.min_ns.min(*ns as i64);
        w.max_ns = w.max_ns.max(*ns as i64);
        w.sum_ns = w.sum_ns.saturating_add(*ns as i64);
    }
    w.count = latencies_ns.len() as u64;
    w.error_count = errors;
    w.slo_good = latencies_ns.iter().filter(|ns| **ns <= 500.0 * MS).count() as u64;
    w
}

/// The subject of [`window_of`]'s series.
pub(super) fn series(service: &str) -> Subject {
    Subject::Series {
        window_size_ns: SIZE,
        scope: Arc::from("service"),
        key: vec![(Arc::from("service"), Arc::from(service))],
    }
}

/// 100 calls: 80 around 100 ms, 15 around `200 ms · p95_factor` (the 95th percentile is
/// the slowest of them as long as they stay under the rest), 5 around 2 s (the 99th
/// percentile); the whole window scaled by up to ±3 % and each call by up to ±10 %;
/// 0–2 errors. Only p95 moves with `p95_factor` from 0.6 to 9 (below, the 15 calls
/// fall among the 80 and p95 is the slowest of those).
pub(super) fn normal(
    rng: &mut SmallRng,
    service: &str,
    i: i64,
    p95_factor: f64,
) -> WindowAggregate {
    let level = 1.0 + 0.06 * (rng.random::<f64>() - 0.5);
    let mut jitter =
        |ms: f64, spread: f64| ms * MS * level * (1.0 + spread * (rng.random::<f64>() - 0.5));
    let mut lat = Vec::with_capacity(100);
    lat.extend((0..80).map(|_| jitter(100.0, 0.2)));
    lat.extend((0..15).map(|_| jitter(200.0 * p95_factor, 0.1)));
    lat.extend((0..5).map(|_| jitter(2000.0, 0.1)));
    let errors = rng.random_range(0..=2);
    window_of(service, i, &lat, errors)
}

/// Windows `from..to` of `service`, each `normal` with the p95 factor `factor(i)`.
pub(super) fn windows(
    rng: &mut SmallRng,
    service: &str,
    from: i64,
    to: i64,
    factor: impl Fn(i64) -> f64,
) -> Vec<WindowAggregate> {
    (from..to)
        .map(|i| normal(rng, service, i, factor(i)))
        .collect()
}

/// Observes one watched window and returns its score.
pub(super) fn observe(d: &mut Detector, w: &WindowAggregate) -> AnomalyScore {
    let mut out = Vec::new();
    d.observe_window(w, &mut out);
    assert_eq!(out.len(), 1, "one score per watched window");
    out.pop().unwrap()
}

/// Observes windows, training inline after each; their scores.
pub(super) fn feed(d: &mut Detector, ws: &[WindowAggregate]) -> Vec<AnomalyScore> {
    ws.iter()
        .map(|w| {
            let s = observe(d, w);
            d.train_inline();
            s
        })
        .collect()
}

/// What every emitted score promises: a score in [0, 1] (0 when not warm), finite
/// explanations ordered by |deviations|, at least one when warm.
pub(super) fn check_score(s: &AnomalyScore) {
    assert!(
        s.score.is_finite() && (0.0..=1.0).contains(&s.score),
        "score out of [0, 1]: {s:?}"
    );
    if !s.warm {
        assert_eq!(s.score, 0.0, "a cold score is 0: {s:?}");
    } else {
        assert!(
            !s.explanations.is_empty(),
            "a warm score is explained: {s:?}"
        );
    }
    for e in &s.explanations {
        assert!(
            e.value.is_finite() && e.baseline.is_finite() && e.deviations.is_finite(),
            "explanation not finite: {s:?}"
        );
    }
    for pair in s.explanations.windows(2) {
        assert!(
            pair[0].deviations.abs() >= pair[1].deviations.abs(),
            "explanations not largest first: {s:?}"
        );
    }
}

pub(super) fn explanation<'a>(s: &'a AnomalyScore, feature: &str) -> &'a Explanation {
    s.explanations
        .iter()
        .find(|e| e.feature == feature)
        .unwrap_or_else(|| panic!("no {feature} in {s:?}"))
}

pub(super) fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q) as usize]
}

/// The robust deviations of `value` from `baseline` in a log-scaled feature whose
/// spread is at least its floor (0.05) are at most this large.
pub(super) fn max_log_deviations(value: f64, baseline: f64) -> f64 {
    (value.ln_1p() - baseline.ln_1p()).abs() / 0.05
}

#[test]
fn a_five_fold_p95_scores_high_and_is_explained_in_nanoseconds() {
    let mut rng = SmallRng::seed_from_u64(1);
    let history = windows(&mut rng, "api", 0, 200, |_| 1.0);
    let slow = normal(&mut rng, "api", 200, 5.0);
    let fast = normal(&mut rng, "api", 200, 0.2);
    let settings = DetectSettings::default();
    let threshold = settings.anomaly_threshold;

    let mut d = Detector::new(settings.clone());
    let scores = feed(&mut d, &history);
    scores.iter().for_each(check_score);
    let normal_scores: Vec<f64> = scores.iter().filter(|s| s.warm).map(|s| s.score).collect();
    assert!(normal_scores.len() >= 150);
    assert!(
        normal_scores.iter().all(|s| *s < threshold),
        "a normal window was flagged: {normal_scores:?}"
    );
    let typical = quantile(normal_scores.clone(), 0.9);
    assert!(
        typical < 0.2,
        "90 % of normal windows score under 0.2, not {typical}"
    );
    assert_eq!(d.stats().flagged, 0);

    let s = observe(&mut d, &slow);
    check_score(&s);
    assert_eq!(
        (&s.subject, s.at_ns, s.warm),
        (&series("api"), slow.window_end_ns, true)
    );
    assert_ne!(s.model, "mad", "the trained models score too");
    assert!(s.score >= 0.95, "score {} of a five-fold p95", s.score);
    assert!(s.score > normal_scores.iter().copied().fold(0.0, f64::max));
    assert_eq!(d.stats().flagged, 1);

    // the largest deviation is p95's, in nanoseconds, up and far out
    let e = &s.explanations[0];
    assert_eq!(e.feature, "latency_p95_ns", "{s:?}");
    let p95 = slow.quantile(0.95);
    assert!(
        (e.value - p95).abs() <= 1e-9 * p95,
        "value {} is the window's p95 {p95} in ns",
        e.value
    );
    let history_p95: Vec<f64> = history.iter().map(|w| w.quantile(0.95)).collect();
    let median_p95 = quantile(history_p95, 0.5);
    assert!(
        (e.baseline - median_p95).abs() <= 0.01 * median_p95,
        "baseline {} is about the median p95 {median_p95} ns",
        e.baseline
    );
    assert!((4.0..6.0).contains(&(e.value / e.baseline)));
    assert!(e.deviations > 10.0, "{e:?}");
    assert!(
        e.deviations <= max_log_deviations(e.value, e.baseline) * (1.0 + 1e-9),
        "{e:?}"
    );
    // the other features are as usual
    for other in &s.explanations[1..] {
        assert!(other.deviations.abs() < 4.0, "{other:?}");
    }
    assert!(
        (explanation(&s, "throughput_per_s").value - 10.0).abs() < 1e-9,
        "calls per second"
    );
    assert!(
        explanation(&s, "error_rate").value <= 0.02,
        "a share of calls"
    );

    // a five-fold drop of p95 (to under the p50 calls: p95 becomes the slowest of them,
    // about 110 ms) is explained with negative deviations
    let mut d = Detector::new(settings);
    feed(&mut d, &history);
    let s = observe(&mut d, &fast);
    check_score(&s);
    assert!(
        s.score >= threshold,
        "score {} of a five-fold drop of p95",
        s.score
    );
    let e = &s.explanations[0];
    assert_eq!(e.feature, "latency_p95_ns", "{s:?}");
    assert!((e.value - fast.quantile(0.95)).abs() <= 1e-9 * e.value);
    assert!((e.baseline - median_p95).abs() <= 0.01 * median_p95);
    assert!(
        e.deviations < -10.0
            && e.deviations.abs() <= max_log_deviations(e.value, e.baseline) * (1.0 + 1e-9),
        "{e:?}"
    );
}

#[test]
fn nothing_is_scored_or_flagged_before_min_samples() {
    // wild values from the first window on: latencies from 1 µs to 100 s, all calls
    // failing or none, 1 to 5000 calls
    let wild = |i: i64| {
        let (ms, n, errors) = match i % 4 {
            0 => (0.001, 1, 1),
            1 => (100_000.0, 5000, 0),
            2 => (5.0, 3, 3),
            _ => (20_000.0, 700, 0),
        };
        window_of("api", i, &vec![ms * MS; n], errors)
    };
    for min_samples in [10, 30] {
        let settings = DetectSettings {
            min_samples,
            ..DetectSettings::default()
        };
        let mut d = Detector::new(settings);
        let mut values = Detector::new(DetectSettings {
            min_samples,
            ..DetectSettings::default()
        });
        let mut out = Vec::new();
        for i in 0..min_samples as i64 + 20 {
            let s = observe(&mut d, &wild(i));
            d.train_inline();
            check_score(&s);
            let v = [1e-6, 1e9, -3.0, 42.0][i as usize % 4];
            values.observe_value(&series("plain"), T0 + i * SIZE, v, &mut out);
            let sv = out.pop().expect("a score per value");
            check_score(&sv);
            // warm: the subject had min_samples accepted samples before this one (none
            // is flagged during warm-up, so every earlier sample was accepted)
            let cold = (i as usize) < min_samples;
            for s in [&s, &sv] {
                if cold {
                    assert!(
                        !s.warm && s.score == 0.0,
                        "window {i} of min_samples {min_samples}: {s:?}"
                    );
                } else if i as usize == min_samples {
                    assert!(
                        s.warm,
                        "window {i} follows min_samples accepted ones: {s:?}"
                    );
                }
            }
            if cold {
                assert_eq!((d.stats().flagged, values.stats().flagged), (0, 0));
            }
        }
    }
}
