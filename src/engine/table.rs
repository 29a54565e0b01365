//! A shard's customers by key: a slot index (`key → slot`, 4 bytes per key)
//! in front of a slab of customers stored in fixed-size chunks.
//!
//! Customer keys are small dense integers handed out by the identity
//! resolver, so the index is a plain (chunked) vector: finding a customer is
//! a few loads at addresses computable in advance, which lets the worker
//! prefetch the customers of the events a few places ahead in its batch.
//! Chunks never move once allocated, so growing the index or the table copies
//! nothing (a hash map would rehash every entry on growth, a stall of
//! milliseconds at a million customers), and freed slots are reused.

use super::customer::Customer;
use crate::chunked::ChunkedVec;
use crate::identity::CustomerKey;

/// The distance, in events, between the levels of the prefetch pipeline.
const PREFETCH_AHEAD: usize = 4;
/// Customers per chunk of the slab.
const CHUNK: usize = 1024;
/// Index value of a key without a customer here.
const EMPTY: u32 = u32::MAX;

#[derive(Default)]
pub struct CustomerTable {
    /// Slot of each key, `EMPTY` when absent.
    index: ChunkedVec<u32>,
    chunks: Vec<Vec<Option<Customer>>>,
    /// Slots freed by removals, reused first.
    free: Vec<u32>,
    len: usize,
}

impl CustomerTable {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn slot_of(&self, key: CustomerKey) -> Option<usize> {
        self.index.get(key as usize).copied().filter(|s| *s != EMPTY).map(|s| s as usize)
    }

    fn at(&self, slot: usize) -> &Option<Customer> {
        &self.chunks[slot / CHUNK][slot % CHUNK]
    }

    fn at_mut(&mut self, slot: usize) -> &mut Option<Customer> {
        &mut self.chunks[slot / CHUNK][slot % CHUNK]
    }

    pub fn get(&self, key: CustomerKey) -> Option<&Customer> {
        self.slot_of(key).and_then(|s| self.at(s).as_ref())
    }

    pub fn get_mut(&mut self, key: CustomerKey) -> Option<&mut Customer> {
        let s = self.slot_of(key)?;
        self.at_mut(s).as_mut()
    }

    /// The customer of `key`, created by `new` if absent; `true` if created.
    pub fn get_or_insert_with(&mut self, key: CustomerKey, new: impl FnOnce() -> Customer) -> (&mut Customer, bool) {
        match self.slot_of(key) {
            Some(s) => (self.at_mut(s).as_mut().expect("an indexed slot holds a customer"), false),
            None => (self.insert(key, new()), true),
        }
    }

    /// Stores `c` under `key` (replacing any customer there).
    pub fn insert(&mut self, key: CustomerKey, c: Customer) -> &mut Customer {
        let slot = match self.slot_of(key) {
            Some(s) => s,
            None => {
                let s = self.free.pop().map_or_else(|| self.grow(), |s| s as usize);
                let k = key as usize;
                self.index.grow_to(k + 1, EMPTY);
                self.index[k] = s as u32;
                self.len += 1;
                s
            }
        };
        self.at_mut(slot).insert(c)
    }

    /// A never-used slot at the end of the slab.
    fn grow(&mut self) -> usize {
        let used = self.len + self.free.len();
        if used == self.chunks.len() * CHUNK {
            let mut chunk = Vec::with_capacity(CHUNK);
            chunk.resize_with(CHUNK, || None);
            self.chunks.push(chunk);
        }
        used
    }

    pub fn remove(&mut self, key: CustomerKey) -> Option<Customer> {
        let s = self.slot_of(key)?;
        self.index[key as usize] = EMPTY;
        self.free.push(s as u32);
        self.len -= 1;
        self.at_mut(s).take()
    }

