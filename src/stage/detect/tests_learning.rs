//! What the series detector learns from: flagged samples are not learnt from, a short
//! burst stays flagged and the baseline survives it, and a persistent level shift is
//! adopted.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::tests::*;
use super::*;

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
fn a_value_beyond_every_earlier_one_is_new_ground() {
    // a series that keeps alternating between two levels, 0 and 10 (with noise): its
    // baseline spread is wide, so values just outside [0, 10] are little surprise to it
    let mut rng = SmallRng::seed_from_u64(7);
    let level = |i: i64| if (i / 5) % 2 == 0 { 0.0 } else { 10.0 };
    let values: Vec<(i64, f64)> = (0..400)
        .map(|i| (i, level(i) + rng.random::<f64>() * 0.2))
        .collect();
    let score_of = |history: &[(i64, f64)], v: f64| {
        let mut d = Detector::new(DetectSettings::default());
        feed_values(&mut d, history);
        let at = history.len() as i64;
        feed_values(&mut d, &[(at, v)]).pop().unwrap().score
    };
    // inside the range seen, or less than 5 % of it beyond: the baseline decides
    let inside = score_of(&values, 10.25);
    assert!(inside < 0.99, "{inside}");
    // 10 % of the range above or below every earlier value: new ground
    for v in [11.2, -1.0] {
        let beyond = score_of(&values, v);
        assert!(beyond >= 0.99, "{v}: {beyond}");
    }
    // not before the series has filled a baseline window (360 samples by default)
    let young = score_of(&values[..300], 11.2);
    assert!(young < 0.99, "{young}");
}
