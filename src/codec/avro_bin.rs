//! Avro binary encoding primitives (zig-zag varints, length-prefixed bytes, blocks).
//!
//! The hot paths (span decode, trace encode) use these directly instead of building
//! `apache_avro::Value` trees; tests check every byte against `apache-avro`.

use thiserror::Error;

/// Why Avro bytes could not be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AvroReadError {
    #[error("avro data ends early")]
    Truncated,
    #[error("avro varint is longer than 10 bytes")]
    BadVarint,
    #[error("avro length {0} is negative or too large")]
    BadLength(i64),
    #[error("avro string is not utf-8")]
    BadUtf8,
    #[error("avro union index {0} is out of range for {1}")]
    BadUnion(i64, &'static str),
    #[error("avro enum index {0} is out of range for {1}")]
    BadEnum(i64, &'static str),
    #[error("{0}")]
    Invalid(&'static str),
}

/// Appends `v` as a zig-zag varint.
#[inline]
pub fn put_long(buf: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        buf.push((n as u8) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

/// Appends length-prefixed bytes.
#[inline]
pub fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_long(buf, b.len() as i64);
    buf.extend_from_slice(b);
}

/// Appends a length-prefixed UTF-8 string.
#[inline]
pub fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_bytes(buf, s.as_bytes());
}

/// Appends a boolean.
#[inline]
pub fn put_bool(buf: &mut Vec<u8>, b: bool) {
    buf.push(b as u8);
}

/// Appends a double (8 bytes, little endian).
#[inline]
pub fn put_double(buf: &mut Vec<u8>, d: f64) {
    buf.extend_from_slice(&d.to_le_bytes());
}

/// A cursor over Avro binary data.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The bytes between two positions of this reader.
    pub fn slice(&self, from: usize, to: usize) -> &'a [u8] {
        &self.buf[from..to]
    }

    /// Reads a zig-zag varint.
    #[inline(always)]
    pub fn long(&mut self) -> Result<i64, AvroReadError> {
        // most are one byte: lengths, union branches, small numbers
        match self.buf.get(self.pos) {
            Some(&byte) if byte < 0x80 => {
                self.pos += 1;
                let n = u64::from(byte);
                Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
            }
            _ => self.long_multibyte(),
        }
    }

    /// [`Reader::long`] of a varint longer than one byte (or at the end of the input).
    #[inline(never)]
    fn long_multibyte(&mut self) -> Result<i64, AvroReadError> {
        let mut n: u64 = 0;
        let mut shift = 0;
        loop {
            let byte = *self.buf.get(self.pos).ok_or(AvroReadError::Truncated)?;
            self.pos += 1;
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(((n >> 1) as i64) ^ -((n & 1) as i64));
            }
            shift += 7;
            if shift > 63 {
                return Err(AvroReadError::BadVarint);
            }
        }
    }

    /// Reads an `int` or `long` that must fit a non-negative length.
    #[inline]
    fn len(&mut self) -> Result<usize, AvroReadError> {
        let n = self.long()?;
        if n < 0 || n as usize > self.remaining() {
            return Err(if n < 0 {
                AvroReadError::BadLength(n)
            } else {
                AvroReadError::Truncated
            });
        }
        Ok(n as usize)
    }

    /// Reads `n` raw bytes (a `fixed`).
    #[inline]
    pub fn fixed(&mut self, n: usize) -> Result<&'a [u8], AvroReadError> {
        if self.remaining() < n {
            return Err(AvroReadError::Truncated);
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Reads length-prefixed bytes.
    #[inline]
    pub fn bytes(&mut self) -> Result<&'a [u8], AvroReadError> {
        let n = self.len()?;
        self.fixed(n)
    }

    /// Reads a length-prefixed UTF-8 string.
    #[inline]
    pub fn str(&mut self) -> Result<&'a str, AvroReadError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| AvroReadError::BadUtf8)
    }

    /// Reads a boolean.
    #[inline]
    pub fn bool(&mut self) -> Result<bool, AvroReadError> {
        match self.fixed(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(AvroReadError::Invalid("avro boolean is neither 0 nor 1")),
        }
    }

    /// Reads a double.
    #[inline]
    pub fn double(&mut self) -> Result<f64, AvroReadError> {
        let b = self.fixed(8)?;
        Ok(f64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// Reads the item count of the next array or map block; a negative count is followed
    /// by the block's byte size, which is skipped. Returns 0 at the end of the array.
    #[inline]
    pub fn block_count(&mut self) -> Result<usize, AvroReadError> {
        let n = self.long()?;
        if n < 0 {
            self.long()?;
            return n
                .checked_neg()
                .map(|c| c as usize)
                .ok_or(AvroReadError::BadLength(n));
        }
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longs_round_trip_including_extremes() {
        for v in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i64::MAX,
            i64::MIN,
            1_700_000_000_000_000_000,
        ] {
            let mut buf = Vec::new();
            put_long(&mut buf, v);
            let mut r = Reader::new(&buf);
            assert_eq!(r.long().unwrap(), v);
            assert_eq!(r.remaining(), 0);
        }
    }

    #[test]
    fn encoding_matches_apache_avro() {
        use apache_avro::{types::Value, Schema};
        let schema = Schema::parse_str(r#""long""#).unwrap();
        for v in [0i64, -1, 12345678901] {
            let mut ours = Vec::new();
            put_long(&mut ours, v);
            assert_eq!(
                ours,
                crate::codec::avro::write_value(&schema, Value::Long(v)).unwrap()
            );
        }
        let schema = Schema::parse_str(r#""string""#).unwrap();
        let mut ours = Vec::new();
        put_str(&mut ours, "héllo");
        assert_eq!(
            ours,
            crate::codec::avro::write_value(&schema, Value::String("héllo".into())).unwrap()
        );
    }

    #[test]
    fn truncated_and_oversized_lengths_are_errors_not_panics() {
        let mut buf = Vec::new();
        put_long(&mut buf, 10);
        buf.extend_from_slice(b"abc");
        assert_eq!(Reader::new(&buf).bytes(), Err(AvroReadError::Truncated));
        let mut buf = Vec::new();
        put_long(&mut buf, -5);
        assert!(matches!(
            Reader::new(&buf).bytes(),
            Err(AvroReadError::BadLength(-5))
        ));
        assert_eq!(
            Reader::new(&[0xff; 11]).long(),
            Err(AvroReadError::BadVarint)
        );
    }
}
