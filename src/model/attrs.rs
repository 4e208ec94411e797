//! Span attributes and events, kept in their Avro encoding.
//!
//! A buffered span must cost little more memory than its encoded size, so attributes and
//! events stay as the bytes of the `attributes`/`events` fields of `schemas/span.avsc`
//! (one block, then the end marker) and are decoded only when read.

use crate::codec::avro_bin::{self, AvroReadError, Reader};

/// One attribute value, borrowed from the encoded attributes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttrValue<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
}

// Union branch order of `Attribute.value` in schemas/span.avsc.
const BRANCH_STRING: i64 = 0;
const BRANCH_BOOL: i64 = 1;
const BRANCH_LONG: i64 = 2;
const BRANCH_DOUBLE: i64 = 3;

fn put_value(buf: &mut Vec<u8>, value: AttrValue<'_>) {
    match value {
        AttrValue::Str(s) => {
            avro_bin::put_long(buf, BRANCH_STRING);
            avro_bin::put_str(buf, s);
        }
        AttrValue::Bool(b) => {
            avro_bin::put_long(buf, BRANCH_BOOL);
            avro_bin::put_bool(buf, b);
        }
        AttrValue::Int(i) => {
            avro_bin::put_long(buf, BRANCH_LONG);
            avro_bin::put_long(buf, i);
        }
        AttrValue::Double(d) => {
            avro_bin::put_long(buf, BRANCH_DOUBLE);
            avro_bin::put_double(buf, d);
        }
    }
}

/// One attribute value with a string as its bytes (UTF-8, checked when the attributes
/// were built or read): for consumers that only hash or copy them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RawValue<'a> {
    Str(&'a [u8]),
    Bool(bool),
    Int(i64),
    Double(f64),
}

/// An attribute as [`Attributes::iter_raw`] gives it.
#[derive(Debug, Clone, Copy)]
pub struct RawAttribute<'a> {
    /// The attribute's encoding: key, then value.
    pub encoded: &'a [u8],
    pub key: &'a [u8],
    pub value: RawValue<'a>,
}

fn read_raw_attribute<'a>(r: &mut Reader<'a>) -> Result<(&'a [u8], RawValue<'a>), AvroReadError> {
    let key = r.bytes()?;
    let value = match r.long()? {
        BRANCH_STRING => RawValue::Str(r.bytes()?),
        BRANCH_BOOL => RawValue::Bool(r.bool()?),
        BRANCH_LONG => RawValue::Int(r.long()?),
        BRANCH_DOUBLE => RawValue::Double(r.double()?),
        other => return Err(AvroReadError::BadUnion(other, "Attribute.value")),
    };
    Ok((key, value))
}

fn read_attribute<'a>(r: &mut Reader<'a>) -> Result<(&'a str, AttrValue<'a>), AvroReadError> {
    let utf8 = |b| std::str::from_utf8(b).map_err(|_| AvroReadError::BadUtf8);
    let (key, value) = read_raw_attribute(r)?;
    let value = match value {
        RawValue::Str(s) => AttrValue::Str(utf8(s)?),
        RawValue::Bool(b) => AttrValue::Bool(b),
        RawValue::Int(i) => AttrValue::Int(i),
        RawValue::Double(d) => AttrValue::Double(d),
    };
    Ok((utf8(key)?, value))
}

