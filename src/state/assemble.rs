//! The assembler's changelog records.
//!
//! Keys: `o` + trace id (16 bytes, big-endian) for an open trace, `c` + trace id for a
//! trace closed within `grace`. Values (after the version byte, Avro binary encoding):
//! - open: flags (amendment, incomplete), the input partitions its spans came from (topic,
//!   partition), then each span as its partition's index and its `schemas/span.avsc`
//!   datum, then the span ids of the closed trace it amends when that trace's own record
//!   is gone (while it is there, it holds them: rewriting them with every change of the
//!   amendment would make a long-amended trace's records grow without bound);
//! - closed: the event time it is forgotten at, then its sorted span ids.

use crate::codec::avro::{read_span, write_span, ResourceCache};
use crate::codec::avro_bin::{put_bool, put_bytes, put_long, put_str, Reader};
use crate::model::{Interner, Span, SpanId, TraceId};
use crate::stage::assemble::{ClosedTraceState, OpenTraceState};

use super::{versioned, StateError, VERSION};

const OPEN: u8 = b'o';
const CLOSED: u8 = b'c';
const WATERMARK: u8 = b'w';

/// The key of an open trace's record.
pub fn open_key(id: TraceId) -> Vec<u8> {
    key(OPEN, id)
}

/// The key of a closed trace's record.
pub fn closed_key(id: TraceId) -> Vec<u8> {
    key(CLOSED, id)
}

fn key(kind: u8, id: TraceId) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(kind);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The key of an input partition's latest event time: `w` + partition + topic.
pub fn watermark_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + topic.len());
    k.push(WATERMARK);
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(topic.as_bytes());
    k
}

/// Encodes a partition's latest event time.
pub fn encode_watermark(max_event_ns: i64) -> Vec<u8> {
    let mut buf = vec![VERSION];
    put_long(&mut buf, max_event_ns);
    buf
}

/// Decodes a partition's latest event time.
pub fn decode_watermark(value: &[u8]) -> Result<i64, StateError> {
    let mut r = Reader::new(versioned(value)?);
    let ns = r.long()?;
    done(&r)?;
    Ok(ns)
}

/// An input partition by name, as state records name them (ids are per process).
pub type PartitionName<'a> = (&'a str, i32);

/// Encodes an open trace; `name` gives each partition id's topic and partition.
pub fn encode_open<'a>(
    trace: &OpenTraceState<'_>,
    name: impl Fn(u32) -> PartitionName<'a>,
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64 + trace.spans.len() * 200);
    buf.push(VERSION);
    put_bool(&mut buf, trace.amendment);
    put_bool(&mut buf, trace.incomplete);
    let mut ids: Vec<u32> = trace.partitions.to_vec();
    ids.sort_unstable();
    ids.dedup();
    put_long(&mut buf, ids.len() as i64);
    for &id in &ids {
        let (topic, partition) = name(id);
        put_str(&mut buf, topic);
        put_long(&mut buf, i64::from(partition));
    }
    put_long(&mut buf, trace.spans.len() as i64);
    let mut datum = Vec::with_capacity(256);
    for (span, p) in trace.spans.iter().zip(trace.partitions) {
        let index = ids.binary_search(p).expect("listed above");
        put_long(&mut buf, index as i64);
        datum.clear();
        write_span(&mut datum, span);
        put_bytes(&mut buf, &datum);
    }
    let prior = trace.prior.unwrap_or_default();
    put_long(&mut buf, prior.len() as i64);
    for id in prior {
        buf.extend_from_slice(&id.to_be_bytes());
    }
    buf
}

/// An open trace read back from its record.
#[derive(Debug)]
pub struct OpenTrace {
    pub spans: Vec<Span>,
    /// The (topic, partition) of each span.
    pub partitions: Vec<(String, i32)>,
    pub prior: Option<Box<[SpanId]>>,
    pub amendment: bool,
    pub incomplete: bool,
}

