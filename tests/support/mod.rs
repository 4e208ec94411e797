//! Helpers shared by the integration tests: finding external programs (the tansu broker,
//! the Python virtualenv with the third-party Kafka clients), running them, and running
//! `spanline demo` as a child process.
//!
//! A test that needs an external program asks [`require_or_skip`] first: without the
//! program it is skipped with a printed reason, unless `SPANLINE_REQUIRE_EXTERNAL` is set
//! (CI sets it after installing everything), where it fails instead.

// Each integration test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::env;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// True when `SPANLINE_REQUIRE_EXTERNAL` is set to anything but "" or "0".
pub fn external_required() -> bool {
    env::var_os("SPANLINE_REQUIRE_EXTERNAL").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Decides whether a test that needs `what` runs: true when it was found; otherwise
/// panics under `SPANLINE_REQUIRE_EXTERNAL`, or prints why the test is skipped and
/// returns false.
pub fn require_or_skip(what: &str, found: bool) -> bool {
    if found {
        return true;
    }
    if external_required() {
        panic!(
            "{what} is not installed but SPANLINE_REQUIRE_EXTERNAL is set: \
             run `bash .ci/run` (or install it as that script does)"
        );
    }
    eprintln!("skipping: {what} not installed (run .ci/run to install)");
    false
}

/// The Python interpreter with the packages of tests/python/requirements.txt:
/// `$SPANLINE_PYTHON`, else `<repo>/.venv/bin/python` when it exists.
pub fn python() -> Option<PathBuf> {
    if let Some(p) = env::var_os("SPANLINE_PYTHON").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let venv = repo_root().join(".venv/bin/python");
    venv.exists().then_some(venv)
}

/// The path of a test script in tests/python.
pub fn python_script(name: &str) -> PathBuf {
    repo_root().join("tests/python").join(name)
}

/// `name` on `PATH`, else in `.venv/tools` (where `.ci/run` installs brokers), else in
/// `$HOME/.cargo/bin` (where `cargo install` puts it).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let on_path = env::var_os("PATH")
        .map(|paths| {
            env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let in_cargo_home =
        env::var_os("HOME").map(|home| Path::new(&home).join(".cargo/bin").join(name));
    on_path
        .into_iter()
        .chain(Some(repo_root().join(".venv/tools").join(name)))
        .chain(in_cargo_home)
        .find(|p| p.is_file())
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The last `n` lines of a log file ("" when it cannot be read).
pub fn file_tail(path: &Path, n: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    tail(&text, n)
}

/// A temporary log file a child process writes to, and the handle to give it.
pub fn log_file(dir: &Path, name: &str) -> (PathBuf, Stdio) {
    let (path, file) = create_log(dir, name);
    (path, Stdio::from(file))
}

/// [`log_file`] for both streams of a child process (one file offset): its stdout, then
/// its stderr handle.
pub fn log_file_both(dir: &Path, name: &str) -> (PathBuf, Stdio, Stdio) {
    let (path, file) = create_log(dir, name);
    let stdout = file.try_clone().expect("log file handle");
    (path, Stdio::from(stdout), Stdio::from(file))
}

fn create_log(dir: &Path, name: &str) -> (PathBuf, File) {
    let path = dir.join(name);
    let file =
        File::create(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    (path, file)
}

/// A free loopback port: bound, then released for the child process to take.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// What a finished child process printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// stdout and stderr, labelled, for assertion messages.
    pub fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

fn drain<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = r.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `cmd` to completion with its output captured; kills it and panics after
/// `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Finished {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{shown} did not finish within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    out.join().unwrap_or_default(),
                    err.join().unwrap_or_default()
                );
            }
            Err(e) => panic!("waiting for {shown}: {e}"),
        }
    };
    Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Runs a script of tests/python with [`python`] and `args`.
pub fn run_python(python: &Path, script: &str, args: &[&OsStr], timeout: Duration) -> Finished {
    let mut cmd = Command::new(python);
    cmd.arg(python_script(script))
        .args(args)
        .env("PYTHONUNBUFFERED", "1");
    run_with_timeout(cmd, timeout)
}

/// How long a started broker or demo may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

mod alertmanager;
mod collector;
mod prometheus;
mod tansu;
#[allow(unused_imports)]
pub use alertmanager::Alertmanager;
#[allow(unused_imports)]
pub use collector::{spawn_pipeline, Collected, Collector};
#[allow(unused_imports)]
pub use prometheus::Prometheus;
#[allow(unused_imports)]
pub use tansu::Tansu;

/// What `spanline demo` printed about where it serves.
#[derive(Debug, Clone, Default)]
struct Endpoints {
    ui: Option<String>,
    kafka: Option<String>,
    registry: Option<String>,
    metrics: Option<String>,
}

