//! The pipeline as a background task, and a collector of the records it writes.

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use super::*;

/// Runs the pipeline in the background on `endpoints`; sending on (or dropping) the
/// returned sender stops it cleanly, aborting the task simulates a crash.
pub fn spawn_pipeline(
    config: spanline::config::PipelineConfig,
    endpoints: spanline::runner::Endpoints,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<spanline::runner::RunSummary, spanline::runner::RunError>>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // SPANLINE_TEST_LOG=info (a tracing filter) shows the pipeline's own logs
    if let Ok(filter) = env::var("SPANLINE_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let run = spanline::runner::run(
        config,
        endpoints,
        spanline::telemetry::http::Readiness::default(),
        async move {
            let _ = rx.await;
        },
    );
    let task = tokio::spawn(async move {
        let result = run.await;
        // a test that waits for output fails later: say why the pipeline stopped now
        if let Err(e) = &result {
            eprintln!("pipeline stopped with an error: {e}");
        }
        result
    });
    (tx, task)
}

/// A record read by a [`Collector`].
#[derive(Debug, Clone)]
pub struct Collected {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: std::collections::BTreeMap<String, String>,
}

/// Reads topics from their beginning on a background thread and keeps every record, so
/// that a test can produce a lot without losing output: the embedded broker keeps only
/// about 5 MB per partition and drops older records past that. Stops on drop.
pub struct Collector {
    records: Arc<Mutex<Vec<Collected>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Collector {
    /// Starts reading every partition (`0..partitions`) of `topics` at `bootstrap`.
    pub fn start(bootstrap: &str, topics: &[&str], partitions: i32) -> Self {
        use rdkafka::message::{Headers, Message};
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "test-collector")
            .set("enable.auto.commit", "false")
            .create()
            .expect("collector consumer");
        let mut tpl = rdkafka::TopicPartitionList::new();
        for t in topics {
            for p in 0..partitions {
                tpl.add_partition_offset(t, p, rdkafka::Offset::Beginning)
                    .expect("partition");
            }
        }
        consumer.assign(&tpl).expect("assign");
        let records = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (out, stopped) = (Arc::clone(&records), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) else {
                    continue;
                };
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| {
                                let v = x.value.unwrap_or_default();
                                (x.key.to_string(), String::from_utf8_lossy(v).into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let record = Collected {
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().unwrap_or_default().to_vec(),
                    value: m.payload().unwrap_or_default().to_vec(),
                    headers,
                };
                out.lock().unwrap_or_else(|e| e.into_inner()).push(record);
            }
        });
        Collector {
            records,
            stop,
            thread: Some(thread),
        }
    }

    /// Runs `f` over the records read so far, in the order read.
    pub fn with<T>(&self, f: impl FnOnce(&[Collected]) -> T) -> T {
        f(&self.records.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Waits until `done` holds for the records read so far; false when `timeout`
    /// passes first.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[Collected]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.with(&mut done) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