/// Decodes an open trace's record.
pub fn decode_open(
    value: &[u8],
    interner: &mut Interner,
    resources: &mut ResourceCache,
) -> Result<OpenTrace, StateError> {
    let mut r = Reader::new(versioned(value)?);
    let amendment = r.bool()?;
    let incomplete = r.bool()?;
    let n = count(&mut r)?;
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        let topic = r.str()?.to_string();
        let partition = i32::try_from(r.long()?)
            .map_err(|_| StateError::Damaged("partition out of range".into()))?;
        names.push((topic, partition));
    }
    let spans_n = count(&mut r)?;
    let mut spans = Vec::with_capacity(spans_n);
    let mut partitions = Vec::with_capacity(spans_n);
    for _ in 0..spans_n {
        let index = usize::try_from(r.long()?)
            .ok()
            .filter(|i| *i < names.len())
            .ok_or_else(|| StateError::Damaged("span partition index out of range".into()))?;
        let datum = r.bytes()?;
        let span = read_span(&mut Reader::new(datum), interner, resources)?;
        spans.push(span);
        partitions.push(names[index].clone());
    }
    let prior = span_ids(&mut r)?;
    done(&r)?;
    Ok(OpenTrace {
        spans,
        partitions,
        prior: (!prior.is_empty() || amendment).then(|| prior.into_boxed_slice()),
        amendment,
        incomplete,
    })
}

/// The most span ids a closed trace's record keeps (800 kB, under Kafka's default
/// 1 MB message size): a larger trace is remembered as closed without them, so a span of
/// it read again after a restart is written as an amendment instead of dropped.
pub const MAX_CLOSED_SPAN_IDS: usize = 100_000;

/// Encodes a closed trace.
pub fn encode_closed(trace: &ClosedTraceState<'_>) -> Vec<u8> {
    let ids = if trace.span_ids.len() > MAX_CLOSED_SPAN_IDS {
        &[][..]
    } else {
        trace.span_ids
    };
    let mut buf = Vec::with_capacity(16 + ids.len() * 8);
    buf.push(VERSION);
    put_long(&mut buf, trace.expires);
    put_long(&mut buf, ids.len() as i64);
    for id in ids {
        buf.extend_from_slice(&id.to_be_bytes());
    }
    buf
}

/// Decodes a closed trace's record: (span ids, sorted; expiry).
pub fn decode_closed(value: &[u8]) -> Result<(Box<[SpanId]>, i64), StateError> {
    let mut r = Reader::new(versioned(value)?);
    let expires = r.long()?;
    let mut ids = span_ids(&mut r)?;
    done(&r)?;
    ids.sort_unstable();
    Ok((ids.into_boxed_slice(), expires))
}

/// What a key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Open(TraceId),
    Closed(TraceId),
    /// An input partition's latest event time: (topic, partition).
    Watermark(String, i32),
}

/// Parses a key of this store.
pub fn parse_key(key: &[u8]) -> Result<Key, StateError> {
    match key {
        [WATERMARK, p0, p1, p2, p3, topic @ ..] => {
            let topic = std::str::from_utf8(topic).map_err(|_| StateError::Key(key.to_vec()))?;
            let partition = i32::from_be_bytes([*p0, *p1, *p2, *p3]);
            Ok(Key::Watermark(topic.to_string(), partition))
        }
        [kind, id @ ..] if id.len() == 16 => {
            let id = TraceId::from_be_bytes(id.try_into().expect("16 bytes"));
            match *kind {
                OPEN => Ok(Key::Open(id)),
                CLOSED => Ok(Key::Closed(id)),
                _ => Err(StateError::Key(key.to_vec())),
            }
        }
        _ => Err(StateError::Key(key.to_vec())),
    }
}

fn count(r: &mut Reader<'_>) -> Result<usize, StateError> {
    let n = r.long()?;
    usize::try_from(n)
        .ok()
        .filter(|n| *n <= r.remaining())
        .ok_or_else(|| StateError::Damaged(format!("count {n} does not fit the record")))
}

fn span_ids(r: &mut Reader<'_>) -> Result<Vec<SpanId>, StateError> {
    let n = r.long()?;
    let n = usize::try_from(n)
        .ok()
        .filter(|n| n.saturating_mul(8) <= r.remaining())
        .ok_or_else(|| StateError::Damaged(format!("{n} span ids do not fit the record")))?;
    (0..n)
        .map(|_| Ok(u64::from_be_bytes(r.fixed(8)?.try_into().expect("8 bytes"))))
        .collect()
}

fn done(r: &Reader<'_>) -> Result<(), StateError> {
    if r.remaining() == 0 {
        Ok(())
    } else {
        Err(StateError::Damaged(format!(
            "{} bytes after the value",
            r.remaining()
        )))
    }
}

#[cfg(test)]
mod tests;
