//! Where data came from: the input offsets that outputs and state hold until they are
//! safe, so a commit never passes data that only lives in memory.

use smallvec::SmallVec;

/// Where a span was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The driver's index of the (topic, partition).
    pub partition: u32,
    pub offset: i64,
}

/// Offsets an output holds until Kafka acknowledges it: the lowest per partition.
pub type Holds = SmallVec<[(u32, i64); 2]>;

/// Something that keeps input offsets from being committed: the stages report each
/// offset they start holding through it, and release it through the output they emit.
pub trait HoldOffsets {
    /// Something derived from the record at `offset` of `partition` is not safe yet.
    fn hold(&mut self, partition: u32, offset: i64);
}

/// Holds nothing: for callers that do not commit (tests, benchmarks of one stage).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHolds;

impl HoldOffsets for NoHolds {
    #[inline]
    fn hold(&mut self, _partition: u32, _offset: i64) {}
}
