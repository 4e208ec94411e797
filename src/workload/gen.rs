//! The span-building primitives the operations are written in: calls (CLIENT + SERVER
//! pair, with faults and retries), local steps (INTERNAL), and the queue hop
//! (PRODUCER → CONSUMER).
//!
//! Spans are pushed when they end, so a trace's children come before their parents, as
//! an exporter would send them.

use std::sync::Arc;

use crate::model::{
    AttrValue, Attributes, Events, EventsBuilder, Span, SpanId, SpanKind, StatusCode, TraceId,
};

use super::catalog::{Catalog, Target};
use super::fault::FaultTimeline;
use super::rng::Rng;
use super::topology::{Ep, Local, Svc};

/// A step failed; the failure is already recorded on the spans it went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failed;

/// The result of a piece of work inside a span.
pub(crate) type Step = Result<(), Failed>;

/// Where work happens: the service (instance), the span new spans hang under, and the
/// current event time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame {
    pub svc: Svc,
    pub inst: u8,
    pub parent: SpanId,
    pub t: i64,
}

/// Probability that a caller retries a failed idempotent call.
const RETRY_PROBABILITY: f64 = 0.8;
/// Median backoff before the retry (ms).
const RETRY_BACKOFF_MS: f64 = 40.0;
/// Median time for a call to a dead service to fail (ms).
const CONNECT_FAIL_MS: f64 = 1.5;
/// Median queue lag between produce and consume (ms).
const QUEUE_LAG_MS: f64 = 35.0;

/// How a served span ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// The span's own service failed.
    Own,
    /// A call it made failed.
    Downstream,
}

/// Identity and timing of a span about to be pushed.
struct Head {
    id: SpanId,
    parent: SpanId,
    start: i64,
    end: i64,
    kind: SpanKind,
    error: Option<&'static str>,
}

/// Builds the spans of one trace into `out`.
pub(crate) struct Gen<'a> {
    pub cat: &'a Catalog,
    pub faults: &'a FaultTimeline,
    pub rng: &'a mut Rng,
    pub scratch: &'a mut Vec<u8>,
    pub out: &'a mut Vec<Span>,
    pub trace_id: TraceId,
}

#[inline]
fn ns(ms: f64) -> i64 {
    (ms * 1e6) as i64
}

impl<'a> Gen<'a> {
    /// Advances `f` by the service's own processing time.
    #[inline]
    pub(crate) fn work(&mut self, f: &mut Frame, median_ms: f64, sigma: f64) {
        f.t += ns(self.rng.lognormal(median_ms, sigma));
    }

    /// Picks which instance of `svc` handles a request.
    pub(crate) fn instance(&mut self, svc: Svc) -> u8 {
        match svc.def().instances {
            0 | 1 => 0,
            n => self.rng.below(u64::from(n)) as u8,
        }
    }

    /// A uniform choice in `0..n`.
    #[inline]
    pub(crate) fn pick(&mut self, n: u64) -> u64 {
        self.rng.below(n)
    }

