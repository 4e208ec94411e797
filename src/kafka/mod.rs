//! Kafka plumbing: offsets that may be committed, the consumer source, the producer sink
//! and the embedded broker.

pub mod offsets;
