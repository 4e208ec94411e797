//! The dashboard deploy/grafana/dashboards/spanline.json: well formed, its queries valid
//! PromQL (by promtool), and every metric they read exposed by a running spanline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::exposition::Exposition;
use super::promql::{metric_names, selectors};
use super::support::{find_program, repo_root, require_or_skip, run_with_timeout, Demo};
use super::{dashboard, prometheus_datasource, COMPOSE_PIPELINE, DASHBOARD};

/// Every panel, including those nested in collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// `(where, query)` for every panel target's `expr` and every query variable's query.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let place = format!(
                    "panel {:?} query {}",
                    panel["title"].as_str().unwrap_or_default(),
                    target["refId"].as_str().unwrap_or_default()
                );
                out.push((place, expr.to_string()));
            }
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] != "query" {
            continue;
        }
        // Grafana keeps a variable's query as a string or as {"query": "..."}.
        let query = var["query"]["query"].as_str().or(var["query"].as_str());
        if let Some(query) = query {
            let place = format!("variable {}", var["name"].as_str().unwrap_or_default());
            out.push((place, query.to_string()));
        }
    }
    out
}

/// Only the panel targets' expressions (PromQL after variable substitution; the
/// variables' `label_values()` queries are Grafana's, not PromQL).
fn panel_exprs(dashboard: &Value) -> Vec<(String, String)> {
    queries(dashboard)
        .into_iter()
        .filter(|(place, _)| place.starts_with("panel "))
        .collect()
}

#[test]
fn dashboard_is_well_formed() {
    let d = dashboard();
    assert_eq!(d["schemaVersion"], 39);
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let mut ids = BTreeSet::new();
    let mut kinds = BTreeSet::new();
    for panel in panels(&d) {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(
            ids.insert(panel["id"].as_i64().expect("panel id")),
            "duplicate id: {title}"
        );
        let kind = panel["type"].as_str().expect("panel type");
        assert!(
            ["row", "timeseries", "stat", "table", "nodegraph"].contains(&kind),
            "{title}: panel type {kind}"
        );
        kinds.insert(kind);
        assert_eq!(panel["datasource"], prometheus_datasource(), "{title}");
        for key in ["h", "w", "x", "y"] {
            assert!(panel["gridPos"][key].is_u64(), "{title}: gridPos.{key}");
        }
        assert!(
            panel["gridPos"]["x"].as_u64().unwrap() + panel["gridPos"]["w"].as_u64().unwrap() <= 24,
            "{title}"
        );
        if kind == "row" {
            continue;
        }
        let targets = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        let mut refs = BTreeSet::new();
        for target in targets {
            assert_eq!(target["datasource"], prometheus_datasource(), "{title}");
            assert!(
                target["expr"]
                    .as_str()
                    .is_some_and(|e| !e.trim().is_empty()),
                "{title}"
            );
            assert!(
                refs.insert(target["refId"].as_str().expect("refId")),
                "{title}: duplicate refId"
            );
        }
    }
    for kind in ["timeseries", "stat", "table"] {
        assert!(kinds.contains(kind), "no {kind} panel");
    }
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let service = vars
        .iter()
        .find(|v| v["name"] == "service")
        .expect("variable service");
    assert_eq!(service["datasource"], prometheus_datasource());
    assert_eq!(
        service["query"]["query"],
        "label_values(traces_spanmetrics_calls_total, service_name)"
    );
    for (place, query) in queries(&d) {
        assert!(
            !metric_names(&query).is_empty(),
            "{place} reads no metric: {query}"
        );
    }
}

/// A panel query with Grafana's variables replaced by values PromQL accepts: the
/// dashboard's own (`variables`, all used in regex matchers) by `.*`, the built-in
/// intervals by durations.
fn substitute_variables(expr: &str, variables: &[&str]) -> String {
    let mut s = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "1h");
    for var in variables {
        s = s
            .replace(&format!("${{{var}}}"), ".*")
            .replace(&format!("${var}"), ".*");
    }
    s
}

