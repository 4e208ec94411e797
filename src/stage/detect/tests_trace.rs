//! Trace detection per root operation, on hand-built traces analysed by the analyze
//! stage: a new structure and a moved bottleneck score high at a normal duration, a
//! lasting change that brings a new service is adopted, and root operations are
//! separate subjects. A new span tree alone scores well above usual traces but cannot
//! reach the default threshold (an ignored test shows the gap).

use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::tests::{check_score, explanation, S, T0};
use super::*;
use crate::model::{CloseReason, Span, Trace};
use crate::stage::analyze::{analyze, AnalyzeSettings};
use crate::testkit;

const MS: f64 = 1e6;

/// How a checkout trace deviates from its usual shape.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    /// gateway → api → (db, then cache); db is 60 % of the critical path.
    Usual,
    /// As usual, plus a call from api to auth after the cache, within the same duration.
    ExtraCall,
    /// The same spans and duration, but db is quick and api's own work is 70 % of the
    /// critical path.
    ApiBottleneck,
    /// As usual, but the cache operation has another name.
    Renamed,
    /// ApiBottleneck and ExtraCall at once.
    ApiBottleneckExtraCall,
}

/// A span of trace `id` from `from_ms` to `to_ms` after `start_ns`.
fn sp(
    id: u128,
    span: u64,
    parent: u64,
    start_ns: i64,
    from_ms: f64,
    to_ms: f64,
    service: &str,
) -> Span {
    testkit::span(
        id,
        span,
        parent,
        start_ns + (from_ms * MS) as i64,
        start_ns + (to_ms * MS) as i64,
        service,
    )
}

fn named(mut s: Span, name: &str) -> Span {
    s.name = Arc::from(name);
    s
}

fn trace(id: u128, spans: Vec<Span>) -> Trace {
    let mut t = Trace {
        trace_id: id,
        spans,
        amendment: false,
        close_reason: CloseReason::Completed,
        incomplete: false,
    };
    t.sort_spans();
    t
}

/// The `n`-th checkout trace (root `gateway` `GET /checkout`), one a second: about
/// 100 ms (±5 %), each span's length jittered too.
fn checkout(rng: &mut SmallRng, n: i64, shape: Shape) -> Trace {
    let id = 1_000_000 + n as u128;
    let start = T0 + n * S;
    let mut j = |ms: f64, spread: f64| ms * (1.0 + spread * (rng.random::<f64>() - 0.5));
    let total = j(100.0, 0.1);
    let quick_db = matches!(shape, Shape::ApiBottleneck | Shape::ApiBottleneckExtraCall);
    let db = if quick_db {
        j(8.0, 0.1)
    } else {
        j(0.6 * total, 0.1)
    };
    let db_end = 10.0 + db;
    let cache_end = db_end + 2.0 + j(8.0, 0.2);
    let mut spans = vec![
        named(sp(id, 1, 0, start, 0.0, total, "gateway"), "GET /checkout"),
        sp(id, 2, 1, start, 5.0, total - 5.0, "api"),
        sp(id, 3, 2, start, 10.0, db_end, "db"),
        sp(id, 4, 2, start, db_end + 2.0, cache_end, "cache"),
    ];
    if shape == Shape::Renamed {
        spans[3] = named(spans[3].clone(), "cache mget");
    }
    if matches!(shape, Shape::ExtraCall | Shape::ApiBottleneckExtraCall) {
        spans.push(sp(
            id,
            5,
            2,
            start,
            cache_end + 1.0,
            cache_end + 5.0,
            "auth",
        ));
    }
    trace(id, spans)
}

/// The `n`-th cart trace (root `gateway` `GET /cart`): gateway → cart → redis, 20 ms.
fn cart(rng: &mut SmallRng, n: i64) -> Trace {
    let id = 2_000_000 + n as u128;
    let start = T0 + n * S + 500_000_000;
    let total = 20.0 * (1.0 + 0.1 * (rng.random::<f64>() - 0.5));
    trace(
        id,
        vec![
            named(sp(id, 1, 0, start, 0.0, total, "gateway"), "GET /cart"),
            sp(id, 2, 1, start, 1.0, total - 1.0, "cart"),
            sp(id, 3, 2, start, 2.0, 6.0, "redis"),
        ],
    )
}

/// Analyses and observes a trace; its score.
fn observe(d: &mut Detector, t: &Trace) -> AnomalyScore {
    let a = analyze(t, &AnalyzeSettings::default());
    let mut out = Vec::new();
    d.observe_trace(t, &a, &mut out);
    d.train_inline();
    assert_eq!(out.len(), 1, "one score per trace");
    let s = out.pop().unwrap();
    check_score(&s);
    s
}

fn operation(s: &AnomalyScore) -> (&str, &str) {
    match &s.subject {
        Subject::Trace {
            root_service,
            root_operation,
            ..
        } => (root_service, root_operation),
        other => panic!("not a trace subject: {other:?}"),
    }
}

