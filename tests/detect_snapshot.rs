//! Detector snapshots (`detect.snapshot_dir`, `detect.snapshot_topic`): a restart does
//! not learn from zero, and a snapshot this build cannot read is a warning, not a failed
//! start.
//!
//! `spanline replay` learns from three minutes of workload and saves its detectors. A
//! second replay over fresh data with a latency fault 20 s in restores them and alerts on
//! the fault; the same data from zero is still in warm-up (10 windows) and does not.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use spanline::codec::otlp;
use spanline::stage::detect::{SNAPSHOT_FILE, SNAPSHOT_VERSION};
use spanline::workload::{parse_faults, Workload, WorkloadConfig};

const S: i64 = 1_000_000_000;
/// Event time of the first run's first trace (a multiple of the 10 s window).
const START: i64 = 1_700_000_000 * S;
/// The first run's length; the second starts a window after it ends.
const LEARN_S: i64 = 180;
const SECOND_START: i64 = START + (LEARN_S + 10) * S;
/// The second run's length: shorter than the 10 windows a cold detector needs.
const SECOND_S: i64 = 90;
/// The fault of the second run.
const FAULT: &str = "latency:llm-openai*8@20s+60s";

fn pipeline(dir: &Path, snapshot_dir: &Path) -> PathBuf {
    let text = format!(
        r#"
name: snapshots
kafka: {{brokers: embedded, group_id: snapshots}}
sources:
  - {{name: spans, topics: [spans], format: otlp_json}}
stages:
  - type: assemble
    out_of_orderness: 2s
    idle_gap: 5s
    max_duration: 1m
  - type: analyze
  - type: aggregate
    windows: [10s]
    dimensions: {{service: [service]}}
    service_graph: false
  - type: detect
    window: 10s
    min_samples: 10
    series_scopes: [service]
    traces: false
    snapshot_dir: {}
  - type: alert
    group_wait: 0s
    rules:
      - name: service_anomaly
        series: {{scope: service, window: 10s, min_count: 5}}
        anomaly: {{score: 0.9, windows: 2}}
outputs:
  traces: {{topic: traces, format: json}}
  alerts: {{topic: alerts, format: json}}
"#,
        snapshot_dir.display()
    );
    let path = dir.join(format!(
        "pipeline-{}.yaml",
        snapshot_dir.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// `seconds` of workload from `start_ns` as OTLP JSON lines, spans in end-time order.
fn workload(path: &Path, seed: u64, start_ns: i64, seconds: i64, faults: &str) {
    let mut w = Workload::new(WorkloadConfig {
        seed,
        traces_per_second: 5.0,
        start_ns,
        faults: parse_faults(faults).unwrap(),
    });
    let mut spans = w.generate_until(start_ns + seconds * S);
    spans.sort_by_key(|s| s.end_ns);
    let mut text = String::new();
    for chunk in spans.chunks(50) {
        text.push_str(std::str::from_utf8(&otlp::encode_json(chunk)).unwrap());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

struct Replayed {
    stderr: String,
    /// Firing anomaly alerts: (service, seconds after the second run's start).
    firing: Vec<(String, i64)>,
}

fn replay(pipeline: &Path, input: &Path, out: &Path) -> Replayed {
    let o = Command::new(env!("CARGO_BIN_EXE_spanline"))
        .args(["replay"])
        .arg(pipeline)
        .arg("--input")
        .arg(input)
        .arg("--output-dir")
        .arg(out)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "replay failed\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let alerts = std::fs::read_to_string(out.join("alerts.jsonl")).unwrap_or_default();
    let firing = alerts
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|a| a["status"] == "firing" && a["rule"] == "service_anomaly")
        .map(|a| {
            let service = a["labels"]["service"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let at = a["starts_at"].as_i64().unwrap() * 1_000_000;
            (service, (at - SECOND_START) / S)
        })
        .collect();
    Replayed { stderr, firing }
}

fn snapshot_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join(SNAPSHOT_FILE)).unwrap()).unwrap()
}

/// Learns from three clean minutes into `snapshot_dir`; returns the second run's input.
fn learn(tmp: &Path, snapshot_dir: &Path) -> PathBuf {
    let first = tmp.join("first.jsonl");
    workload(&first, 1, START, LEARN_S, "");
    let learnt = replay(&pipeline(tmp, snapshot_dir), &first, &tmp.join("out-first"));
    assert!(
        learnt.stderr.contains("no detect snapshot"),
        "{}",
        learnt.stderr
    );
    let snap = snapshot_json(snapshot_dir);
    assert_eq!(snap["version"], SNAPSHOT_VERSION);
    assert!(
        snap["series"].as_array().unwrap().len() >= 5,
        "a series per service"
    );
    let second = tmp.join("second.jsonl");
    workload(&second, 2, SECOND_START, SECOND_S, FAULT);
    second
}

#[test]
fn a_restarted_replay_continues_from_the_snapshot_and_detects_a_fault_a_cold_start_misses() {
    let tmp = tempfile::tempdir().unwrap();
    let warm_dir = tmp.path().join("warm");
    let second = learn(tmp.path(), &warm_dir);

    let warm = replay(
        &pipeline(tmp.path(), &warm_dir),
        &second,
        &tmp.path().join("out-warm"),
    );
    assert!(
        warm.stderr.contains("detect snapshot restored"),
        "{}",
        warm.stderr
    );
    let restored_series: usize = warm
        .stderr
        .split("detect snapshot restored: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no series count in\n{}", warm.stderr));
    assert!(restored_series >= 5, "{}", warm.stderr);
    // warm from the first window: the fault (20 s to 80 s) alerts on the faulty service
    // within a few windows (two scores above 0.9 are needed)
    let on_fault: Vec<_> = warm
        .firing
        .iter()
        .filter(|(s, _)| s == "llm-openai")
        .collect();
    assert!(
        on_fault.iter().any(|(_, at)| (20..=50).contains(at)),
        "restored detectors missed the fault: {:?}\n{}",
        warm.firing,
        warm.stderr
    );

    // the same data from zero: still in warm-up for the whole run, nothing to alert on
    let cold_dir = tmp.path().join("cold");
    let cold = replay(
        &pipeline(tmp.path(), &cold_dir),
        &second,
        &tmp.path().join("out-cold"),
    );
    assert!(
        cold.stderr.contains("no detect snapshot"),
        "{}",
        cold.stderr
    );
    assert!(
        cold.firing.is_empty(),
        "a cold start alerted during warm-up: {:?}",
        cold.firing
    );
    // and it saved what it learnt, for the next start
    assert!(cold_dir.join(SNAPSHOT_FILE).exists());
}

#[test]
fn a_snapshot_this_build_cannot_read_is_a_warning_and_a_start_from_warm_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snap");
    let second = learn(tmp.path(), &dir);
    let good = std::fs::read_to_string(dir.join(SNAPSHOT_FILE)).unwrap();
    let future = good.replacen(
        &format!("\"version\":{SNAPSHOT_VERSION}"),
        "\"version\":999",
        1,
    );
    assert_ne!(future, good);
    let damaged = good[..good.len() / 2].to_string();
    for (case, text, why) in [
        (
            "another version",
            future,
            &*format!("version 999, this build reads version {SNAPSHOT_VERSION}"),
        ),
        ("a damaged file", damaged, "is not valid"),
    ] {
        std::fs::write(dir.join(SNAPSHOT_FILE), &text).unwrap();
        let out = tmp.path().join(format!("out-{}", case.replace(' ', "-")));
        let r = replay(&pipeline(tmp.path(), &dir), &second, &out);
        let warning = r
            .stderr
            .lines()
            .find(|l| l.contains("WARN") && l.contains("detect snapshot not restored"))
            .unwrap_or_else(|| panic!("{case}: no warning in\n{}", r.stderr));
        assert!(
            warning.contains(why) && warning.contains("start from warm-up"),
            "{case}: {warning}"
        );
        // as from zero: no alert during warm-up
        assert!(r.firing.is_empty(), "{case}: {:?}", r.firing);
        // kept aside for inspection, and replaced by what this run learnt
        assert_eq!(
            std::fs::read_to_string(dir.join("detect-snapshot.rejected.json")).unwrap(),
            text,
            "{case}"
        );
        assert_eq!(snapshot_json(&dir)["version"], SNAPSHOT_VERSION, "{case}");
    }
}

