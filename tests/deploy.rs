//! The deployment files: docker-compose.yml (checked by docker-compose itself),
//! deploy/prometheus.yml (by promtool), deploy/alertmanager.yml (by amtool) and how
//! compose wires Alertmanager to spanline, the Grafana provisioning, and the dashboard
//! deploy/grafana/dashboards/spanline.json, whose queries must be valid PromQL and read
//! only metrics a running spanline exposes.
//!
//! The checks by what they read: `compose` (docker-compose.yml and the files its services
//! mount), `dashboard` (the dashboard's panels and queries), `dockerfile` (the image's
//! toolchain), with the PromQL reading of the queries in `promql` and the `/metrics`
//! exposition format in `exposition`.

#[path = "deploy/compose.rs"]
mod compose;
#[path = "deploy/dashboard.rs"]
mod dashboard;
#[path = "deploy/dockerfile.rs"]
mod dockerfile;
#[path = "deploy/exposition.rs"]
mod exposition;
#[path = "deploy/promql.rs"]
mod promql;
mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::repo_root;

const DASHBOARD: &str = "deploy/grafana/dashboards/spanline.json";
const DATASOURCES: &str = "deploy/grafana/provisioning/datasources/prometheus.yml";
const DASHBOARD_PROVIDERS: &str = "deploy/grafana/provisioning/dashboards/spanline.yml";
const ALERTMANAGER_CONFIG: &str = "deploy/alertmanager.yml";
const DEFAULT_PIPELINE: &str = "pipelines/trace-analytics.yaml";
/// The pipeline docker-compose.yml runs: the default one plus `outputs.notify`.
const COMPOSE_PIPELINE: &str = "pipelines/trace-analytics-alertmanager.yaml";

fn read(path: &str) -> String {
    let full = repo_root().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

fn yaml(path: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// The datasource every panel and query of the dashboard names.
fn prometheus_datasource() -> Value {
    serde_json::json!({"type": "prometheus", "uid": "prometheus"})
}

/// `list` as a set of owned names, to compare with what the parsers under test return.
fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}
