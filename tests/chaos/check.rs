//! What the chaos harness fed, what a `read_committed` consumer finds on the output
//! topics, and the comparison of the two.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::support::Tansu;
use super::PARTITIONS;

/// What the input holds.
#[derive(Debug, Default)]
pub struct Expected {
    /// Span ids by trace id (hex).
    pub traces: BTreeMap<String, BTreeSet<u64>>,
    /// Spans per (service, window start).
    pub windows: BTreeMap<(String, i64), i64>,
}

/// One alert event as written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AlertEvent {
    pub status: String,
    pub notification: String,
    pub starts_at: i64,
    pub service: String,
}

/// What the output topics hold, as a `read_committed` consumer sees them.
#[derive(Debug, Default)]
pub struct Found {
    /// Every trace record: its spans, by trace id.
    pub traces: BTreeMap<String, Vec<BTreeSet<u64>>>,
    /// Where each trace's records are: (partition, offset), by trace id.
    pub trace_offsets: BTreeMap<String, Vec<(i32, i64)>>,
    pub amendments: usize,
    /// Trace records that list a span more than once: (trace id, repeats).
    pub repeated: Vec<(String, usize)>,
    /// Every aggregate record's count, by (service, window start).
    pub windows: BTreeMap<(String, i64), Vec<i64>>,
    /// Every alert record, by fingerprint.
    pub alerts: BTreeMap<String, Vec<AlertEvent>>,
}

impl Found {
    pub fn read(broker: &Tansu) -> Self {
        let mut found = Found::default();
        for (at, t) in read_all_at(broker, "traces", PARTITIONS) {
            let id = t["trace_id"].as_str().unwrap().to_string();
            found.trace_offsets.entry(id.clone()).or_default().push(at);
            found.amendments += usize::from(t["amendment"] != false);
            let listed: Vec<u64> = t["spans"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| u64::from_str_radix(s["span_id"].as_str().unwrap(), 16).unwrap())
                .collect();
            let spans: BTreeSet<u64> = listed.iter().copied().collect();
            if spans.len() < listed.len() {
                found
                    .repeated
                    .push((id.clone(), listed.len() - spans.len()));
            }
            found.traces.entry(id).or_default().push(spans);
        }
        for a in read_all(broker, "aggregates", 1) {
            let service = a["dimensions"][0]["value"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let start = a["window_start_unix_nano"].as_i64().unwrap();
            found
                .windows
                .entry((service, start))
                .or_default()
                .push(a["count"].as_i64().unwrap());
        }
        for a in read_all(broker, "alerts", 1) {
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
            found
                .alerts
                .entry(text(&a["fingerprint"]))
                .or_default()
                .push(AlertEvent {
                    status: text(&a["status"]),
                    notification: text(&a["annotations"]["notification"]),
                    starts_at: a["starts_at"].as_i64().unwrap_or_default(),
                    service: text(&a["labels"]["service"]),
                });
        }
        found
    }
}

/// Compares what was found with what was fed; the summary, or what is wrong.
pub fn compare(
    expected: &Expected,
    found: &Found,
    faulty: &str,
    exactly_once: bool,
) -> Result<String, String> {
    // traces: every span in a record, every record the whole trace
    let lost: Vec<&String> = expected
        .traces
        .keys()
        .filter(|t| !found.traces.contains_key(*t))
        .collect();
    if !lost.is_empty() {
        return Err(format!(
            "{} of {} traces lost, e.g. {:?}",
            lost.len(),
            expected.traces.len(),
            &lost[..lost.len().min(5)]
        ));
    }
    if !found.repeated.is_empty() {
        return Err(format!(
            "{} trace records list a span twice, e.g. (trace, repeats) {:?}",
            found.repeated.len(),
            &found.repeated[..found.repeated.len().min(5)]
        ));
    }
    if found.amendments > 0 {
        return Err(format!("{} traces written in pieces", found.amendments));
    }
    let mut trace_duplicates = 0;
    for (id, want) in &expected.traces {
        let got = &found.traces[id];
        if let Some(partial) = got.iter().find(|r| *r != want) {
            return Err(format!(
                "trace {id} written partially: {} of {} spans",
                partial.len(),
                want.len()
            ));
        }
        trace_duplicates += got.len() - 1;
    }
    let strangers = found.traces.len() - expected.traces.len();
    // the clock spans make traces of their own
    if strangers > PARTITIONS as usize {
        return Err(format!("{strangers} trace ids that were never fed"));
    }

    // windows: every (service, window) counted exactly
    let mut window_duplicates = 0;
    let mut overcounted = 0;
    let mut over = Vec::new();
    for (key, exact) in &expected.windows {
        let Some(got) = found.windows.get(key) else {
            return Err(format!("window {key:?} never written"));
        };
        for c in got {
            if c < exact {
                return Err(format!("window {key:?} undercounted: {c} < {exact}"));
            }
            overcounted += usize::from(c > exact);
            if c > exact && over.len() < 8 {
                over.push((key, *exact, *c));
            }
        }
        window_duplicates += got.len() - 1;
    }

    // alerts: per fingerprint one firing and one resolved event
    let mut alert_duplicates = 0;
    for (fp, events) in &found.alerts {
        let distinct: BTreeSet<&AlertEvent> = events.iter().collect();
        alert_duplicates += events.len() - distinct.len();
        let kinds: Vec<(&str, &str)> = distinct
            .iter()
            .map(|e| (e.status.as_str(), e.notification.as_str()))
            .collect();
        // `grouped`: the first event of an alert filed under another alert's incident
        let first_ok = matches!(kinds.first(), Some(("firing", "new" | "grouped")));
        if !first_ok || kinds.len() != 2 || kinds[1] != ("resolved", "resolved") {
            return Err(format!(
                "alert {fp}: events {distinct:?}, want one firing and one resolved"
            ));
        }
        if distinct.iter().any(|e| e.starts_at != events[0].starts_at) {
            return Err(format!("alert {fp} fired again: {distinct:?}"));
        }
    }
    let faulty_alerts = found
        .alerts
        .values()
        .filter(|e| e[0].service == faulty)
        .count();
    if faulty_alerts != 1 || found.alerts.len() != 1 {
        return Err(format!(
            "want one alert, on {faulty}; found {:?}",
            found.alerts
        ));
    }

    let duplicates = trace_duplicates + window_duplicates + alert_duplicates;
    if exactly_once && (duplicates > 0 || overcounted > 0) {
        let twice: Vec<(&String, &Vec<(i32, i64)>)> = found
            .trace_offsets
            .iter()
            .filter(|(_, at)| at.len() > 1)
            .take(10)
            .collect();
        return Err(format!(
            "exactly-once wrote duplicates: {trace_duplicates} trace records, {window_duplicates} window records ({overcounted} overcounted, e.g. (window, exact, counted) {over:?}), {alert_duplicates} alert records; traces written twice at (partition, offset): {twice:?}"
        ));
    }
    Ok(format!(
        "{} traces ({} spans) whole, {trace_duplicates} duplicate trace records; {} windows exact, {window_duplicates} duplicate window records, {overcounted} overcounted; {} alert (firing, resolved), {alert_duplicates} duplicate alert records",
        expected.traces.len(),
        expected.traces.values().map(BTreeSet::len).sum::<usize>(),
        expected.windows.len(),
        found.alerts.len(),
    ))
}

/// Waits until every fed trace is on the traces topic; false when `timeout` passed.
pub fn wait_for_traces(broker: &Tansu, expected: &Expected, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let seen: BTreeSet<String> = read_all(broker, "traces", PARTITIONS)
            .iter()
            .filter_map(|t| t["trace_id"].as_str().map(str::to_string))
            .collect();
        if expected.traces.keys().all(|t| seen.contains(t)) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::park_timeout(Duration::from_secs(1));
    }
}