/// The live tests count restores and saves in process-wide metrics: one at a time.
static LIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where the live runner keeps its snapshot, and how the test reads it back as the JSON
/// of a snapshot file (`series`, `traces`, `stats`).
enum Kept {
    Dir(PathBuf),
    Topic(spanline::kafka::state::StateTopic),
}

impl Kept {
    fn yaml(&self) -> String {
        match self {
            Kept::Dir(dir) => format!("snapshot_dir: {}", dir.display()),
            Kept::Topic(t) => format!("snapshot_topic: {}", t.topic),
        }
    }

    fn read(&self) -> Option<serde_json::Value> {
        match self {
            Kept::Dir(dir) => {
                let bytes = std::fs::read(dir.join(SNAPSHOT_FILE)).ok()?;
                Some(serde_json::from_slice(&bytes).expect("snapshots are replaced whole"))
            }
            Kept::Topic(t) => {
                let records = t.read(Duration::from_secs(10)).unwrap();
                let meta: serde_json::Value = serde_json::from_slice(records.get("meta")?).unwrap();
                assert_eq!(meta["version"], SNAPSHOT_VERSION);
                let of = |kind: &str| -> Vec<serde_json::Value> {
                    records
                        .iter()
                        .filter(|(k, _)| k.starts_with(&format!("{kind}/")))
                        .map(|(_, v)| serde_json::from_slice(v).unwrap())
                        .collect()
                };
                Some(serde_json::json!({
                    "series": of("series"),
                    "traces": of("trace"),
                    "stats": meta["entry"]["meta"]["stats"],
                }))
            }
        }
    }
}

