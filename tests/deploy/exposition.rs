//! The Prometheus text exposition: the families, sample names and label names a
//! `/metrics` page holds.

use std::collections::{BTreeMap, BTreeSet};

use super::names;
use super::promql::{is_ident, skip_spaces, skip_string};

/// Families (with their `# TYPE`) and sample names (with the label names their samples
/// carry) of a `/metrics` exposition.
#[derive(Debug, Default)]
pub struct Exposition {
    pub families: BTreeMap<String, String>,
    pub samples: BTreeMap<String, BTreeSet<String>>,
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
    pub fn parse(text: &str) -> Self {
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
    pub fn exposes(&self, name: &str) -> bool {
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
    pub fn missing_labels<'a>(&self, name: &str, labels: &'a BTreeSet<String>) -> Vec<&'a str> {
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
