//! Duplicate detection over a bounded window of recent event ids: a hash set
//! plus a ring that evicts the oldest id once the window is full.

use rustc_hash::{FxHashSet, FxHasher};
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

pub struct Dedup {
    seen: FxHashSet<u64>,
    order: VecDeque<u64>,
    capacity: usize,
}

impl Dedup {
    pub fn new(capacity: usize) -> Dedup {
        Dedup { seen: FxHashSet::default(), order: VecDeque::new(), capacity: capacity.max(1) }
    }

    pub fn key(id: &str) -> u64 {
        let mut h = FxHasher::default();
        id.hash(&mut h);
        h.finish()
    }

    pub fn contains(&self, key: u64) -> bool {
        self.seen.contains(&key)
    }

    pub fn insert(&mut self, key: u64) {
        if !self.seen.insert(key) {
            return;
        }
        self.order.push_back(key);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_only_the_window() {
        let mut d = Dedup::new(2);
        for id in ["a", "b", "c"] {
            d.insert(Dedup::key(id));
        }
        assert!(!d.contains(Dedup::key("a")));
        assert!(d.contains(Dedup::key("b")) && d.contains(Dedup::key("c")));
    }
}
