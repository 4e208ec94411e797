//! The deployment files: docker-compose.yml (checked by docker-compose itself),
//! deploy/prometheus.yml (by promtool), deploy/alertmanager.yml (by amtool) and how
//! compose wires Alertmanager to spanline, the Grafana provisioning, and the dashboard
//! deploy/grafana/dashboards/spanline.json, whose queries must be valid PromQL and read
//! only metrics a running spanline exposes.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::{find_program, repo_root, require_or_skip, run_with_timeout, Demo};

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

// ---------------------------------------------------------------------------------------
// Queries of the dashboard

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

// ---------------------------------------------------------------------------------------
// Metric names in a PromQL expression

/// PromQL keywords and operators spelled as words (case-insensitive in PromQL).
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "atan2",
    "inf",
    "nan",
];

/// Aggregation operators: written `sum by (l) (…)` as well as `sum(…)`.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

/// The index just past the string literal starting at `i` (quote at `b[i]`).
fn skip_string(b: &[u8], i: usize) -> usize {
    let quote = b[i];
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' if quote != b'`' => j += 2,
            c if c == quote => return j + 1,
            _ => j += 1,
        }
    }
    b.len()
}

/// The index just past the bracket group opened at `i`, skipping string literals
/// (so a `}` in a label value does not close a selector).
fn skip_group(b: &[u8], i: usize) -> usize {
    let (open, close) = (b[i], matching(b[i]));
    let mut depth = 0;
    let mut j = i;
    while j < b.len() {
        match b[j] {
            b'"' | b'\'' | b'`' => {
                j = skip_string(b, j);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    b.len()
}

fn matching(open: u8) -> u8 {
    match open {
        b'(' => b')',
        b'[' => b']',
        b'{' => b'}',
        other => panic!("not a bracket: {}", other as char),
    }
}

