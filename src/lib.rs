//! spanline: a stream processor for distributed-tracing data on Kafka.
//!
//! Spans come in from Kafka topics, are decoded ([`codec`]), assembled into whole traces
//! in event time ([`stage`]), and go back out to Kafka with at-least-once delivery
//! ([`kafka`], [`runner`]). Pipelines are YAML files ([`config`]).

pub mod codec;
pub mod config;
pub mod driver;
pub mod generate;
pub mod kafka;
pub mod model;
pub mod nab;
pub mod output;
pub mod registry;
pub mod replay;
pub mod repository;
pub mod runner;
pub mod serve;
pub mod sinks;
pub mod snapshots;
pub mod stage;
pub mod state;
pub mod telemetry;
#[doc(hidden)]
pub mod testkit;
pub mod workload;
