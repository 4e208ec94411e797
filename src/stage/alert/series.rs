//! The identity of a series an alert rule watches: an aggregate series or the traces of
//! one root operation; which rules select it, its stable id and its labels.

use std::sync::Arc;

use super::settings::Select;
use super::template::{format_ns, glob_match, Fnv};
use crate::model::label_name;

/// The identity of one watched series.
pub(super) enum SeriesRef<'a> {
    /// An aggregate series: window size, scope, key.
    Aggregate {
        size_ns: i64,
        scope: &'a str,
        key: &'a [(Arc<str>, Arc<str>)],
    },
    /// The traces of one root operation.
    Root {
        service: &'a str,
        operation: &'a str,
    },
}

impl SeriesRef<'_> {
    /// True when `select` watches this series (`count`: calls of the window).
    pub(super) fn selected_by(&self, select: &Select, count: u64) -> bool {
        match (self, select) {
            (
                SeriesRef::Aggregate {
                    size_ns,
                    scope,
                    key,
                },
                Select::Series {
                    scope: s,
                    matchers,
                    window_ns,
                    min_count,
                },
            ) => {
                s == scope
                    && window_ns.is_none_or(|n| n == *size_ns)
                    && count >= *min_count
                    && matchers.iter().all(|(dim, glob)| {
                        key.iter().any(|(k, v)| **k == **dim && glob_match(glob, v))
                    })
            }
            (
                SeriesRef::Root { service, operation },
                Select::Traces {
                    root_service,
                    root_operation,
                },
            ) => {
                let ok =
                    |g: &Option<String>, v: &str| g.as_deref().is_none_or(|g| glob_match(g, v));
                ok(root_service, service) && ok(root_operation, operation)
            }
            _ => false,
        }
    }

    /// A stable id of rule `rule` on this series.
    pub(super) fn id(&self, rule: usize) -> u64 {
        let h = Fnv::default().bytes(&(rule as u64).to_le_bytes());
        match self {
            SeriesRef::Aggregate {
                size_ns,
                scope,
                key,
            } => {
                let mut h = h.str("aggregate").bytes(&size_ns.to_le_bytes()).str(scope);
                for (k, v) in *key {
                    h = h.str(k).str(v);
                }
                h.finish()
            }
            SeriesRef::Root { service, operation } => {
                h.str("root").str(service).str(operation).finish()
            }
        }
    }

    /// The series' labels (without `alertname`).
    pub(super) fn labels(&self) -> Vec<(String, String)> {
        match self {
            SeriesRef::Aggregate {
                size_ns,
                scope,
                key,
            } => {
                let mut v: Vec<(String, String)> = key
                    .iter()
                    .map(|(k, val)| (label_name(k), val.to_string()))
                    .collect();
                v.push(("scope".into(), scope.to_string()));
                v.push(("window".into(), format_ns(*size_ns as f64)));
                v
            }
            SeriesRef::Root { service, operation } => vec![
                ("service".into(), service.to_string()),
                ("operation".into(), operation.to_string()),
            ],
        }
    }
}
