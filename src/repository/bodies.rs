//! Stored trace bodies, compressed with a dictionary learnt from the repository's own
//! traces.
//!
//! A body (see `codec/`) holds its own string table: service and span names, attribute
//! keys and values, which recur from trace to trace but not within one, so compressing
//! a body alone finds little. zstd with a dictionary trained on earlier bodies finds
//! them there: bodies of the synthetic workload shrink to about a third. Disk bandwidth
//! is what bounds a large repository's store rate (every page goes through the
//! write-ahead log and then the file), so fewer bytes are also a faster store.
//!
//! A stored body is either an encoding as `codec` writes it (its version byte first;
//! bodies stored while the file had no dictionary), or [`COMPRESSED`], the dictionary's
//! id (varint) and a zstd frame of such an encoding. The first bodies a file stores are
//! kept as samples, a dictionary is trained from them and kept in the `dictionaries`
//! table (in the transaction of the batch that completed the samples), and later bodies
//! are compressed with it. When bodies stop compressing well with it (the traffic
//! changed: new services, new attributes), samples are taken again and a new
//! dictionary trained; old dictionaries stay, for the bodies that use them.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension};
use rustc_hash::FxHashMap;

use super::codec::{get_varint, put_varint};

/// First byte of a compressed body (an uncompressed one starts with the codec's
/// version, 1).
pub(crate) const COMPRESSED: u8 = 2;

/// Bodies sampled to train a dictionary.
pub(crate) const TRAINING_SAMPLES: usize = 1_000;

/// Bytes of samples that are enough whatever their number: traces of thousands of
/// spans cannot make the writer hold a thousand of them.
const TRAINING_BYTES: usize = 4 << 20;

/// Largest dictionary trained: a few hundred KB of samples hold a workload's recurring
/// strings many times over.
const DICTIONARY_BYTES: usize = 64 * 1024;

/// zstd's level: the first of its fast levels. On the synthetic workload's bodies it
/// stores as few bytes as level 1 for a tenth less CPU, and about 15 % fewer than
/// level -3 for 60 % more.
const LEVEL: i32 = -1;

/// Largest decompressed body accepted: a damaged frame cannot make a reader allocate
/// more (a trace of 10,000 spans takes a few MB).
const MAX_BODY: u64 = 256 << 20;

/// Bodies compressing to more than this many times the ratio measured right after
/// training start a new training.
const DRIFT: f64 = 1.5;

/// Encoded bytes over which the ratio is measured (a few hundred traces), so that a
/// small batch of unusual traces does not count as a change of traffic.
const WINDOW_BYTES: usize = 1 << 20;

/// Windows measured with a dictionary before it may be replaced (about 10,000 traces of
/// the synthetic workload): traffic that keeps changing cannot make the writer train
/// more often than that.
const MIN_WINDOWS: usize = 30;

/// Distinguishes dictionaries across repositories of one process (ids are per file),
/// for the compressor each thread keeps.
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's compressor, with the dictionary it last used loaded.
    static COMPRESSOR: RefCell<Option<(u64, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
}

/// A trained dictionary, as stored in the `dictionaries` table.
pub(crate) struct Dictionary {
    id: i64,
    serial: u64,
    bytes: Vec<u8>,
}

impl Dictionary {
    fn new(id: i64, bytes: Vec<u8>) -> Self {
        Self {
            id,
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            bytes,
        }
    }

    /// The stored form of the encoding `raw`: compressed, or `raw` itself when zstd
    /// fails or the frame would not be smaller.
    pub(crate) fn compress(&self, raw: Vec<u8>) -> Vec<u8> {
        let frame = COMPRESSOR.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.as_ref().map(|c| c.0) != Some(self.serial) {
                *cell = zstd::bulk::Compressor::with_dictionary(LEVEL, &self.bytes)
                    .ok()
                    .map(|c| (self.serial, c));
            }
            cell.as_mut().and_then(|(_, c)| c.compress(&raw).ok())
        });
        match frame {
            Some(frame) if frame.len() + 10 < raw.len() => {
                let mut out = Vec::with_capacity(frame.len() + 10);
                out.push(COMPRESSED);
                put_varint(&mut out, self.id as u64);
                out.extend_from_slice(&frame);
                out
            }
            _ => raw,
        }
    }
}