#[test]
fn dashboard_queries_are_valid_promql() {
    let found = find_program("promtool");
    if !require_or_skip("promtool (apt-get install prometheus)", found.is_some()) {
        return;
    }
    let dashboard = dashboard();
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let exprs = panel_exprs(&dashboard);
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| {
            let expr = substitute_variables(expr, &variables);
            assert!(
                !expr.contains('$') || expr.contains("\"$1\""),
                "unsubstituted variable: {expr}"
            );
            serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": expr})
        })
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().expect("temp dir");
    let path: PathBuf = dir.path().join("dashboard-rules.yml");
    std::fs::write(&path, serde_yaml::to_string(&file).unwrap()).unwrap();
    let mut cmd = Command::new(found.unwrap());
    cmd.arg("check").arg("rules").arg(&path);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    let listing: Vec<String> = exprs
        .iter()
        .enumerate()
        .map(|(i, (place, expr))| format!("dashboard:query_{i}: {place}: {expr}"))
        .collect();
    assert!(
        out.status.success(),
        "promtool check rules: {}\n{}\n{}",
        out.status,
        out.output(),
        listing.join("\n")
    );
}

/// What the dashboard reads of one metric name: the label names its queries match on
/// (or ask `label_values` for) and the places that read it.
#[derive(Debug, Default)]
struct Use {
    labels: BTreeSet<String>,
    places: Vec<String>,
}

fn dashboard_metrics() -> BTreeMap<String, Use> {
    let mut wanted: BTreeMap<String, Use> = BTreeMap::new();
    for (place, query) in queries(&dashboard()) {
        for (name, labels) in selectors(&query) {
            let used = wanted.entry(name).or_default();
            used.labels.extend(labels);
            used.places.push(place.clone());
        }
    }
    wanted
}

/// The metric names (and label names of theirs) the dashboard reads that `exposition`
/// lacks, one line each.
fn missing_from(exposition: &Exposition, wanted: &BTreeMap<String, Use>) -> Vec<String> {
    let mut missing = Vec::new();
    for (name, used) in wanted {
        let places = used.places.join("; ");
        if !exposition.exposes(name) {
            missing.push(format!("{name} (used by {places})"));
            continue;
        }
        let labels = exposition.missing_labels(name, &used.labels);
        if !labels.is_empty() {
            missing.push(format!("{name}: no label {labels:?} (used by {places})"));
        }
    }
    missing
}

/// Status lines to wait for at most. The windowed families show only once the first
/// 10 s event-time window has closed, which waits for the workload's longest traces
/// (about 38 s into the demo when measured): leave room beyond that.
const MAX_STATUS_LINES: usize = 55;

#[test]
fn dashboard_queries_use_metrics_spanline_exposes() {
    let wanted = dashboard_metrics();
    assert!(wanted.len() > 10, "too few metric names found: {wanted:?}");
    // The pipeline docker-compose.yml runs: with `outputs.notify`, so the alert delivery
    // families exist (they are registered only when there is somewhere to deliver). Its
    // Alertmanager is not there; deliveries fail and are retried without holding
    // anything up.
    let pipeline = repo_root().join(COMPOSE_PIPELINE);
    let mut demo = Demo::start_with_args(
        Path::new(env!("CARGO_BIN_EXE_spanline")),
        &[
            "demo",
            "--pipeline",
            pipeline.to_str().expect("utf-8 path"),
            "--duration",
            "60s",
            "--http",
            "127.0.0.1:0",
            "--status-every",
            "1s",
            "--rate",
            "100",
        ],
    );
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut exposition = Exposition::default();
    let mut missing = missing_from(&exposition, &wanted);
    let mut status_lines = 0;
    // A family shows once it has a series: poll at each status line until all are there.
    while status_lines < MAX_STATUS_LINES {
        match demo.wait_status_line(status_lines, Duration::from_secs(30)) {
            Some(n) => status_lines = n,
            None => break,
        }
        let text = client
            .get(demo.metrics())
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .unwrap_or_else(|e| panic!("GET {}: {e}\n{}", demo.metrics(), demo.output_tail(20)));
        exposition = Exposition::parse(&text);
        missing = missing_from(&exposition, &wanted);
        if missing.is_empty() {
            break;
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} metrics the dashboard reads are not (fully) exposed by spanline after \
         {status_lines} status lines:\n  {}\nexposed families: {:?}\n{}",
        missing.len(),
        wanted.len(),
        missing.join("\n  "),
        exposition.families.keys().collect::<Vec<_>>(),
        demo.output_tail(10)
    );
    eprintln!(
        "all {} metric names of {DASHBOARD}, with their labels, exposed after {status_lines} status lines",
        wanted.len()
    );
}