/// Checkout traces 0..200 of the usual shape; the warm scores.
fn usual_history(d: &mut Detector, rng: &mut SmallRng) -> Vec<f64> {
    let mut warm = Vec::new();
    for n in 0..200 {
        let s = observe(d, &checkout(rng, n, Shape::Usual));
        assert_eq!(operation(&s), ("gateway", "GET /checkout"));
        if s.warm {
            warm.push(s.score);
        }
    }
    assert!(warm.len() >= 150);
    warm
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

#[test]
fn an_extra_service_call_at_a_normal_duration_scores_high() {
    let mut rng = SmallRng::seed_from_u64(1);
    let settings = DetectSettings::default();
    let mut d = Detector::new(settings.clone());
    let normal = usual_history(&mut d, &mut rng);
    assert!(max(&normal) < 0.5, "usual traces score low: {normal:?}");
    assert!(d.has_model(&Subject::Trace {
        root_service: "gateway".into(),
        root_operation: "GET /checkout".into(),
        trace_id: 0
    }));

    let t = checkout(&mut rng, 200, Shape::ExtraCall);
    let s = observe(&mut d, &t);
    assert_eq!(
        s.subject,
        Subject::Trace {
            root_service: "gateway".into(),
            root_operation: "GET /checkout".into(),
            trace_id: t.trace_id
        }
    );
    assert_eq!(s.at_ns, t.end_ns());
    assert!(s.warm && s.score >= settings.anomaly_threshold, "{s:?}");
    // a structure none of the baseline's traces had: its share 0, the usual one's 1
    let e = explanation(&s, "structure");
    assert_eq!((e.value, e.baseline), (0.0, 1.0), "{e:?}");
    assert!(e.deviations < -2.0, "rarer than usual: {e:?}");
    // one more span, at the usual duration and depth
    let e = explanation(&s, "span_count");
    assert!(
        (e.value - 5.0).abs() < 1e-9 && (e.baseline - 4.0).abs() < 1e-9 && e.deviations > 2.0,
        "{e:?}"
    );
    let e = explanation(&s, "duration_ns");
    assert!(
        e.deviations.abs() < 2.0 && (e.value - 100.0 * MS).abs() < 6.0 * MS,
        "{e:?}"
    );
    assert_eq!(explanation(&s, "depth").deviations, 0.0);
}

#[test]
fn a_new_span_tree_of_the_same_size_scores_well_above_usual_traces() {
    // the cache operation renamed: only the structure signature differs
    let mut rng = SmallRng::seed_from_u64(1);
    let mut d = Detector::new(DetectSettings::default());
    let normal = usual_history(&mut d, &mut rng);
    let s = observe(&mut d, &checkout(&mut rng, 200, Shape::Renamed));
    assert_eq!(s.explanations[0].feature, "structure", "{s:?}");
    assert!(
        s.explanations[1..].iter().all(|e| e.deviations.abs() < 3.0),
        "{s:?}"
    );
    // a structure never seen among n has probability (seen once + 1) / (n + 1)
    assert!(s.score >= 0.5 && s.score > max(&normal) + 0.3, "{s:?}");
    // seen again right after, it is still rare, not new
    let again = observe(&mut d, &checkout(&mut rng, 201, Shape::Renamed));
    let e = explanation(&again, "structure");
    assert!(
        e.value > 0.0 && e.value < 0.02 && e.deviations < 0.0,
        "{again:?}"
    );
}

#[test]
#[ignore = "gap: a never-seen structure alone has p = (signatures seen once + 1) / (n + 1) >= 1 / (baseline_windows + 1), a score of at most 0.62 with the default 360, below the default anomaly_threshold 0.9: a new span tree at a usual duration and size is never flagged"]
fn a_new_span_tree_of_the_same_size_is_flagged() {
    let mut rng = SmallRng::seed_from_u64(1);
    let settings = DetectSettings::default();
    let mut d = Detector::new(settings.clone());
    usual_history(&mut d, &mut rng);
    for n in 200..400 {
        observe(&mut d, &checkout(&mut rng, n, Shape::Usual));
    }
    let s = observe(&mut d, &checkout(&mut rng, 400, Shape::Renamed));
    assert!(s.score >= settings.anomaly_threshold, "{s:?}");
}

#[test]
fn a_moved_bottleneck_at_a_normal_duration_scores_high() {
    let mut rng = SmallRng::seed_from_u64(2);
    let settings = DetectSettings::default();
    let mut d = Detector::new(settings.clone());
    let normal = usual_history(&mut d, &mut rng);
    let t = checkout(&mut rng, 200, Shape::ApiBottleneck);
    let s = observe(&mut d, &t);
    assert!(
        s.score >= settings.anomaly_threshold && s.score > max(&normal),
        "{s:?}"
    );
    // api's own work took over db's share of the critical path (shares in [0, 1])
    let top: Vec<&str> = s.explanations[..2]
        .iter()
        .map(|e| e.feature.as_str())
        .collect();
    assert!(
        top.contains(&"share.api") && top.contains(&"share.db"),
        "{s:?}"
    );
    let api = explanation(&s, "share.api");
    assert!(
        api.value > 0.6 && (0.15..0.3).contains(&api.baseline) && api.deviations > 5.0,
        "{api:?}"
    );
    let db = explanation(&s, "share.db");
    assert!(
        db.value < 0.15 && (0.5..0.7).contains(&db.baseline) && db.deviations < -5.0,
        "{db:?}"
    );
    // the same duration, spans and structure
    for f in ["duration_ns", "span_count", "depth", "structure"] {
        assert!(explanation(&s, f).deviations.abs() < 2.0, "{s:?}");
    }
}

#[test]
fn root_operations_are_separate_subjects() {
    let mut rng = SmallRng::seed_from_u64(3);
    let settings = DetectSettings {
        models: vec![ModelKind::Knn],
        ..DetectSettings::default()
    };
    let mut d = Detector::new(settings.clone());
    let subject = |op: &str| Subject::Trace {
        root_service: "gateway".into(),
        root_operation: op.into(),
        trace_id: 0,
    };
    usual_history(&mut d, &mut rng);
    assert!(!d.has_model(&subject("GET /cart")));
    // cart traces start now: their own warm-up, whatever checkout has learnt
    for n in 200..400 {
        let s = observe(&mut d, &checkout(&mut rng, n, Shape::Usual));
        assert!(s.warm && s.score < settings.anomaly_threshold, "{s:?}");
        let c = observe(&mut d, &cart(&mut rng, n));
        assert_eq!(operation(&c), ("gateway", "GET /cart"));
        assert_eq!(c.warm, n - 200 >= settings.min_samples as i64, "{c:?}");
        assert!(
            c.score < settings.anomaly_threshold,
            "a usual cart trace: {c:?}"
        );
    }
    assert_eq!(d.stats().root_operations, 2);
    assert!(d.has_model(&subject("GET /checkout")) && d.has_model(&subject("GET /cart")));

    // a checkout-shaped trace is usual for checkout and unusual for cart
    let checkout_like_cart = {
        let mut t = checkout(&mut rng, 400, Shape::Usual);
        t.spans[0] = named(t.spans[0].clone(), "GET /cart");
        t
    };
    let s = observe(&mut d, &checkout_like_cart);
    assert_eq!(operation(&s), ("gateway", "GET /cart"));
    assert!(s.score >= settings.anomaly_threshold, "{s:?}");
    assert!(explanation(&s, "structure").deviations < 0.0);
    assert!(
        explanation(&s, "duration_ns").deviations > 10.0,
        "five times as long: {s:?}"
    );
    let s = observe(&mut d, &checkout(&mut rng, 401, Shape::Usual));
    assert!(s.score < settings.anomaly_threshold, "{s:?}");
}

#[test]
fn amendments_traces_without_root_and_disabled_traces_are_not_scored() {
    let mut rng = SmallRng::seed_from_u64(4);
    let t = checkout(&mut rng, 0, Shape::Usual);
    let a = analyze(&t, &AnalyzeSettings::default());
    let mut out = Vec::new();
    let mut off = Detector::new(DetectSettings {
        traces: false,
        ..DetectSettings::default()
    });
    off.observe_trace(&t, &a, &mut out);
    let mut d = Detector::new(DetectSettings::default());
    let amendment = Trace {
        amendment: true,
        ..t.clone()
    };
    d.observe_trace(&amendment, &a, &mut out);
    let orphans = trace(t.trace_id, t.spans[1..].to_vec());
    let mut rootless = analyze(&orphans, &AnalyzeSettings::default());
    rootless.root_service = None;
    d.observe_trace(&orphans, &rootless, &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(
        (off.stats().root_operations, d.stats().root_operations),
        (0, 0)
    );
}

#[test]
fn a_new_service_during_a_persistent_change_is_adopted() {
    // flagged traces are held; one whose new service adds a feature completes the
    // change: the held traces (without that feature) are adopted too
    let mut rng = SmallRng::seed_from_u64(5);
    let settings = DetectSettings {
        adapt_after: 5,
        ..DetectSettings::default()
    };
    let mut d = Detector::new(settings.clone());
    usual_history(&mut d, &mut rng);
    // api becomes the bottleneck for good: four traces are flagged and held, then the
    // fifth also calls auth, a service not seen before
    for n in 200..204 {
        let s = observe(&mut d, &checkout(&mut rng, n, Shape::ApiBottleneck));
        assert!(s.score >= settings.anomaly_threshold, "{s:?}");
    }
    let s = observe(
        &mut d,
        &checkout(&mut rng, 204, Shape::ApiBottleneckExtraCall),
    );
    assert!(s.score >= settings.anomaly_threshold, "{s:?}");
    assert_eq!(d.stats().adopted_changes, 1);
    let later: Vec<AnomalyScore> = (205..240)
        .map(|n| {
            observe(
                &mut d,
                &checkout(&mut rng, n, Shape::ApiBottleneckExtraCall),
            )
        })
        .collect();
    for s in &later[10..] {
        assert!(
            s.score < settings.anomaly_threshold,
            "the new shape is usual: {s:?}"
        );
        assert!(explanation(s, "share.api").baseline > 0.6, "{s:?}");
    }
}
