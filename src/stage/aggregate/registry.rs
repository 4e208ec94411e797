//! Live series: the values of their keys, interned once, and a registry per (window
//! size, scope) that caps how many keys are live and forgets idle ones.
//!
//! A span's key is looked up without allocating: each dimension value is found by its
//! text in the [`Values`] dictionary (a miss means the key cannot be live), and the key
//! is the slice of those value ids.

use std::sync::Arc;

use rustc_hash::FxHashMap;

/// The series id of a registry's overflow key (every value `__overflow__`).
pub(super) const OVERFLOW: u32 = u32::MAX;

/// Values of the keys of live series, reference counted by the series that use them.
///
/// Bounded: a value is only added for a live series and removed with the last series
/// that uses it, so it holds at most `max_series` × dimensions values per registry.
#[derive(Debug, Default)]
pub(super) struct Values {
    ids: FxHashMap<Arc<str>, u32>,
    /// Value and the number of live series keys holding it, by id.
    values: Vec<(Arc<str>, u32)>,
    free: Vec<u32>,
}

impl Values {
    /// The id of `s`, if some live series uses it.
    #[inline]
    pub(super) fn lookup(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    /// The id of `s`, with one more reference.
    pub(super) fn acquire(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            self.values[id as usize].1 += 1;
            return id;
        }
        let value: Arc<str> = Arc::from(s);
        let id = match self.free.pop() {
            Some(id) => {
                self.values[id as usize] = (value.clone(), 1);
                id
            }
            None => {
                self.values.push((value.clone(), 1));
                (self.values.len() - 1) as u32
            }
        };
        self.ids.insert(value, id);
        id
    }

    /// Drops one reference to `id`, forgetting the value with the last one.
    pub(super) fn release(&mut self, id: u32) {
        let entry = &mut self.values[id as usize];
        entry.1 -= 1;
        if entry.1 == 0 {
            let value = std::mem::replace(&mut entry.0, Arc::from(""));
            self.ids.remove(&value);
            self.free.push(id);
        }
    }

    /// The value of a live id.
    pub(super) fn get(&self, id: u32) -> &Arc<str> {
        &self.values[id as usize].0
    }

    /// Values held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }
}

#[derive(Debug)]
struct Series {
    /// Value ids; empty for a free slot.
    key: Box<[u32]>,
    last_seen_ns: i64,
    live: bool,
}

/// The live series of one (window size, scope).
#[derive(Debug)]
pub(super) struct Registry {
    ids: FxHashMap<Box<[u32]>, u32>,
    series: Vec<Series>,
    free: Vec<u32>,
    live: usize,
    max_series: usize,
    expiry_ns: i64,
    /// No series expires before this event time (a lower bound).
    next_expiry_ns: i64,
}

impl Registry {
    /// A registry of at most `max_series` live keys, each forgotten after `expiry_ns` of
    /// event time without a call.
    pub(super) fn new(max_series: usize, expiry_ns: i64) -> Self {
        Self {
            ids: FxHashMap::default(),
            series: Vec::new(),
            free: Vec::new(),
            live: 0,
            max_series,
            expiry_ns,
            next_expiry_ns: i64::MAX,
        }
    }

    /// Live series (the overflow key not counted).
    #[cfg(test)]
    pub(super) fn live(&self) -> usize {
        self.live
    }

    /// The series of a key whose values are all known (`key`), seen at `t_ns`.
    #[inline]
    pub(super) fn find(&mut self, key: &[u32], t_ns: i64) -> Option<u32> {
        let id = *self.ids.get(key)?;
        let s = &mut self.series[id as usize];
        s.last_seen_ns = s.last_seen_ns.max(t_ns);
        Some(id)
    }

    /// True when a new key would go to the overflow series.
    pub(super) fn is_full(&self) -> bool {
        self.live >= self.max_series
    }

