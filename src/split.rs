//! A hash map from 64-bit hashes, split into [`PARTS`] tables by a byte of
//! the key. Each part grows on its own, so the insert that grows one
//! rehashes 1/256 of the entries: a table of a million ids grows in steps
//! of ~20 µs instead of one stop of ~20 ms that every event behind it waits
//! for (10M ids: ~200 ms).

use rustc_hash::FxHashMap;
use std::hash::{Hash, Hasher};

pub const PARTS: usize = 256;

/// The part of a key (keys are hashes, spread over all bits). Bits 40–47:
/// where a key is itself a table's hash, hashbrown takes the bucket from
/// the low bits and the 7-bit tag from the top ones, so parts by either
/// would cluster the buckets or give every entry of a part the same tag.
#[inline]
pub fn part_of(key: u64) -> usize {
    ((key >> 40) & 0xff) as usize
}

/// A key in two 4-byte halves, hashed as the `u64` it is: an entry with a
/// `u32` value takes 12 bytes, where `(u64, u32)` pads to 16 (at 10M ids,
/// 40 MB less resident).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key([u32; 2]);

impl Key {
    #[inline]
    fn new(k: u64) -> Key {
        Key([k as u32, (k >> 32) as u32])
    }
}

impl Hash for Key {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(u64::from(self.0[0]) | u64::from(self.0[1]) << 32);
    }
}

pub struct SplitMap<V> {
    parts: Box<[FxHashMap<Key, V>]>,
}

impl<V> Default for SplitMap<V> {
    fn default() -> Self {
        SplitMap { parts: (0..PARTS).map(|_| FxHashMap::default()).collect() }
    }
}

impl<V> SplitMap<V> {
    #[inline]
    pub fn get(&self, key: &u64) -> Option<&V> {
        self.parts[part_of(*key)].get(&Key::new(*key))
    }

    #[inline]
    pub fn insert(&mut self, key: u64, value: V) -> Option<V> {
        self.parts[part_of(key)].insert(Key::new(key), value)
    }

    pub fn remove(&mut self, key: &u64) -> Option<V> {
        self.parts[part_of(*key)].remove(&Key::new(*key))
    }

    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(|p| p.is_empty())
    }

    /// Entries the parts have room for.
    pub fn capacity(&self) -> usize {
        self.parts.iter().map(|p| p.capacity()).sum()
    }

    /// What the parts' tables take: an entry and a control byte per room.
    pub fn heap_bytes(&self) -> usize {
        self.capacity() * (std::mem::size_of::<(Key, V)>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_every_part_are_found_and_removed() {
        let mut m = SplitMap::default();
        let keys: Vec<u64> = (0..10_000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(m.insert(*k, i), None);
        }
        assert_eq!(m.insert(keys[7], 70), Some(7));
        assert_eq!(m.len(), keys.len());
        assert!(m.parts.iter().all(|p| !p.is_empty()), "keys spread over every part");
        assert_eq!((m.get(&keys[7]), m.get(&keys[8]), m.get(&1)), (Some(&70), Some(&8), None));
        assert_eq!(m.remove(&keys[8]), Some(8));
        assert_eq!((m.get(&keys[8]), m.len()), (None, keys.len() - 1));
        assert!(m.capacity() >= m.len() && !m.is_empty());
        assert_eq!(SplitMap::<u32>::default().heap_bytes(), 0);
        assert_eq!(std::mem::size_of::<(Key, u32)>(), 12, "an entry with a u32 value packs in 12 bytes");
    }

    #[test]
    fn keys_of_one_part_still_differ_in_a_tables_tag_and_bucket_bits() {
        let keys = (0..100_000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).filter(|k| part_of(*k) == 3);
        let (mut tags, mut buckets) = (std::collections::HashSet::new(), std::collections::HashSet::new());
        for k in keys {
            tags.insert(k >> 57);
            buckets.insert(k & 0xff);
        }
        assert!(tags.len() > 64 && buckets.len() > 128, "{} tags, {} low bytes", tags.len(), buckets.len());
    }

    #[test]
    fn no_insert_rehashes_more_than_a_part() {
        let mut m = SplitMap::default();
        let mut largest_growth = 0;
        for i in 0..200_000u64 {
            let before = m.capacity();
            m.insert(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), ());
            largest_growth = largest_growth.max(m.capacity() - before);
        }
        assert!(largest_growth < 200_000 / 64, "one insert grew the capacity by {largest_growth}");
    }
}
