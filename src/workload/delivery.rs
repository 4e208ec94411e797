//! Delivery disorder: what a Kafka span topic looks like to a consumer. Pure and seeded.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::model::{Span, TraceId};

use super::rng::Rng;

/// How spans are mangled on their way through Kafka.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Partitions of the topic (0 is taken as 1).
    pub partitions: u32,
    /// Spans keyed by trace id (all of a trace in one partition); else a random
    /// partition per span.
    pub key_by_trace: bool,
    /// Spans are shuffled within consecutive chunks of this many (of one `deliver` call).
    pub shuffle_window: usize,
    /// Share of spans held back and delivered `late_delay` spans later.
    pub late_fraction: f64,
    /// How many spans later a late span is delivered.
    pub late_delay: usize,
    /// Share of spans delivered twice (the copy a few spans later).
    pub duplicate_fraction: f64,
    /// Share of delivered records that are not decodable spans.
    pub malformed_fraction: f64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            partitions: 6,
            key_by_trace: true,
            shuffle_window: 64,
            late_fraction: 0.001,
            late_delay: 20_000,
            duplicate_fraction: 0.001,
            malformed_fraction: 0.0005,
        }
    }
}

/// One record as a consumer sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivered {
    /// A span.
    Span { partition: u32, span: Span },
    /// Bytes no span decoder accepts; `kind` is one of [`MALFORMED_KINDS`].
    Malformed {
        partition: u32,
        bytes: Vec<u8>,
        kind: &'static str,
    },
}

impl Delivered {
    /// The partition the record was delivered on.
    pub fn partition(&self) -> u32 {
        match self {
            Delivered::Span { partition, .. } | Delivered::Malformed { partition, .. } => {
                *partition
            }
        }
    }
}

/// Kinds of malformed records: random bytes, a Confluent frame (magic 0, schema id)
/// cut short, a frame with a wrong magic byte, a JSON object that is not OTLP.
pub const MALFORMED_KINDS: [&str; 4] = [
    "random_bytes",
    "truncated_frame",
    "wrong_magic",
    "not_otlp_json",
];

/// The partition of a trace's spans when they are keyed by trace id: a stable hash of
/// the id (the same in every process), modulo `partitions`.
pub fn partition_for_trace(trace_id: TraceId, partitions: u32) -> u32 {
    let mut z = (trace_id as u64) ^ ((trace_id >> 64) as u64).rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % u64::from(partitions.max(1))) as u32
}

/// A held-back span and the delivery position at which it is released.
struct Held {
    release_at: u64,
    seq: u64,
    span: Span,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.release_at, self.seq) == (other.release_at, other.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    // reversed: the heap pops the earliest release first
    fn cmp(&self, other: &Self) -> Ordering {
        (other.release_at, other.seq).cmp(&(self.release_at, self.seq))
    }
}

/// Applies a [`DeliveryConfig`] to batches of spans, keeping held-back spans across
/// calls until they are due or [`Delivery::drain`] is called.
pub struct Delivery {
    cfg: DeliveryConfig,
    rng: Rng,
    /// Spans delivered so far (the clock of late and duplicate releases).
    position: u64,
    seq: u64,
    held: BinaryHeap<Held>,
    schema_id: u32,
    malformed_odds: f64,
}

impl Delivery {
    /// A delivery for `cfg`.
    pub fn new(cfg: DeliveryConfig) -> Self {
        let f = cfg.malformed_fraction.clamp(0.0, 0.99);
        Self {
            rng: Rng::new(cfg.seed ^ 0x5eed_de11_7e41_0001),
            cfg,
            position: 0,
            seq: 0,
            held: BinaryHeap::new(),
            schema_id: 1,
            malformed_odds: f / (1.0 - f),
        }
    }

    /// Sets the schema id written in truncated Confluent frames (default 1).
    pub fn with_schema_id(mut self, schema_id: u32) -> Self {
        self.schema_id = schema_id;
        self
    }