/// Without changelogs (`kafka.changelogs: false`; with them the detectors' state is in
/// the detect changelog), the live runner restores at start, saves every
/// `snapshot_every` while running and again when it stops.
async fn live_runner_saves_and_restores(bootstrap: &str, kept: Kept) {
    use spanline::config::load_str;
    use spanline::runner::Endpoints;
    use spanline::telemetry::metrics::DETECT_SNAPSHOTS;

    let _one_at_a_time = LIVE.lock().await;
    let config = load_str(
        &format!(
            r#"
name: live-snapshots
kafka: {{brokers: embedded, group_id: live-snapshots, commit_interval: 200ms, changelogs: false}}
sources:
  - {{name: spans, topics: [spans], format: otlp_json}}
stages:
  - type: assemble
    out_of_orderness: 1s
    idle_gap: 2s
    max_duration: 30s
  - type: analyze
  - type: aggregate
    windows: [1s]
    dimensions: {{service: [service]}}
    service_graph: false
  - type: detect
    min_samples: 10
    traces: true
    {}
    snapshot_every: 1s
outputs:
  traces: {{topic: traces, format: json}}
"#,
            kept.yaml()
        ),
        |_| None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let start = |config| {
        let endpoints = Endpoints {
            brokers: bootstrap.to_string(),
            registry: None,
        };
        support::spawn_pipeline(config, endpoints)
    };
    let count = |result: &str| DETECT_SNAPSHOTS.with_label_values(&[result]).get();
    let (saved_before, restored_before) = (count("saved"), count("restored"));

    let (stop, task) = start(config.clone());
    // 30 s of event time in one go: windows close as the watermark moves through it
    let producer: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let mut w = Workload::new(WorkloadConfig {
        seed: 5,
        traces_per_second: 10.0,
        ..Default::default()
    });
    let start_ns = WorkloadConfig::default().start_ns;
    let mut spans = w.generate_until(start_ns + 30 * S);
    spans.sort_by_key(|s| s.end_ns);
    for chunk in spans.chunks(50) {
        producer
            .send(
                rdkafka::producer::BaseRecord::<(), _>::to("spans")
                    .payload(&otlp::encode_json(chunk)),
            )
            .unwrap();
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10)).unwrap();

    // a periodic save with learnt series, while running
    let mut periodic = None;
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Some(snap) = kept.read() {
            if snap["series"].as_array().is_some_and(|s| !s.is_empty())
                && snap["traces"].as_array().is_some_and(|t| !t.is_empty())
            {
                periodic = Some(snap);
                break;
            }
        }
    }
    let periodic =
        periodic.expect("no periodic snapshot with series and root operations within 30 s");
    assert!(!task.is_finished());
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    let last = kept.read().expect("a snapshot at shutdown");
    assert!(
        count("saved") >= saved_before + 2,
        "a periodic save and one at shutdown"
    );
    assert!(
        last["stats"]["scores"].as_u64().unwrap() >= periodic["stats"]["scores"].as_u64().unwrap(),
        "the shutdown snapshot is at least as recent"
    );

    // a restart restores it before consuming
    let (stop, task) = start(config);
    for _ in 0..40 {
        if count("restored") > restored_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count("restored"), restored_before + 1);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_runner_saves_periodically_and_on_shutdown_and_restores_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let kafka = spanline::kafka::embedded::EmbeddedKafka::start(
        1,
        &["spans".to_string(), "traces".to_string()],
    )
    .unwrap();
    live_runner_saves_and_restores(kafka.bootstrap(), Kept::Dir(tmp.path().join("live"))).await;
}

