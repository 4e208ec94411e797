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
/// to (its value: the checkpoint's epoch, 8 bytes big-endian). A restore takes the state
/// as of the last one; what follows it is a checkpoint a crash cut short, undone by
/// writing the keys back ([`crate::driver::Event::Repair`]). No store's key starts with
/// a zero byte.
pub const CHECKPOINT_MARKER: &[u8] = b"\0checkpoint";

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
    #[error("state record of format version {found}, this spanline reads version {VERSION}")]
    Version { found: u8 },
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
    match value.split_first() {
        None => Err(StateError::Empty),
        Some((&VERSION, rest)) => Ok(rest),
        Some((&found, _)) => Err(StateError::Version { found }),
    }
}
