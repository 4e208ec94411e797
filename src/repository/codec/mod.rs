//! The compact encoding of a stored trace: its spans and analysis in one blob.
//!
//! Every string (service and span names, attribute keys and values, analysis names) is
//! written once in a table at the front and referenced by index; times are varints
//! relative to the trace's start, parents are indices of earlier-listed spans where they
//! can be. A 25-span trace of the synthetic workload with its analysis takes about 120
//! bytes per span, half of it the trace's own string table (resource attributes
//! included); `bodies.rs` compresses the blob with a dictionary before it is stored.
//!
//! Layout (varints are LEB128, signed ones zig-zag):
//! `version u8, strings (n, then len+bytes each), body`, where the body is
//! `base start, resources, spans, analysis flag [, analysis]`.

mod analysis;

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::model::{
    Analysis, AttrValue, Attributes, AttributesBuilder, Events, EventsBuilder, RawValue, Resource,
    Span, SpanId, SpanKind, StatusCode, TraceId,
};

use analysis::{decode_analysis, encode_analysis};

/// Version byte of the blob encoding.
const VERSION: u8 = 1;

/// Why a blob could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError(pub &'static str);

type Decoded<T> = Result<T, DecodeError>;

pub(crate) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

pub(crate) fn put_signed(buf: &mut Vec<u8>, v: i64) {
    put_varint(buf, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_len(buf: &mut Vec<u8>, n: usize) {
    put_varint(buf, n as u64);
}

/// Reads a varint at `*pos`, advancing it.
pub(crate) fn get_varint(buf: &[u8], pos: &mut usize) -> Decoded<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or(DecodeError("truncated"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(DecodeError("varint too long"))
}

/// Reads a zig-zag varint at `*pos`, advancing it.
pub(crate) fn get_signed(buf: &[u8], pos: &mut usize) -> Decoded<i64> {
    let v = get_varint(buf, pos)?;
    Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
}

/// An attribute as the writer interned it: the key's string, the value's kind and its
/// string (or its bits).
type AttrId = (u32, u8, u64);

/// Called once per distinct attribute (key, value) by [`encode_listing`].
type EachAttribute<'f> = &'f mut dyn FnMut(&[u8], RawValue<'_>);

/// Writes a body while collecting its strings.
struct Writer<'a> {
    body: Vec<u8>,
    index: FxHashMap<&'a [u8], u32>,
    strings: Vec<&'a [u8]>,
    /// The distinct attributes of spans and resources, when the caller wants them.
    /// (Each once: an attribute is listed the first time its encoding is met.)
    attributes: Option<Vec<AttrId>>,
    /// The attributes of spans and resources written so far, by their encoding.
    seen_encoded: FxHashMap<&'a [u8], AttrId>,
    /// The strings written by [`Writer::str`], by address and length.
    by_address: FxHashMap<(usize, usize), u32>,
}

impl<'a> Writer<'a> {
    /// Writes a string: names are mostly shared (`Arc<str>`), so they are looked up by
    /// address first, and by content only the first time an address is met (what `'a`
    /// borrows cannot move or be freed while the writer lives).
    fn str(&mut self, s: &'a str) {
        let at = (s.as_ptr() as usize, s.len());
        let i = match self.by_address.get(&at) {
            Some(&i) => i,
            None => {
                let i = self.intern(s.as_bytes());
                self.by_address.insert(at, i);
                i
            }
        };
        put_varint(&mut self.body, u64::from(i));
    }

    /// A string's index in the table, added if new.
    fn intern(&mut self, s: &'a [u8]) -> u32 {
        let next = self.strings.len() as u32;
        let i = *self.index.entry(s).or_insert_with(|| next);
        if i == next {
            self.strings.push(s);
        }
        i
    }

    fn opt_str(&mut self, s: Option<&'a str>) {
        match s {
            None => self.body.push(0),
            Some(s) => {
                self.body.push(1);
                self.str(s);
            }
        }
    }

    /// Writes attributes; `listed`: they are listed for [`encode_listing`] (those of
    /// spans and resources, not of events).
    fn attrs(&mut self, attrs: &'a Attributes, listed: bool) {
        let start = self.body.len();
        self.body.push(0);
        let mut n = 0usize;
        for a in attrs.iter_raw() {
            n += 1;
            if listed {
                // an attribute met before in the trace is written as it was then, from
                // its encoding alone (and was listed then)
                if let Some(&id) = self.seen_encoded.get(a.encoded) {
                    self.put_attr(id);
                    continue;
                }
            }
            let key = self.intern(a.key);
            let (kind, bits) = match a.value {
                RawValue::Str(s) => (0, u64::from(self.intern(s))),
                RawValue::Bool(b) => (1, u64::from(b)),
                RawValue::Int(i) => (3, i as u64),
                RawValue::Double(d) => (4, d.to_bits()),
            };
            let id = (key, kind, bits);
            self.put_attr(id);
            if listed {
                self.seen_encoded.insert(a.encoded, id);
                if let Some(listing) = &mut self.attributes {
                    listing.push(id);
                }
            }
        }
        if n < 0x80 {
            self.body[start] = n as u8;
        } else {
            // the count byte was reserved; counts of 128 or more need more bytes
            let mut count = Vec::with_capacity(2);
            put_len(&mut count, n);
            self.body.splice(start..start + 1, count);
        }
    }

    /// Writes an interned attribute: its key's index, its kind, then its string's index
    /// or its bits.
    fn put_attr(&mut self, (key, kind, bits): AttrId) {
        put_varint(&mut self.body, u64::from(key));
        match kind {
            0 => {
                self.body.push(0);
                put_varint(&mut self.body, bits);
            }
            1 => self.body.push(1 + bits as u8),
            3 => {
                self.body.push(3);
                put_signed(&mut self.body, bits as i64);
            }
            _ => {
                self.body.push(4);
                self.body.extend_from_slice(&bits.to_le_bytes());
            }
        }
    }

    fn finish(self) -> Vec<u8> {
        let table: usize = self.strings.iter().map(|s| s.len() + 2).sum();
        let mut out = Vec::with_capacity(1 + 4 + table + self.body.len());
        out.push(VERSION);
        put_len(&mut out, self.strings.len());
        for s in &self.strings {
            put_len(&mut out, s.len());
            out.extend_from_slice(s);
        }
        out.extend_from_slice(&self.body);
        out
    }
}

/// Encodes spans (in their given order) and an analysis into one blob.
#[cfg(test)]
pub(crate) fn encode(spans: &[Span], analysis: Option<&Analysis>) -> Vec<u8> {
    encode_with(spans, analysis, None)
}

/// [`encode`], also calling `each_attribute` once per distinct attribute (key and
/// value) of the spans and their resources, not their events: the encoder has read and
/// interned them already, so the index terms need not read them again.
pub(crate) fn encode_listing(
    spans: &[Span],
    analysis: Option<&Analysis>,
    each_attribute: EachAttribute<'_>,
) -> Vec<u8> {
    encode_with(spans, analysis, Some(each_attribute))
}

fn encode_with(
    spans: &[Span],
    analysis: Option<&Analysis>,
    each_attribute: Option<EachAttribute<'_>>,
) -> Vec<u8> {
    // event attributes are decoded copies: they must outlive the writer's string index
    let events: Vec<Vec<(i64, &str, Attributes)>> =
        spans.iter().map(|s| s.events.iter().collect()).collect();
    let mut w = Writer {
        body: Vec::with_capacity(48 * spans.len() + 64),
        index: FxHashMap::with_capacity_and_hasher(128, Default::default()),
        strings: Vec::with_capacity(128),
        attributes: each_attribute
            .is_some()
            .then(|| Vec::with_capacity(spans.len() * 4)),
        seen_encoded: FxHashMap::with_capacity_and_hasher(spans.len() * 8, Default::default()),
        by_address: FxHashMap::with_capacity_and_hasher(64, Default::default()),
    };
    let base = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    put_signed(&mut w.body, base);

    let mut resources: Vec<&Arc<Resource>> = Vec::new();
    let mut resource_of = Vec::with_capacity(spans.len());
    for s in spans {
        let found = resources
            .iter()
            .position(|r| Arc::ptr_eq(r, &s.resource) || **r == s.resource);
        resource_of.push(found.unwrap_or_else(|| {
            resources.push(&s.resource);
            resources.len() - 1
        }));
    }
    put_len(&mut w.body, resources.len());
    for r in &resources {
        w.str(&r.service_name);
        w.attrs(&r.attributes, true);
    }

    let mut position: FxHashMap<SpanId, usize> = FxHashMap::default();
    position.reserve(spans.len());
    put_len(&mut w.body, spans.len());
    for (i, (s, &res)) in spans.iter().zip(&resource_of).enumerate() {
        w.body.extend_from_slice(&s.span_id.to_le_bytes());
        match position.get(&s.parent_span_id) {
            _ if s.parent_span_id == 0 => w.body.push(0),
            Some(&p) => put_len(&mut w.body, p + 2),
            None => {
                w.body.push(1);
                w.body.extend_from_slice(&s.parent_span_id.to_le_bytes());
            }
        }
        position.entry(s.span_id).or_insert(i);
        put_signed(&mut w.body, s.start_ns.wrapping_sub(base));
        put_signed(&mut w.body, s.end_ns.wrapping_sub(s.start_ns));
        w.str(&s.name);
        w.body.push(s.kind as u8 | ((s.status as u8) << 4));
        w.opt_str(s.status_message.as_deref());
        put_len(&mut w.body, res);
        w.attrs(&s.attributes, true);
        put_len(&mut w.body, events[i].len());
        for (time, name, attrs) in &events[i] {
            put_signed(&mut w.body, time.wrapping_sub(s.start_ns));
            w.str(name);
            w.attrs(attrs, false);
        }
    }
    match analysis {
        None => w.body.push(0),
        Some(a) => {
            w.body.push(1);
            encode_analysis(&mut w, a);
        }
    }
    if let (Some(each), Some(seen)) = (each_attribute, &w.attributes) {
        for &(key, kind, bits) in seen {
            let value = match kind {
                0 => RawValue::Str(w.strings[bits as usize]),
                1 => RawValue::Bool(bits != 0),
                3 => RawValue::Int(bits as i64),
                _ => RawValue::Double(f64::from_bits(bits)),
            };
            each(w.strings[key as usize], value);
        }
    }
    w.finish()
}

/// Reads a blob written by [`encode`].
struct Reader<'b> {
    buf: &'b [u8],
    pos: usize,
    strings: Vec<Arc<str>>,
}

impl<'b> Reader<'b> {
    fn u8(&mut self) -> Decoded<u8> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Decoded<u64> {
        get_varint(self.buf, &mut self.pos)
    }

    fn signed(&mut self) -> Decoded<i64> {
        get_signed(self.buf, &mut self.pos)
    }

    /// A count, bounded by the bytes left so that damage cannot allocate wildly.
    fn len(&mut self) -> Decoded<usize> {
        let n = self.varint()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.buf.len() - self.pos)
            .ok_or(DecodeError("count exceeds the record"))
    }

    fn bytes(&mut self, n: usize) -> Decoded<&'b [u8]> {
        let buf: &'b [u8] = self.buf;
        let end = self.pos.checked_add(n).ok_or(DecodeError("truncated"))?;
        let b = buf.get(self.pos..end).ok_or(DecodeError("truncated"))?;
        self.pos = end;
        Ok(b)
    }

    fn u64(&mut self) -> Decoded<u64> {
        let b = self.bytes(8)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }

    fn f64(&mut self) -> Decoded<f64> {
        self.u64().map(f64::from_bits)
    }

    fn str(&mut self) -> Decoded<Arc<str>> {
        let i = self.varint()?;
        usize::try_from(i)
            .ok()
            .and_then(|i| self.strings.get(i))
            .cloned()
            .ok_or(DecodeError("string index out of range"))
    }

    fn opt_str(&mut self) -> Decoded<Option<Arc<str>>> {
        match self.u8()? {
            0 => Ok(None),
            _ => self.str().map(Some),
        }
    }

    fn attrs(&mut self) -> Decoded<Attributes> {
        let n = self.len()?;
        let mut b = AttributesBuilder::default();
        for _ in 0..n {
            let key = self.str()?;
            match self.u8()? {
                0 => {
                    let v = self.str()?;
                    b.push(&key, AttrValue::Str(&v));
                }
                1 => {
                    b.push(&key, AttrValue::Bool(false));
                }
                2 => {
                    b.push(&key, AttrValue::Bool(true));
                }
                3 => {
                    let v = self.signed()?;
                    b.push(&key, AttrValue::Int(v));
                }
                4 => {
                    let v = self.f64()?;
                    b.push(&key, AttrValue::Double(v));
                }
                _ => return Err(DecodeError("bad attribute type")),
            }
        }
        Ok(b.build())
    }
}

