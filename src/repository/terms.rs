//! The search terms of a trace and their stable 64-bit hashes (the `terms.term` column).
//!
//! The hash is part of the file format: a multiply-rotate over a kind byte and the
//! length-prefixed parts, eight bytes at a time, then the splitmix64 finaliser; it must
//! never change within a schema version.

use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::model::{RawValue, Span, SpanKind, StatusCode};

fn hash(kind: u8, parts: &[&[u8]]) -> i64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = u64::from(kind).wrapping_mul(K);
    let mut mix = |word: u64| h = (h.rotate_left(23) ^ word).wrapping_mul(K);
    for p in parts {
        mix(p.len() as u64);
        let mut chunks = p.chunks_exact(8);
        for c in &mut chunks {
            mix(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            mix(u64::from_le_bytes(last));
        }
    }
    let mut z = h;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as i64
}

/// The term of every trace with a span of `service`.
pub(crate) fn service_term(service: &str) -> i64 {
    hash(b's', &[service.as_bytes()])
}

/// The term of every trace with a span named `operation` in `service`.
pub(crate) fn operation_term(service: &str, operation: &str) -> i64 {
    hash(b'o', &[service.as_bytes(), operation.as_bytes()])
}

/// The term of every trace with a span or resource attribute `key` whose value reads
/// `value` (booleans `true`/`false`, integers in decimal, doubles as Rust prints them).
pub(crate) fn tag_term(key: &str, value: &str) -> i64 {
    hash(b't', &[key.as_bytes(), value.as_bytes()])
}

/// The term of an attribute as the encoding holds it (`buf` is scratch space).
pub(crate) fn value_term(key: &[u8], value: RawValue<'_>, buf: &mut String) -> i64 {
    use std::fmt::Write as _;
    let text: &[u8] = match value {
        RawValue::Str(s) => s,
        RawValue::Bool(b) => {
            if b {
                b"true"
            } else {
                b"false"
            }
        }
        RawValue::Int(i) => {
            buf.clear();
            buf.push_str(itoa::Buffer::new().format(i));
            buf.as_bytes()
        }
        RawValue::Double(d) => {
            buf.clear();
            let _ = write!(buf, "{d}");
            buf.as_bytes()
        }
    };
    hash(b't', &[key, text])
}

/// The lowercase span kind, as Jaeger's `span.kind` tag.
pub(crate) fn kind_tag(kind: SpanKind) -> Option<&'static str> {
    match kind {
        SpanKind::Unspecified => None,
        SpanKind::Internal => Some("internal"),
        SpanKind::Server => Some("server"),
        SpanKind::Client => Some("client"),
        SpanKind::Producer => Some("producer"),
        SpanKind::Consumer => Some("consumer"),
    }
}

/// One term of a trace: its hash and, for service and operation terms, the duration of
/// the trace's longest span with it.
pub(crate) type Term = (i64, Option<i64>);

/// Collects the terms of a trace into `terms`, without repeats: each
/// service and each (service, span name) with the duration of its longest span, and
/// each tag (with `None`). Tags are the span attributes, the resource attributes,
/// `error=true` for a span with status ERROR and `span.kind` (as Jaeger shows them);
/// `tags` holds the terms of the attributes already ([`value_term`] of each, as the
/// encoder lists them).
pub(crate) fn collect(spans: &[Span], mut tags: FxHashSet<i64>, terms: &mut Vec<Term>) {
    terms.clear();
    // a trace has few distinct operations and kinds: gathered first, hashed once
    let mut operations: Vec<(&str, &Arc<str>, i64)> = Vec::new();
    let mut kinds = 0u8;
    let mut error = false;
    for s in spans {
        let dur = (s.end_ns - s.start_ns).max(0);
        let op = operations
            .iter_mut()
            .find(|o| Arc::ptr_eq(o.1, &s.name) && o.0 == s.service());
        match op {
            Some(o) => o.2 = o.2.max(dur),
            None => operations.push((s.service(), &s.name, dur)),
        }
        error |= s.status == StatusCode::Error;
        kinds |= 1 << (s.kind as u8);
    }
    if error {
        tags.insert(tag_term("error", "true"));
    }
    for kind in SpanKind::ALL {
        if kinds & (1 << (kind as u8)) != 0 {
            if let Some(tag) = kind_tag(kind) {
                tags.insert(tag_term("span.kind", tag));
            }
        }
    }
    // operations of one name may be different `Arc`s: equal terms merge here
    let mut timed: FxHashMap<i64, i64> = FxHashMap::default();
    for (service, name, dur) in operations {
        for term in [service_term(service), operation_term(service, name)] {
            let e = timed.entry(term).or_insert(dur);
            *e = (*e).max(dur);
        }
    }
    terms.reserve(tags.len() + timed.len());
    terms.extend(
        tags.into_iter()
            .filter(|t| !timed.contains_key(t))
            .map(|t| (t, None)),
    );
    terms.extend(timed.into_iter().map(|(t, d)| (t, Some(d))));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_of_different_kinds_and_splits_differ() {
        assert_ne!(service_term("ab"), tag_term("ab", ""));
        assert_ne!(operation_term("a", "bc"), operation_term("ab", "c"));
        assert_ne!(tag_term("k", "v1"), tag_term("k", "v2"));
        // the format: a fixed value pins the hash across releases
        assert_eq!(service_term("checkout"), 3_095_528_466_851_187_632);
        let mut buf = String::new();
        assert_eq!(
            value_term(b"http.status_code", RawValue::Int(503), &mut buf),
            tag_term("http.status_code", "503")
        );
        assert_eq!(
            value_term(b"retry", RawValue::Bool(true), &mut buf),
            tag_term("retry", "true")
        );
    }
}
