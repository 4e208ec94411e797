//! The alert stage's changelog records.
//!
//! Keys: `i` + the instance's fingerprint (8 bytes big-endian) for one alert instance,
//! and `m` for the engine's group batches and waiting resolutions. Values, after the
//! version byte ([`ALERT_VERSION`]): postcard encodings of [`Instance`] and
//! [`LifecycleMeta`]. Postcard has no optional fields: a change to either struct bumps
//! the version, and records of an earlier version are dropped on restore with a warning
//! (the alert stage starts those series afresh) instead of failing it.

use crate::stage::alert::{Instance, LifecycleMeta};

use super::{versioned_as, StateError};

/// The version byte of this store's values: 2 since alerts are filed under incidents.
pub const ALERT_VERSION: u8 = 2;

const INSTANCE: u8 = b'i';
const META: u8 = b'm';

/// What a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// The instance of a fingerprint.
    Instance(u64),
    /// Group batches and waiting resolutions.
    Meta,
}

/// The key of an instance's record.
pub fn instance_key(fingerprint: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(INSTANCE);
    k.extend_from_slice(&fingerprint.to_be_bytes());
    k
}

/// The key of the lifecycle record.
pub fn meta_key() -> Vec<u8> {
    vec![META]
}

/// Parses a key of this store.
pub fn parse_key(key: &[u8]) -> Result<Key, StateError> {
    match key {
        [INSTANCE, rest @ ..] if rest.len() == 8 => Ok(Key::Instance(u64::from_be_bytes(
            rest.try_into().expect("8 bytes"),
        ))),
        [META] => Ok(Key::Meta),
        _ => Err(StateError::Key(key.to_vec())),
    }
}

/// Encodes an instance.
pub fn encode_instance(instance: &Instance) -> Vec<u8> {
    // an instance always serialises
    postcard::to_extend(instance, vec![ALERT_VERSION]).expect("serialisable alert instance")
}

/// Decodes an instance.
pub fn decode_instance(value: &[u8]) -> Result<Instance, StateError> {
    postcard::from_bytes(versioned_as(value, ALERT_VERSION)?)
        .map_err(|e| StateError::Damaged(e.to_string()))
}

/// Encodes the lifecycle record.
pub fn encode_meta(meta: &LifecycleMeta) -> Vec<u8> {
    postcard::to_extend(meta, vec![ALERT_VERSION]).expect("serialisable alert lifecycle")
}

/// Decodes the lifecycle record.
pub fn decode_meta(value: &[u8]) -> Result<LifecycleMeta, StateError> {
    postcard::from_bytes(versioned_as(value, ALERT_VERSION)?)
        .map_err(|e| StateError::Damaged(e.to_string()))
}
