//! A real Prometheus server for the tests that scrape spanline.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::*;

/// A real Prometheus server (Debian package `prometheus`) on loopback, scraping one
/// target every second; killed on drop.
pub struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`host:port`, path `/metrics`) when it is
    /// installed; `None` (test skipped) when it is not.
    pub fn start_or_skip(target: &str) -> Option<Self> {
        let bin = find_program("prometheus");
        require_or_skip("prometheus (apt-get install prometheus)", bin.is_some())
            .then(|| Self::start(&bin.unwrap(), target))
    }

    fn start(bin: &Path, target: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: spanline\n    static_configs:\n      - targets: ['{target}']\n"),
        )
        .expect("write prometheus.yml");
        let port = free_port();
        let (log, stderr) = log_file(dir.path(), "prometheus.log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let prom = Prometheus {
            child,
            port,
            _dir: dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if reqwest::blocking::get(format!("{}/-/ready", prom.url()))
                .is_ok_and(|r| r.status().is_success())
            {
                return prom;
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "prometheus did not become ready\n{}",
            file_tail(&prom.log, 30)
        );
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs an instant PromQL query and returns `(labels, value)` per series.
    pub fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let body: serde_json::Value = reqwest::blocking::Client::new()
            .get(format!("{}/api/v1/query", self.url()))
            .query(&[("query", promql)])
            .send()
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("query {promql}: {e}"));
        assert_eq!(body["status"], "success", "{body}");
        body["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["metric"].clone(),
                    s["value"][1].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect()
    }

    /// The server's log tail.
    pub fn log_tail(&self) -> String {
        file_tail(&self.log, 30)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
