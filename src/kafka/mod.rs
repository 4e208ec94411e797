//! Kafka plumbing: the consumer source, the producer sink,
//! the schema registry client and the embedded broker.

pub mod admin;
pub mod embedded;
pub mod registry_client;
pub mod sink;
pub mod source;
pub mod state;