impl Endpoints {
    fn read(&mut self, line: &str) {
        let line = line.trim();
        let field = if let Some(v) = line.strip_prefix("ui:") {
            (&mut self.ui, v)
        } else if let Some(v) = line.strip_prefix("kafka:") {
            (&mut self.kafka, v)
        } else if let Some(v) = line.strip_prefix("schema registry:") {
            (&mut self.registry, v)
        } else if let Some(v) = line.strip_prefix("metrics:") {
            (&mut self.metrics, v)
        } else {
            return;
        };
        if field.0.is_none() {
            *field.0 = Some(field.1.trim().to_string());
        }
    }

    fn complete(&self) -> bool {
        self.ui.is_some()
            && self.kafka.is_some()
            && self.registry.is_some()
            && self.metrics.is_some()
    }
}

/// `spanline demo --no-workload` as a child process: embedded broker, registry and the
/// default pipeline, no synthetic traffic. Killed on Drop.
pub struct Demo {
    child: Child,
    ui: String,
    kafka: String,
    registry: String,
    metrics: String,
    stdout: Arc<Mutex<String>>,
    stderr_log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Demo {
    /// Starts `bin` (pass `env!("CARGO_BIN_EXE_spanline")`) and waits until it has
    /// printed its Kafka, schema registry and metrics addresses.
    pub fn start(bin: &Path) -> Self {
        Self::start_with_args(
            bin,
            &[
                "demo",
                "--no-workload",
                "--duration",
                "300s",
                "--http",
                "127.0.0.1:0",
            ],
        )
    }

    /// The web UI's URL (`http://host:port/`), the first line the demo prints.
    #[allow(dead_code)]
    pub fn ui(&self) -> &str {
        &self.ui
    }

    /// The embedded broker's `host:port`, for `bootstrap.servers`.
    pub fn kafka(&self) -> &str {
        &self.kafka
    }

    /// The embedded schema registry's base URL.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The metrics URL.
    pub fn metrics(&self) -> &str {
        &self.metrics
    }

    /// Everything the demo printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The last lines of stdout and stderr, for failure messages.
    pub fn output_tail(&self, n: usize) -> String {
        format!(
            "--- demo stdout ---\n{}\n--- demo stderr ---\n{}",
            tail(&self.stdout(), n),
            file_tail(&self.stderr_log, n)
        )
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    /// Starts `bin demo` with `args` (which should include `--http 127.0.0.1:0` and, for
    /// [`Demo::status_lines`], `--status-every`), for instance with its workload running,
    /// and waits until it has printed its Kafka, schema registry and metrics addresses.
    pub fn start_with_args(bin: &Path, args: &[&str]) -> Self {
        Self::start_with_env(bin, args, &[])
    }

    /// [`Demo::start_with_args`] with environment variables `env` set for the demo.
    pub fn start_with_env(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (stderr_log, stderr) = log_file(dir.path(), "demo.stderr.log");
        // in the temp dir: the demo's trace repository (`spanline-data/`) is its own
        let mut child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = Arc::new(Mutex::new(String::new()));
        let (lines_tx, lines) = mpsc::channel::<String>();
        let reader = BufReader::new(child.stdout.take().expect("piped stdout"));
        let buffer = Arc::clone(&stdout);
        thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { break };
                let mut b = buffer.lock().unwrap_or_else(|e| e.into_inner());
                b.push_str(&line);
                b.push('\n');
                drop(b);
                let _ = lines_tx.send(line);
            }
        });
        let mut seen = Endpoints::default();
        let deadline = Instant::now() + READY_TIMEOUT;
        while !seen.complete() {
            let left = deadline.saturating_duration_since(Instant::now());
            let failure = match lines.recv_timeout(left) {
                Ok(line) => {
                    seen.read(&line);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    format!("did not print its addresses within {READY_TIMEOUT:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                    format!("exited ({status}) before printing its addresses")
                }
            };
            let _ = child.kill();
            let _ = child.wait();
            let out = stdout.lock().unwrap_or_else(|e| e.into_inner()).clone();
            panic!(
                "spanline {args:?} {failure} (seen: {seen:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
                tail(&out, 40),
                file_tail(&stderr_log, 40)
            );
        }
        Demo {
            child,
            ui: seen.ui.unwrap_or_default(),
            kafka: seen.kafka.unwrap_or_default(),
            registry: seen.registry.unwrap_or_default(),
            metrics: seen.metrics.unwrap_or_default(),
            stdout,
            stderr_log,
            _dir: dir,
        }
    }

    /// How many periodic status lines (`status:  <seconds>s …`, one per
    /// `--status-every`) the demo has printed so far.
    pub fn status_lines(&self) -> usize {
        self.stdout()
            .lines()
            .filter_map(|l| l.strip_prefix("status:"))
            .filter(|rest| rest.trim_start().starts_with(|c: char| c.is_ascii_digit()))
            .count()
    }

    /// True once the demo process has exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().is_ok_and(|s| s.is_some())
    }

    /// Waits until the demo has printed more than `seen` status lines: `Some(count)`, or
    /// `None` when it exited or `timeout` passed first.
    pub fn wait_status_line(&mut self, seen: usize, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.status_lines();
            if n > seen {
                return Some(n);
            }
            if self.exited() || Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}