    /// Spans held back and not yet delivered.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Delivers `spans` with the configured disorder, plus held spans now due.
    pub fn deliver(&mut self, mut spans: Vec<Span>) -> Vec<Delivered> {
        let window = self.cfg.shuffle_window.max(1);
        if window > 1 {
            for chunk in spans.chunks_mut(window) {
                for i in (1..chunk.len()).rev() {
                    let j = self.rng.below(i as u64 + 1) as usize;
                    chunk.swap(i, j);
                }
            }
        }
        let mut out = Vec::with_capacity(spans.len() + spans.len() / 64);
        for span in spans {
            if self.rng.chance(self.cfg.late_fraction) {
                let at = self.position + self.cfg.late_delay as u64;
                self.hold(span, at);
                continue;
            }
            if self.rng.chance(self.cfg.duplicate_fraction) {
                let at = self.position + 1 + self.rng.below(window as u64);
                self.hold(span.clone(), at);
            }
            self.release_due(&mut out);
            self.emit(span, &mut out);
        }
        self.release_due(&mut out);
        out
    }

    /// Delivers every held span now, in release order.
    pub fn drain(&mut self) -> Vec<Delivered> {
        let mut out = Vec::with_capacity(self.held.len());
        while let Some(h) = self.held.pop() {
            self.emit(h.span, &mut out);
        }
        out
    }

    fn hold(&mut self, span: Span, release_at: u64) {
        self.seq += 1;
        self.held.push(Held {
            release_at,
            seq: self.seq,
            span,
        });
    }

    fn release_due(&mut self, out: &mut Vec<Delivered>) {
        while self
            .held
            .peek()
            .is_some_and(|h| h.release_at <= self.position)
        {
            let h = self.held.pop().expect("peeked");
            self.emit(h.span, out);
        }
    }

    fn partitions(&self) -> u32 {
        self.cfg.partitions.max(1)
    }

    fn emit(&mut self, span: Span, out: &mut Vec<Delivered>) {
        if self.rng.chance(self.malformed_odds) {
            let partition = self.rng.below(u64::from(self.partitions())) as u32;
            let (bytes, kind) = self.malformed();
            out.push(Delivered::Malformed {
                partition,
                bytes,
                kind,
            });
        }
        let partition = if self.cfg.key_by_trace {
            partition_for_trace(span.trace_id, self.partitions())
        } else {
            self.rng.below(u64::from(self.partitions())) as u32
        };
        out.push(Delivered::Span { partition, span });
        self.position += 1;
    }

    fn random_bytes(&mut self, n: usize, into: &mut Vec<u8>) {
        into.extend((0..n).map(|_| self.rng.next_u64() as u8));
    }

    fn malformed(&mut self) -> (Vec<u8>, &'static str) {
        let which = self.rng.below(MALFORMED_KINDS.len() as u64) as usize;
        let mut bytes = Vec::with_capacity(64);
        match which {
            0 => {
                // 0xff: not Confluent magic, not JSON, and wire type 7 is invalid protobuf
                bytes.push(0xff);
                let n = 7 + self.rng.below(57) as usize;
                self.random_bytes(n, &mut bytes);
            }
            1 => {
                bytes.push(0);
                bytes.extend_from_slice(&self.schema_id.to_be_bytes());
                let n = 1 + self.rng.below(6) as usize;
                self.random_bytes(n, &mut bytes);
            }
            2 => {
                // 1..=7: field number 0, so not protobuf either
                bytes.push(1 + self.rng.below(7) as u8);
                bytes.extend_from_slice(&self.schema_id.to_be_bytes());
                let n = 16 + self.rng.below(48) as usize;
                self.random_bytes(n, &mut bytes);
            }
            _ => {
                let user = self.rng.below(1_000_000);
                let json = format!(
                    r#"{{"event":"page_view","user_id":{user},"path":"/pricing","ok":true}}"#
                );
                bytes.extend_from_slice(json.as_bytes());
            }
        }
        (bytes, MALFORMED_KINDS[which])
    }
}

#[cfg(test)]
mod tests {
    use rustc_hash::FxHashMap;

    use super::*;
    use crate::workload::{Workload, WorkloadConfig};

    fn spans(n: usize) -> Vec<Span> {
        Workload::new(WorkloadConfig {
            seed: 3,
            ..WorkloadConfig::default()
        })
        .generate_traces(n)
    }