    /// True with probability `p`.
    #[inline]
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.rng.chance(p)
    }

    /// Lognormal sample (for token counts and the like).
    #[inline]
    pub(crate) fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        self.rng.lognormal(median, sigma)
    }

    fn push(
        &mut self,
        f: &Frame,
        h: Head,
        name: &Arc<str>,
        attributes: Attributes,
        events: Events,
    ) {
        self.out.push(Span {
            trace_id: self.trace_id,
            span_id: h.id,
            parent_span_id: h.parent,
            start_ns: h.start,
            end_ns: h.end,
            name: name.clone(),
            kind: h.kind,
            status: if h.error.is_some() {
                StatusCode::Error
            } else {
                StatusCode::Unset
            },
            status_message: h.error.map(Box::from),
            resource: self.cat.resources[f.svc as usize][f.inst as usize].clone(),
            attributes,
            events,
        });
    }

    /// An INTERNAL span around `body`.
    pub(crate) fn local(
        &mut self,
        f: &mut Frame,
        which: Local,
        mut body: impl FnMut(&mut Self, &mut Frame) -> Step,
    ) -> Step {
        let cat = self.cat;
        let id = self.rng.nonzero_u64();
        let start = f.t;
        let mut inner = Frame { parent: id, ..*f };
        let res = body(self, &mut inner);
        let (name, tmpl) = &cat.locals[which as usize];
        let attrs = tmpl.encode(self.scratch, &[]);
        let error = res.is_err().then_some("step failed");
        let head = Head {
            id,
            parent: f.parent,
            start,
            end: inner.t,
            kind: SpanKind::Internal,
            error,
        };
        self.push(f, head, name, attrs, Events::default());
        f.t = inner.t;
        res
    }

    /// A call from `f`'s service to `ep`: a CLIENT span in the caller and, unless the
    /// callee is down, a SERVER span in the callee running `body` after its own work.
    /// Idempotent endpoints are retried once (most of the time) after a failure.
    pub(crate) fn call(
        &mut self,
        f: &mut Frame,
        ep: Ep,
        extra: &[(&'static str, AttrValue<'static>)],
        mut body: impl FnMut(&mut Self, &mut Frame) -> Step,
    ) -> Step {
        let first = self.attempt(f, ep, extra, 0, &mut body);
        if first.is_ok() || !ep.def().retryable || !self.rng.chance(RETRY_PROBABILITY) {
            return first;
        }
        self.work(f, RETRY_BACKOFF_MS, 0.3);
        self.attempt(f, ep, extra, 1, &mut body)
    }

    fn attempt<B: FnMut(&mut Self, &mut Frame) -> Step>(
        &mut self,
        f: &mut Frame,
        ep: Ep,
        extra: &[(&'static str, AttrValue<'static>)],
        resend: i64,
        body: &mut B,
    ) -> Step {
        let cat = self.cat;
        let def = ep.def();
        let client = &cat.clients[ep as usize];
        let id = self.rng.nonzero_u64();
        let start = f.t;
        let mut more: [(&str, AttrValue<'_>); 8] = [("", AttrValue::Int(0)); 8];
        let mut n = 0;
        for e in extra.iter().take(5) {
            more[n] = *e;
            n += 1;
        }
        if resend > 0 {
            more[n] = ("http.request.resend_count", AttrValue::Int(resend));
            n += 1;
        }
        let (end, outcome, error) = if self.faults.is_down(def.callee, start) {
            more[n] = ("error.type", AttrValue::Str("connection_refused"));
            n += 1;
            (
                start + ns(self.rng.lognormal(CONNECT_FAIL_MS, 0.4)),
                Outcome::Own,
                Some("connection refused"),
            )
        } else {
            let rtt = ns(self.rng.lognormal(def.rtt_ms, 0.5));
            let inst = self.instance(def.callee);
            let mut sf = Frame {
                svc: def.callee,
                inst,
                parent: id,
                t: start + rtt / 2,
            };
            let outcome = self.serve(&mut sf, Target::Ep(ep), SpanKind::Server, body);
            let served = cat.served(Target::Ep(ep));
            if client.http {
                more[n] = (
                    "http.response.status_code",
                    AttrValue::Int(status_code(outcome, served.error_status)),
                );
                n += 1;
            }
            let error = match outcome {
                Outcome::Ok => None,
                Outcome::Own => Some(served.error_message),
                Outcome::Downstream => Some("bad gateway"),
            };
            if let Some(t) = error_type(outcome, served.error_type) {
                more[n] = ("error.type", AttrValue::Str(t));
                n += 1;
            }
            (sf.t + (rtt - rtt / 2), outcome, error)
        };
        let attrs = client.attrs.encode(self.scratch, &more[..n]);
        let head = Head {
            id,
            parent: f.parent,
            start,
            end,
            kind: SpanKind::Client,
            error,
        };
        self.push(f, head, &client.name, attrs, Events::default());
        f.t = end;
        if outcome == Outcome::Ok {
            Ok(())
        } else {
            Err(Failed)
        }
    }

    /// A SERVER (or CONSUMER) span of `f`'s service under `f.parent`: the service's own
    /// work, then `body`, with the service's faults applied by the span's start time.
    fn serve<B: FnMut(&mut Self, &mut Frame) -> Step>(
        &mut self,
        f: &mut Frame,
        target: Target,
        kind: SpanKind,
        body: &mut B,
    ) -> Outcome {
        let cat = self.cat;
        let def = cat.served(target);
        let id = self.rng.nonzero_u64();
        let start = f.t;
        let rate = def.natural_error.max(self.faults.error_rate(f.svc, start));
        let mut inner = Frame { parent: id, ..*f };
        let outcome = if self.rng.chance(rate) {
            self.work(&mut inner, def.fail_ms, 0.5);
            Outcome::Own
        } else {
            self.work(&mut inner, def.work_ms.0, def.work_ms.1);
            match body(self, &mut inner) {
                Ok(()) => Outcome::Ok,
                Err(Failed) => Outcome::Downstream,
            }
        };
        let factor = self.faults.latency_factor(f.svc, start);
        let end = if factor == 1.0 {
            inner.t
        } else {
            start + ((inner.t - start) as f64 * factor) as i64
        };
        let mut more: [(&str, AttrValue<'_>); 2] = [("", AttrValue::Int(0)); 2];
        let mut n = 0;
        if def.http {
            more[n] = (
                "http.response.status_code",
                AttrValue::Int(status_code(outcome, def.error_status)),
            );
            n += 1;
        }
        if let Some(t) = error_type(outcome, def.error_type) {
            more[n] = ("error.type", AttrValue::Str(t));
            n += 1;
        }
        let attrs = def.attrs.encode(self.scratch, &more[..n]);
        let (error, events) = match outcome {
            Outcome::Ok => (None, Events::default()),
            Outcome::Downstream => (Some("downstream call failed"), Events::default()),
            Outcome::Own => {
                let mut events = EventsBuilder::default();
                events.push(end, "exception", &def.exception);
                (Some(def.error_message), events.build())
            }
        };
        let head = Head {
            id,
            parent: f.parent,
            start,
            end,
            kind,
            error,
        };
        self.push(f, head, &def.name, attrs, events);
        f.t = end;
        outcome
    }

    /// The root span of a trace: a SERVER span of `f`'s service with no parent.
    pub(crate) fn root(
        &mut self,
        f: &mut Frame,
        target: Target,
        mut body: impl FnMut(&mut Self, &mut Frame) -> Step,
    ) -> Step {
        match self.serve(f, target, SpanKind::Server, &mut body) {
            Outcome::Ok => Ok(()),
            _ => Err(Failed),
        }
    }

    /// Publishes to the queue from `f` (a PRODUCER span) and, after the queue lag, has
    /// `consumer` process the message in a CONSUMER span that is the producer's child.
    /// While the consumer is down messages wait; its failures do not reach the producer.
    pub(crate) fn publish(
        &mut self,
        f: &mut Frame,
        consumer: Svc,
        mut body: impl FnMut(&mut Self, &mut Frame) -> Step,
    ) -> Step {
        let cat = self.cat;
        let id = self.rng.nonzero_u64();
        let start = f.t;
        let end = start + ns(self.rng.lognormal(1.2, 0.5));
        let attrs = cat.producer.attrs.encode(self.scratch, &[]);
        let head = Head {
            id,
            parent: f.parent,
            start,
            end,
            kind: SpanKind::Producer,
            error: None,
        };
        self.push(f, head, &cat.producer.name, attrs, Events::default());
        f.t = end;
        let mut at = end + ns(self.rng.lognormal(QUEUE_LAG_MS, 0.9));
        while let Some(back) = self.faults.outage_end(consumer, at) {
            at = back + ns(self.rng.lognormal(QUEUE_LAG_MS, 0.9));
        }
        let inst = self.instance(consumer);
        let mut cf = Frame {
            svc: consumer,
            inst,
            parent: id,
            t: at,
        };
        self.serve(&mut cf, Target::Consumer, SpanKind::Consumer, &mut body);
        Ok(())
    }
}

fn status_code(outcome: Outcome, error_status: i64) -> i64 {
    match outcome {
        Outcome::Ok => 200,
        Outcome::Own => error_status,
        Outcome::Downstream => 502,
    }
}

fn error_type(outcome: Outcome, own: &'static str) -> Option<&'static str> {
    match outcome {
        Outcome::Ok => None,
        Outcome::Own => Some(own),
        Outcome::Downstream => Some("502"),
    }
}
