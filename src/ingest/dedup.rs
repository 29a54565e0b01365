//! Duplicate detection over a bounded window of recent event ids, as two
//! generations of hashed ids: a lookup checks both, an insert goes to the
//! current one, and when it holds `window` ids the older generation is
//! dropped whole. So the last `window` accepted ids are always remembered
//! (up to twice as many at times), with no per-event eviction work.

use rustc_hash::{FxHashSet, FxHasher};
use std::hash::{Hash, Hasher};

pub struct Dedup {
    current: FxHashSet<u64>,
    previous: FxHashSet<u64>,
    window: usize,
}

impl Dedup {
    pub fn new(window: usize) -> Dedup {
        Dedup { current: FxHashSet::default(), previous: FxHashSet::default(), window: window.max(1) }
    }

    pub fn key(id: &str) -> u64 {
        let mut h = FxHasher::default();
        id.hash(&mut h);
        h.finish()
    }

    pub fn contains(&self, key: u64) -> bool {
        self.current.contains(&key) || self.previous.contains(&key)
    }

    pub fn insert(&mut self, key: u64) {
        if self.current.len() >= self.window {
            self.previous = std::mem::take(&mut self.current);
            self.current.reserve(self.window.min(1 << 20));
        }
        self.current.insert(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_at_least_the_window_and_at_most_twice_it() {
        let mut d = Dedup::new(2);
        for id in ["a", "b", "c", "d", "e"] {
            d.insert(Dedup::key(id));
        }
        assert!(d.contains(Dedup::key("d")) && d.contains(Dedup::key("e")), "the last two");
        assert!(!d.contains(Dedup::key("a")) && !d.contains(Dedup::key("b")), "older than twice the window");
    }
}
