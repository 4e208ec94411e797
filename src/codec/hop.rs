//! Records of a pipeline's internal repartition topic: spans of one trace re-keyed by
//! trace id, and the progress of the input partitions they were read from (so the
//! consumers of the topic know how far every input has got, whoever wrote it).
//!
//! Layout: a magic byte, a format version, a kind byte, then Avro binary data: for
//! spans a count and that many span datums (`schemas/span.avsc`, no registry frame: the
//! topic is private to the pipeline and the schema is this build's); for progress a
//! count and that many (topic, partition, watermark, idle) entries.

use crate::model::{Interner, Span};

use super::avro::{read_span, write_span, ResourceCache};
use super::avro_bin::{self, Reader};
use super::DecodeError;

/// First byte of every record (not 0, the Confluent frame's magic byte).
pub const MAGIC: u8 = 0x68;
/// The layout version this build writes and reads.
pub const VERSION: u8 = 1;
const SPANS: u8 = 1;
const PROGRESS: u8 = 2;
const WINDOW: u8 = 3;

/// How far one input partition has got, as its reader reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub topic: String,
    pub partition: i32,
    /// The input partition's event-time watermark (its latest span end minus the allowed
    /// out-of-orderness); `i64::MIN` before it delivered anything.
    pub watermark_ns: i64,
    /// The partition delivered nothing for `idle_partition_timeout`: it does not hold
    /// watermarks back.
    pub idle: bool,
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq)]
pub enum HopRecord {
    /// Spans, all of one trace.
    Spans(Vec<Span>),
    Progress(Vec<Progress>),
    /// A partial aggregate window, as its changelog record encodes it (the aggregate
    /// repartition topic).
    Window(Vec<u8>),
}

/// Appends a record of `spans` (all of one trace) to `buf`.
pub fn write_spans(buf: &mut Vec<u8>, spans: &[Span]) {
    buf.extend_from_slice(&[MAGIC, VERSION, SPANS]);
    avro_bin::put_long(buf, spans.len() as i64);
    for span in spans {
        write_span(buf, span);
    }
}

/// Appends a progress record to `buf`.
pub fn write_progress(buf: &mut Vec<u8>, progress: &[Progress]) {
    buf.extend_from_slice(&[MAGIC, VERSION, PROGRESS]);
    avro_bin::put_long(buf, progress.len() as i64);
    for p in progress {
        avro_bin::put_str(buf, &p.topic);
        avro_bin::put_long(buf, i64::from(p.partition));
        avro_bin::put_long(buf, p.watermark_ns);
        avro_bin::put_bool(buf, p.idle);
    }
}

/// Appends a record of a partial window (its changelog encoding) to `buf`.
pub fn write_window(buf: &mut Vec<u8>, encoded: &[u8]) {
    buf.extend_from_slice(&[MAGIC, VERSION, WINDOW]);
    avro_bin::put_long(buf, encoded.len() as i64);
    buf.extend_from_slice(encoded);
}

