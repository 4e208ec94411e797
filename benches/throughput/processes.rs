//! The `spanline run` processes of the hop figures: started from the binary built with
//! the benchmark, read through their `/metrics` and `/readyz`, killed on drop.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// What the run watches, of one process or summed over them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sample {
    pub spans_in: u64,
    pub traces_out: u64,
    pub amendments: u64,
}

/// Reads `spanline_spans_in_total`, the traces topic's `spanline_records_out_total` and
/// `spanline_amendments_total` from a `/metrics` exposition.
fn parse_sample(text: &str) -> Sample {
    let mut s = Sample::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value = value.parse::<f64>().unwrap_or(0.0) as u64;
        let name = series.split('{').next().unwrap_or(series);
        match name {
            "spanline_spans_in_total" => s.spans_in += value,
            "spanline_records_out_total" if series.contains("topic=\"traces\"") => {
                s.traces_out += value
            }
            "spanline_amendments_total" => s.amendments += value,
            _ => {}
        }
    }
    s
}

/// One `spanline run` process; killed on drop.
pub struct Process {
    child: Child,
    metrics: String,
}

impl Process {
    pub fn start(config: &Path, env: &[(&str, &str)], log: &Path) -> Result<Self, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_spanline"))
            .arg("run")
            .arg(config)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("spanline run: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let metrics = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("metrics: ").map(str::to_string));
        let mut process = Self {
            child,
            metrics: String::new(),
        };
        process.metrics = metrics.ok_or("spanline run exited before serving metrics")?;
        Ok(process)
    }

    pub fn ready(&self, client: &reqwest::blocking::Client) -> bool {
        let url = self.metrics.replace("/metrics", "/readyz");
        client.get(url).send().is_ok_and(|r| r.status() == 200)
    }

    pub fn sample(&self, client: &reqwest::blocking::Client) -> Option<Sample> {
        let text = client.get(&self.metrics).send().ok()?.text().ok()?;
        Some(parse_sample(&text))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl std::ops::AddAssign for Sample {
    fn add_assign(&mut self, other: Self) {
        self.spans_in += other.spans_in;
        self.traces_out += other.traces_out;
        self.amendments += other.amendments;
    }
}
