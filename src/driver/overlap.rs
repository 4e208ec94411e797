//! Steps that overlap (replay): a step's stages after assembly run beside the reading of
//! the records that follow it.
//!
//! A step reads records (decoding and assembling them), then the stages after assembly
//! read what closed: the aggregator, the detector and the alert engine, which touch
//! nothing the assembler does. So a step may leave that second part
//! ([`Stages::finish`]) deferred: it runs on rayon's threads while the next records are
//! read, on the stages [`Stages::split_off`] moved out, and its outputs are written
//! before the next step's. Every stage sees what it saw one step after the other, in the
//! same order, so the outputs are the same records in the same order per topic; only a
//! dead letter of the next records may be written before the deferred step's outputs.
//!
//! Only a driver that keeps no changelogs and routes no partitions defers (replay):
//! checkpoints, hops and partials assume a step's state and outputs are complete when
//! its records are. Any event that reads or changes the stages, other than a trained
//! model, runs a deferred step first.

use std::sync::Arc;

use rayon::in_place_scope;

use crate::stage::pipeline::Emit;

use super::Driver;

/// A step whose stages after assembly have not run yet.
pub(super) struct Deferred {
    emits: Vec<Emit>,
    /// Where the step's closed traces start in `emits`.
    first: usize,
    /// How far its windows were complete when it was prepared.
    assembled: i64,
}

impl Driver {
    /// Lets each step's stages after assembly run beside the reading of the records that
    /// follow it (see the module documentation); only without changelogs, repartition
    /// or two-phase aggregation.
    pub fn overlap_steps(&mut self, on: bool) {
        self.overlap = on;
    }

    fn may_defer(&self) -> bool {
        self.overlap
            && self.checkpoints.is_none()
            && self.repartition.is_none()
            && self.merge.is_none()
    }

    /// A step that leaves its stages after assembly deferred, when the driver may.
    pub(super) fn step_deferring(&mut self) {
        if !self.may_defer() {
            self.step();
            return;
        }
        self.finish_deferred();
        let first = self.stages.prepare(&mut self.out, &mut self.emits);
        let assembled = self.stages.assembled_through();
        self.deferred = Some(Deferred {
            emits: std::mem::take(&mut self.emits),
            first,
            assembled,
        });
    }

    /// Runs the deferred step's stages after assembly, if there is one, and writes its
    /// outputs.
    pub fn finish_deferred(&mut self) {
        let Some(d) = self.deferred.take() else {
            return;
        };
        let mut emits = d.emits;
        self.stages
            .finish(&mut emits, d.first, d.assembled, &*self.outputs);
        self.emits = emits;
        self.write_step();
    }

    /// Reads the waiting records while the deferred step's stages run on rayon's
    /// threads, then writes that step's outputs.
    pub(super) fn read_beside_deferred(&mut self) {
        let Some(Deferred {
            mut emits,
            first,
            assembled,
        }) = self.deferred.take()
        else {
            return;
        };
        let mut rest = self.stages.split_off();
        let outputs = Arc::clone(&self.outputs);
        in_place_scope(|s| {
            let (rest, emits, outputs) = (&mut rest, &mut emits, &outputs);
            s.spawn(move |_| rest.finish(emits, first, assembled, &**outputs));
            self.read_pending();
        });
        self.stages.rejoin(rest);
        self.emits = emits;
        self.write_step();
    }
}
