//! Duplicate detection over a bounded window of recent event ids, as two
//! generations of hashed ids: a lookup is one probe, an insert goes to the
//! current generation, and when that holds `window` ids the older
//! generation is dropped. So the last `window` accepted ids are always
//! remembered (up to twice as many at times), with no per-event eviction.
//!
//! The ids are split over [`PARTS`] tables, so that neither growing a table
//! nor dropping a generation stops the router for long: a part grows on its
//! own, and after a generation change each insert sweeps the dropped
//! generation out of its own part (if not done yet) and one more, so all
//! parts are swept within 256 inserts, a 1/256 of the ids at a time. Until a
//! part is swept, a lookup there ignores what the sweep will drop.

use crate::split::{part_of, PARTS};
use hashbrown::HashTable;
use rustc_hash::FxHasher;
use std::hash::{Hash, Hasher};

/// An entry: the id's hash without its lowest bit, which holds the generation.
type Entry = u64;

pub struct Dedup {
    parts: Box<[HashTable<Entry>]>,
    /// Per part: it still holds the generation dropped at the last change.
    stale: Box<[bool]>,
    /// Parts before this one are swept.
    swept: usize,
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
        Dedup {
            parts: (0..PARTS).map(|_| HashTable::new()).collect(),
            stale: vec![false; PARTS].into_boxed_slice(),
            swept: PARTS,
            generation: 0,
            current: 0,
            window: window.max(1),
        }
    }

    pub fn key(id: &str) -> u64 {
        let mut h = FxHasher::default();
        id.hash(&mut h);
        h.finish()
    }

    pub fn contains(&self, key: u64) -> bool {
        let h = slot_hash(key);
        let p = part_of(h);
        // In a part not swept yet, the current generation's bit marks the
        // dropped ids (new ones go only to swept parts).
        let dropped = if self.stale[p] { self.generation } else { u64::MAX };
        self.parts[p].find(h, |e| id_bits(*e) == id_bits(key) && *e & 1 != dropped).is_some()
    }

    /// Remembers `key` (which [`Dedup::contains`] has just said is new).
    pub fn insert(&mut self, key: u64) {
        if self.current >= self.window {
            // Below 256 inserts per generation, the sweep may lag: finish it.
            while self.swept < PARTS {
                self.sweep_next();
            }
            self.generation ^= 1;
            self.current = 0;
            self.stale.fill(true);
            self.swept = 0;
        }
        let h = slot_hash(key);
        let p = part_of(h);
        if self.stale[p] {
            self.sweep(p);
        }
        self.sweep_next();
        self.parts[p].insert_unique(h, id_bits(key) | self.generation, |e| slot_hash(*e));
        self.current += 1;
    }

    /// Drops the old generation from part `p`.
    fn sweep(&mut self, p: usize) {
        let dropped = self.generation;
        self.parts[p].retain(|e| *e & 1 != dropped);
        self.stale[p] = false;
    }

    /// Sweeps the next part still to sweep, if any.
    fn sweep_next(&mut self) {
        while self.swept < PARTS && !self.stale[self.swept] {
            self.swept += 1;
        }
        if self.swept < PARTS {
            self.sweep(self.swept);
            self.swept += 1;
        }
    }

    /// Ids held, for tests.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
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

    #[test]
    fn a_large_window_keeps_its_promise_while_parts_are_swept_one_by_one() {
        const WINDOW: usize = 5_000;
        let mut d = Dedup::new(WINDOW);
        let key = |i: usize| Dedup::key(&format!("e{i}"));
        for i in 0..4 * WINDOW + 100 {
            assert!(!d.contains(key(i)), "{i} is new");
            d.insert(key(i));
            // The last `window` ids are always remembered; none older than twice it.
            for back in [0, 1, 255, WINDOW - 1] {
                assert!(i < back || d.contains(key(i - back)), "{} forgotten at {i}", i - back);
            }
            if i > 2 * WINDOW {
                assert!(!d.contains(key(i - 2 * WINDOW - 1)), "{} remembered at {i}", i - 2 * WINDOW - 1);
            }
            assert!(d.held() <= 2 * WINDOW + 1);
        }
    }
}