/// Why a stored body could not be opened.
pub(crate) type OpenError = &'static str;

/// The dictionaries of a file and what the writer does with them.
pub(crate) struct Bodies {
    /// The dictionary new bodies are compressed with (none while sampling).
    current: Option<Arc<Dictionary>>,
    /// Samples for the next dictionary, end to end, and their sizes.
    samples: Vec<u8>,
    sizes: Vec<usize>,
    /// Bodies, or bytes of them, to sample before training.
    wanted: usize,
    wanted_bytes: usize,
    /// Stored / encoded bytes of the first window compressed with `current`.
    baseline: Option<f64>,
    /// Encoded and stored bytes of the window being measured, and its length.
    window: (usize, usize),
    window_bytes: usize,
    /// Windows measured with `current`, and how many before it may be replaced.
    windows: usize,
    min_windows: usize,
    /// Decompressors by dictionary id, loaded as bodies need them.
    decoders: Mutex<FxHashMap<i64, zstd::bulk::Decompressor<'static>>>,
}

impl Bodies {
    /// The newest dictionary of `conn`'s file, for writing.
    pub(crate) fn load(conn: &Connection) -> rusqlite::Result<Self> {
        let newest = conn
            .query_row(
                "SELECT id, dict FROM dictionaries ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()?;
        let current = newest.map(|(id, bytes)| Arc::new(Dictionary::new(id, bytes)));
        Ok(Self::new(current, (TRAINING_SAMPLES, TRAINING_BYTES)))
    }

    /// For a reader: dictionaries are loaded as bodies need them.
    pub(crate) fn reader() -> Self {
        Self::new(None, (0, 0))
    }

    /// Compressing with `current`; sampling `wanted` bodies (or bytes of them) when
    /// there is none.
    fn new(current: Option<Arc<Dictionary>>, wanted: (usize, usize)) -> Self {
        Self {
            current,
            samples: Vec::new(),
            sizes: Vec::new(),
            wanted: wanted.0,
            wanted_bytes: wanted.1,
            baseline: None,
            window: (0, 0),
            window_bytes: WINDOW_BYTES,
            windows: 0,
            min_windows: MIN_WINDOWS,
            decoders: Mutex::new(FxHashMap::default()),
        }
    }

    /// Bodies (and bytes of them) to sample before a training, encoded bytes per
    /// measured window and windows before a dictionary may be replaced (tests store
    /// fewer).
    #[cfg(test)]
    pub(crate) fn set_training(
        &mut self,
        samples: (usize, usize),
        window_bytes: usize,
        windows: usize,
    ) {
        (self.wanted, self.wanted_bytes) = samples;
        self.window_bytes = window_bytes;
        self.min_windows = windows;
    }

    /// Bytes of samples held.
    #[cfg(test)]
    pub(crate) fn samples_held(&self) -> usize {
        self.samples.len()
    }

    /// The dictionary to compress the next batch with.
    pub(crate) fn current(&self) -> Option<Arc<Dictionary>> {
        self.current.clone()
    }

    /// True when the samples are enough to train on.
    fn sampled(&self) -> bool {
        self.sizes.len() >= self.wanted || self.samples.len() >= self.wanted_bytes
    }

    /// Takes a body stored uncompressed as a sample, while samples are wanted.
    pub(crate) fn sample(&mut self, raw: &[u8]) {
        if self.current.is_none() && !self.sampled() {
            self.samples.extend_from_slice(raw);
            self.sizes.push(raw.len());
        }
    }

    /// After a batch's bodies were written (`encoded` bytes stored as `stored`): trains
    /// a dictionary when the samples are complete and stores it in `conn`'s
    /// transaction. The dictionary is in use once [`Bodies::committed`] is called.
    pub(crate) fn after_batch(
        &mut self,
        conn: &Connection,
        encoded: usize,
        stored: usize,
    ) -> rusqlite::Result<Option<Dictionary>> {
        if self.current.is_some() {
            self.window.0 += encoded;
            self.window.1 += stored;
            if self.window.0 >= self.window_bytes.max(1) {
                let ratio = self.window.1 as f64 / self.window.0 as f64;
                self.window = (0, 0);
                self.windows += 1;
                let settled = self.windows >= self.min_windows;
                match self.baseline {
                    None => self.baseline = Some(ratio),
                    Some(b) if settled && ratio > b * DRIFT && ratio > 0.2 => {
                        tracing::info!(
                            ratio,
                            trained = b,
                            "trace bodies compress worse than after training; sampling for a new dictionary"
                        );
                        self.current = None;
                        self.baseline = None;
                    }
                    Some(_) => {}
                }
            }
            return Ok(None);
        }
        if self.wanted == 0 || !self.sampled() {
            return Ok(None);
        }
        let trained = zstd::dict::from_continuous(
            &self.samples,
            &self.sizes,
            DICTIONARY_BYTES.min(self.samples.len() / 4),
        );
        self.samples = Vec::new();
        self.sizes = Vec::new();
        let bytes = match trained {
            Ok(bytes) => bytes,
            Err(e) => {
                // too few distinct bytes to learn from: bodies stay uncompressed and the
                // next samples try again
                tracing::warn!(error = %e, "training a dictionary for trace bodies failed");
                return Ok(None);
            }
        };
        conn.execute("INSERT INTO dictionaries (dict) VALUES (?1)", [&bytes])?;
        Ok(Some(Dictionary::new(conn.last_insert_rowid(), bytes)))
    }

    /// The batch that stored `trained` was committed: later bodies use it.
    pub(crate) fn committed(&mut self, trained: Option<Dictionary>) {
        if let Some(d) = trained {
            self.current = Some(Arc::new(d));
            self.baseline = None;
            self.window = (0, 0);
            self.windows = 0;
        }
    }

    /// The encoding a stored body holds: the body itself, or its frame decompressed
    /// with its dictionary (read from `conn` the first time).
    pub(crate) fn open<'b>(
        &self,
        conn: &Connection,
        body: &'b [u8],
    ) -> Result<Cow<'b, [u8]>, OpenError> {
        if body.first() != Some(&COMPRESSED) {
            return Ok(Cow::Borrowed(body));
        }
        let mut pos = 1;
        let id = get_varint(body, &mut pos).map_err(|e| e.0)?;
        let id = i64::try_from(id).map_err(|_| "dictionary id out of range")?;
        let frame = &body[pos..];
        let size = zstd::zstd_safe::get_frame_content_size(frame)
            .ok()
            .flatten()
            .filter(|&n| n <= MAX_BODY)
            .ok_or("bad compressed body")?;
        let mut decoders = self
            .decoders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let d = match decoders.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let bytes: Vec<u8> = conn
                    .query_row("SELECT dict FROM dictionaries WHERE id = ?1", [id], |r| {
                        r.get(0)
                    })
                    .map_err(|e| match e {
                        rusqlite::Error::QueryReturnedNoRows => "the body's dictionary is missing",
                        _ => "the body's dictionary could not be read",
                    })?;
                e.insert(
                    zstd::bulk::Decompressor::with_dictionary(&bytes)
                        .map_err(|_| "the body's dictionary is damaged")?,
                )
            }
        };
        let raw = d
            .decompress(frame, size as usize)
            .map_err(|_| "bad compressed body")?;
        if raw.len() as u64 != size {
            return Err("bad compressed body");
        }
        Ok(Cow::Owned(raw))
    }
}
