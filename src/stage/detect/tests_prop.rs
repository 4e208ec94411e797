//! Degenerate inputs never panic and never give a NaN: constant series (zero spread),
//! gaps, repeated and backward event times, bursts after silence, NaN and ±infinity,
//! magnitudes from 5e-324 to 8e307, too little history, any settings, training at
//! random points. Values near f64::MAX, and adapt_after under 5, have tests of their own
//! below.
//!
//! What every score promises is [`check_score`]: a score in [0, 1] (0 before warm-up),
//! finite explanations ordered by |deviations|, at least one when warm. A plain value
//! that is not finite gets no score; a finite one is explained with itself as `value`.

use std::sync::Arc;

use proptest::prelude::*;

use super::tests::{check_score, series, window_of, S, SIZE, T0};
use super::*;
use crate::model::{CloseReason, Trace};
use crate::stage::analyze::{analyze, AnalyzeSettings};
use crate::testkit;

/// A value of a plain series: mostly usual, sometimes anything.
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => 90.0..110.0f64,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(0.0),
        1 => prop::sample::select(vec![LARGE, -LARGE, f64::MIN_POSITIVE, -f64::MIN_POSITIVE, 5e-324]),
        1 => (prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL).prop_filter("beyond LARGE", |v| v.abs() <= LARGE),
    ]
}

/// The largest magnitude of the proptests, under f64::MAX / 2: beyond it the median of
/// two values overflows (`a_series_at_f64_max_has_a_baseline`).
const LARGE: f64 = 8e307;

/// The step to the next sample's event time: the same time, one interval, a gap (an
/// hour, two days), backwards, or to the ends of time.
fn gap() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => Just(SIZE),
        1 => Just(0),
        1 => Just(-SIZE),
        1 => Just(3600 * S),
        1 => Just(2 * 86_400 * S),
        1 => Just(i64::MAX / 4),
        1 => Just(i64::MIN / 4),
    ]
}

/// Any settings the configuration accepts (min_samples at least 10, a threshold in
/// (0, 1]), with adapt_after at least 5 (below, see
/// `after_an_adopted_change_warm_scores_are_explained`) and a history short enough
/// that models are trained within a case.
fn settings() -> impl Strategy<Value = DetectSettings> {
    (
        10usize..40,
        prop::sample::select(vec![10usize, 110, 120]),
        prop::sample::select(vec![10usize, 40]),
        prop::sample::select(vec![0.3, 0.9, 1.0]),
        5usize..10,
        prop::sample::subsequence(ModelKind::ALL.to_vec(), 0..=4),
    )
        .prop_map(
            |(
                min_samples,
                baseline_windows,
                retrain_every,
                anomaly_threshold,
                adapt_after,
                models,
            )| DetectSettings {
                min_samples,
                baseline_windows,
                retrain_every,
                anomaly_threshold,
                adapt_after,
                models,
                ..DetectSettings::default()
            },
        )
}

/// How a case shapes its usual values: as drawn, one constant, or scaled to the
/// smallest or largest magnitudes.
#[derive(Debug, Clone, Copy)]
enum Mode {
    AsDrawn,
    Constant(f64),
    Scaled(f64),
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::AsDrawn),
        prop::sample::select(vec![0.0, 1.0, -7.5, 1e-300, LARGE]).prop_map(Mode::Constant),
        prop::sample::select(vec![1e-300, 1e-200, 1e200, 1e305]).prop_map(Mode::Scaled),
    ]
}

fn shaped(mode: Mode, v: f64) -> f64 {
    match mode {
        Mode::AsDrawn => v,
        Mode::Constant(c) if (90.0..110.0).contains(&v) => c,
        Mode::Constant(_) => v,
        // beyond LARGE only as infinities
        Mode::Scaled(k) if (v * k).abs() > LARGE => (v * k).signum() * f64::INFINITY,
        Mode::Scaled(k) => v * k,
    }
}

