//! What a trace's row, index entries and dependency counts will be, computed from its
//! spans and analysis alone: the part of storing that needs no database, so the traces
//! of a batch are prepared on every core before one thread writes them.

use std::borrow::Cow;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::model::{Analysis, Span, SpanId, StatusCode};

use super::bodies::Dictionary;
use super::{codec, terms};

/// The minute a trace's dependency calls are counted in.
pub(crate) const DEPENDENCY_BUCKET_NS: i64 = 60_000_000_000;

/// True when the spans are in canonical order with distinct span ids.
pub(crate) fn canonical(spans: &[Span]) -> bool {
    let ordered = spans
        .windows(2)
        .all(|w| (w[0].start_ns, w[0].span_id) < (w[1].start_ns, w[1].span_id));
    if !ordered {
        return false;
    }
    let mut ids = FxHashSet::default();
    ids.reserve(spans.len());
    spans.iter().all(|s| ids.insert(s.span_id))
}

/// The summary columns of a trace, from its spans.
pub(crate) struct Summary<'s> {
    pub start_ns: i64,
    pub duration_ns: i64,
    pub error_count: usize,
    pub root: Option<&'s Span>,
    pub services: Vec<&'s str>,
}

pub(crate) fn summarize(spans: &[Span]) -> Summary<'_> {
    let start_ns = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let end_ns = spans.iter().map(|s| s.end_ns).max().unwrap_or(0);
    let mut services: Vec<&str> = spans.iter().map(|s| s.service()).collect();
    services.sort_unstable();
    services.dedup();
    Summary {
        start_ns,
        duration_ns: end_ns.saturating_sub(start_ns).max(0),
        error_count: spans
            .iter()
            .filter(|s| s.status == StatusCode::Error)
            .count(),
        root: spans.iter().find(|s| s.is_root()),
        services,
    }
}

pub(crate) type DependencyDeltas = FxHashMap<(i64, Arc<str>, Arc<str>), i64>;

/// Adds `sign` times the trace's cross-service parent/child calls to `deltas`.
pub(crate) fn count_dependencies(
    spans: &[Span],
    start_ns: i64,
    sign: i64,
    deltas: &mut DependencyDeltas,
) {
    let minute = start_ns.div_euclid(DEPENDENCY_BUCKET_NS) * DEPENDENCY_BUCKET_NS;
    let mut service_of: Vec<(SpanId, &Arc<str>)> = spans
        .iter()
        .map(|s| (s.span_id, &s.resource.service_name))
        .collect();
    // the first span of an id names its service, as a map filled in span order would
    service_of.sort_by_key(|e| e.0);
    service_of.dedup_by_key(|e| e.0);
    let same = |a: &Arc<str>, b: &Arc<str>| Arc::ptr_eq(a, b) || **a == **b;
    // a trace has few distinct calls: counted here first, so the shared names are
    // cloned once per call rather than once per span
    let mut calls: Vec<(&Arc<str>, &Arc<str>, i64)> = Vec::new();
    for s in spans.iter().filter(|s| !s.is_root()) {
        let Ok(i) = service_of.binary_search_by_key(&s.parent_span_id, |e| e.0) else {
            continue;
        };
        let (parent, child) = (service_of[i].1, &s.resource.service_name);
        if same(parent, child) {
            continue;
        }
        match calls
            .iter_mut()
            .find(|c| same(c.0, parent) && same(c.1, child))
        {
            Some(c) => c.2 += sign,
            None => calls.push((parent, child, sign)),
        }
    }
    for (parent, child, n) in calls {
        *deltas
            .entry((minute, Arc::clone(parent), Arc::clone(child)))
            .or_insert(0) += n;
    }
}

/// A trace ready to be written: its row's columns, its index terms and its
/// cross-service calls.
pub(crate) struct Prepared {
    pub start_ns: i64,
    pub duration_ns: i64,
    pub span_count: usize,
    pub error_count: usize,
    pub root_service: Option<Arc<str>>,
    pub root_name: Option<Arc<str>>,
    /// The distinct services, as a JSON array.
    pub services: String,
    /// The spans and analysis as stored (compressed when a dictionary was given).
    pub body: Vec<u8>,
    /// Bytes of the body's encoding before compression.
    pub encoded_len: usize,
    /// Each term with the duration of the longest span for service and operation terms.
    pub terms: Vec<terms::Term>,
    /// The trace's calls between services, counted once.
    pub dependencies: DependencyDeltas,
}

/// Puts `spans` in canonical order (by start, then span id) and computes what the
/// trace's row and index entries hold, its body compressed with `dictionary` if any.
pub(crate) fn prepare(
    mut spans: Cow<'_, [Span]>,
    analysis: Option<&Analysis>,
    dictionary: Option<&Dictionary>,
) -> Prepared {
    if let Cow::Owned(spans) = &mut spans {
        spans.sort_unstable_by_key(|s| (s.start_ns, s.span_id));
    }
    let spans: &[Span] = &spans;
    let summary = summarize(spans);
    let mut tags = FxHashSet::with_capacity_and_hasher(spans.len() * 4, Default::default());
    let mut buf = String::new();
    let body = codec::encode_listing(spans, analysis, &mut |key, value| {
        tags.insert(terms::value_term(key, value, &mut buf));
    });
    let mut terms = Vec::new();
    terms::collect(spans, tags, &mut terms);
    let mut dependencies = DependencyDeltas::default();
    count_dependencies(spans, summary.start_ns, 1, &mut dependencies);
    let encoded_len = body.len();
    let body = match dictionary {
        Some(d) => d.compress(body),
        None => body,
    };
    Prepared {
        start_ns: summary.start_ns,
        duration_ns: summary.duration_ns,
        span_count: spans.len(),
        error_count: summary.error_count,
        root_service: summary.root.map(|r| Arc::clone(&r.resource.service_name)),
        root_name: summary.root.map(|r| Arc::clone(&r.name)),
        services: serde_json::to_string(&summary.services).unwrap_or_default(),
        body,
        encoded_len,
        terms,
        dependencies,
    }
}
