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
fn windows(
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

fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q) as usize]
}

/// The robust deviations of `value` from `baseline` in a log-scaled feature whose
/// spread is at least its floor (0.05) are at most this large.
fn max_log_deviations(value: f64, baseline: f64) -> f64 {
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

/// About N(100, 5) (a sum of 12 uniforms): every value is distinct, so a value learnt
/// moves the median.
fn noisy(rng: &mut SmallRng) -> f64 {
    100.0 + 5.0 * ((0..12).map(|_| rng.random::<f64>()).sum::<f64>() - 6.0)
}

/// Observes values of the plain series `v` at `at(i)`, training inline; their scores.
fn feed_values(d: &mut Detector, values: &[(i64, f64)]) -> Vec<AnomalyScore> {
    let mut out = Vec::new();
    for (i, v) in values {
        d.observe_value(&series("v"), T0 + i * SIZE, *v, &mut out);
        d.train_inline();
    }
    out.iter().for_each(check_score);
    out
}

#[test]
fn flagged_samples_are_not_learnt_from() {
    // `a` sees a burst of five values of 400 (60 deviations; adapt_after is 30) among
    // values of about 100; `b` only the values `a` accepted (did not flag). If `a` learns
    // nothing from what it flags, both have learnt the same baselines. `c` sees five
    // values of 108 instead, which are accepted: the control that a value learnt does
    // move the baseline.
    let mut rng = SmallRng::seed_from_u64(2);
    let history: Vec<(i64, f64)> = (0..200).map(|i| (i, noisy(&mut rng))).collect();
    let burst: Vec<(i64, f64)> = (200..205).map(|i| (i, 400.0)).collect();
    let usual: Vec<(i64, f64)> = (200..205).map(|i| (i, 108.0)).collect();
    let after: Vec<(i64, f64)> = (205..260).map(|i| (i, noisy(&mut rng))).collect();
    let settings = DetectSettings::default();
    let threshold = settings.anomaly_threshold;
    assert!(burst.len() < settings.adapt_after);
    let [mut a, mut b, mut c] = [0; 3].map(|_| Detector::new(settings.clone()));
    for d in [&mut a, &mut b, &mut c] {
        feed_values(d, &history);
    }
    let spikes = feed_values(&mut a, &burst);
    for s in &spikes {
        assert!(s.score >= threshold, "{s:?}");
        let e = &s.explanations[0];
        assert_eq!((e.feature.as_str(), e.value), ("value", 400.0));
        assert!(
            (95.0..105.0).contains(&e.baseline) && e.deviations > 30.0,
            "{e:?}"
        );
        // each value of the burst is judged by the baseline before it
        assert_eq!(
            s.explanations, spikes[0].explanations,
            "a value of the burst was learnt"
        );
    }
    let accepted = feed_values(&mut c, &usual);
    assert!(accepted.iter().all(|s| s.score < threshold), "{accepted:?}");
    assert_ne!(
        accepted[0].explanations, accepted[1].explanations,
        "the first 108 was learnt"
    );

    let skip = settings_context(&settings).max(3);
    for (k, v) in after.iter().enumerate() {
        let x = &feed_values(&mut a, &[*v])[0];
        let z = &feed_values(&mut c, &[*v])[0];
        if x.score >= threshold {
            // a normal value with the burst in its model vector or short-term level
            assert!(
                k < skip,
                "a normal value {k} after the burst is flagged: {x:?}"
            );
            continue;
        }
        let y = &feed_values(&mut b, &[*v])[0];
        // the same baseline (median and spread), so the same deviations
        assert_eq!(
            x.explanations, y.explanations,
            "the burst moved the baseline"
        );
        assert_ne!(
            z.explanations, y.explanations,
            "values learnt move the baseline"
        );
        if k >= skip {
            assert!(
                (x.score - y.score).abs() < 0.1,
                "normal value after the burst {x:?}, without it {y:?}"
            );
        }
    }
    assert_eq!((a.stats().adopted_changes, b.stats().flagged), (0, 0));
}

#[test]
fn the_sample_after_a_burst_is_scored_as_usual() {
    let mut rng = SmallRng::seed_from_u64(2);
    let history: Vec<(i64, f64)> = (0..200).map(|i| (i, noisy(&mut rng))).collect();
    let after: Vec<(i64, f64)> = (202..240).map(|i| (i, noisy(&mut rng))).collect();
    let settings = DetectSettings::default();
    let mut d = Detector::new(settings.clone());
    feed_values(&mut d, &history);
    let spikes = feed_values(&mut d, &[(200, 400.0), (201, 400.0)]);
    assert!(
        spikes.iter().all(|s| s.score >= settings.anomaly_threshold),
        "{spikes:?}"
    );
    for s in feed_values(&mut d, &after) {
        assert!(s.explanations[0].deviations.abs() < 3.0);
        assert!(
            s.score < settings.anomaly_threshold,
            "a usual value after the burst: {s:?}"
        );
    }
    assert_eq!(d.stats().flagged, 2, "only the burst is flagged");
}

/// Windows a model vector spans (the `context` setting where there is one).
fn settings_context(s: &DetectSettings) -> usize {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.get("context").and_then(serde_json::Value::as_u64))
        .map_or(2, |c| c as usize)
}

