//! The command line as a user runs it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// `spanline` in a fresh working directory of its own, so each run's trace repository
/// (`spanline-data/`) is its own; pipeline files are named by [`PIPELINE`].
fn spanline() -> Command {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("spanline-cli-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spanline"));
    cmd.current_dir(dir);
    cmd
}

/// The default pipeline file, by absolute path.
const PIPELINE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/pipelines/trace-analytics.yaml"
);

#[test]
fn validate_reports_every_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = include_str!("../pipelines/trace-analytics.yaml")
        .replace("group_id:", "groupid:")
        .replace("idle_gap: 5s", "idle_gap: 5 sekonds")
        .replace("grace: 1m", "grace: 1m\n    windw: 3");
    std::fs::write(&bad, text).unwrap();
    let out = spanline()
        .args(["validate", PIPELINE])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("trace-analytics.yaml: ok"), "{stdout}");
    for expected in [
        "kafka.groupid: unknown key (hint: did you mean `group_id`?)",
        "stages[0].idle_gap: invalid duration",
        "stages[0].windw: unknown key",
    ] {
        assert!(
            stdout.contains(expected),
            "missing `{expected}` in\n{stdout}"
        );
    }
    let ok = spanline().args(["validate", PIPELINE]).output().unwrap();
    assert!(ok.status.success());
}