/// 64 cases from a fixed seed: every run tests the same inputs (and writes no
/// regression file); change the seed to explore others.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5e7_1e55),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn plain_series_never_panic_and_scores_stay_in_range(
        settings in settings(),
        mode in mode(),
        steps in prop::collection::vec((gap(), value(), prop::bool::weighted(0.2)), 0..250),
    ) {
        let mut d = Detector::new(settings.clone());
        let subject = series("plain");
        let mut at = T0;
        let mut out = Vec::new();
        let mut finite = 0u64;
        for (gap, v, train) in steps {
            at = at.saturating_add(gap);
            let v = shaped(mode, v);
            d.observe_value(&subject, at, v, &mut out);
            if v.is_finite() {
                finite += 1;
                let s = out.pop().expect("a finite value is scored");
                check_score(&s);
                prop_assert_eq!((&s.subject, s.at_ns), (&subject, at));
                if let Some(e) = s.explanations.iter().find(|e| e.feature == "value") {
                    prop_assert_eq!(e.value, v);
                }
            }
            prop_assert!(out.is_empty(), "a value that is not finite gets no score");
            if train {
                d.train_inline();
            }
        }
        prop_assert_eq!(d.stats().scores, finite);

        // whatever it saw, its snapshot reads back and scores as it does
        let next = at.saturating_add(SIZE);
        restores_alike(&mut d, settings, |d, out| d.observe_value(&subject, next, 100.0, out))?;
    }

    #[test]
    fn window_series_never_panic_and_scores_stay_in_range(
        settings in settings(),
        windows in prop::collection::vec(
            (
                gap(),
                // no calls (latencies NaN), or a few of 0 ns to 11 days
                prop::collection::vec(prop_oneof![4 => 1e7..1e9f64, 1 => Just(0.0), 1 => 1.0..1e15f64], 0..6),
                0u64..8,
                prop_oneof![30 => Just(SIZE), 1 => Just(60 * S), 1 => Just(S)],
                prop::bool::weighted(0.2),
            ),
            0..250,
        ),
        constant in any::<bool>(),
        // other window sizes too (a smaller one replaces the watched series)
        mixed_sizes in prop::bool::weighted(0.25),
    ) {
        let mut d = Detector::new(settings.clone());
        let mut end = T0;
        let mut out = Vec::new();
        for (gap, latencies, errors, size, train) in windows {
            end = end.saturating_add(gap);
            let latencies = if constant { vec![5e7; latencies.len()] } else { latencies };
            let mut w = window_of("api", 0, &latencies, errors);
            w.window_size_ns = if mixed_sizes { size } else { SIZE };
            w.window_start_ns = end.saturating_sub(size);
            w.window_end_ns = end;
            d.observe_window(&w, &mut out);
            for s in out.drain(..) {
                check_score(&s);
                prop_assert_eq!(s.at_ns, end);
            }
            if train {
                d.train_inline();
            }
        }
        // whatever it saw, its snapshot reads back and scores as it does
        let next = window_of("api", 0, &[1e8, 2e8], 0);
        restores_alike(&mut d, settings, |d, out| d.observe_window(&next, out))?;
    }

    #[test]
    fn traces_of_any_shape_never_panic_and_scores_stay_in_range(
        settings in settings(),
        traces in prop::collection::vec(
            (
                prop::collection::vec((0u64..6, -50i64..200, 0i64..300, 0usize..5, prop::bool::weighted(0.1)), 1..8),
                // one root first, every other span under an earlier one
                prop::bool::weighted(0.9),
                prop::bool::weighted(0.15),
            ),
            0..250,
        ),
        extreme in any::<bool>(),
    ) {
        // spans of random parents, times and services (an hour apart per trace, or at
        // the end of time), some failed
        const SERVICES: [&str; 5] = ["gateway", "api", "db", "cache", "auth"];
        let mut d = Detector::new(settings.clone());
        let mut out = Vec::new();
        let mut last = None;
        for (n, (gen, well_formed, train)) in traces.iter().enumerate() {
            let base = if extreme && n % 5 == 1 { i64::MAX - 1_000_000_000 } else { T0 + n as i64 * 3600 * S };
            let spans = gen
                .iter()
                .enumerate()
                .map(|(i, (parent, start_ms, len_ms, svc, failed))| {
                    let parent = match (well_formed, i) {
                        (true, 0) => 0,
                        (true, _) => 1 + parent % i as u64,
                        (false, _) => *parent,
                    };
                    let start = base.saturating_add(start_ms * 1_000_000);
                    let service = if i == 0 { "gateway" } else { SERVICES[*svc] };
                    let mut s = testkit::span(1, i as u64 + 1, parent, start, start.saturating_add(len_ms * 1_000_000), service);
                    if *failed {
                        s.status = crate::model::StatusCode::Error;
                    }
                    if i == 0 {
                        s.name = Arc::from(if n % 10 == 9 { "GET /b" } else { "GET /a" });
                    }
                    s
                })
                .collect();
            let mut t = Trace { trace_id: n as u128, spans, amendment: false, close_reason: CloseReason::Completed, incomplete: false };
            t.sort_spans();
            let a = analyze(&t, &AnalyzeSettings::default());
            d.observe_trace(&t, &a, &mut out);
            for s in out.drain(..) {
                check_score(&s);
                prop_assert_eq!(s.at_ns, t.end_ns());
            }
            if *train {
                d.train_inline();
            }
            last = Some((t, a));
        }
        // whatever it saw, its snapshot reads back and scores as it does
        if let Some((t, a)) = last {
            restores_alike(&mut d, settings, |d, out| d.observe_trace(&t, &a, out))?;
        }
    }
}

