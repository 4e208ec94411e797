//! Training on its schedule: jobs are handed out, run elsewhere and installed; until a
//! model is installed the baseline scores; subjects are separate; a busy subject trains
//! at most once per `retrain_min_interval` of event time.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::tests::*;
use super::*;

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

#[test]
fn a_growing_history_is_refitted_sooner_then_every_retrain_every() {
    let settings = DetectSettings {
        retrain_every: 180,
        retrain_min_interval_ns: 0,
        baseline_windows: 360,
        models: vec![ModelKind::Knn],
        ..DetectSettings::default()
    };
    let mut rng = SmallRng::seed_from_u64(12);
    let mut d = Detector::new(settings);
    let subject = series("young");
    let mut out = Vec::new();
    let mut asked = Vec::new();
    for i in 0..1000i64 {
        d.observe_value(&subject, T0 + i * S, 100.0 + rng.random::<f64>(), &mut out);
        for job in d.take_training_jobs() {
            asked.push((i, job.samples()));
            d.install(job.run());
        }
    }
    assert_eq!(d.stats().flagged, 0, "every sample was accepted");
    // at 100 samples, then once the samples since a training are half as many as it
    // saw (150, 225, 338), then, the history full at 360, every 180 samples
    assert_eq!(
        asked,
        vec![
            (99, 100),
            (149, 150),
            (224, 225),
            (337, 338),
            (517, 360),
            (697, 360),
            (877, 360)
        ]
    );
}
