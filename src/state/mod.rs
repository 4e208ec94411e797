//! Stage state as changelog records: the keys and versioned values that the stateful
//! stages keep in compacted Kafka topics, as Kafka Streams keeps its stores, so a
//! restarted pipeline resumes from the state of its last commit instead of re-reading
//! what it had already written.
//!
//! Every value starts with a format version byte; a record of an unknown version, or one
//! that does not decode, is an error naming where it was read ([`StateError`]).

pub mod aggregate;
pub mod alert;
pub mod assemble;

use thiserror::Error;

use crate::codec::avro_bin::AvroReadError;
use crate::codec::DecodeError;

/// The format version written in the first byte of every state value.
pub const VERSION: u8 = 1;

/// The key of the record that ends a checkpoint in each changelog partition it wrote
/// to (its value: the checkpoint's epoch, 8 bytes big-endian, then the positions the
/// state stands at, see [`encode_marker`]). A restore takes the state as of the last
/// one; what follows it is a checkpoint a crash cut short, undone by writing the keys
/// back ([`crate::driver::Event::Repair`]). No store's key starts with a zero byte.
pub const CHECKPOINT_MARKER: &[u8] = b"\0checkpoint";

/// The value of a checkpoint marker: the epoch, then for each input partition whose
/// records this changelog partition's state reflects, (topic, partition, next offset):
/// a reader of the state skips what lies below, should its consumer start earlier (an
/// offset commit not visible yet, or lost after the state was written).
pub fn encode_marker(epoch: u64, positions: &[(&str, i32, i64)]) -> Vec<u8> {
    let mut v = epoch.to_be_bytes().to_vec();
    for (topic, partition, offset) in positions {
        let len = u16::try_from(topic.len()).unwrap_or(u16::MAX);
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(&topic.as_bytes()[..usize::from(len)]);
        v.extend_from_slice(&partition.to_be_bytes());
        v.extend_from_slice(&offset.to_be_bytes());
    }
    v
}

/// The positions of a checkpoint marker's value (none for a marker of an older build,
/// or a damaged one).
pub fn decode_marker(value: &[u8]) -> Vec<(String, i32, i64)> {
    let mut out = Vec::new();
    let mut rest = value.get(8..).unwrap_or_default();
    while let [a, b, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        if tail.len() < len + 12 {
            return Vec::new();
        }
        let Ok(topic) = std::str::from_utf8(&tail[..len]) else {
            return Vec::new();
        };
        let partition = i32::from_be_bytes(tail[len..len + 4].try_into().expect("4 bytes"));
        let offset = i64::from_be_bytes(tail[len + 4..len + 12].try_into().expect("8 bytes"));
        out.push((topic.to_string(), partition, offset));
        rest = &tail[len + 12..];
    }
    out
}

/// The stages that keep state, each in a changelog topic of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Store {
    /// Open traces and the traces closed within `grace`.
    Assemble,
    /// Open aggregate windows.
    Aggregate,
    /// The alert stage's lifecycle.
    Alert,
    /// The detectors' learnt state, in the detect snapshot's record format.
    Detect,
}

impl Store {
    /// Every store.
    pub const ALL: [Store; 4] = [
        Store::Assemble,
        Store::Aggregate,
        Store::Detect,
        Store::Alert,
    ];

    /// The store's name, as in its topic name and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Store::Assemble => "assemble",
            Store::Aggregate => "aggregate",
            Store::Alert => "alert",
            Store::Detect => "detect",
        }
    }

    /// The changelog topic of this store for the consumer group `group_id`.
    pub fn topic(self, group_id: &str) -> String {
        format!("{group_id}-{}-changelog", self.name())
    }
}

/// A state record that cannot be restored.
#[derive(Debug, Error)]
pub enum StateError {
    #[error("state record of format version {found}, this spanline reads version {reads}")]
    Version { found: u8, reads: u8 },
    #[error("state record has an empty value")]
    Empty,
    #[error("state record key {0:?} is not one spanline writes")]
    Key(Vec<u8>),
    #[error("state record is damaged: {0}")]
    Damaged(String),
    #[error("state record names partition {0}, which no source topic has")]
    Partition(String),
}

impl From<AvroReadError> for StateError {
    fn from(e: AvroReadError) -> Self {
        StateError::Damaged(e.to_string())
    }
}

impl From<DecodeError> for StateError {
    fn from(e: DecodeError) -> Self {
        StateError::Damaged(e.to_string())
    }
}

/// Checks the version byte and returns the rest of the value.
fn versioned(value: &[u8]) -> Result<&[u8], StateError> {
    versioned_as(value, VERSION)
}

/// Checks that the version byte is `reads` and returns the rest of the value.
fn versioned_as(value: &[u8], reads: u8) -> Result<&[u8], StateError> {
    match value.split_first() {
        None => Err(StateError::Empty),
        Some((&found, rest)) if found == reads => Ok(rest),
        Some((&found, _)) => Err(StateError::Version { found, reads }),
    }
}

#[cfg(test)]
mod marker_tests {
    use super::*;

    #[test]
    fn a_marker_carries_its_positions_and_an_old_one_none() {
        let v = encode_marker(7, &[("g-repartition", 2, 1_234), ("spans", 0, 9)]);
        assert_eq!(&v[..8], &7u64.to_be_bytes());
        assert_eq!(
            decode_marker(&v),
            vec![
                ("g-repartition".to_string(), 2, 1_234),
                ("spans".to_string(), 0, 9)
            ]
        );
        assert!(decode_marker(&7u64.to_be_bytes()).is_empty());
        assert!(
            decode_marker(&v[..v.len() - 1]).is_empty(),
            "cut short: ignored"
        );
    }
}