fn skip_spaces(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Splits the inside of a call's parentheses at its top-level commas.
fn call_args(inside: &str) -> Vec<&str> {
    let b = inside.as_bytes();
    let mut args = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        match b[i] {
            b'"' | b'\'' | b'`' => {
                i = skip_string(b, i);
                continue;
            }
            b'(' | b'[' | b'{' => {
                i = skip_group(b, i);
                continue;
            }
            b',' => {
                args.push(inside[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if !inside[start..].trim().is_empty() {
        args.push(inside[start..].trim());
    }
    args
}

/// The metric names a query reads: PromQL, with Grafana's `$variables`, `${variables}`
/// and the templating functions `label_values(metric, label)`, `query_result(expr)` and
/// `metrics(regex)`. Function and aggregation names, keywords, label names (in selectors
/// and in `by (…)`-style lists), strings, numbers, durations and variables are not
/// metric names.
fn metric_names(query: &str) -> BTreeSet<String> {
    selectors(query).into_keys().collect()
}

/// The metric names a query reads (as [`metric_names`]), each with the label names its
/// selectors match on (`m{a="x", b=~"y"}` gives `a` and `b`) or, in
/// `label_values(m, l)`, ask for (`l`).
fn selectors(query: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    collect_selectors(query, &mut out);
    out
}

/// The label names of the matchers inside a selector's braces.
fn matcher_labels(inside: &str) -> impl Iterator<Item = String> + '_ {
    call_args(inside).into_iter().filter_map(|matcher| {
        let end = matcher
            .bytes()
            .position(|c| !is_ident(c))
            .unwrap_or(matcher.len());
        let name = &matcher[..end];
        (!name.is_empty() && !name.starts_with("__")).then(|| name.to_string())
    })
}

fn collect_selectors(query: &str, out: &mut BTreeMap<String, BTreeSet<String>>) {
    let b = query.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => i = skip_string(b, i),
            // label matchers and range/subquery durations
            b'{' | b'[' => i = skip_group(b, i),
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'$' => {
                i += 1;
                if i < b.len() && b[i] == b'{' {
                    i = skip_group(b, i);
                } else {
                    while i < b.len() && is_ident(b[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit()
                || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                // numbers (0.99, 1e-3, 0x1f) and durations (5m, 1h30m)
                let hex = b[i..].starts_with(b"0x") || b[i..].starts_with(b"0X");
                while i < b.len() {
                    let d = b[i];
                    let exponent_sign =
                        !hex && (d == b'-' || d == b'+') && matches!(b[i - 1], b'e' | b'E');
                    if d.is_ascii_alphanumeric() || d == b'.' || d == b'_' || exponent_sign {
                        i += 1;
                    } else {
                        break;
                    }
                }
            }
            c if is_ident_start(c) => {
                let start = i;
                while i < b.len() && is_ident(b[i]) {
                    i += 1;
                }
                let word = &query[start..i];
                let lower = word.to_ascii_lowercase();
                let next = skip_spaces(b, i);
                let called = b.get(next) == Some(&b'(');
                if called && LABEL_LISTS.contains(&lower.as_str()) {
                    i = skip_group(b, next);
                } else if called && word == "label_values" {
                    let end = skip_group(b, next);
                    let inside = &query[next + 1..end.saturating_sub(1).max(next + 1)];
                    // label_values(label) names no metric; label_values(metric, label) does.
                    let args = call_args(inside);
                    if let [metric, label] = args[..] {
                        let mut inner = BTreeMap::new();
                        collect_selectors(metric, &mut inner);
                        for (name, mut labels) in inner {
                            labels.insert(label.to_string());
                            out.entry(name).or_default().extend(labels);
                        }
                    }
                    i = end;
                } else if called && word == "metrics" {
                    i = skip_group(b, next);
                } else if called
                    || KEYWORDS.contains(&lower.as_str())
                    || AGGREGATIONS.contains(&lower.as_str())
                {
                    // a function name, a keyword, or an aggregation followed by `by`
                } else {
                    let labels = out.entry(word.to_string()).or_default();
                    if b.get(next) == Some(&b'{') {
                        let end = skip_group(b, next);
                        labels.extend(matcher_labels(
                            &query[next + 1..end.saturating_sub(1).max(next + 1)],
                        ));
                        i = end;
                    }
                }
            }
            _ => i += 1,
        }
    }
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn metric_names_of_selectors_and_aggregations() {
    assert_eq!(
        metric_names(
            r#"sum by (service_name) (rate(traces_spanmetrics_calls_total{service_name=~"$service"}[1m]))"#
        ),
        names(&["traces_spanmetrics_calls_total"])
    );
    assert_eq!(
        metric_names("histogram_quantile(0.99, sum by (le, service_name) (rate(traces_spanmetrics_latency_bucket[1m])))"),
        names(&["traces_spanmetrics_latency_bucket"])
    );
    assert_eq!(
        metric_names("spanline_open_traces"),
        names(&["spanline_open_traces"])
    );
    assert_eq!(
        metric_names("sum(spanline_open_traces) / sum(spanline_open_traces_limit)"),
        names(&["spanline_open_traces", "spanline_open_traces_limit"])
    );
    assert_eq!(
        metric_names(
            "sum(rate(a_total[5m])) without (pod) > bool 0.5 and on (job) group_left (team) b"
        ),
        names(&["a_total", "b"])
    );
    assert_eq!(
        metric_names("avg(x offset 5m) + count_values(\"v\", y) - topk(3, z @ start()) * 1e-3"),
        names(&["x", "y", "z"])
    );
    assert_eq!(metric_names("vector(1) + Inf - NaN + time()"), names(&[]));
    assert_eq!(
        metric_names("job:request_rate:5m unless ignoring(le) c[10m:1m]"),
        names(&["job:request_rate:5m", "c"])
    );
}

#[test]
fn metric_names_skip_strings_labels_and_variables() {
    // label names and values, even ones that look like metrics or hold braces
    assert_eq!(
        metric_names(
            r#"m{status_code="STATUS_CODE_ERROR", a='x}y', le!~"rate(b)", span_name=`c`}"#
        ),
        names(&["m"])
    );
    // Grafana variables in matchers, ranges and bare
    assert_eq!(
        metric_names(r#"rate(m{s=~"${service:regex}"}[$__rate_interval]) * $scale + ${factor}"#),
        names(&["m"])
    );
    // label_replace / label_join arguments are strings
    assert_eq!(
        metric_names(
            r#"label_replace(label_join(sum by (client, server) (m), "id", "->", "client", "server"), "source", "$1", "client", "(.*)")"#
        ),
        names(&["m"])
    );
    assert_eq!(
        metric_names("sum by (reason) (rate(dead_total[1m])) # a comment naming not_a_metric"),
        names(&["dead_total"])
    );
    assert_eq!(metric_names("0x1F + 1.5e+3 + .5 + 1h30m"), names(&[]));
}

#[test]
fn metric_names_of_grafana_template_queries() {
    assert_eq!(
        metric_names("label_values(traces_spanmetrics_calls_total, service_name)"),
        names(&["traces_spanmetrics_calls_total"])
    );
    assert_eq!(
        metric_names(r#"label_values(up{job="spanline"}, instance)"#),
        names(&["up"])
    );
    assert_eq!(metric_names("label_values(service_name)"), names(&[]));
    assert_eq!(metric_names("metrics(spanline_.*)"), names(&[]));
    assert_eq!(
        metric_names("query_result(topk(5, sum by (span_name) (rate(calls_total[5m]))))"),
        names(&["calls_total"])
    );
}

#[test]
fn selector_label_names() {
    let got = selectors(
        r#"sum(rate(calls_total{service_name=~"$service", status_code="STATUS_CODE_ERROR"}[1m])) / sum(rate(calls_total[1m])) + other{ a = "}", b!~'x,y' , } + lat_bucket{le="1"} + {__name__="m"}"#,
    );
    let want: BTreeMap<String, BTreeSet<String>> = [
        ("calls_total", names(&["service_name", "status_code"])),
        ("other", names(&["a", "b"])),
        ("lat_bucket", names(&["le"])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(got, want);
    let got = selectors(r#"label_values(spanline_window_error_rate{scope="service"}, window)"#);
    assert_eq!(
        got["spanline_window_error_rate"],
        names(&["scope", "window"])
    );
    assert_eq!(selectors("label_values(window)"), BTreeMap::new());
}

// ---------------------------------------------------------------------------------------
// The Prometheus text exposition

/// Families (with their `# TYPE`) and sample names (with the label names their samples
/// carry) of a `/metrics` exposition.
#[derive(Debug, Default)]
struct Exposition {
    families: BTreeMap<String, String>,
    samples: BTreeMap<String, BTreeSet<String>>,
}

/// The label names of a sample line's `{name="value",…}` (`rest` starts after the `{`).
fn sample_labels(rest: &str) -> BTreeSet<String> {
    let b = rest.as_bytes();
    let mut labels = BTreeSet::new();
    let mut i = 0;
    loop {
        i = skip_spaces(b, i);
        let start = i;
        while i < b.len() && is_ident(b[i]) {
            i += 1;
        }
        if start == i {
            break;
        }
        labels.insert(rest[start..i].to_string());
        i = skip_spaces(b, i);
        if b.get(i) != Some(&b'=') {
            break;
        }
        i = skip_spaces(b, i + 1);
        if b.get(i) != Some(&b'"') {
            break;
        }
        i = skip_spaces(b, skip_string(b, i));
        if b.get(i) != Some(&b',') {
            break;
        }
        i += 1;
    }
    labels
}

impl Exposition {
    fn parse(text: &str) -> Self {
        let mut exposition = Exposition::default();
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut words = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                    exposition
                        .families
                        .insert(name.to_string(), kind.to_string());
                }
            } else if !line.is_empty() && !line.starts_with('#') {
                let end = line
                    .find(|c: char| c == '{' || c.is_whitespace())
                    .unwrap_or(line.len());
                let labels = exposition
                    .samples
                    .entry(line[..end].to_string())
                    .or_default();
                if let Some(rest) = line[end..].strip_prefix('{') {
                    labels.extend(sample_labels(rest));
                }
            }
        }
        exposition
    }

    /// True when a query naming `name` finds it: a family with a `# TYPE` line, a sample,
    /// or a histogram's `_bucket`/`_sum`/`_count` (a summary's `_sum`/`_count`).
    fn exposes(&self, name: &str) -> bool {
        if self.families.contains_key(name) || self.samples.contains_key(name) {
            return true;
        }
        [
            ("_bucket", &["histogram"][..]),
            ("_sum", &["histogram", "summary"]),
            ("_count", &["histogram", "summary"]),
        ]
        .iter()
        .any(|(suffix, kinds)| {
            name.strip_suffix(suffix)
                .and_then(|family| self.families.get(family))
                .is_some_and(|kind| kinds.contains(&kind.as_str()))
        })
    }

    /// Of the `labels` a query matches `name` on, those no sample named `name` carries
    /// (none when there is no such sample: [`Exposition::exposes`] reports that).
    fn missing_labels<'a>(&self, name: &str, labels: &'a BTreeSet<String>) -> Vec<&'a str> {
        let Some(have) = self.samples.get(name) else {
            return Vec::new();
        };
        labels
            .iter()
            .filter(|l| !have.contains(*l))
            .map(String::as_str)
            .collect()
    }
}

#[test]
fn exposition_families_and_histogram_suffixes() {
    let text = "\
# HELP lat Latency
# TYPE lat histogram
lat_bucket{le=\"0.1\"} 1
lat_bucket{le=\"+Inf\"} 2
lat_sum 0.3
lat_count 2
# TYPE q summary
q{quantile=\"0.5\"} 1
q_sum 1
q_count 1
# TYPE calls_total counter
calls_total{service_name=\"a\"} 3
# TYPE empty_gauge gauge
untyped_metric 1
";
    let e = Exposition::parse(text);
    for present in [
        "lat",
        "lat_bucket",
        "lat_sum",
        "lat_count",
        "q",
        "q_sum",
        "q_count",
        "calls_total",
        "empty_gauge",
        "untyped_metric",
    ] {
        assert!(e.exposes(present), "{present}");
    }
    for absent in [
        "q_bucket",
        "calls",
        "calls_total_bucket",
        "empty_gauge_sum",
        "other",
        "lat_max",
    ] {
        assert!(!e.exposes(absent), "{absent}");
    }
}

#[test]
fn exposition_label_names() {
    let text = r#"
# TYPE w gauge
w{window="10s",scope="service",series="a, \"b\"}",percentile="p99"} 0.5
w{ window = "1m" , extra="x",} 0.7
plain 1
"#;
    let e = Exposition::parse(text);
    assert_eq!(
        e.samples["w"],
        names(&["window", "scope", "series", "percentile", "extra"])
    );
    assert_eq!(e.samples["plain"], names(&[]));
    let wanted = names(&["window", "quantile", "percentile"]);
    assert_eq!(e.missing_labels("w", &wanted), vec!["quantile"]);
    assert_eq!(e.missing_labels("plain", &names(&["le"])), vec!["le"]);
    assert!(e.missing_labels("absent", &wanted).is_empty());
}

// ---------------------------------------------------------------------------------------
// The files

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

#[test]
fn grafana_provisioning_matches_compose_and_dashboard() {
    let compose = yaml("docker-compose.yml");
    let grafana = &compose["services"]["grafana"];
    assert_eq!(grafana["image"].as_str(), Some("grafana/grafana:11.3.0"));
    let volumes: Vec<&str> = grafana["volumes"]
        .as_sequence()
        .expect("grafana volumes")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    // host path -> container path, and every host path exists
    let mounts: BTreeMap<&str, &str> = volumes
        .iter()
        .map(|v| {
            let mut parts = v.split(':');
            let (host, container) = (parts.next().unwrap(), parts.next().expect("container path"));
            assert!(repo_root().join(host).exists(), "{host} does not exist");
            (host, container)
        })
        .collect();

    let datasources = yaml(DATASOURCES);
    let prometheus = &datasources["datasources"][0];
    assert_eq!(prometheus["type"].as_str(), Some("prometheus"));
    assert_eq!(prometheus["uid"].as_str(), Some("prometheus"));
    assert_eq!(prometheus["url"].as_str(), Some("http://prometheus:9090"));
    assert_eq!(prometheus["isDefault"].as_bool(), Some(true));
    assert!(compose["services"]["prometheus"].is_mapping());

    let providers = yaml(DASHBOARD_PROVIDERS);
    let provider = &providers["providers"][0];
    assert_eq!(provider["type"].as_str(), Some("file"));
    let path = provider["options"]["path"].as_str().expect("provider path");
    assert_eq!(mounts.get("./deploy/grafana/dashboards"), Some(&path));
    assert_eq!(
        mounts.get("./deploy/grafana/provisioning/datasources"),
        Some(&"/etc/grafana/provisioning/datasources")
    );
    assert_eq!(
        mounts.get("./deploy/grafana/provisioning/dashboards"),
        Some(&"/etc/grafana/provisioning/dashboards")
    );
    let home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].as_str();
    assert_eq!(home, Some(format!("{path}/spanline.json").as_str()));
    assert!(Path::new(&repo_root().join(DASHBOARD)).is_file());
}

#[test]
fn compose_file_is_valid() {
    let found = find_program("docker-compose");
    if !require_or_skip(
        "docker-compose (apt-get install docker-compose)",
        found.is_some(),
    ) {
        return;
    }
    let mut cmd = Command::new(found.unwrap());
    cmd.current_dir(repo_root())
        .args(["-f", "docker-compose.yml", "config", "-q"]);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "docker-compose config: {}\n{}",
        out.status,
        out.output()
    );
}

#[test]
fn prometheus_config_is_valid() {
    let found = find_program("promtool");
    if !require_or_skip("promtool (apt-get install prometheus)", found.is_some()) {
        return;
    }
    let mut cmd = Command::new(found.unwrap());
    cmd.current_dir(repo_root())
        .args(["check", "config", "deploy/prometheus.yml"]);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "promtool check config: {}\n{}",
        out.status,
        out.output()
    );
}

#[test]
fn alertmanager_config_is_valid() {
    let found = find_program("amtool");
    if !require_or_skip(
        "amtool (apt-get install prometheus-alertmanager)",
        found.is_some(),
    ) {
        return;
    }
    let mut cmd = Command::new(found.unwrap());
    cmd.current_dir(repo_root())
        .args(["check-config", ALERTMANAGER_CONFIG]);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "amtool check-config: {}\n{}",
        out.status,
        out.output()
    );
}

/// A compose service's `environment` as a map (compose allows a map or `K=V` items).
fn compose_environment(service: &serde_yaml::Value) -> BTreeMap<String, String> {
    let env = &service["environment"];
    if let Some(map) = env.as_mapping() {
        return map
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_yaml::Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other).unwrap().trim().to_string(),
                };
                (k.as_str().expect("variable name").to_string(), v)
            })
            .collect();
    }
    env.as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|item| item.as_str()?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A compose service's `volumes` as host path -> container path.
fn compose_mounts(service: &serde_yaml::Value) -> BTreeMap<String, String> {
    service["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .map(|v| {
            let mut parts = v.split(':');
            let host = parts.next().unwrap().to_string();
            (host, parts.next().expect("container path").to_string())
        })
        .collect()
}

#[test]
fn compose_wires_spanline_to_alertmanager_and_the_webhook() {
    let compose = yaml("docker-compose.yml");
    let services = &compose["services"];

    // spanline runs the notifying pipeline, with its Alertmanager's address
    let spanline = &services["spanline"];
    let mounts = compose_mounts(spanline);
    let pipelines_dir = mounts
        .get("./pipelines")
        .expect("./pipelines mounted into spanline");
    let file_name = Path::new(COMPOSE_PIPELINE)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let command: Vec<&str> = spanline["command"]
        .as_sequence()
        .expect("spanline command")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        command,
        ["run", format!("{pipelines_dir}/{file_name}").as_str()]
    );
    assert!(
        spanline["depends_on"]["alertmanager"].is_mapping(),
        "spanline should start after alertmanager"
    );
    let env = compose_environment(spanline);
    let config = spanline::config::load_str(&read(COMPOSE_PIPELINE), |k| env.get(k).cloned())
        .unwrap_or_else(|e| panic!("{COMPOSE_PIPELINE} with the compose environment:\n{e}"));
    let notify = config.outputs.notify.as_ref().expect("outputs.notify");
    let url = &notify
        .alertmanager
        .as_ref()
        .expect("notify.alertmanager")
        .url;
    assert_eq!(url, "http://alertmanager:9093");

    // Alertmanager reads deploy/alertmanager.yml and is reachable on the host
    let alertmanager = &services["alertmanager"];
    assert_eq!(
        alertmanager["image"].as_str(),
        Some("prom/alertmanager:v0.27.0")
    );
    assert_eq!(
        compose_mounts(alertmanager)
            .get(&format!("./{ALERTMANAGER_CONFIG}"))
            .map(String::as_str),
        Some("/etc/alertmanager/alertmanager.yml"),
        "the image's default --config.file"
    );
    assert!(
        alertmanager["command"].is_null(),
        "keep the image's default command"
    );
    let ports: Vec<&str> = alertmanager["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str())
        .collect();
    assert_eq!(ports, ["9093:9093"]);

    // its route groups by rule and service, and every receiver it names exists; the
    // example webhook is a compose service
    let am = yaml(ALERTMANAGER_CONFIG);
    let group_by: Vec<&str> = am["route"]["group_by"]
        .as_sequence()
        .expect("route.group_by")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(group_by, ["alertname", "service"]);
    let receivers: BTreeMap<&str, &serde_yaml::Value> = am["receivers"]
        .as_sequence()
        .expect("receivers")
        .iter()
        .map(|r| (r["name"].as_str().expect("receiver name"), r))
        .collect();
    assert_eq!(am["route"]["receiver"].as_str(), Some("webhook"));
    let webhook = receivers.get("webhook").expect("receiver webhook");
    let hook_url = webhook["webhook_configs"][0]["url"]
        .as_str()
        .expect("webhook url");
    let hook_url = reqwest::Url::parse(hook_url).unwrap();
    let host = hook_url.host_str().unwrap();
    assert!(
        services[host].is_mapping(),
        "the webhook {hook_url} is no compose service"
    );
    assert_eq!(
        alertmanager["depends_on"][host]["condition"].as_str(),
        Some("service_started")
    );
    let hook_env = compose_environment(&services[host]);
    assert_eq!(
        hook_env.get("HTTP_PORT").map(String::as_str),
        hook_url.port().map(|p| p.to_string()).as_deref(),
        "the echo service listens on HTTP_PORT"
    );

    // the topics service creates every topic the pipeline reads and writes
    let create = services["topics"]["command"][0]
        .as_str()
        .expect("topics command");
    let created: BTreeSet<&str> = create
        .strip_prefix("for t in ")
        .and_then(|rest| rest.split(';').next())
        .expect("`for t in …;` in the topics command")
        .split_whitespace()
        .collect();
    let mut needed: BTreeSet<String> = BTreeSet::new();
    for source in &config.sources {
        needed.extend(source.topics.iter().cloned());
        needed.extend(source.dead_letter_topic.iter().cloned());
    }
    let outputs = &config.outputs;
    needed.insert(outputs.traces.topic.clone());
    for output in [&outputs.late, &outputs.aggregates, &outputs.alerts]
        .into_iter()
        .flatten()
    {
        needed.insert(output.topic.clone());
    }
    let missing: Vec<&String> = needed
        .iter()
        .filter(|t| !created.contains(t.as_str()))
        .collect();
    assert!(missing.is_empty(), "topics not created: {missing:?}");
}

#[test]
fn compose_pipeline_is_the_default_plus_notify() {
    let mut compose: serde_yaml::Value = yaml(COMPOSE_PIPELINE);
    let default: serde_yaml::Value = yaml(DEFAULT_PIPELINE);
    assert!(default["outputs"]["notify"].is_null());
    let notify = compose["outputs"]
        .as_mapping_mut()
        .expect("outputs")
        .remove("notify")
        .expect("outputs.notify");
    assert!(notify["alertmanager"]["url"].is_string());
    assert_eq!(
        compose, default,
        "{COMPOSE_PIPELINE} should differ from {DEFAULT_PIPELINE} only by outputs.notify"
    );
    // and without any variable set it loads, notifying the port compose publishes
    let config = spanline::config::load_str(&read(COMPOSE_PIPELINE), |_| None)
        .unwrap_or_else(|e| panic!("{COMPOSE_PIPELINE}:\n{e}"));
    let am = config.outputs.notify.unwrap().alertmanager.unwrap();
    assert_eq!(am.url, "http://localhost:9093");
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

/// The Docker image builds with the Rust of its `FROM rust:X.Y` line: Cargo.toml declares
/// that version, and no locked dependency needs a newer one.
#[test]
fn locked_dependencies_build_with_the_dockerfile_toolchain() {
    let root = repo_root();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let image = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .expect("the Dockerfile builds FROM rust:X.Y");
    let docker_rust: String = image.split(['-', ' ']).next().unwrap().to_owned();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let declared = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("Cargo.toml declares rust-version")
        .trim_matches('"');
    assert_eq!(
        declared, docker_rust,
        "Cargo.toml rust-version and the Dockerfile's image"
    );

    // Only the packages that build on the image's platform (linux): the crates of other
    // platforms (e.g. anstyle-wincon) are never downloaded by a build here, and the test
    // runs offline after `cargo test` fetched what the build needs.
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--locked", "--offline", "--format-version", "1"])
        .args(["--filter-platform", "x86_64-unknown-linux-gnu"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).unwrap();
    let version = |v: &str| -> Vec<u64> {
        let mut parts: Vec<u64> = v.split('.').map(|p| p.parse().unwrap()).collect();
        parts.resize(3, 0);
        parts
    };
    let newer: Vec<String> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let needs = p["rust_version"].as_str()?;
            (version(needs) > version(declared))
                .then(|| format!("{} {} needs Rust {needs}", p["name"], p["version"]))
        })
        .collect();
    assert!(
        newer.is_empty(),
        "locked dependencies need a newer Rust than {declared}: {newer:?} (cargo update picks compatible ones with resolver 3)"
    );
}