/// Decodes one record; never panics, whatever the bytes.
pub fn read(
    record: &[u8],
    interner: &mut Interner,
    resources: &mut ResourceCache,
) -> Result<HopRecord, DecodeError> {
    let (&magic, rest) = record.split_first().ok_or(DecodeError::Empty)?;
    if magic != MAGIC {
        return Err(DecodeError::BadMagic(magic));
    }
    let [version, kind, body @ ..] = rest else {
        return Err(DecodeError::Invalid("internal record cut short".into()));
    };
    if *version != VERSION {
        return Err(DecodeError::Schema(format!(
            "internal record of version {version}; this build reads version {VERSION}"
        )));
    }
    let mut r = Reader::new(body);
    let count = r.long()?;
    // every entry takes at least one byte: a larger count is a damaged record
    let count = usize::try_from(count)
        .ok()
        .filter(|&n| n <= r.remaining())
        .ok_or_else(|| DecodeError::Invalid(format!("internal record with {count} entries")))?;
    let decoded = match *kind {
        SPANS => {
            let mut spans = Vec::with_capacity(count);
            for _ in 0..count {
                spans.push(read_span(&mut r, interner, resources)?);
            }
            if spans.windows(2).any(|w| w[0].trace_id != w[1].trace_id) {
                return Err(DecodeError::Invalid(
                    "internal span record holds several traces".into(),
                ));
            }
            HopRecord::Spans(spans)
        }
        WINDOW => {
            let bytes = r.fixed(count)?.to_vec();
            HopRecord::Window(bytes)
        }
        PROGRESS => {
            let mut progress = Vec::with_capacity(count);
            for _ in 0..count {
                let topic = r.str()?.to_string();
                let partition = i32::try_from(r.long()?)
                    .map_err(|_| DecodeError::Invalid("partition out of range".into()))?;
                let watermark_ns = r.long()?;
                let idle = r.bool()?;
                progress.push(Progress {
                    topic,
                    partition,
                    watermark_ns,
                    idle,
                });
            }
            HopRecord::Progress(progress)
        }
        other => {
            return Err(DecodeError::Invalid(format!(
                "internal record of unknown kind {other}"
            )))
        }
    };
    if r.remaining() > 0 {
        return Err(DecodeError::Invalid(format!(
            "{} bytes after the internal record",
            r.remaining()
        )));
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::testkit;

    fn decode(bytes: &[u8]) -> Result<HopRecord, DecodeError> {
        read(
            bytes,
            &mut Interner::default(),
            &mut ResourceCache::default(),
        )
    }

    #[test]
    fn spans_of_a_trace_come_back_as_written() {
        let t0 = 1_700_000_000_000_000_000;
        let spans: Vec<Span> = (0..3u64)
            .map(|i| {
                let parent = if i == 0 { 0 } else { 1 };
                let start = t0 + i as i64;
                testkit::span(7, i + 1, parent, start, start + 1_000, "checkout")
            })
            .collect();
        let mut buf = Vec::new();
        write_spans(&mut buf, &spans);
        assert_eq!(decode(&buf).unwrap(), HopRecord::Spans(spans));
    }

    #[test]
    fn progress_comes_back_as_written() {
        let progress = vec![
            Progress {
                topic: "spans".into(),
                partition: 2,
                watermark_ns: 1_700_000_000_000_000_000,
                idle: false,
            },
            Progress {
                topic: "otlp".into(),
                partition: 0,
                watermark_ns: i64::MIN,
                idle: true,
            },
        ];
        let mut buf = Vec::new();
        write_progress(&mut buf, &progress);
        assert_eq!(decode(&buf).unwrap(), HopRecord::Progress(progress));
    }

    #[test]
    fn damaged_records_are_errors_that_name_why() {
        let mut buf = Vec::new();
        write_progress(&mut buf, &[]);
        let cases: [(&[u8], &str); 6] = [
            (&[], "empty"),
            (&[0, 1, 1, 0], "bad_magic_byte"),
            (&[MAGIC], "invalid_span"),
            (&[MAGIC, 9, SPANS, 0], "schema"),
            (&[MAGIC, VERSION, 7, 0], "invalid_span"),
            (&[MAGIC, VERSION, SPANS, 200, 1], "invalid_span"),
        ];
        for (bytes, reason) in cases {
            let e = decode(bytes).expect_err("damaged");
            assert_eq!(e.reason(), reason, "{bytes:?}: {e}");
        }
        buf.push(0);
        assert!(decode(&buf)
            .unwrap_err()
            .to_string()
            .contains("bytes after"));
    }

    #[test]
    fn spans_of_two_traces_in_one_record_are_refused() {
        let mut buf = Vec::new();
        let t0 = 1_700_000_000_000_000_000;
        let one = testkit::span(1, 1, 0, t0, t0 + 5, "a");
        let two = testkit::span(2, 1, 0, t0, t0 + 5, "a");
        write_spans(&mut buf, &[one, two]);
        assert!(decode(&buf).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn arbitrary_bytes_after_the_header_never_panic(
            kind in 0u8..4,
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut bytes = vec![MAGIC, VERSION, kind];
            bytes.extend(body);
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn a_window_record_reads_back_its_bytes() {
        let mut buf = Vec::new();
        write_window(&mut buf, b"partial window");
        let mut interner = Interner::default();
        let mut resources = ResourceCache::default();
        let read = read(&buf, &mut interner, &mut resources).unwrap();
        assert_eq!(read, HopRecord::Window(b"partial window".to_vec()));
        assert!(super::read(&buf[..buf.len() - 1], &mut interner, &mut resources).is_err());
    }
}