/// Reads an Avro array whose items `read_item` consumes, and returns its canonical
/// encoding: the input bytes when they already are one block, else a re-encoding.
fn read_array(
    r: &mut Reader<'_>,
    mut copy_item: impl FnMut(&mut Reader<'_>) -> Result<(), AvroReadError>,
) -> Result<Box<[u8]>, AvroReadError> {
    let start = r.position();
    let mut blocks = 0;
    let mut total = 0usize;
    let mut items: Vec<(usize, usize)> = Vec::new();
    loop {
        let count = r.block_count()?;
        if count == 0 {
            break;
        }
        blocks += 1;
        for _ in 0..count {
            let from = r.position();
            copy_item(r)?;
            items.push((from, r.position()));
        }
        total += count;
    }
    if blocks <= 1 && (total == 0 || first_block_positive(r, start)) {
        return Ok(canonical_box(r.slice(start, r.position())));
    }
    let mut out = Vec::with_capacity(r.position() - start);
    avro_bin::put_long(&mut out, total as i64);
    for (from, to) in items {
        out.extend_from_slice(r.slice(from, to));
    }
    out.push(0);
    Ok(canonical_box(&out))
}

/// The items of a canonical (one block) encoded array, each read by `read`.
fn items<'a, T: 'a>(
    bytes: &'a [u8],
    read: fn(&mut Reader<'a>) -> Result<T, AvroReadError>,
) -> impl Iterator<Item = T> + 'a {
    let mut r = Reader::new(bytes);
    let mut remaining = r.block_count().unwrap_or(0);
    std::iter::from_fn(move || {
        if remaining == 0 {
            return None;
        }
        remaining -= 1;
        read(&mut r).ok()
    })
}

fn first_block_positive(r: &Reader<'_>, start: usize) -> bool {
    let mut probe = Reader::new(r.slice(start, r.position()));
    matches!(probe.long(), Ok(n) if n > 0)
}

/// The encoded attributes of a span, a resource or an event.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Attributes(Box<[u8]>);

/// The encoding of an empty array; empty values keep a zero-length box (no allocation).
const EMPTY: &[u8] = &[0];

fn canonical_box(bytes: &[u8]) -> Box<[u8]> {
    if bytes == EMPTY {
        Box::default()
    } else {
        bytes.into()
    }
}

impl Attributes {
    /// Reads an `array<Attribute>` from Avro data, validating every item.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, AvroReadError> {
        read_array(r, |r| read_attribute(r).map(|_| ())).map(Self)
    }

    /// The Avro encoding (`array<Attribute>`).
    pub fn as_bytes(&self) -> &[u8] {
        if self.0.is_empty() {
            EMPTY
        } else {
            &self.0
        }
    }

    /// True when there are no attributes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The attributes in order.
    pub fn iter(&self) -> AttrIter<'_> {
        let mut r = Reader::new(self.as_bytes());
        let remaining = r.block_count().unwrap_or(0);
        AttrIter { r, remaining }
    }

    /// The attributes in order, strings as bytes: no UTF-8 check on the way (they were
    /// checked when built or read); each with its whole encoding (key and value), which
    /// is the same bytes wherever the same attribute is encoded.
    pub fn iter_raw(&self) -> impl Iterator<Item = RawAttribute<'_>> + '_ {
        items(self.as_bytes(), |r| {
            let start = r.position();
            let (key, value) = read_raw_attribute(r)?;
            let encoded = r.slice(start, r.position());
            Ok(RawAttribute {
                encoded,
                key,
                value,
            })
        })
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<AttrValue<'_>> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Bytes of heap this value holds.
    pub fn heap_size(&self) -> usize {
        self.0.len()
    }
}

impl std::fmt::Debug for Attributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Iterator over encoded attributes (validated when they were built or read).
pub struct AttrIter<'a> {
    r: Reader<'a>,
    remaining: usize,
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = (&'a str, AttrValue<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        read_attribute(&mut self.r).ok()
    }
}

/// Builds [`Attributes`] one key/value at a time.
#[derive(Default)]
pub struct AttributesBuilder {
    count: usize,
    body: Vec<u8>,
}

impl AttributesBuilder {
    /// Adds one attribute.
    pub fn push(&mut self, key: &str, value: AttrValue<'_>) -> &mut Self {
        avro_bin::put_str(&mut self.body, key);
        put_value(&mut self.body, value);
        self.count += 1;
        self
    }

    /// The finished attributes.
    pub fn build(&self) -> Attributes {
        Attributes(finish_array(self.count, &self.body))
    }
}

fn finish_array(count: usize, body: &[u8]) -> Box<[u8]> {
    let mut out = Vec::with_capacity(body.len() + 3);
    if count > 0 {
        avro_bin::put_long(&mut out, count as i64);
        out.extend_from_slice(body);
    }
    out.push(0);
    canonical_box(&out)
}

/// The encoded events of a span (`array<Event>`).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Events(Box<[u8]>);

fn read_event<'a>(r: &mut Reader<'a>) -> Result<(i64, &'a str, Attributes), AvroReadError> {
    let time = r.long()?;
    let name = r.str()?;
    let attrs = Attributes::read(r)?;
    Ok((time, name, attrs))
}

