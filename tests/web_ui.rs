//! The web UI in a real browser: headless Chromium (Debian's `chromium`) driven by
//! Python Playwright (tests/python/web_ui_browser.py) against a running demo with an
//! early error burst. Needs both (`bash .ci/run` installs them); skipped without them
//! unless SPANLINE_REQUIRE_EXTERNAL is set. Screenshots at 1280x800 go to
//! `<target>/tmp/web-ui/`.

mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{find_program, python, require_or_skip, run_python, Demo};

/// The demo's fault: nine calls in ten of `vector-store` fail from 20 s on, long enough
/// for the alert to be active while the page looks.
const FAULTY: &str = "vector-store";

/// Debian's Chromium and the virtualenv's Python with Playwright, or `None` (the test
/// skipped) when either is missing.
fn browser_or_skip() -> Option<(PathBuf, PathBuf)> {
    let chromium = find_program("chromium");
    let python = python();
    let found = require_or_skip("chromium", chromium.is_some())
        && require_or_skip("python with playwright (.venv)", python.is_some());
    chromium.filter(|_| found).zip(python)
}

/// A five-minute demo at 100 traces/s on a free port, with `args` added.
fn demo(args: &[&str]) -> Demo {
    demo_with_env(args, &[])
}

/// [`demo`] with environment variables `env` set.
fn demo_with_env(args: &[&str], env: &[(&str, &str)]) -> Demo {
    let mut all = vec![
        "demo",
        "--duration",
        "300s",
        "--http",
        "127.0.0.1:0",
        "--rate",
        "100",
    ];
    all.extend_from_slice(args);
    Demo::start_with_env(Path::new(env!("CARGO_BIN_EXE_spanline")), &all, env)
}

/// Runs `tests/python/<script>` with `args` against `demo` and fails the test, with the
/// script's and the demo's output, unless it exits 0 having printed `ok` last.
fn run_script(python: &Path, script: &str, args: &[&OsStr], timeout: Duration, demo: &Demo) {
    let run = run_python(python, script, args, timeout);
    println!("{}", run.output());
    assert!(
        run.status.success() && run.stdout.trim_end().ends_with("ok"),
        "{script} failed ({})\n{}\n{}",
        run.status,
        run.output(),
        demo.output_tail(60)
    );
}

#[test]
fn the_ui_shows_services_traces_and_a_live_alert_in_chromium() {
    let Some((chromium, python)) = browser_or_skip() else {
        return;
    };
    let faults = format!("errors:{FAULTY}*0.9@20s+5m");
    let demo = demo(&["--faults", &faults]);
    // the UI's address is the first line the demo prints
    assert!(demo.ui().starts_with("http://127.0.0.1:"), "{}", demo.ui());
    let page = reqwest::blocking::get(demo.ui()).unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().unwrap().contains("/ui/app.js"));

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-ui");
    let services = spanline::workload::services().join(",");
    run_script(
        &python,
        "web_ui_browser.py",
        &[
            OsStr::new(demo.ui()),
            shots.as_os_str(),
            chromium.as_os_str(),
            OsStr::new(&services),
            OsStr::new(FAULTY),
        ],
        Duration::from_secs(420),
        &demo,
    );
    for shot in ["services", "trace", "alerts", "graph"] {
        assert!(shots.join(format!("{shot}.png")).exists(), "no {shot}.png");
    }
}

#[test]
fn without_a_repository_the_ui_fills_from_live_data_and_says_what_is_off() {
    let Some((chromium, python)) = browser_or_skip() else {
        return;
    };
    // the default pipeline with the repository turned off
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("no-repository.yaml");
    let default =
        std::fs::read_to_string(support::repo_root().join("pipelines/trace-analytics.yaml"))
            .unwrap();
    std::fs::write(
        &pipeline,
        format!("{default}\nrepository:\n  enabled: false\n"),
    )
    .unwrap();
    let demo = demo(&["--faults", "", "--pipeline", pipeline.to_str().unwrap()]);
    let base = demo.ui().trim_end_matches('/').to_string();
    let status: serde_json::Value = reqwest::blocking::get(format!("{base}/api/spanline/status"))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(status["data"]["repository"], false, "{status}");
    let services = reqwest::blocking::get(format!("{base}/api/services")).unwrap();
    assert_eq!(services.status(), 404, "no query API without a repository");

    let workload = spanline::workload::services().join(",");
    run_script(
        &python,
        "web_ui_no_repository.py",
        &[
            OsStr::new(demo.ui()),
            chromium.as_os_str(),
            OsStr::new(&workload),
        ],
        Duration::from_secs(300),
        &demo,
    );
}

#[test]
fn with_an_api_token_the_ui_asks_for_it_and_works_once_given() {
    let Some((chromium, python)) = browser_or_skip() else {
        return;
    };
    const TOKEN: &str = "s3cret-token-for-the-ui-test";
    let demo = demo_with_env(&["--faults", ""], &[("SPANLINE_API_TOKEN", TOKEN)]);
    let base = demo.ui().trim_end_matches('/').to_string();
    let refused = reqwest::blocking::get(format!("{base}/api/services")).unwrap();
    assert_eq!(refused.status(), 401, "the API without the token");
    // what the process serves is open, like /healthz
    let status = reqwest::blocking::get(format!("{base}/api/spanline/status")).unwrap();
    assert_eq!(status.status(), 200);
    assert!(
        !demo.output_tail(200).contains(TOKEN),
        "the token is never logged"
    );

    let workload = spanline::workload::services().join(",");
    run_script(
        &python,
        "web_ui_token.py",
        &[
            OsStr::new(demo.ui()),
            chromium.as_os_str(),
            OsStr::new(&workload),
            OsStr::new(TOKEN),
        ],
        Duration::from_secs(300),
        &demo,
    );
}