    /// One step of the prefetch pipeline, taken while the current event (or
    /// timer) is applied: `ahead(n)` is the customer key `n` places after the
    /// current one, if known. The farthest gets its index entry loaded, the
    /// nearer its customer, the nearest its heap blocks, so by the time each
    /// is applied every level has had a few events' time to arrive.
    #[inline]
    pub fn prefetch_ahead(&self, ahead: impl Fn(usize) -> Option<CustomerKey>) {
        if let Some(k) = ahead(3 * PREFETCH_AHEAD - 1) {
            self.prefetch_index(k);
        }
        if let Some(k) = ahead(2 * PREFETCH_AHEAD - 1) {
            self.prefetch_customer(k);
        }
        if let Some(k) = ahead(PREFETCH_AHEAD - 1) {
            self.prefetch_parts(k);
        }
    }

    /// Asks the CPU to start loading the index entry of `key`.
    #[inline]
    fn prefetch_index(&self, key: CustomerKey) {
        if let Some(e) = self.index.get(key as usize) {
            prefetch(e as *const u32 as *const u8);
        }
    }

    /// Asks the CPU to start loading the cache lines of `key`'s customer
    /// (its index entry should be cached by now).
    #[inline]
    fn prefetch_customer(&self, key: CustomerKey) {
        if let Some(s) = self.slot_of(key) {
            let p = self.at(s) as *const Option<Customer> as *const u8;
            let mut off = 0;
            while off < std::mem::size_of::<Option<Customer>>() {
                prefetch(p.wrapping_add(off));
                off += 64;
            }
        }
    }

    /// Starts loading the heap blocks of `key`'s customer (the customer
    /// itself should be cached by now).
    #[inline]
    fn prefetch_parts(&self, key: CustomerKey) {
        if let Some(c) = self.get(key) {
            c.prefetch_parts();
        }
    }
}

/// Prefetches the cache lines of a slice, at most four.
#[inline]
pub fn prefetch_slice<T>(s: &[T]) {
    let p = s.as_ptr() as *const u8;
    let bytes = std::mem::size_of_val(s).min(4 * 64);
    let mut off = 0;
    while off < bytes {
        prefetch(p.wrapping_add(off));
        off += 64;
    }
}

/// One of the crate's two `unsafe` islands (the other is the allocator): the
/// x86-64 prefetch intrinsic. A customer's
/// state is a few cache lines plus a handful of heap blocks scattered over
/// gigabytes, so applying an event is a chain of cache misses; prefetching
/// the events ahead overlaps them. Measured with the engine bench at 1M
/// customers: 395k events/s per core without, 670k/s with.
#[inline]
#[allow(unsafe_code)]
pub fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults and reads nothing
    // observable, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Plan;

    fn plan() -> Plan {
        let text = "[[model]]\nname = \"m\"\ninitial = \"a\"\nstages = [\"a\", \"b\"]\ntransitions = [{ from = [\"a\"], to = \"b\", on = { kind = \"x\" } }]\n";
        Plan::new(crate::config::parse(text).expect("valid config").config)
    }

    #[test]
    fn inserts_finds_removes_and_reuses_slots() {
        let plan = plan();
        let mut t = CustomerTable::default();
        for k in (0..3000u32).step_by(2) {
            let (c, created) = t.get_or_insert_with(k, || Customer::new(&plan, k as i64));
            assert!(created);
            assert_eq!(c.first_seen.get(), k as i64);
        }
        assert_eq!(t.len(), 1500);
        assert!(t.get(1).is_none() && t.get(5000).is_none());
        assert_eq!(t.get(2998).map(|c| c.first_seen.get()), Some(2998));
        let (_, created) = t.get_or_insert_with(4, || unreachable!("key 4 exists"));
        assert!(!created);
        let slot_of_4 = t.slot_of(4);
        assert_eq!(t.remove(4).map(|c| c.first_seen.get()), Some(4));
        assert!(t.remove(4).is_none() && t.get(4).is_none());
        assert_eq!(t.len(), 1499);
        t.insert(7, Customer::new(&plan, 70));
        assert_eq!(t.slot_of(7), slot_of_4, "the freed slot is reused");
        assert_eq!(t.get_mut(7).map(|c| c.first_seen.get()), Some(70));
        t.insert(7, Customer::new(&plan, 71));
        assert_eq!((t.len(), t.get(7).map(|c| c.first_seen.get())), (1500, Some(71)), "insert over a key replaces");
        t.prefetch_index(7);
        t.prefetch_customer(7);
        t.prefetch_customer(1_000_000);
    }
}
