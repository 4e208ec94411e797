use std::sync::Arc;

use rustc_hash::FxHashSet;

/// Shares one allocation among equal strings (service names, span names, attribute keys).
///
/// Bounded: when it holds `capacity` strings it starts again from empty, so user data of
/// unbounded cardinality costs at most `capacity` entries; strings already handed out stay
/// valid because they are reference counted.
#[derive(Debug)]
pub struct Interner {
    set: FxHashSet<Arc<str>>,
    capacity: usize,
}

impl Default for Interner {
    fn default() -> Self {
        Self::with_capacity(65_536)
    }
}

impl Interner {
    /// An interner that keeps at most `capacity` strings.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            set: FxHashSet::default(),
            capacity: capacity.max(1),
        }
    }

    /// The shared copy of `s`.
    pub fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(existing) = self.set.get(s) {
            return existing.clone();
        }
        if self.set.len() >= self.capacity {
            self.set.clear();
        }
        let arc: Arc<str> = Arc::from(s);
        self.set.insert(arc.clone());
        arc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_share_one_allocation() {
        let mut interner = Interner::default();
        let a = interner.intern("checkout");
        let b = interner.intern("checkout");
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn capacity_bounds_the_set_without_invalidating_handles() {
        let mut interner = Interner::with_capacity(2);
        let a = interner.intern("a");
        interner.intern("b");
        interner.intern("c");
        assert_eq!(&*a, "a");
        assert!(interner.set.len() <= 2);
    }
}
