//! A Prometheus Alertmanager process for the tests that deliver to one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A real Alertmanager (Debian package `prometheus-alertmanager`) on loopback, clustering
/// off, with the configuration given; killed on drop.
pub struct Alertmanager {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    fn bin() -> Option<PathBuf> {
        super::find_program("prometheus-alertmanager")
            .or_else(|| super::find_program("alertmanager"))
    }

    /// A configuration whose one receiver notifies nobody.
    pub const BLACKHOLE: &'static str =
        "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n";

    /// Starts one with `config` (alertmanager.yml text) when installed; `None` (test
    /// skipped) when not.
    pub async fn start_or_skip(config: &str) -> Option<Self> {
        let bin = Self::bin();
        if !super::require_or_skip(
            "alertmanager (apt-get install prometheus-alertmanager)",
            bin.is_some(),
        ) {
            return None;
        }
        let bin = bin.unwrap();
        // The port is free when chosen but could be taken before Alertmanager binds it.
        let mut failure = String::new();
        for _ in 0..3 {
            match Self::start(&bin, config).await {
                Ok(am) => return Some(am),
                Err(e) => failure = e,
            }
        }
        panic!("alertmanager did not start: {failure}");
    }

    async fn start(bin: &Path, text: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(&config, text).expect("write alertmanager.yml");
        let port = super::free_port();
        let log = dir.path().join("alertmanager.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut am = Alertmanager {
            child,
            port,
            log,
            _dir: dir,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = am.child.try_wait() {
                return Err(format!("exited with {status}\n{}", am.log_tail()));
            }
            let ready = client
                .get(format!("{}/-/ready", am.url()))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(am);
            }
            if Instant::now() >= deadline {
                let _ = am.child.kill();
                return Err(format!("not ready within 30s\n{}", am.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_tail(&self) -> String {
        super::file_tail(&self.log, 30)
    }

    /// `GET /api/v2/alerts` with `query`.
    pub async fn alerts(&self, query: &str) -> Vec<Value> {
        let url = format!("{}/api/v2/alerts{query}", self.url());
        let body: Value = reqwest::get(&url)
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        body.as_array().cloned().unwrap_or_default()
    }

    /// Polls `query` until `done` holds for the alerts listed, for at most 20 s.
    pub async fn poll(
        &self,
        query: &str,
        what: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let alerts = self.alerts(query).await;
            if done(&alerts) {
                return alerts;
            }
            if Instant::now() >= deadline {
                panic!(
                    "alertmanager: {what} not seen within 20s; last answer: {alerts:#?}\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