/// The same with the snapshot on a compacted topic: one record per subject and a meta
/// record, read back at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_runner_keeps_its_snapshot_on_a_compacted_topic() {
    let topics = ["spans", "traces", "detect-state"].map(String::from);
    let kafka = spanline::kafka::embedded::EmbeddedKafka::start(1, &topics).unwrap();
    let state = spanline::kafka::state::StateTopic {
        brokers: kafka.bootstrap().to_string(),
        properties: Default::default(),
        topic: "detect-state".into(),
    };
    live_runner_saves_and_restores(kafka.bootstrap(), Kept::Topic(state.clone())).await;
    reads_back_whole(&state);

    // a pipeline that restored it and now holds no subject deletes theirs (tombstones):
    // only the meta record is left
    use spanline::snapshots::{read, save, Store};
    use spanline::stage::detect::{DetectSettings, Detector, Snapshot};
    // (blocking calls: nothing else runs on this test's runtime now)
    let store = Store::topic(state.clone());
    read(&store);
    save(Detector::new(DetectSettings::default()).snapshot(), &store).unwrap();
    let records = state.read(Duration::from_secs(10)).unwrap();
    assert_eq!(records.keys().collect::<Vec<_>>(), ["meta"]);
    let counts = Snapshot::from_records(records)
        .unwrap()
        .expect("a meta record")
        .counts();
    assert_eq!((counts.series, counts.root_operations), (0, 0));
}

/// Every save rewrote each subject under its own key: the latest record per key is one
/// snapshot, and it reads back.
fn reads_back_whole(state: &spanline::kafka::state::StateTopic) {
    let records = state.read(Duration::from_secs(10)).unwrap();
    let snap = spanline::stage::detect::Snapshot::from_records(records)
        .unwrap()
        .expect("a meta record");
    let counts = snap.counts();
    assert!(
        counts.series >= 5 && counts.root_operations >= 1,
        "{counts:?}"
    );
}

/// The same on a real broker process (tansu), the snapshot topic created as an operator
/// would (the pipeline creates none of its topics).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_topic_works_on_a_tansu_broker() {
    let Some(broker) = support::Tansu::start_or_skip() else {
        return;
    };
    broker.create_topics(&[("spans", 1), ("traces", 1), ("detect-state", 1)]);
    let state = spanline::kafka::state::StateTopic {
        brokers: broker.bootstrap(),
        properties: Default::default(),
        topic: "detect-state".into(),
    };
    live_runner_saves_and_restores(&broker.bootstrap(), Kept::Topic(state.clone())).await;
    reads_back_whole(&state);
}
