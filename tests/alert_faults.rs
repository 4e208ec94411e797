//! The demo's scheduled faults through the default pipeline, in event time (the replay
//! core: the same stage code as live, without Kafka): each fault gives exactly one
//! incident (one `new` alert, its symptoms `grouped`) named after the faulty service,
//! within two windows of its start, whose alerts resolve after it ends; a fault-free hour
//! gives at most one alert.

use spanline::config::load_str;
use spanline::model::{Alert, AlertStatus};
use spanline::replay::{Replayer, Written};
use spanline::workload::{parse_faults, Workload, WorkloadConfig};

const S: i64 = 1_000_000_000;
const WINDOW: i64 = 10 * S;
const START: i64 = 1_700_000_000 * S;

/// Runs the default pipeline over `minutes` of workload at `rate` traces/s with `faults`,
/// spans delivered in end-time order as exporters send them; returns the alert events.
fn run(minutes: i64, rate: f64, faults: &str) -> Vec<Alert> {
    let config = load_str(include_str!("../pipelines/trace-analytics.yaml"), |_| None).unwrap();
    let mut replayer = Replayer::new(&config).unwrap();
    let mut workload = Workload::new(WorkloadConfig {
        seed: 42,
        traces_per_second: rate,
        start_ns: START,
        faults: parse_faults(faults).unwrap(),
    });
    let mut pending: Vec<spanline::model::Span> = Vec::new();
    let mut written = Written::default();
    let mut alerts = Vec::new();
    let end = START + minutes * 60 * S;
    let mut now = START;
    while now < end {
        now += S;
        workload.generate_until_into(now, &mut pending);
        let (mut ended, rest): (Vec<_>, Vec<_>) = pending.drain(..).partition(|s| s.end_ns <= now);
        pending = rest;
        ended.sort_by_key(|s| s.end_ns);
        for chunk in ended.chunks(50) {
            replayer.push(chunk.iter().cloned(), &mut written);
        }
        alerts.append(&mut written.alerts);
        written.clear();
    }
    alerts
}

fn describe(alerts: &[Alert]) -> String {
    alerts
        .iter()
        .map(|a| {
            format!(
                "{:>7.1}s {:<8} {:<16} {:<28} suspected {:?} {}",
                (a.starts_at_ms as f64 / 1e3) - (START / S) as f64,
                a.status.as_str(),
                a.rule,
                format!("{:?}", a.labels.get("service")),
                a.suspected_service,
                a.annotations
                    .get("notification")
                    .map(String::as_str)
                    .unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// An hour of workload through every stage: minutes unoptimised, seconds optimised.
// `scripts/test.sh` runs this file with `--release`, where it is not ignored.
#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "slow unoptimised: scripts/test.sh runs it with --release"
)]
fn each_fault_is_one_incident_named_after_the_faulty_service_lasting_the_fault() {
    // (kind, service, start minute, minutes)
    let faults = [
        ("latency", "llm-openai", 20, 4),
        ("errors", "vector-store", 32, 4),
        ("outage", "search-agent", 44, 4),
    ];
    let spec: Vec<String> = faults
        .iter()
        .map(|(k, s, at, len)| {
            let kind = if *k == "latency" {
                "latency".to_string()
            } else {
                k.to_string()
            };
            format!("{kind}:{s}@{at}m+{len}m")
        })
        .collect();
    let alerts = run(56, 8.0, &spec.join(","));
    let report = describe(&alerts);
    let firing: Vec<&Alert> = alerts
        .iter()
        .filter(|a| {
            a.status == AlertStatus::Firing
                && a.annotations.get("notification").is_none_or(|n| n == "new")
        })
        .collect();
    for (kind, service, at, len) in faults {
        let start = START + at * 60 * S;
        let stop = start + len * 60 * S;
        let during: Vec<&&Alert> = firing
            .iter()
            .filter(|a| a.starts_at_ms * 1_000_000 >= start && a.starts_at_ms * 1_000_000 < stop)
            .collect();
        assert_eq!(
            during.len(),
            1,
            "{kind} fault on {service}: {} new alerts\n{report}",
            during.len()
        );
        let alert = during[0];
        assert_eq!(
            alert.suspected_service.as_deref(),
            Some(service),
            "{kind} fault\n{report}"
        );
        assert!(
            alert.starts_at_ms * 1_000_000 <= start + 2 * WINDOW,
            "{kind} fault on {service} alerted {}s after it started\n{report}",
            (alert.starts_at_ms * 1_000_000 - start) / S
        );
        assert!(!alert.exemplar_trace_ids.is_empty() && alert.exemplar_trace_ids.len() <= 5);
        // the incident it leads is named after the faulty service and lasts the fault:
        // its last alert resolves after the fault ended
        let incident = alert.annotations.get("incident").expect("an incident");
        assert_eq!(
            alert.annotations.get("incident_cause").map(String::as_str),
            Some(service),
            "{kind} fault\n{report}"
        );
        let ended = alerts
            .iter()
            .filter(|a| {
                a.status == AlertStatus::Resolved && a.annotations.get("incident") == Some(incident)
            })
            .filter_map(|a| a.ends_at_ms)
            .max()
            .unwrap_or_else(|| panic!("{kind} incident never resolved\n{report}"))
            * 1_000_000;
        assert!(
            ended >= stop,
            "{kind} incident resolved before the fault ended\n{report}"
        );
    }
    // nothing else fired outside the faults
    let outside = firing
        .iter()
        .filter(|a| {
            let t = a.starts_at_ms * 1_000_000;
            !faults
                .iter()
                .any(|(_, _, at, len)| t >= START + at * 60 * S && t < START + (at + len) * 60 * S)
        })
        .count();
    assert!(
        outside <= 1,
        "{outside} alerts outside fault windows\n{report}"
    );
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "slow unoptimised: scripts/test.sh runs it with --release"
)]
fn a_fault_free_hour_gives_at_most_one_alert() {
    let alerts = run(60, 8.0, "");
    let firing = alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Firing)
        .count();
    assert!(
        firing <= 1,
        "{firing} alerts in a fault-free hour\n{}",
        describe(&alerts)
    );
}

/// The alert stage's claim for a quiet system: a fault-free day of the workload (24 h of
/// event time) gives at most one incident, i.e. at most one `new` alert (every other
/// alert goes out as `grouped` under one). A soak of a few minutes optimised:
/// `cargo test --release --test alert_faults -- --ignored` (scripts/soak.sh).
#[test]
#[ignore = "soak: scripts/soak.sh runs it"]
fn a_fault_free_day_gives_at_most_one_incident() {
    let alerts = run(24 * 60, 8.0, "");
    let incidents: Vec<&Alert> = alerts
        .iter()
        .filter(|a| {
            a.status == AlertStatus::Firing
                && a.annotations.get("notification").is_none_or(|n| n == "new")
        })
        .collect();
    let firing = alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Firing)
        .count();
    println!(
        "fault-free day: {} incidents, {firing} firing events\n{}",
        incidents.len(),
        describe(&alerts)
    );
    assert!(
        incidents.len() <= 1,
        "{} incidents in a fault-free day\n{}",
        incidents.len(),
        describe(&alerts)
    );
}
