//! A tansu broker as a process of its own, for the tests that need a real broker.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use super::{file_tail, find_program, free_port, log_file_both, require_or_skip, READY_TIMEOUT};

/// A real tansu broker process on a loopback port; killed on Drop. In-memory storage,
/// or with [`Tansu::start_durable`] a sqlite file that survives [`Tansu::restart`].
pub struct Tansu {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    log: PathBuf,
    bin: PathBuf,
    durable: bool,
    starts: usize,
}

impl Tansu {
    /// The tansu binary, if installed.
    pub fn bin() -> Option<PathBuf> {
        find_program("tansu")
    }

    /// Starts a broker when tansu is installed; `None` (test skipped) when it is not.
    pub fn start_or_skip() -> Option<Self> {
        let bin = Self::bin();
        if !require_or_skip("the tansu broker (cargo install tansu)", bin.is_some()) {
            return None;
        }
        bin.map(|bin| Self::start(&bin))
    }

    /// The tansu built with transactions and durable storage (ci/tansu-eos), if
    /// installed as `tansu-eos`.
    pub fn durable_bin() -> Option<PathBuf> {
        find_program("tansu-eos")
    }

    /// Starts a durable broker (transactions, data in sqlite) when `tansu-eos` is
    /// installed; `None` (test skipped) when it is not.
    pub fn start_durable_or_skip() -> Option<Self> {
        let bin = Self::durable_bin();
        let what = "tansu-eos, the broker with transactions and durable storage (bash ci/tansu-eos/install-tansu-eos.sh)";
        if !require_or_skip(what, bin.is_some()) {
            return None;
        }
        bin.map(|bin| Self::launch(&bin, true))
    }

    /// Starts `bin` as a broker with in-memory storage and waits until it answers
    /// metadata requests.
    pub fn start(bin: &Path) -> Self {
        Self::launch(bin, false)
    }

    fn spawn(bin: &Path, dir: &Path, port: u16, durable: bool, n: usize) -> (Child, PathBuf) {
        let url = format!("tcp://127.0.0.1:{port}");
        // tansu logs to stdout: both streams go to the log
        let (log, stdout, stderr) = log_file_both(dir, &format!("tansu-{n}.log"));
        let mut cmd = Command::new(bin);
        cmd.args([
            "broker",
            "--cluster-id",
            "spanline-test",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ]);
        if durable {
            // a path relative to the working directory (tansu appends an absolute one to
            // it)
            cmd.args(["--storage-engine", "sqlite://tansu.db"]);
        } else {
            cmd.args(["--storage-engine", "memory://tansu/"]);
        }
        // tansu reads its settings from the environment too; keep the test's own.
        cmd.env_remove("SCHEMA_REGISTRY")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        (child, log)
    }

    fn launch(bin: &Path, durable: bool) -> Self {
        // The port is free when chosen but could be taken before tansu binds it: retry.
        let mut last_failure = String::new();
        for attempt in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = free_port();
            let (child, log) = Self::spawn(bin, dir.path(), port, durable, attempt);
            let mut broker = Tansu {
                child,
                port,
                dir,
                log,
                bin: bin.to_path_buf(),
                durable,
                starts: attempt + 1,
            };
            match broker.wait_ready() {
                Ok(()) => return broker,
                // Exited early: most likely the port was taken, so try another one.
                Err(failure) if broker.child.try_wait().is_ok_and(|s| s.is_some()) => {
                    last_failure = failure
                }
                Err(failure) => panic!("tansu did not start: {failure}"),
            }
        }
        panic!("tansu did not start: {last_failure}");
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the broker with SIGKILL and starts it again on the same port and storage
    /// (only a durable broker keeps its data).
    pub fn restart(&mut self) {
        self.stop();
        for _ in 0..50 {
            let (child, log) = Self::spawn(
                &self.bin,
                self.dir.path(),
                self.port,
                self.durable,
                self.starts,
            );
            self.starts += 1;
            self.child = child;
            self.log = log;
            match self.wait_ready() {
                Ok(()) => return,
                // the port may linger for a moment after the kill
                Err(_) if self.child.try_wait().is_ok_and(|s| s.is_some()) => {
                    thread::sleep(Duration::from_millis(200))
                }
                Err(failure) => panic!("tansu did not restart: {failure}"),
            }
        }
        panic!(
            "tansu did not restart on port {}\n{}",
            self.port,
            self.log_tail()
        );
    }

    /// Polls metadata until the broker answers, it exits, or [`READY_TIMEOUT`] passes.
    fn wait_ready(&mut self) -> Result<(), String> {
        let consumer: BaseConsumer = self.client_config().create().expect("metadata client");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("tansu exited with {status}\n{}", self.log_tail()));
            }
            let last = match consumer.fetch_metadata(None, Duration::from_millis(500)) {
                Ok(md) if !md.brokers().is_empty() => return Ok(()),
                Ok(_) => "metadata lists no brokers".to_string(),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "tansu on port {} gave no metadata within {READY_TIMEOUT:?} ({last})\n{}",
                    self.port,
                    self.log_tail()
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// A client config for this broker, reconnecting quickly.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.bootstrap())
            .set("reconnect.backoff.ms", "50")
            .set("reconnect.backoff.max.ms", "500");
        config
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The last lines tansu logged, for failure messages.
    pub fn log_tail(&self) -> String {
        format!(
            "--- tansu log ({}) ---\n{}",
            self.log.display(),
            file_tail(&self.log, 40)
        )
    }

    /// Copies every log this broker wrote (one per start) beside the test's other files,
    /// as the broker's temporary directory goes when the test fails.
    fn keep_logs(&self) {
        let kept = Path::new(env!("CARGO_TARGET_TMPDIR"));
        for n in 0..self.starts {
            let name = format!("tansu-{n}.log");
            let to = kept.join(format!("tansu-{}-{n}.log", self.port));
            if std::fs::copy(self.dir.path().join(&name), &to).is_ok() {
                eprintln!("tansu log kept: {}", to.display());
            }
        }
    }

    /// Creates topics with the Kafka admin API and waits until metadata shows them with
    /// their partitions (tansu does not auto-create topics).
    pub fn create_topics(&self, topics: &[(&str, i32)]) {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().expect("admin client");
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|&(name, n)| NewTopic::new(name, n, TopicReplication::Fixed(1)))
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = futures::executor::block_on(admin.create_topics(&new, &opts))
            .unwrap_or_else(|e| panic!("create topics {topics:?}: {e}\n{}", self.log_tail()));
        for result in results {
            if let Err((name, code)) = result {
                if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                    panic!("create topic {name}: {code}\n{}", self.log_tail());
                }
            }
        }
        self.wait_for_topics(topics);
    }

    /// Waits until metadata lists every topic with its partition count.
    pub fn wait_for_topics(&self, topics: &[(&str, i32)]) {
        let consumer: BaseConsumer = self.client_config().create().expect("metadata client");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let seen: HashMap<String, usize> = consumer
                .fetch_metadata(None, Duration::from_secs(2))
                .map(|md| {
                    md.topics()
                        .iter()
                        .filter(|t| t.error().is_none())
                        .map(|t| (t.name().to_string(), t.partitions().len()))
                        .collect()
                })
                .unwrap_or_default();
            let missing: Vec<_> = topics
                .iter()
                .filter(|(name, n)| seen.get(*name) != Some(&(*n as usize)))
                .collect();
            if missing.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "topics {missing:?} not in metadata (saw {seen:?})\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.log_tail());
            self.keep_logs();
        }
        self.stop();
    }
}
