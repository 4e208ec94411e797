//! Live versus replay: the same OTLP JSON messages through Kafka and through a file
//! replay close the same traces.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use spanline::codec::otlp;

use super::records::{flush, producer, pushers, read_until, send};
use super::{env, now_ns, pipeline, start, S};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_and_replay_close_the_same_traces() {
    use spanline::workload::{Workload, WorkloadConfig};
    let env = env(&["otlp-json", "traces", "spans-late"]).await;
    let config = pipeline(
        "g-live",
        "  - {name: json, topics: [otlp-json], format: otlp_json}",
        "json",
    );
    let base = now_ns();
    let mut workload = Workload::new(WorkloadConfig {
        seed: 11,
        traces_per_second: 20.0,
        start_ns: base,
        faults: vec![],
    });
    let mut spans = workload.generate_traces(100);
    spans.sort_by_key(|s| s.end_ns);
    let last_end = spans.iter().map(|s| s.end_ns).max().unwrap();
    let trace_ids: BTreeSet<u128> = spans.iter().map(|s| s.trace_id).collect();

    // the same messages go to Kafka and to a file of OTLP JSON lines
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("spans.jsonl");
    let mut lines = String::new();
    let p = producer(&env);
    for (i, chunk) in spans.chunks(25).enumerate() {
        let bytes = otlp::encode_json(chunk);
        lines.push_str(std::str::from_utf8(&bytes).unwrap());
        lines.push('\n');
        send(&p, "otlp-json", (i % 3) as i32, &bytes);
    }
    for (part, s) in pushers(990, last_end + 120 * S) {
        send(&p, "otlp-json", part, &otlp::encode_json([&s]));
    }
    flush(&p);
    std::fs::write(&input, lines).unwrap();

    let (stop, task) = start(&env, config.clone());
    let got = read_until(&env, "traces", Duration::from_secs(60), |r| {
        r.len() >= trace_ids.len()
    });
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    let live: BTreeMap<String, serde_json::Value> = got
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.value).unwrap())
        .map(|v| (v["trace_id"].as_str().unwrap().to_string(), v))
        .collect();
    assert_eq!(
        live.len(),
        trace_ids.len(),
        "every workload trace closed live"
    );

    let out = dir.path().join("out");
    spanline::replay::replay(&config, &[input], &out).unwrap();
    let replayed: BTreeMap<String, serde_json::Value> =
        std::fs::read_to_string(out.join("traces.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| (v["trace_id"].as_str().unwrap().to_string(), v))
            .collect();
    assert_eq!(replayed.len(), trace_ids.len());
    for (id, trace) in &live {
        assert_eq!(
            Some(trace),
            replayed.get(id),
            "trace {id} differs between live and replay"
        );
    }
}