    fn counts<'a>(spans: impl Iterator<Item = &'a Span>) -> FxHashMap<(TraceId, u64), usize> {
        let mut m = FxHashMap::default();
        for s in spans {
            *m.entry((s.trace_id, s.span_id)).or_insert(0) += 1;
        }
        m
    }

    fn delivered_spans(out: &[Delivered]) -> impl Iterator<Item = &Span> {
        out.iter().filter_map(|d| match d {
            Delivered::Span { span, .. } => Some(span),
            Delivered::Malformed { .. } => None,
        })
    }

    fn messy(key_by_trace: bool) -> DeliveryConfig {
        DeliveryConfig {
            seed: 9,
            partitions: 5,
            key_by_trace,
            shuffle_window: 32,
            late_fraction: 0.01,
            late_delay: 500,
            duplicate_fraction: 0.02,
            malformed_fraction: 0.05,
        }
    }

    #[test]
    fn no_span_is_lost_and_held_spans_come_out_on_drain() {
        let input = spans(400);
        let mut d = Delivery::new(messy(false));
        let (a, b) = input.split_at(input.len() / 2);
        let mut out = d.deliver(a.to_vec());
        out.extend(d.deliver(b.to_vec()));
        assert!(d.held() > 0, "late spans near the end are still held");
        out.extend(d.drain());
        assert_eq!(d.held(), 0);
        let want = counts(input.iter());
        let got = counts(delivered_spans(&out));
        for (id, n) in &want {
            assert!(got.get(id).copied().unwrap_or(0) >= *n, "span {id:?} lost");
        }
        let extra: usize = got.values().sum::<usize>() - input.len();
        let expected = input.len() as f64 * 0.02;
        assert!(
            (extra as f64) > expected * 0.5 && (extra as f64) < expected * 1.5,
            "{extra} duplicates"
        );
        assert!(out.iter().all(|r| r.partition() < 5));
        let moved = delivered_spans(&out)
            .zip(input.iter())
            .filter(|(a, b)| a.span_id != b.span_id)
            .count();
        assert!(moved > input.len() / 2, "spans are reordered");
    }

    #[test]
    fn keyed_delivery_keeps_a_trace_in_one_partition() {
        let input = spans(300);
        let mut d = Delivery::new(messy(true));
        let mut out = d.deliver(input);
        out.extend(d.drain());
        let mut by_trace: FxHashMap<TraceId, u32> = FxHashMap::default();
        for r in &out {
            if let Delivered::Span { partition, span } = r {
                assert_eq!(
                    *by_trace.entry(span.trace_id).or_insert(*partition),
                    *partition
                );
                assert_eq!(*partition, partition_for_trace(span.trace_id, 5));
            }
        }
        let used: std::collections::BTreeSet<u32> = by_trace.values().copied().collect();
        assert_eq!(used.len(), 5, "traces spread over every partition");
    }

    #[test]
    fn malformed_fraction_is_roughly_respected_and_kinds_vary() {
        let input = spans(500);
        let mut d = Delivery::new(messy(true));
        let out = d.deliver(input);
        let bad: Vec<_> = out
            .iter()
            .filter_map(|r| match r {
                Delivered::Malformed { bytes, kind, .. } => Some((bytes, *kind)),
                _ => None,
            })
            .collect();
        let share = bad.len() as f64 / out.len() as f64;
        assert!((0.035..0.065).contains(&share), "{share}");
        for kind in MALFORMED_KINDS {
            assert!(bad.iter().any(|(_, k)| *k == kind), "{kind} never produced");
        }
        for (bytes, kind) in bad {
            match kind {
                "truncated_frame" => assert!(bytes[0] == 0 && bytes.len() <= 11),
                "wrong_magic" => assert!(bytes[0] != 0),
                "not_otlp_json" => {
                    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
                    assert!(v.is_object() && v.get("resourceSpans").is_none());
                }
                _ => assert_eq!(bytes[0], 0xff),
            }
        }
        let clean = DeliveryConfig {
            malformed_fraction: 0.0,
            late_fraction: 0.0,
            duplicate_fraction: 0.0,
            ..messy(true)
        };
        let mut d = Delivery::new(clean);
        let input = spans(50);
        let out = d.deliver(input.clone());
        assert_eq!(out.len(), input.len());
        assert!(d.drain().is_empty());
    }

    #[test]
    fn delivery_is_deterministic() {
        let input = spans(100);
        let a = Delivery::new(messy(false)).deliver(input.clone());
        let b = Delivery::new(messy(false)).deliver(input);
        assert_eq!(a, b);
    }
}