/// Every committed record of `topic` from the start, as JSON.
pub fn read_all(broker: &Tansu, topic: &str, partitions: i32) -> Vec<serde_json::Value> {
    read_all_at(broker, topic, partitions)
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

/// Every committed record of `topic` from the start, as JSON, with its partition and
/// offset.
pub fn read_all_at(
    broker: &Tansu,
    topic: &str,
    partitions: i32,
) -> Vec<((i32, i64), serde_json::Value)> {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", format!("reader-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(30))
            .unwrap();
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Offset(low))
                .unwrap();
            ends.insert(p, high);
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    consumer.assign(&tpl).unwrap();
    // read until the position passes the end (transaction markers and aborted records
    // are never delivered) and the partitions are quiet (tansu can report a high
    // watermark below the last record of a batch)
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet_since = None;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                quiet_since = None;
                if let Some(v) = m.payload() {
                    let at = (m.partition(), m.offset());
                    out.push((at, serde_json::from_slice(v).unwrap()));
                }
            }
            _ => {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                let position = consumer.position().unwrap();
                let done = ends.iter().all(|(p, end)| {
                    matches!(
                        position.find_partition(topic, *p).map(|e| e.offset()),
                        Some(Offset::Offset(o)) if o >= *end
                    )
                });
                if done && since.elapsed() > Duration::from_secs(1) {
                    return out;
                }
            }
        }
    }
    panic!("{topic} not read to its end: {ends:?}");
}

/// How many span records the input topic holds, and how many of them repeat a span
/// (a producer retry after a broker restart writes a record twice).
pub fn input_summary(broker: &Tansu) -> String {
    let mut seen = BTreeSet::new();
    let mut records = 0;
    let mut repeated = 0;
    for ((p, o), v) in read_all_at(broker, "spans", PARTITIONS) {
        records += 1;
        if !seen.insert(v.to_string()) {
            repeated += 1;
            if repeated <= 5 {
                println!("repeated input record at partition {p} offset {o}");
            }
        }
    }
    format!("{records} records, {repeated} repeat an earlier one")
}
