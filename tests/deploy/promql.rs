//! Metric names in a PromQL expression: which metrics (and label names of theirs) a
//! dashboard query reads.

use std::collections::{BTreeMap, BTreeSet};

use super::names;

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

pub fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

/// The index just past the string literal starting at `i` (quote at `b[i]`).
pub fn skip_string(b: &[u8], i: usize) -> usize {
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

pub fn skip_spaces(b: &[u8], mut i: usize) -> usize {
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
pub fn metric_names(query: &str) -> BTreeSet<String> {
    selectors(query).into_keys().collect()
}

/// The metric names a query reads (as [`metric_names`]), each with the label names its
/// selectors match on (`m{a="x", b=~"y"}` gives `a` and `b`) or, in
/// `label_values(m, l)`, ask for (`l`).
pub fn selectors(query: &str) -> BTreeMap<String, BTreeSet<String>> {
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
