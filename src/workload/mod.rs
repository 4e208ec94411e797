//! A synthetic multi-agent platform that emits realistic spans: pure, deterministic for
//! a seed, with event time injected through the configuration.
//!
//! An API gateway (`api-gateway`) calls an orchestrator agent, which calls planner and
//! tool agents, which call LLM providers, a vector store, a database and a cache; a
//! document upload goes through a queue (`ingest-api` PRODUCER → `indexer-worker`
//! CONSUMER). Four root operations of different shapes and frequencies arrive as a
//! Poisson process; latencies are lognormal per endpoint, errors are rare unless a
//! [`Fault`] is injected. [`Delivery`] then reorders, delays, duplicates and corrupts the
//! spans the way real Kafka span topics do.
//!
//! It feeds `spanline demo`, `spanline generate`, the tests and the benchmarks.

mod catalog;
mod delivery;
mod endpoints;
mod fault;
mod gen;
mod ops;
mod rng;
mod topology;

#[cfg(test)]
mod tests;

use thiserror::Error;

use crate::model::Span;

use catalog::Catalog;
use fault::FaultTimeline;
use rng::Rng;
use topology::{Root, Svc, ROOTS};

pub use catalog::{ENVIRONMENT, NAMESPACE};
pub use delivery::{partition_for_trace, Delivered, Delivery, DeliveryConfig, MALFORMED_KINDS};
pub use fault::{
    parse_faults, Fault, FaultKind, FaultParseError, DEFAULT_ERROR_RATE, DEFAULT_LATENCY_FACTOR,
};
pub use topology::{root_operations, services, topology_edges};

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadConfig {
    /// Seed of every random choice: the same config generates the same spans.
    pub seed: u64,
    /// Mean rate of trace arrivals (a Poisson process in event time); a value that is
    /// not positive and finite is treated as 1.
    pub traces_per_second: f64,
    /// Event time (unix nanos) of the first trace.
    pub start_ns: i64,
    /// Faults to inject, their windows relative to `start_ns`.
    pub faults: Vec<Fault>,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            traces_per_second: 100.0,
            start_ns: 1_700_000_000_000_000_000,
            faults: Vec::new(),
        }
    }
}

/// Why a [`WorkloadConfig`] is not usable as given.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum WorkloadError {
    #[error("traces_per_second must be a positive number, got {0}")]
    BadRate(f64),
    #[error(transparent)]
    Fault(#[from] FaultParseError),
}

impl WorkloadConfig {
    /// Checks the rate and every fault (as [`Fault::validate`]).
    pub fn validate(&self) -> Result<(), WorkloadError> {
        if !(self.traces_per_second.is_finite() && self.traces_per_second > 0.0) {
            return Err(WorkloadError::BadRate(self.traces_per_second));
        }
        self.faults.iter().try_for_each(Fault::validate)?;
        Ok(())
    }
}

/// The generator: call [`Workload::generate_until`] as event time advances, or
/// [`Workload::generate_traces`] for a fixed number of traces.
///
/// Each trace's spans are returned together, children before parents (in the order
/// they end along each call chain, as an exporter emits them). Traces come in order of
/// their root's start. A consumer span can start after its trace's root has ended.
pub struct Workload {
    catalog: Catalog,
    faults: FaultTimeline,
    rng: Rng,
    scratch: Vec<u8>,
    mean_gap_ns: f64,
    next_start_ns: i64,
    traces: u64,
    root_cdf: [f64; 4],
}

impl Workload {
    /// A workload for `cfg`; faults naming an unknown service are ignored (see
    /// [`WorkloadConfig::validate`]).
    pub fn new(cfg: WorkloadConfig) -> Self {
        let rate = if cfg.traces_per_second.is_finite() && cfg.traces_per_second > 0.0 {
            cfg.traces_per_second
        } else {
            1.0
        };
        let total: f64 = ROOTS.iter().map(|r| r.2).sum();
        let mut root_cdf = [0.0; 4];
        let mut acc = 0.0;
        for (slot, r) in root_cdf.iter_mut().zip(ROOTS.iter()) {
            acc += r.2 / total;
            *slot = acc;
        }
        Self {
            catalog: Catalog::new(),
            faults: FaultTimeline::new(&cfg.faults, cfg.start_ns),
            rng: Rng::new(cfg.seed),
            scratch: Vec::with_capacity(256),
            mean_gap_ns: 1e9 / rate,
            next_start_ns: cfg.start_ns,
            traces: 0,
            root_cdf,
        }
    }

    /// Spans of every trace whose root starts before `until_ns` and was not returned
    /// yet, in trace order (each trace's spans together).
    pub fn generate_until(&mut self, until_ns: i64) -> Vec<Span> {
        let mut out = Vec::new();
        self.generate_until_into(until_ns, &mut out);
        out
    }

    /// [`Workload::generate_until`], appending to `out`; returns the traces added.
    pub fn generate_until_into(&mut self, until_ns: i64, out: &mut Vec<Span>) -> usize {
        let mut made = 0;
        while self.next_start_ns < until_ns {
            made += usize::from(self.generate_one(out));
        }
        made
    }

    /// The same, but exactly `n` more traces.
    pub fn generate_traces(&mut self, n: usize) -> Vec<Span> {
        let mut out = Vec::with_capacity(n * 24);
        self.generate_traces_into(n, &mut out);
        out
    }

    /// [`Workload::generate_traces`], appending to `out`.
    pub fn generate_traces_into(&mut self, n: usize, out: &mut Vec<Span>) {
        let mut made = 0;
        while made < n {
            made += usize::from(self.generate_one(out));
        }
    }

    /// Traces generated so far.
    pub fn traces_generated(&self) -> u64 {
        self.traces
    }

    /// Event time at which the next trace's root starts.
    pub fn next_trace_start_ns(&self) -> i64 {
        self.next_start_ns
    }

    fn gap(&mut self) -> i64 {
        self.rng.exponential(self.mean_gap_ns) as i64
    }

    /// Generates the trace arriving next; false when the gateway is down at that time
    /// (the request never reaches the platform, so there is no span to emit).
    fn generate_one(&mut self, out: &mut Vec<Span>) -> bool {
        let start = self.next_start_ns;
        if let Some(back) = self.faults.outage_end(Svc::Gateway, start) {
            // arrivals are memoryless: resume after the outage
            self.next_start_ns = back + self.gap();
            return false;
        }
        self.next_start_ns = start + self.gap();
        let u = self.rng.f64();
        let root = Root::ALL[self.root_cdf.iter().position(|&c| u < c).unwrap_or(3)];
        let trace_id = self.rng.nonzero_u128();
        let mut g = gen::Gen {
            cat: &self.catalog,
            faults: &self.faults,
            rng: &mut self.rng,
            scratch: &mut self.scratch,
            out,
            trace_id,
        };
        ops::run(&mut g, root, start);
        self.traces += 1;
        true
    }
}