/// Decodes a blob written by [`encode`] into the spans of `trace_id` and the analysis.
pub(crate) fn decode(trace_id: TraceId, blob: &[u8]) -> Decoded<(Vec<Span>, Option<Analysis>)> {
    let mut r = Reader {
        buf: blob,
        pos: 0,
        strings: Vec::new(),
    };
    if r.u8()? != VERSION {
        return Err(DecodeError("unknown encoding version"));
    }
    let n = r.len()?;
    r.strings.reserve(n);
    for _ in 0..n {
        let len = r.len()?;
        let s = std::str::from_utf8(r.bytes(len)?).map_err(|_| DecodeError("bad utf-8"))?;
        r.strings.push(Arc::from(s));
    }
    let base = r.signed()?;
    let n = r.len()?;
    let mut resources = Vec::with_capacity(n);
    for _ in 0..n {
        let service_name = r.str()?;
        let attributes = r.attrs()?;
        resources.push(Arc::new(Resource {
            service_name,
            attributes,
        }));
    }
    let n = r.len()?;
    let mut spans: Vec<Span> = Vec::with_capacity(n);
    for _ in 0..n {
        let span_id = r.u64()?;
        let parent_span_id = match r.varint()? {
            0 => 0,
            1 => r.u64()?,
            p => usize::try_from(p - 2)
                .ok()
                .and_then(|p| spans.get(p))
                .map(|p| p.span_id)
                .ok_or(DecodeError("parent index out of range"))?,
        };
        let start_ns = base.wrapping_add(r.signed()?);
        let end_ns = start_ns.wrapping_add(r.signed()?);
        let name = r.str()?;
        let ks = r.u8()?;
        let kind = SpanKind::from_index(i64::from(ks & 0x0f)).ok_or(DecodeError("bad kind"))?;
        let status = StatusCode::from_index(i64::from(ks >> 4)).ok_or(DecodeError("bad status"))?;
        let status_message = r.opt_str()?.map(|m| Box::from(&*m));
        let resource = usize::try_from(r.varint()?)
            .ok()
            .and_then(|i| resources.get(i))
            .cloned()
            .ok_or(DecodeError("resource index out of range"))?;
        let attributes = r.attrs()?;
        let events = match r.len()? {
            0 => Events::default(),
            k => {
                let mut b = EventsBuilder::default();
                for _ in 0..k {
                    let time = start_ns.wrapping_add(r.signed()?);
                    let name = r.str()?;
                    let attrs = r.attrs()?;
                    b.push(time, &name, &attrs);
                }
                b.build()
            }
        };
        spans.push(Span {
            trace_id,
            span_id,
            parent_span_id,
            start_ns,
            end_ns,
            name,
            kind,
            status,
            status_message,
            resource,
            attributes,
            events,
        });
    }
    let analysis = match r.u8()? {
        0 => None,
        _ => Some(decode_analysis(&mut r)?),
    };
    if r.pos != blob.len() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok((spans, analysis))
}
