//! One `spanline run` process of the chaos harness.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One `spanline run` process; its log goes to a file.
pub struct Pipeline {
    child: Child,
    readyz: String,
    metrics: String,
}

impl Pipeline {
    /// Starts `spanline run config` in a working directory of its own beside the config
    /// (`<config stem>/`), so its trace repository (`spanline-data/` there) is this
    /// instance's, kept across its restarts.
    pub fn start(config: &Path, log_path: &Path) -> Self {
        let workdir = config.with_extension("");
        std::fs::create_dir_all(&workdir).unwrap();
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_spanline"))
            .arg("run")
            .arg(config)
            .current_dir(&workdir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // every line names its process: instances of one group share the log
        let name = format!(
            "{} {}",
            config.file_stem().unwrap().to_string_lossy(),
            child.id()
        );
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = writeln!(log, "[{name}] {line}");
            }
        });
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let metrics = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("metrics: ").map(str::to_string))
            .unwrap_or_else(|| {
                panic!(
                    "spanline run exited before serving metrics\n{}",
                    super::support::file_tail(log_path, 30)
                )
            });
        // the rest of stdout is read, as a terminal would, so the process never writes
        // into a closed pipe
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            child,
            readyz: metrics.replace("/metrics", "/readyz"),
            metrics,
        }
    }

    /// spanline's own counters that tell where spans went, for failure messages.
    pub fn counters(&self) -> String {
        let text = reqwest::blocking::get(&self.metrics)
            .and_then(|r| r.text())
            .unwrap_or_default();
        text.lines()
            .filter(|l| {
                !l.starts_with('#')
                    && [
                        "open_traces",
                        "late_spans",
                        "spans_in",
                        "traces_closed",
                        "duplicate",
                        "state_records",
                        "transactions",
                    ]
                    .iter()
                    .any(|k| l.contains(k))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until the pipeline owns partitions (its state restored).
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if client
                .get(&self.readyz)
                .send()
                .is_ok_and(|r| r.status() == 200)
            {
                return true;
            }
            std::thread::park_timeout(Duration::from_millis(100));
        }
        false
    }

    /// Sends `signal` (`KILL`, `TERM`) to the process, if it still runs.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status();
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().is_ok_and(|s| s.is_none())
    }

    /// Waits (up to a minute) for the process to end; whether it exited with 0.
    pub fn wait_success(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::park_timeout(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
