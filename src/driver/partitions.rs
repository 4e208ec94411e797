//! The partition table: small integer ids for assigned (topic, partition) pairs.
//!
//! Each assignment gets a fresh id, so what an earlier assignment of the same partition
//! left in flight (delivery reports, window holds) refers to an id that is no longer
//! tracked and cannot release an offset the new assignment holds.

use std::collections::HashMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

/// Maps assigned (topic, partition) pairs to ids, and every id ever given to its name.
#[derive(Debug, Default)]
pub struct Partitions {
    live: HashMap<Arc<str>, FxHashMap<i32, u32>>,
    names: Vec<(Arc<str>, i32)>,
}

impl Partitions {
    /// The id of an assigned partition: its current one, or a new one.
    pub fn assign(&mut self, topic: &str, partition: i32) -> u32 {
        if let Some(id) = self.live(topic, partition) {
            return id;
        }
        let id = self.names.len() as u32;
        let topic: Arc<str> = Arc::from(topic);
        self.names.push((topic.clone(), partition));
        self.live.entry(topic).or_default().insert(partition, id);
        id
    }

    /// The id of `partition` while it is assigned.
    #[inline]
    pub fn live(&self, topic: &str, partition: i32) -> Option<u32> {
        self.live.get(topic)?.get(&partition).copied()
    }

    /// Forgets the assignment of `partition`; its id stays named.
    pub fn revoke(&mut self, topic: &str, partition: i32) -> Option<u32> {
        let parts = self.live.get_mut(topic)?;
        let id = parts.remove(&partition);
        if parts.is_empty() {
            self.live.remove(topic);
        }
        id
    }

    /// The (topic, partition) an id was given to.
    pub fn name(&self, id: u32) -> (&Arc<str>, i32) {
        let (t, p) = &self.names[id as usize];
        (t, *p)
    }

    /// Whether any partition is assigned.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The ids of the assigned partitions, in no particular order.
    pub fn live_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.live.values().flat_map(|p| p.values().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reassigned_partition_gets_a_new_id() {
        let mut p = Partitions::default();
        let first = p.assign("spans", 0);
        assert_eq!(p.assign("spans", 0), first, "same assignment, same id");
        assert_eq!(p.revoke("spans", 0), Some(first));
        assert_eq!(p.live("spans", 0), None);
        let second = p.assign("spans", 0);
        assert_ne!(first, second);
        assert_eq!(p.name(first), (&Arc::from("spans"), 0));
        assert_eq!(p.name(second), (&Arc::from("spans"), 0));
        assert!(!p.is_empty());
        p.revoke("spans", 0);
        assert!(p.is_empty());
    }
}
