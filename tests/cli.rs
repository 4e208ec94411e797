//! The command line as a user runs it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn spanline() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spanline"))
}

#[test]
fn validate_reports_every_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = include_str!("../pipelines/trace-analytics.yaml")
        .replace("group_id:", "groupid:")
        .replace("idle_gap: 5s", "idle_gap: 5 sekonds")
        .replace("grace: 1m", "grace: 1m\n    windw: 3");
    std::fs::write(&bad, text).unwrap();
    let out = spanline().args(["validate", "pipelines/trace-analytics.yaml"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("trace-analytics.yaml: ok"), "{stdout}");
    for expected in ["kafka.groupid: unknown key (hint: did you mean `group_id`?)", "stages[0].idle_gap: invalid duration", "stages[0].windw: unknown key"] {
        assert!(stdout.contains(expected), "missing `{expected}` in\n{stdout}");
    }
    let ok = spanline().args(["validate", "pipelines/trace-analytics.yaml"]).output().unwrap();
    assert!(ok.status.success());
}

#[test]
fn unreachable_broker_is_one_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.yaml");
    std::fs::write(&p, include_str!("../pipelines/trace-analytics.yaml")).unwrap();
    let out = spanline()
        .args(["run"])
        .arg(&p)
        .env("SPANLINE_BROKERS", "127.0.0.1:1")
        .env("SPANLINE_HTTP", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: cannot reach kafka brokers 127.0.0.1:1"), "{stderr}");
    assert!(!stderr.contains("panicked"));
}

#[test]
fn unreachable_registry_is_one_clear_error() {
    let out = spanline()
        .args(["demo", "--duration", "20s", "--http", "127.0.0.1:0", "--no-workload"])
        .env("SPANLINE_SCHEMA_REGISTRY", "http://127.0.0.1:1")
        .output()
        .unwrap();
    // the demo always uses its embedded registry: it must still succeed
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.yaml");
    std::fs::write(&p, include_str!("../pipelines/trace-analytics.yaml")).unwrap();
    let out = spanline()
        .args(["run"])
        .arg(&p)
        .env("SPANLINE_SCHEMA_REGISTRY", "http://127.0.0.1:1")
        .env("SPANLINE_HTTP", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.lines().last().unwrap_or_default().contains("schema registry http://127.0.0.1:1"), "{stderr}");
}

#[test]
fn demo_prints_its_endpoints_status_and_summary_and_serves_metrics() {
    let mut child = spanline()
        .args(["demo", "--duration", "12s", "--http", "127.0.0.1:0", "--status-every", "2s", "--rate", "50"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Vec<String> = (0..3).map(|_| lines.next().unwrap().unwrap()).collect();
    assert!(first[0].starts_with("kafka: 127.0.0.1:"), "{first:?}");
    assert!(first[1].starts_with("schema registry: http://127.0.0.1:"), "{first:?}");
    let metrics_url = first[2].strip_prefix("metrics: ").expect("metrics line").to_string();
    let base = metrics_url.trim_end_matches("/metrics").to_string();
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    assert_eq!(client.get(format!("{base}/healthz")).send().unwrap().status(), 200);
    // status lines until spans flow, by which time the consumer group has joined
    let flowing = (0..5).map(|_| lines.next().unwrap().unwrap()).find(|status| {
        assert!(status.starts_with("status:") && status.contains("spans/s") && status.contains("open traces"), "{status}");
        let rate: f64 = status.split_whitespace().nth(2).unwrap().parse().unwrap();
        rate > 0.0
    });
    assert!(flowing.is_some(), "no spans flowed in five status lines");
    assert_eq!(client.get(format!("{base}/readyz")).send().unwrap().status(), 200);
    let names = [
        "spanline_records_in_total",
        "spanline_decode_errors_total",
        "spanline_dead_lettered_total",
        "spanline_open_traces",
        "spanline_buffered_spans",
        "spanline_traces_closed_total",
        "spanline_late_spans_total",
        "spanline_duplicate_spans_total",
        "spanline_evictions_total",
        "spanline_watermark_lag_seconds",
        "spanline_consumer_lag",
    ];
    // lag gauges come from librdkafka's periodic statistics: check again at each status line
    let mut missing: Vec<&str> = names.to_vec();
    for _ in 0..3 {
        let body = client.get(&metrics_url).send().unwrap().text().unwrap();
        missing.retain(|name| !body.contains(name));
        if missing.is_empty() {
            break;
        }
        lines.next();
    }
    assert!(missing.is_empty(), "/metrics lacks {missing:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(child.wait().unwrap().success());
    assert!(rest.iter().any(|l| l.starts_with("summary:") && l.contains("traces closed")), "{rest:?}");
}