/// `spanline run` on the default pipeline with these environment variables.
fn run_default_pipeline(env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = spanline();
    cmd.args(["run", PIPELINE])
        .env("SPANLINE_HTTP", "127.0.0.1:0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The last stderr line of a run that must fail with exit status 1.
fn single_error(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr.lines().last().unwrap_or_default().to_string()
}

#[test]
fn unreachable_broker_is_one_clear_error_not_a_panic() {
    let last = single_error(&run_default_pipeline(&[(
        "SPANLINE_BROKERS",
        "127.0.0.1:1",
    )]));
    assert!(
        last.starts_with("error: cannot reach kafka brokers 127.0.0.1:1"),
        "{last}"
    );
}

#[test]
fn unreachable_registry_is_one_clear_error() {
    let last = single_error(&run_default_pipeline(&[(
        "SPANLINE_SCHEMA_REGISTRY",
        "http://127.0.0.1:1",
    )]));
    assert!(
        last.starts_with("error: ") && last.contains("schema registry http://127.0.0.1:1"),
        "{last}"
    );
}

#[test]
fn demo_prints_its_endpoints_status_and_summary_and_serves_metrics() {
    let mut child = spanline()
        .args([
            "demo",
            "--duration",
            "12s",
            "--http",
            "127.0.0.1:0",
            "--status-every",
            "2s",
            "--rate",
            "50",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Vec<String> = (0..4).map(|_| lines.next().unwrap().unwrap()).collect();
    assert!(first[0].starts_with("ui: http://127.0.0.1:"), "{first:?}");
    assert!(first[1].starts_with("kafka: 127.0.0.1:"), "{first:?}");
    assert!(
        first[2].starts_with("schema registry: http://127.0.0.1:"),
        "{first:?}"
    );
    let metrics_url = first[3]
        .strip_prefix("metrics: ")
        .expect("metrics line")
        .to_string();
    let base = metrics_url.trim_end_matches("/metrics").to_string();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .unwrap()
            .status(),
        200
    );
    // status lines until spans flow, by which time the consumer group has joined
    // (after the trace repository's lines: its query API and its file)
    let flowing = std::iter::from_fn(|| lines.next().map(Result::unwrap))
        .filter(|line| !line.starts_with("query api: ") && !line.starts_with("repository: "))
        .take(5)
        .find(|status| {
            assert!(
                status.starts_with("status:")
                    && status.contains("spans/s")
                    && status.contains("open traces"),
                "{status}"
            );
            let rate: f64 = status.split_whitespace().nth(2).unwrap().parse().unwrap();
            rate > 0.0
        });
    assert!(flowing.is_some(), "no spans flowed in five status lines");
    assert_eq!(
        client
            .get(format!("{base}/readyz"))
            .send()
            .unwrap()
            .status(),
        200
    );
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
    assert!(
        rest.iter()
            .any(|l| l.starts_with("summary:") && l.contains("traces closed")),
        "{rest:?}"
    );
}

/// Sends SIGINT, as Ctrl-C does.
fn interrupt(child: &std::process::Child) {
    send(child, "INT");
}

/// Sends `SIG<signal>`.
fn send(child: &std::process::Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn run_with_embedded_services_stops_cleanly_on_ctrl_c_and_logs_json() {
    run_stops_cleanly_on("INT");
}

/// `docker stop` and a Kubernetes pod stop send SIGTERM: a clean stop, not a crash.
#[test]
fn run_stops_cleanly_on_sigterm() {
    run_stops_cleanly_on("TERM");
}

fn run_stops_cleanly_on(signal: &str) {
    let mut child = spanline()
        .args(["--log-format", "json", "run", PIPELINE])
        .env("SPANLINE_HTTP", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Vec<String> = (0..4).map(|_| lines.next().unwrap().unwrap()).collect();
    assert!(first[0].starts_with("ui: http://127.0.0.1:"), "{first:?}");
    assert!(first[1].starts_with("kafka: 127.0.0.1:"), "{first:?}");
    let metrics_url = first[3].strip_prefix("metrics: ").unwrap().to_string();
    let readyz = metrics_url.replace("/metrics", "/readyz");
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // ready once the consumer group has assigned partitions (a few seconds on the embedded broker)
    let mut ready = false;
    for _ in 0..40 {
        if client.get(&readyz).send().unwrap().status() == 200 {
            ready = true;
            break;
        }
        std::thread::park_timeout(Duration::from_millis(250));
    }
    assert!(ready, "pipeline never became ready");
    let asked = std::time::Instant::now();
    send(&child, signal);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(child.wait().unwrap().success(), "{stderr}");
    let logs: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        asked.elapsed() < Duration::from_secs(30),
        "stopping took {:?}",
        asked.elapsed()
    );
    let signal_name = format!("SIG{signal}");
    assert!(
        logs.iter().any(|l| l["fields"]["message"] == "stopping"
            && l["fields"]["signal"] == signal_name.as_str()),
        "{stderr}"
    );
    assert!(
        logs.iter()
            .any(|l| l["fields"]["message"] == "pipeline stopped"),
        "{stderr}"
    );
    // the embedded broker starts with every topic the pipeline uses, the internal ones
    // too: it answers no CreateTopics, and asking it costs seconds of startup
    assert!(
        !logs.iter().any(|l| {
            let message = l["fields"]["message"].as_str().unwrap_or_default();
            message.starts_with("topics created") || message == "topic created"
        }),
        "{stderr}"
    );
}

#[test]
fn demo_without_duration_runs_until_ctrl_c() {
    let mut child = spanline()
        .args([
            "demo",
            "--http",
            "127.0.0.1:0",
            "--status-every",
            "1s",
            "--rate",
            "20",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let status = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with("status:"));
    assert!(status.is_some());
    interrupt(&child);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(child.wait().unwrap().success());
    assert!(rest.iter().any(|l| l.starts_with("summary:")), "{rest:?}");
}

#[test]
fn replay_reads_gzip_and_plain_input_alike() {
    use spanline::workload::{Workload, WorkloadConfig};
    let dir = tempfile::tempdir().unwrap();
    let mut workload = Workload::new(WorkloadConfig {
        seed: 3,
        traces_per_second: 50.0,
        ..Default::default()
    });
    let spans = workload.generate_traces(20);
    let mut text = String::new();
    for chunk in spans.chunks(10) {
        text.push_str(std::str::from_utf8(&spanline::codec::otlp::encode_json(chunk)).unwrap());
        text.push('\n');
    }
    text.push_str("{\"not\": \"otlp\"}\n");
    let plain = dir.path().join("in.jsonl");
    std::fs::write(&plain, &text).unwrap();
    let gz = dir.path().join("in.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    std::io::Write::write_all(&mut enc, text.as_bytes()).unwrap();
    enc.finish().unwrap();
    let mut outputs = Vec::new();
    for (input, out) in [(&plain, "a"), (&gz, "b")] {
        let out = dir.path().join(out);
        let o = spanline()
            .args(["replay", PIPELINE, "--input"])
            .arg(input)
            .arg("--output-dir")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("20 traces, 0 late spans, 1 bad lines"),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
        let traces = std::fs::read_to_string(out.join("traces.jsonl")).unwrap();
        let dead = std::fs::read_to_string(out.join("spans-dlq.jsonl")).unwrap();
        assert!(
            dead.contains("\"reason\":\"json\"") && dead.contains("\"line\":"),
            "{dead}"
        );
        outputs.push(traces);
    }
    assert_eq!(outputs[0], outputs[1]);
    let first: serde_json::Value =
        serde_json::from_str(outputs[0].lines().next().unwrap()).unwrap();
    assert_eq!(first["trace_id"].as_str().unwrap().len(), 32);
    assert_eq!(first["spans"][0]["span_id"].as_str().unwrap().len(), 16);
}

/// A 10 s window of the `service` scope for `service`, `at_s` seconds after
/// 2026-01-01T00:00:00Z, with `count` calls of about `latency_ms` (50, 51, 52 ms for 50),
/// `errors` of them failed.
fn service_window(
    service: &str,
    at_s: i64,
    count: u64,
    errors: u64,
    latency_ms: i64,
) -> spanline::model::WindowAggregate {
    use std::sync::Arc;
    const T0: i64 = 1_767_225_600_000_000_000;
    let mut w = spanline::model::WindowAggregate::empty(
        T0 + at_s * 1_000_000_000,
        10_000_000_000,
        Arc::from("service"),
        vec![(Arc::from("service"), Arc::from(service))],
        1_000_000_000,
    );
    for i in 0..count {
        let ns = (latency_ms + (i % 3) as i64) * 1_000_000;
        w.count += 1;
        w.min_ns = w.min_ns.min(ns);
        w.max_ns = w.max_ns.max(ns);
        w.sum_ns += ns;
        w.sketch.add(ns as f64);
    }
    w.error_count = errors;
    w
}

#[test]
fn compare_reads_the_pipelines_repository_and_prints_real_figures() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("repo.db");
    let mut repo = spanline::repository::Repository::open(&db, Default::default()).unwrap();
    let mut windows: Vec<_> = (0..10)
        .map(|i| service_window("orders", i * 10, 100, 2, 50))
        .collect();
    windows.extend((0..10).map(|i| service_window("orders", 1000 + i * 10, 150, 10, 80)));
    windows.extend((0..10).map(|i| service_window("pay", i * 10, 10, 0, 5)));
    repo.store_windows(&windows).unwrap();
    drop(repo);
    let pipeline = dir.path().join("p.yaml");
    std::fs::write(
        &pipeline,
        format!(
            r#"
name: compare-test
kafka: {{brokers: embedded, group_id: g-compare}}
schema_registry: {{url: embedded}}
sources:
  - {{name: spans, topics: [spans], format: avro}}
stages:
  - {{type: assemble, out_of_orderness: 1s, idle_gap: 2s, max_duration: 60s, grace: 30s, idle_partition_timeout: 60s}}
outputs:
  traces: {{topic: traces, format: avro}}
repository: {{path: "{}"}}
"#,
            db.display()
        ),
    )
    .unwrap();
    // baseline as RFC 3339, current as unix milliseconds
    let compare = |format: &str| {
        let out = spanline()
            .arg("compare")
            .arg(&pipeline)
            .args([
                "--baseline",
                "2026-01-01T00:00:00Z..2026-01-01T00:01:40Z",
                "--current",
                "1767226600000..1767226700000",
                "--service",
                "orders",
                "--format",
                format,
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        String::from_utf8(out.stdout).unwrap()
    };
    let json: serde_json::Value = serde_json::from_str(&compare("json")).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 1, "only orders' service series: {json}");
    let c = &rows[0];
    assert_eq!(c["scope"], "service");
    assert_eq!(c["key"]["service"], "orders");
    assert_eq!(c["windowSeconds"], 10.0);
    assert_eq!(
        (
            c["baseline"]["count"].as_u64(),
            c["current"]["count"].as_u64()
        ),
        (Some(1000), Some(1500))
    );
    assert_eq!(c["throughput"]["baseline"], 10.0);
    assert_eq!(c["throughput"]["current"], 15.0);
    assert_eq!(c["throughput"]["relativeChange"], 0.5);
    assert_eq!(c["throughput"]["significant"], true);
    assert_eq!(c["errorRate"]["baseline"], 0.02);
    assert!((c["errorRate"]["current"].as_f64().unwrap() - 1.0 / 15.0).abs() < 1e-12);
    assert_eq!(c["errorRate"]["significant"], true);
    let p50 = c["p50Ms"]["current"].as_f64().unwrap();
    assert!((p50 - 81.0).abs() <= 81.0 * 0.005, "{p50}");
    assert_eq!(c["p99Ms"]["significant"], true);
    assert!((c["p99Ms"]["pValue"].as_f64().unwrap() - 1.593_791e-5).abs() < 1e-9);

    let table = compare("table");
    let line = table
        .lines()
        .find(|l| l.contains("service=orders") && l.contains("throughput"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.contains("10.0000") && line.contains("15.0000"),
        "{line}"
    );
    assert!(line.contains("+50.0%") && line.ends_with("yes"), "{line}");

    let out = spanline()
        .arg("compare")
        .arg(&pipeline)
        .args(["--baseline", "-1h", "--current", "-1h..now"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--baseline"));
}