#[test]
fn a_short_burst_is_flagged_throughout_and_still_scores_high_later() {
    let mut rng = SmallRng::seed_from_u64(2);
    let history = windows(&mut rng, "api", 0, 200, |_| 1.0);
    let burst = windows(&mut rng, "api", 200, 205, |_| 5.0);
    let after = windows(&mut rng, "api", 205, 230, |_| 1.0);
    let again = normal(&mut rng, "api", 230, 5.0);
    let settings = DetectSettings::default();
    let (mut a, mut b) = (
        Detector::new(settings.clone()),
        Detector::new(settings.clone()),
    );
    feed(&mut a, &history);
    feed(&mut b, &history);
    let burst_scores: Vec<f64> = feed(&mut a, &burst).iter().map(|s| s.score).collect();
    feed(&mut a, &after);
    feed(&mut b, &after);
    let (sa, sb) = (observe(&mut a, &again), observe(&mut b, &again));
    assert!(sb.score >= settings.anomaly_threshold, "{sb:?}");
    // nothing of the burst was learnt: every window of it is flagged, and the anomaly
    // scores the same with or without the burst before it
    assert!(
        burst_scores
            .iter()
            .all(|s| *s >= settings.anomaly_threshold),
        "burst scores {burst_scores:?}"
    );
    assert!(
        sa.score >= settings.anomaly_threshold,
        "the anomaly again after the burst: {sa:?}"
    );
    assert!(
        (sa.score - sb.score).abs() < 0.01,
        "{} after the burst, {} without",
        sa.score,
        sb.score
    );
}

#[test]
fn a_persistent_level_shift_is_adopted_and_stops_scoring_high() {
    let mut rng = SmallRng::seed_from_u64(3);
    let settings = DetectSettings {
        adapt_after: 10,
        ..DetectSettings::default()
    };
    let history = windows(&mut rng, "api", 0, 200, |_| 1.0);
    let shifted = windows(&mut rng, "api", 200, 260, |_| 3.0);
    let mut d = Detector::new(settings.clone());
    feed(&mut d, &history);
    let scores = feed(&mut d, &shifted);
    scores.iter().for_each(check_score);
    let first_flags = scores
        .iter()
        .take(2 * settings.adapt_after)
        .filter(|s| s.score >= settings.anomaly_threshold)
        .count();
    assert!(
        first_flags >= settings.adapt_after,
        "the shift is flagged at first ({first_flags} of {})",
        2 * settings.adapt_after
    );
    assert_eq!(d.stats().adopted_changes, 1, "adopted once");
    let level = shifted.iter().map(|w| w.quantile(0.95)).sum::<f64>() / shifted.len() as f64;
    for s in &scores[3 * settings.adapt_after..] {
        assert!(
            s.score < settings.anomaly_threshold,
            "the new level is normal: {s:?}"
        );
        let e = explanation(s, "latency_p95_ns");
        assert!(
            (e.baseline / level - 1.0).abs() < 0.1,
            "the baseline is the new level {level}: {e:?}"
        );
    }
}

#[test]
fn training_jobs_are_handed_out_run_elsewhere_and_installed_on_schedule() {
    fn sendable<T: Send + 'static>(_: &T) {}
    let settings = DetectSettings {
        retrain_every: 20,
        ..DetectSettings::default()
    };
    let mut rng = SmallRng::seed_from_u64(4);
    let ws = windows(&mut rng, "api", 0, 170, |_| 1.0);
    let mut d = Detector::new(settings.clone());
    let mut asked = Vec::new();
    for (i, w) in ws.iter().enumerate() {
        let s = observe(&mut d, w);
        check_score(&s);
        // a model scores from the window after its job was installed
        let trained = !asked.is_empty();
        assert_eq!(d.has_model(&series("api")), trained);
        assert_eq!(s.model == "mad", !trained, "window {i}: {s:?}");
        let jobs = d.take_training_jobs();
        assert!(jobs.len() <= 1);
        for job in jobs {
            sendable(&job);
            asked.push((i, job.samples()));
            // the job owns its data: it runs on another thread
            let model = std::thread::spawn(move || job.run())
                .join()
                .expect("training does not panic");
            sendable(&model);
            d.install(model);
            assert!(d.has_model(&series("api")));
        }
        assert!(
            d.take_training_jobs().is_empty(),
            "jobs are handed out once"
        );
    }
    assert_eq!(d.stats().flagged, 0, "every window was accepted");
    // first when 100 windows are accepted (the fewest a model trains on; min_samples is
    // less), then every retrain_every accepted windows, on the whole accepted history
    assert_eq!(asked, vec![(99, 100), (119, 120), (139, 140), (159, 160)]);
    assert_eq!(
        (
            d.stats().training_jobs,
            d.stats().models_installed,
            d.stats().models_stale
        ),
        (4, 4, 0)
    );
    assert_eq!(
        observe(&mut d, &normal(&mut rng, "api", 170, 1.0)).model,
        "mad+kmeans+gmm+knn"
    );
}