impl Events {
    /// Reads an `array<Event>` from Avro data, validating every item.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, AvroReadError> {
        read_array(r, |r| read_event(r).map(|_| ())).map(Self)
    }

    /// The Avro encoding (`array<Event>`).
    pub fn as_bytes(&self) -> &[u8] {
        if self.0.is_empty() {
            EMPTY
        } else {
            &self.0
        }
    }

    /// True when there are no events.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The events in order: time, name, attributes.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &str, Attributes)> + '_ {
        items(self.as_bytes(), read_event)
    }

    /// Bytes of heap this value holds.
    pub fn heap_size(&self) -> usize {
        self.0.len()
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Builds [`Events`].
#[derive(Default)]
pub struct EventsBuilder {
    count: usize,
    body: Vec<u8>,
}

impl EventsBuilder {
    /// Adds one event.
    pub fn push(&mut self, time_unix_nano: i64, name: &str, attributes: &Attributes) -> &mut Self {
        avro_bin::put_long(&mut self.body, time_unix_nano);
        avro_bin::put_str(&mut self.body, name);
        self.body.extend_from_slice(attributes.as_bytes());
        self.count += 1;
        self
    }

    /// The finished events.
    pub fn build(&self) -> Events {
        Events(finish_array(self.count, &self.body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Attributes {
        let mut b = AttributesBuilder::default();
        b.push("http.method", AttrValue::Str("GET"))
            .push("retry", AttrValue::Bool(true))
            .push("http.status_code", AttrValue::Int(503))
            .push("ratio", AttrValue::Double(0.25));
        b.build()
    }

    #[test]
    fn built_attributes_read_back_in_order() {
        let attrs = sample();
        let all: Vec<_> = attrs.iter().collect();
        assert_eq!(all.len(), 4);
        assert_eq!(all[0], ("http.method", AttrValue::Str("GET")));
        assert_eq!(attrs.get("http.status_code"), Some(AttrValue::Int(503)));
        assert_eq!(attrs.get("missing"), None);
        let raw: Vec<_> = attrs.iter_raw().collect();
        assert_eq!(raw.len(), 4);
        assert_eq!(
            (raw[0].key, raw[0].value),
            (&b"http.method"[..], RawValue::Str(b"GET"))
        );
        assert_eq!(
            (raw[2].key, raw[2].value),
            (&b"http.status_code"[..], RawValue::Int(503))
        );
        // each attribute's encoding: the same bytes as the attribute alone encodes to
        let mut one = AttributesBuilder::default();
        one.push("http.status_code", AttrValue::Int(503));
        let one = one.build();
        assert_eq!(
            one.iter_raw().next().map(|a| a.encoded),
            Some(raw[2].encoded)
        );
        assert_eq!(
            raw.iter().map(|a| a.encoded.len()).sum::<usize>() + 2,
            attrs.as_bytes().len()
        );
        assert!(AttributesBuilder::default().build().is_empty());
    }

    #[test]
    fn multi_block_input_is_made_canonical() {
        // two blocks of one item each, the second with a negative count and byte size
        let canonical = sample();
        let mut items = Reader::new(canonical.as_bytes());
        items.block_count().unwrap();
        let start = items.position();
        read_attribute(&mut items).unwrap();
        let first = items.slice(start, items.position()).to_vec();
        let mid = items.position();
        read_attribute(&mut items).unwrap();
        let second = items.slice(mid, items.position()).to_vec();
        let mut buf = Vec::new();
        avro_bin::put_long(&mut buf, 1);
        buf.extend_from_slice(&first);
        avro_bin::put_long(&mut buf, -1);
        avro_bin::put_long(&mut buf, second.len() as i64);
        buf.extend_from_slice(&second);
        buf.push(0);
        let attrs = Attributes::read(&mut Reader::new(&buf)).unwrap();
        assert_eq!(attrs.iter().count(), 2);
        assert_eq!(
            attrs.as_bytes()[0],
            4,
            "one block of two items, zig-zag encoded"
        );
    }

    #[test]
    fn bad_union_branch_is_an_error() {
        let mut buf = Vec::new();
        avro_bin::put_long(&mut buf, 1);
        avro_bin::put_str(&mut buf, "k");
        avro_bin::put_long(&mut buf, 9);
        buf.push(0);
        assert!(Attributes::read(&mut Reader::new(&buf)).is_err());
    }

    #[test]
    fn events_round_trip() {
        let mut b = EventsBuilder::default();
        b.push(42, "exception", &sample());
        let events = b.build();
        let read = Events::read(&mut Reader::new(events.as_bytes())).unwrap();
        let (t, name, attrs) = read.iter().next().unwrap();
        assert_eq!((t, name), (42, "exception"));
        assert_eq!(attrs, sample());
    }
}