/// Saves `d`'s snapshot, reads it back into a new detector with `settings`, and checks
/// that both score `next` alike.
fn restores_alike(
    d: &mut Detector,
    settings: DetectSettings,
    next: impl Fn(&mut Detector, &mut Vec<AnomalyScore>),
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    d.save_snapshot(dir.path()).unwrap();
    let mut restored = Detector::new(settings);
    let loaded = restored.load_snapshot(dir.path());
    prop_assert!(matches!(loaded, Ok(true)), "{:?}", loaded);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    next(d, &mut a);
    next(&mut restored, &mut b);
    prop_assert_eq!(a, b);
    Ok(())
}

/// A plain series fed `values` one interval apart; its scores.
fn values(settings: DetectSettings, values: &[f64]) -> Vec<AnomalyScore> {
    let mut d = Detector::new(settings);
    let mut out = Vec::new();
    for (i, v) in values.iter().enumerate() {
        d.observe_value(&series("plain"), T0 + i as i64 * SIZE, *v, &mut out);
    }
    out
}

#[test]
fn values_near_f64_max_are_explained_with_finite_deviations() {
    let m = f64::MAX;
    let scores = values(DetectSettings::default(), &[-m, -m, -m, m, m, 1e300]);
    // the sixth value has a baseline: median -MAX, spread infinite (the mean absolute
    // deviation overflows), 1e300 - (-MAX) overflows
    let last = scores.last().unwrap();
    assert_eq!(last.explanations.len(), 1, "{last:?}");
    scores.iter().for_each(check_score);
}

#[test]
fn after_an_adopted_change_warm_scores_are_explained() {
    let settings = DetectSettings {
        min_samples: 10,
        adapt_after: 1,
        models: Vec::new(),
        ..DetectSettings::default()
    };
    // 20 values about 100, then a lasting change to 1000: the first is flagged and,
    // with adapt_after 1, adopted at once
    let mut v: Vec<f64> = (0..20).map(|i| 100.0 + f64::from(i % 5)).collect();
    v.extend((0..10).map(|i| 1000.0 + f64::from(i % 5)));
    let scores = values(settings, &v);
    assert!(scores[20].score >= 0.9, "{:?}", scores[20]);
    scores.iter().for_each(check_score);
}

#[test]
fn a_model_trains_on_values_near_f64_max() {
    let settings = DetectSettings {
        min_samples: 10,
        models: vec![ModelKind::Knn],
        ..DetectSettings::default()
    };
    let mut d = Detector::new(settings);
    let mut out = Vec::new();
    for i in 0..120 {
        d.observe_value(
            &series("plain"),
            T0 + i * SIZE,
            1e307 * (1.0 + 0.01 * (i % 3) as f64),
            &mut out,
        );
        d.train_inline();
    }
    out.iter().for_each(check_score);
    assert!(d.has_model(&series("plain")), "{:?}", d.stats());
}

#[test]
fn a_series_at_f64_max_has_a_baseline() {
    let settings = DetectSettings {
        min_samples: 10,
        models: Vec::new(),
        ..DetectSettings::default()
    };
    let scores = values(settings, &[f64::MAX; 12]);
    // the 11th value is warm, and the rolling window then holds 10 values
    assert!(scores[10].warm);
    scores.iter().for_each(check_score);
}