#[test]
fn until_a_job_is_installed_the_baseline_scores_and_a_dropped_job_is_asked_again() {
    let settings = DetectSettings {
        retrain_every: 20,
        models: vec![ModelKind::Knn],
        ..DetectSettings::default()
    };
    let mut rng = SmallRng::seed_from_u64(5);
    let ws = windows(&mut rng, "api", 0, 400, |_| 1.0);
    let mut d = Detector::new(settings.clone());
    let mut asked = Vec::new();
    let mut first = None;
    for (i, w) in ws.iter().enumerate() {
        let s = observe(&mut d, w);
        assert_eq!(s.model, "mad", "no model installed");
        for job in d.take_training_jobs() {
            asked.push(i);
            first.get_or_insert(job);
        }
    }
    // the first request is not asked again while it may still be running: only once
    // more than four times max(retrain_every, min_samples) samples came since
    let wait = 4 * settings.retrain_every.max(settings.min_samples) + 1;
    assert_eq!(asked, vec![99, 99 + wait, 99 + 2 * wait]);
    assert!(!d.has_model(&series("api")));
    // the first job's model comes too late: the subject asked for a newer one
    d.install(first.expect("a job").run());
    assert!(!d.has_model(&series("api")));
    assert_eq!((d.stats().models_installed, d.stats().models_stale), (0, 1));
    d.observe_window(&normal(&mut rng, "api", 400, 1.0), &mut Vec::new());
    assert!(d.take_training_jobs().is_empty());
}

#[test]
fn series_are_separate_subjects() {
    // baselines only (no models), ten services, one slow
    let settings = DetectSettings {
        models: Vec::new(),
        ..DetectSettings::default()
    };
    let mut d = Detector::new(settings.clone());
    let mut rng = SmallRng::seed_from_u64(6);
    let services: Vec<String> = (0..10).map(|i| format!("svc-{i}")).collect();
    for i in 0..60 {
        for (k, svc) in services.iter().enumerate() {
            let factor = if i == 59 && k == 3 { 5.0 } else { 1.0 };
            let s = observe(&mut d, &normal(&mut rng, svc, i, factor));
            check_score(&s);
            assert_eq!(s.subject, series(svc));
            assert_eq!(s.score >= settings.anomaly_threshold, factor > 1.0, "{s:?}");
        }
    }
    assert_eq!(d.stats().series, 10);
    assert!(d.take_training_jobs().is_empty(), "no models, no training");
}

#[test]
fn a_busy_subject_trains_at_most_once_per_retrain_min_interval_of_event_time() {
    // ten samples a second: retrain_every 20 alone would train every 2 s
    let asked = |min_interval_s: i64| {
        let settings = DetectSettings {
            retrain_every: 20,
            retrain_min_interval_ns: min_interval_s * S,
            models: vec![ModelKind::Knn],
            ..DetectSettings::default()
        };
        let mut rng = SmallRng::seed_from_u64(9);
        let mut d = Detector::new(settings);
        let subject = series("busy");
        let mut out = Vec::new();
        let mut asked = Vec::new();
        for i in 0..3000i64 {
            d.observe_value(
                &subject,
                T0 + i * S / 10,
                100.0 + rng.random::<f64>(),
                &mut out,
            );
            for job in d.take_training_jobs() {
                asked.push(i);
                d.install(job.run());
            }
        }
        asked
    };
    // the first as soon as 100 samples are there, then every 20 accepted samples
    let every = asked(0);
    assert_eq!(&every[..3], [99, 119, 139]);
    assert_eq!(every.len(), 1 + (3000 - 100) / 20);
    // with a minute's floor: one a minute (600 samples) after the first
    assert_eq!(asked(60), [99, 699, 1299, 1899, 2499]);
}
