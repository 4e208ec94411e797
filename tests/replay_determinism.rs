//! Replay is deterministic although its models train on threads of their own: the same
//! input gives the same output records, scores and alerts on every run, and the models
//! the stages score with are installed (trainings happen and land). Nor do its steps
//! overlapping the next record, or the number of threads the stages run on beside each
//! other, change what it writes or learns.

use spanline::codec::otlp::encode_json;
use spanline::config::load_str;
use spanline::model::Span;
use spanline::replay::{Replayer, Written};
use spanline::workload::{parse_faults, Workload, WorkloadConfig};

const S: i64 = 1_000_000_000;
const START: i64 = 1_700_000_000 * S;

/// An output record: topic, key, value.
type Record = (String, Vec<u8>, Vec<u8>);

/// What a replay produced: its records, its alerts (debug-printed) and the models its
/// detectors installed.
struct Output {
    records: Vec<Record>,
    alerts: Vec<String>,
    installed: u64,
}

/// Moves what the replay wrote into `records` and `alerts`.
fn take(written: &mut Written, records: &mut Vec<Record>, alerts: &mut Vec<String>) {
    records.extend(
        written
            .records
            .drain(..)
            .map(|p| (p.topic.to_string(), p.key, p.value)),
    );
    alerts.extend(written.alerts.drain(..).map(|a| format!("{a:?}")));
}

/// `secs` seconds of the workload (seeded with `seed`, a latency fault from the second
/// minute for one), second by second: the spans that ended in each, by end time.
fn seconds(seed: u64, secs: i64) -> Vec<Vec<Span>> {
    let mut workload = Workload::new(WorkloadConfig {
        seed,
        traces_per_second: 8.0,
        start_ns: START,
        faults: parse_faults("latency:llm-openai*8@2m+1m").unwrap(),
    });
    let mut pending: Vec<Span> = Vec::new();
    (1..=secs)
        .map(|i| {
            let now = START + i * S;
            workload.generate_until_into(now, &mut pending);
            let (mut ended, rest): (Vec<_>, Vec<_>) =
                pending.drain(..).partition(|s| s.end_ns <= now);
            pending = rest;
            ended.sort_by_key(|s| s.end_ns);
            ended
        })
        .collect()
}

/// Three minutes of the workload with a latency fault, through the default pipeline;
/// every output record as (topic, key, value), the alerts, and the models installed.
fn replay() -> Output {
    let config = load_str(include_str!("../pipelines/trace-analytics.yaml"), |_| None).unwrap();
    let mut replayer = Replayer::new(&config).unwrap();
    let mut written = Written::default();
    let (mut records, mut alerts) = (Vec::new(), Vec::new());
    for ended in seconds(7, 3 * 60) {
        replayer.push(ended, &mut written);
        take(&mut written, &mut records, &mut alerts);
    }
    replayer.finish(&mut written);
    take(&mut written, &mut records, &mut alerts);
    let installed = replayer
        .stages()
        .detector()
        .map_or(0, |d| d.stats().models_installed);
    Output {
        records,
        alerts,
        installed,
    }
}

#[test]
fn the_same_input_replays_to_the_same_output() {
    let first = replay();
    assert!(first.installed > 0, "no model was trained and installed");
    assert!(
        first.records.len() > 1_000,
        "{} records",
        first.records.len()
    );
    let again = replay();
    assert_eq!(first.installed, again.installed);
    assert_eq!(first.alerts, again.alerts);
    assert_eq!(first.records.len(), again.records.len());
    let differ = first
        .records
        .iter()
        .zip(&again.records)
        .position(|(a, b)| a != b);
    assert_eq!(differ, None, "the first record that differs");
}

/// A replay's records by topic, its alerts (debug-printed) and its detector's learnt
/// state (JSON).
type LineReplay = (Vec<Vec<Record>>, Vec<String>, String);

/// The records of a replay of OTLP JSON lines (one per second of the workload), by
/// topic, its alerts and what its detector learnt (each score it gave is in there); each
/// record's step overlapping the next record's reading or not.
fn replay_lines(overlap: bool) -> LineReplay {
    let config = load_str(include_str!("../pipelines/trace-analytics.yaml"), |_| None).unwrap();
    let mut replayer = Replayer::new(&config).unwrap();
    replayer.overlap_steps(overlap);
    let mut written = Written::default();
    let (mut records, mut alerts) = (Vec::new(), Vec::new());
    for ended in seconds(11, 4 * 60) {
        replayer.push_record(encode_json(&ended), &mut written);
        take(&mut written, &mut records, &mut alerts);
    }
    // a line that is not OTLP: a dead letter among the outputs
    replayer.push_record(b"{not otlp".to_vec(), &mut written);
    replayer.finish(&mut written);
    take(&mut written, &mut records, &mut alerts);
    let detector = replayer.stages().detector().unwrap();
    assert!(
        detector.stats().models_installed > 0,
        "no model was trained and installed"
    );
    let learnt = serde_json::to_string(&detector.snapshot()).unwrap();
    let mut topics: Vec<String> = records.iter().map(|r| r.0.clone()).collect();
    topics.sort();
    topics.dedup();
    let by_topic = topics
        .iter()
        .map(|t| records.iter().filter(|r| &r.0 == t).cloned().collect())
        .collect();
    (by_topic, alerts, learnt)
}

#[test]
fn steps_that_overlap_the_next_record_write_the_same_records_per_topic() {
    let apart = replay_lines(false);
    assert!(!apart.1.is_empty(), "the fault raised no alert");
    assert_same(&apart, &replay_lines(true));
}

/// Two replays wrote the same records per topic (traces, aggregates, alerts and the dead
/// letter), the same alerts, and learnt the same: the same models, installed at the same
/// points, so the same scores and histories.
fn assert_same(
    (a_records, a_alerts, a_learnt): &LineReplay,
    (b_records, b_alerts, b_learnt): &LineReplay,
) {
    assert_eq!(a_records.len(), 4, "topics written");
    assert_eq!(b_alerts, a_alerts);
    assert!(b_learnt == a_learnt, "the detectors learnt differently");
    for (a, b) in a_records.iter().zip(b_records) {
        assert_eq!(a.len(), b.len(), "records on {}", a[0].0);
        let differ = a.iter().zip(b).position(|(x, y)| x != y);
        assert_eq!(differ, None, "the first record on {} that differs", a[0].0);
    }
}

#[test]
fn the_stages_beside_each_other_give_the_same_records_on_one_thread_as_on_four() {
    let on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| replay_lines(true))
    };
    assert_same(&on(1), &on(4));
}
