//! Duplicate detection over a bounded window of recent event ids, as two
//! generations of hashed ids in one table: a lookup is one probe, an insert
//! goes to the current generation, and when that holds `window` ids the older
//! generation is dropped whole (one sequential pass over the table). So the
//! last `window` accepted ids are always remembered (up to twice as many at
//! times), with no per-event eviction work.

use hashbrown::HashTable;
use rustc_hash::FxHasher;
use std::hash::{Hash, Hasher};

/// An entry: the id's hash without its lowest bit, which holds the generation.
type Entry = u64;

pub struct Dedup {
    table: HashTable<Entry>,
    /// The current generation's bit (0 or 1).
    generation: u64,
    /// Ids in the current generation.
    current: usize,
    window: usize,
}

/// The id part of a key or entry.
fn id_bits(k: u64) -> u64 {
    k & !1
}

/// Where an id goes in the table (spreads the id bits over all 64).
fn slot_hash(k: u64) -> u64 {
    let m = u128::from(id_bits(k)) * 0x9E37_79B9_7F4A_7C15;
    (m as u64) ^ ((m >> 64) as u64)
}

impl Dedup {
    pub fn new(window: usize) -> Dedup {
        Dedup { table: HashTable::new(), generation: 0, current: 0, window: window.max(1) }
    }

    pub fn key(id: &str) -> u64 {
        let mut h = FxHasher::default();
        id.hash(&mut h);
        h.finish()
    }

    pub fn contains(&self, key: u64) -> bool {
        self.table.find(slot_hash(key), |e| id_bits(*e) == id_bits(key)).is_some()
    }

    /// Remembers `key` (which [`Dedup::contains`] has just said is new).
    pub fn insert(&mut self, key: u64) {
        if self.current >= self.window {
            let current = self.generation;
            self.table.retain(|e| *e & 1 == current);
            self.generation ^= 1;
            self.current = 0;
        }
        self.table.insert_unique(slot_hash(key), id_bits(key) | self.generation, |e| slot_hash(*e));
        self.current += 1;
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
