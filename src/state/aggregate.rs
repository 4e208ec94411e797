//! The aggregator's changelog records.
//!
//! Keys: `w` + window size + window start (nanoseconds, 8 bytes big-endian each) for an
//! open window, and `m` for how far windows have been emitted. Values, after the version
//! byte: a window's series (postcard encoding of [`WindowState`]); the emitted-through
//! event time (Avro long).

use crate::codec::avro_bin::{put_long, Reader};
use crate::stage::aggregate::WindowState;

use super::{versioned, StateError, VERSION};

const WINDOW: u8 = b'w';
const META: u8 = b'm';

/// What a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// An open window: (size, start).
    Window(i64, i64),
    /// How far windows have been emitted.
    ClosedThrough,
}

/// The key of an open window's record.
pub fn window_key(size_ns: i64, start_ns: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(WINDOW);
    k.extend_from_slice(&size_ns.to_be_bytes());
    k.extend_from_slice(&start_ns.to_be_bytes());
    k
}

/// The key of the emitted-through record.
pub fn closed_through_key() -> Vec<u8> {
    vec![META]
}

/// Parses a key of this store.
pub fn parse_key(key: &[u8]) -> Result<Key, StateError> {
    match key {
        [WINDOW, rest @ ..] if rest.len() == 16 => {
            let size = i64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
            let start = i64::from_be_bytes(rest[8..].try_into().expect("8 bytes"));
            Ok(Key::Window(size, start))
        }
        [META] => Ok(Key::ClosedThrough),
        _ => Err(StateError::Key(key.to_vec())),
    }
}

/// Encodes an open window.
pub fn encode_window(window: &WindowState) -> Vec<u8> {
    let buf = vec![VERSION];
    // a window state always serialises
    postcard::to_extend(window, buf).expect("serialisable window state")
}

/// Decodes an open window.
pub fn decode_window(value: &[u8]) -> Result<WindowState, StateError> {
    postcard::from_bytes(versioned(value)?).map_err(|e| StateError::Damaged(e.to_string()))
}

/// Encodes how far windows have been emitted.
pub fn encode_closed_through(ns: i64) -> Vec<u8> {
    let mut buf = vec![VERSION];
    put_long(&mut buf, ns);
    buf
}

/// Decodes how far windows have been emitted.
pub fn decode_closed_through(value: &[u8]) -> Result<i64, StateError> {
    let mut r = Reader::new(versioned(value)?);
    let ns = r.long()?;
    if r.remaining() != 0 {
        return Err(StateError::Damaged("bytes after the value".into()));
    }
    Ok(ns)
}

#[cfg(test)]
mod tests;