    /// Adds a key whose values the caller has acquired (one reference each, which the
    /// series now owns). The key must not be live and the registry not full.
    pub(super) fn insert(&mut self, key: &[u32], t_ns: i64) -> u32 {
        debug_assert!(!self.is_full() && !self.ids.contains_key(key));
        let series = Series {
            key: key.into(),
            last_seen_ns: t_ns,
            live: true,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.series[id as usize] = series;
                id
            }
            None => {
                self.series.push(series);
                (self.series.len() - 1) as u32
            }
        };
        self.ids.insert(key.into(), id);
        self.live += 1;
        self.next_expiry_ns = self.next_expiry_ns.min(t_ns.saturating_add(self.expiry_ns));
        id
    }

    /// Value ids of a live series.
    pub(super) fn key(&self, id: u32) -> &[u32] {
        &self.series[id as usize].key
    }

    /// Forgets the series not seen for the expiry at event time `now_ns`, releasing
    /// their values; returns how many.
    pub(super) fn expire(&mut self, now_ns: i64, values: &mut Values) -> u64 {
        if now_ns < self.next_expiry_ns {
            return 0;
        }
        let mut expired = 0;
        let mut next = i64::MAX;
        for (id, s) in self.series.iter_mut().enumerate() {
            if !s.live {
                continue;
            }
            let due = s.last_seen_ns.saturating_add(self.expiry_ns);
            if due > now_ns {
                next = next.min(due);
                continue;
            }
            s.live = false;
            let key = std::mem::take(&mut s.key);
            self.ids.remove(&key);
            for &v in key.iter() {
                values.release(v);
            }
            self.free.push(id as u32);
            expired += 1;
        }
        self.live -= expired as usize;
        self.next_expiry_ns = next;
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What looking a key up did.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Lookup {
        Live(u32),
        Added(u32),
        Overflow,
    }

    impl Lookup {
        fn id(self) -> u32 {
            match self {
                Lookup::Live(id) | Lookup::Added(id) => id,
                Lookup::Overflow => OVERFLOW,
            }
        }
    }

    fn add(reg: &mut Registry, values: &mut Values, key: &[&str], t: i64) -> Lookup {
        let known: Option<Vec<u32>> = key.iter().map(|s| values.lookup(s)).collect();
        if let Some(ids) = &known {
            if let Some(id) = reg.find(ids, t) {
                return Lookup::Live(id);
            }
        }
        if reg.is_full() {
            return Lookup::Overflow;
        }
        let ids: Vec<u32> = key.iter().map(|s| values.acquire(s)).collect();
        Lookup::Added(reg.insert(&ids, t))
    }

    #[test]
    fn caps_live_keys_and_expires_idle_ones() {
        let mut values = Values::default();
        let mut reg = Registry::new(2, 100);
        let a = add(&mut reg, &mut values, &["a", "x"], 0);
        assert!(matches!(a, Lookup::Added(_)));
        assert!(matches!(
            add(&mut reg, &mut values, &["b", "x"], 50),
            Lookup::Added(_)
        ));
        assert_eq!(
            add(&mut reg, &mut values, &["a", "x"], 60),
            Lookup::Live(a.id())
        );
        assert_eq!(
            add(&mut reg, &mut values, &["c", "x"], 60),
            Lookup::Overflow
        );
        assert_eq!(values.len(), 3, "a, b, x; c never interned");
        assert_eq!(reg.expire(149, &mut values), 0);
        assert_eq!(reg.expire(150, &mut values), 1, "b last seen at 50");
        assert_eq!(reg.live(), 1);
        assert_eq!(values.len(), 2, "b released");
        assert_eq!(
            add(&mut reg, &mut values, &["c", "x"], 160),
            Lookup::Added(1),
            "slot reused"
        );
        assert_eq!(reg.expire(300, &mut values), 2);
        assert_eq!(values.len(), 0);
        assert_eq!(reg.expire(i64::MAX, &mut values), 0);
    }
}
