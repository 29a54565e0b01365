//! Timers of one shard, popped in due order. A customer has at most one
//! live timer queued (see `due.rs`); one made stale by a sooner one is
//! skipped when it surfaces, never searched for.
//!
//! Timers wait in buckets of an hour of due time; only bucket indices go
//! through a heap. The bucket the watermark is in is split into slices of
//! ten seconds, each sorted when the watermark reaches it, and the next bucket is
//! split into its slices while the watermark crosses this one, a share at a
//! time. So no single step sorts or moves a whole hour of timers (at a
//! million timers due within one hour, sorting the hour at once stopped the
//! shard for ~27 ms).

use crate::identity::CustomerKey;
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    pub due: i64,
    pub key: CustomerKey,
}

/// Timers are kept in buckets of this much event time. An hour rather than a
/// minute: a year of event time is then 8,760 buckets, not half a million
/// one-timer allocations (replay 1.27M events: 2.8 s → 2.1 s).
const BUCKET_MS: i64 = 3_600_000;
/// The slices a reached bucket is split into, each sorted when reached.
const SLICE_MS: i64 = 10_000;
const SLICES: usize = (BUCKET_MS / SLICE_MS) as usize;
/// Slices up to this many timers keep their memory for the buckets to come
/// once emptied; larger ones (a burst of timers) give it back. So at most
/// two buckets' slices, ~1.5 MiB, are kept per shard (+2.9 B per customer
/// in the memory bench at 1M customers on two shards).
const KEPT_CAPACITY: usize = 256;

/// A timer in its bucket: due time as milliseconds into the bucket, and its
/// customer (8 bytes, half a [`Timer`]).
#[derive(Clone, Copy)]
struct Queued {
    offset: u32,
    key: CustomerKey,
}

/// A bucket split (or being split) into its slices.
struct Sliced {
    bucket: i64,
    slices: Vec<Vec<Queued>>,
    /// The next slice to reach.
    next: usize,
    /// Timers not yet moved to their slice.
    unsplit: Vec<Queued>,
    /// How many were unsplit at the start, to pace the split.
    total: usize,
}

impl Sliced {
    /// `slices` holds [`SLICES`] empty vectors.
    fn new(bucket: i64, unsplit: Vec<Queued>, slices: Vec<Vec<Queued>>) -> Sliced {
        debug_assert!(slices.len() == SLICES && slices.iter().all(Vec::is_empty));
        Sliced { bucket, slices, next: 0, total: unsplit.len(), unsplit }
    }

    fn put(&mut self, q: Queued) {
        self.slices[(i64::from(q.offset) / SLICE_MS) as usize].push(q);
    }

    /// Moves timers to their slices until at most `left` are unsplit.
    fn split_until(&mut self, left: usize) {
        while self.unsplit.len() > left {
            let Some(q) = self.unsplit.pop() else { break };
            self.put(q);
        }
        if self.unsplit.is_empty() {
            self.unsplit = Vec::new();
        }
    }

    fn start(&self) -> i64 {
        self.bucket.saturating_mul(BUCKET_MS)
    }
}

#[derive(Default)]
pub struct TimerQueue {
    /// Buckets not reached yet, by index (due time / `BUCKET_MS`).
    buckets: FxHashMap<i64, Vec<Queued>>,
    /// Their indices; an index whose bucket was taken is skipped.
    order: BinaryHeap<Reverse<i64>>,
    /// The bucket the watermark reached last.
    current: Option<Sliced>,
    /// The bucket after `current`, split while the watermark crosses `current`.
    upcoming: Option<Sliced>,
    /// The reached slices' timers, sorted latest first (popped from the end).
    ready: Vec<Timer>,
    /// Timers pushed after their slice was reached (due before `ready_until`):
    /// a heap, so that a short wait queued at a high rate costs a log, not a
    /// shift of the whole sorted `ready`.
    pushed: BinaryHeap<Reverse<Timer>>,
    /// Timers due before this are in `ready` or `pushed`.
    ready_until: i64,
    len: usize,
    /// The emptied slices of the last bucket passed (empty: none kept), for
    /// the next bucket reached: a steady flow of timers then allocates no
    /// slices (360 an hour of event time: ~0.35 allocations per event in
    /// the engine's steady state before they were kept).
    spare_slices: Vec<Vec<Queued>>,
}

impl TimerQueue {
    pub fn push(&mut self, t: Timer) {
        self.len += 1;
        if t.due < self.ready_until {
            self.pushed.push(Reverse(t));
            return;
        }
        let b = t.due.div_euclid(BUCKET_MS);
        let q = Queued { offset: t.due.rem_euclid(BUCKET_MS) as u32, key: t.key };
        if let Some(cur) = self.current.as_mut().filter(|c| c.bucket == b) {
            return cur.put(q);
        }
        if let Some(up) = self.upcoming.as_mut().filter(|u| u.bucket == b) {
            return up.put(q);
        }
        if self.upcoming.is_none() && self.current.as_ref().is_some_and(|c| c.bucket.checked_add(1) == Some(b)) {
            let mut up = Sliced::new(b, Vec::new(), self.take_slices());
            up.put(q);
            self.upcoming = Some(up);
            return;
        }
        self.buckets
            .entry(b)
            .or_insert_with(|| {
                self.order.push(Reverse(b));
                Vec::new()
            })
            .push(q);
    }

    /// [`SLICES`] empty slice vectors: the spare ones, or new ones.
    fn take_slices(&mut self) -> Vec<Vec<Queued>> {
        if self.spare_slices.is_empty() {
            (0..SLICES).map(|_| Vec::new()).collect()
        } else {
            std::mem::take(&mut self.spare_slices)
        }
    }

    /// Keeps the emptied slices of a bucket the watermark has passed (each
    /// was drained, and given back if large, as it was reached).
    fn recycle(&mut self, done: Sliced) {
        debug_assert!(done.slices.iter().all(|v| v.is_empty() && v.capacity() <= KEPT_CAPACITY));
        if self.spare_slices.is_empty() {
            self.spare_slices = done.slices;
        }
    }

    /// The next timer due at or before `watermark`, in due order.
    pub fn pop_due(&mut self, watermark: i64) -> Option<Timer> {
        loop {
            let sorted = self.ready.last();
            let pushed = self.pushed.peek().map(|r| &r.0);
            if let Some(next) = sorted.into_iter().chain(pushed).min() {
                if next.due > watermark {
                    return self.pace(watermark);
                }
                self.len -= 1;
                return if sorted == Some(next) { self.ready.pop() } else { self.pushed.pop().map(|r| r.0) };
            }
            if let Some(cur) = self.current.as_mut().filter(|c| c.next < SLICES) {
                let base = cur.start();
                // Slices whose start the watermark has reached; the empty
                // ones among them are passed over (a bucket is mostly empty
                // slices when timers are sparse, as in a long replay).
                let reached = (watermark.saturating_sub(base).div_euclid(SLICE_MS).saturating_add(1)).clamp(0, SLICES as i64) as usize;
                if cur.next >= reached {
                    return self.pace(watermark);
                }
                while cur.next < reached && cur.slices[cur.next].is_empty() {
                    cur.next += 1;
                }
                let start = base.saturating_add(cur.next as i64 * SLICE_MS);
                if cur.next == reached {
                    self.ready_until = start;
                    continue;
                }
                let slice = &mut cur.slices[cur.next];
                cur.next += 1;
                self.ready.clear();
                self.ready.extend(slice.drain(..).map(|q| Timer { due: base + i64::from(q.offset), key: q.key }));
                if slice.capacity() > KEPT_CAPACITY {
                    *slice = Vec::new();
                }
                self.ready.sort_unstable_by(|x, y| y.cmp(x));
                self.ready_until = start.saturating_add(SLICE_MS);
                continue;
            }
            if !self.reach_next_bucket(watermark) {
                return self.pace(watermark);
            }
        }
    }

    /// Makes the next bucket current, split into its slices, if the
    /// watermark has reached it; takes the one after it as the upcoming one.
    /// An upcoming bucket is always the next one: it is the bucket after the
    /// current one, and timers due in it or before it never go to the map.
    fn reach_next_bucket(&mut self, watermark: i64) -> bool {
        let mut next = match self.upcoming.take() {
            Some(up) if up.start() > watermark => {
                self.upcoming = Some(up);
                return false;
            }
            Some(up) => {
                debug_assert!(self.next_in_map().is_none_or(|b| b > up.bucket), "a bucket before the upcoming one is in the map");
                up
            }
            None => {
                let Some(b) = self.next_in_map() else { return false };
                if b.saturating_mul(BUCKET_MS) > watermark {
                    return false;
                }
                let unsplit = self.buckets.remove(&b).unwrap_or_default();
                Sliced::new(b, unsplit, self.take_slices())
            }
        };
        next.split_until(0);
        let after = next.bucket.saturating_add(1);
        if let Some(done) = self.current.replace(next) {
            self.recycle(done);
        }
        if let Some(v) = self.buckets.remove(&after) {
            let slices = self.take_slices();
            self.upcoming = Some(Sliced::new(after, v, slices));
        }
        true
    }

    /// The earliest bucket in the map (indices of buckets taken are dropped).
    fn next_in_map(&mut self) -> Option<i64> {
        while let Some(&Reverse(b)) = self.order.peek() {
            if self.buckets.contains_key(&b) {
                return Some(b);
            }
            self.order.pop();
        }
        None
    }

    /// Splits a share of the upcoming bucket: as much of it as the watermark
    /// has crossed of the current bucket, plus a slice. `None`, for `pop_due`.
    fn pace(&mut self, watermark: i64) -> Option<Timer> {
        if let (Some(cur), Some(up)) = (&self.current, &mut self.upcoming) {
            if !up.unsplit.is_empty() {
                let crossed = watermark.saturating_sub(cur.start()).saturating_add(SLICE_MS).clamp(0, BUCKET_MS);
                let left = up.total as u128 * (BUCKET_MS - crossed) as u128 / BUCKET_MS as u128;
                up.split_until(left as usize);
            }
        }
        None
    }

    /// Timers of the upcoming bucket not yet moved to their slices.
    #[cfg(test)]
    fn unsplit(&self) -> usize {
        self.upcoming.as_ref().map_or(0, |u| u.unsplit.len())
    }

    /// The customer of the `n`-th timer still to pop in the reached buckets'
    /// sorted part (0: the next), if any (it may not be due yet, and one
    /// pushed since may come first): for prefetching.
    pub fn key_ahead(&self, n: usize) -> Option<CustomerKey> {
        let i = self.ready.len().checked_sub(n + 1)?;
        Some(self.ready[i].key)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    fn t(due: i64, key: u32) -> Timer {
        Timer { due, key }
    }

    #[test]
    fn keys_ahead_are_those_still_to_pop_within_reached_buckets() {
        let mut q = TimerQueue::default();
        for (due, key) in [(40, 4), (10, 1), (30, 3), (20, 2), (BUCKET_MS, 9)] {
            q.push(t(due, key));
        }
        assert_eq!(q.key_ahead(0), None, "no bucket reached yet");
        assert_eq!(q.pop_due(50).map(|x| x.key), Some(1));
        assert_eq!((q.key_ahead(0), q.key_ahead(1), q.key_ahead(2), q.key_ahead(3)), (Some(2), Some(3), Some(4), None));
    }

    #[test]
    fn pops_in_due_order_across_buckets_and_late_inserts() {
        let mut q = TimerQueue::default();
        const B: i64 = BUCKET_MS;
        for (due, key) in [(8 * B, 1), (10, 2), (B + 10_000, 3), (B - 1, 4), (B, 5)] {
            q.push(t(due, key));
        }
        assert_eq!(q.pop_due(9), None);
        assert_eq!(q.pop_due(B).map(|x| x.key), Some(2));
        q.push(t(20, 6)); // due before the watermark, inside the reached bucket
        let order: Vec<u32> = std::iter::from_fn(|| q.pop_due(B + 40_000)).map(|x| x.key).collect();
        assert_eq!(order, vec![6, 4, 5, 3]);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_due(i64::MAX).map(|x| x.key), Some(1));
        assert!(q.is_empty());
    }

    #[test]
    fn timers_pushed_into_a_reached_bucket_interleave_with_its_sorted_ones() {
        let mut q = TimerQueue::default();
        for key in 0..50 {
            q.push(t(1_000 + 100 * key as i64, key));
        }
        assert_eq!(q.pop_due(1_000).map(|x| x.key), Some(0));
        // Pushed now, due between the bucket's own timers, and equal to one.
        for (i, due) in [2_050, 1_150, 6_000, 1_200, 3_333].into_iter().enumerate() {
            q.push(t(due, 100 + i as u32));
        }
        let mut popped = Vec::new();
        let mut watermark = 1_000;
        while !q.is_empty() {
            watermark += 37;
            while let Some(x) = q.pop_due(watermark) {
                assert!(x.due <= watermark);
                popped.push(x);
            }
        }
        assert_eq!(popped.len(), 54);
        assert!(popped.windows(2).all(|w| w[0] <= w[1]), "not in due order: {popped:?}");
    }

    #[test]
    fn random_schedules_pop_exactly_what_a_heap_pops_in_the_same_order() {
        const B: i64 = BUCKET_MS;
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut q = TimerQueue::default();
            let mut reference = BinaryHeap::new();
            let mut watermark = rng.below(3 * B as u64) as i64 - B;
            for step in 0..3_000 {
                // Pushes: mostly within the next hours, some sooner than the
                // watermark's slice, some days away, some exactly on a boundary.
                for _ in 0..rng.below(6) {
                    let ahead = match rng.below(10) {
                        0 => rng.below(SLICE_MS as u64) as i64 - SLICE_MS,
                        1 => 3 * B * rng.below(40) as i64,
                        2 => (watermark.div_euclid(B) + 1 + rng.below(2) as i64) * B - watermark,
                        3 => rng.below(30 * B as u64) as i64,
                        _ => rng.below(3 * B as u64) as i64,
                    };
                    let t = t(watermark + ahead, rng.below(50) as u32);
                    q.push(t);
                    reference.push(Reverse(t));
                }
                // The watermark moves by a few seconds mostly, sometimes by hours.
                watermark += match rng.below(50) {
                    0 => rng.below(20 * B as u64) as i64,
                    _ => rng.below(120_000) as i64,
                };
                while let Some(x) = q.pop_due(watermark) {
                    let Some(Reverse(want)) = reference.pop() else { panic!("seed {seed} step {step}: popped {x:?}, the heap is empty") };
                    assert_eq!(x, want, "seed {seed} step {step}");
                }
                assert!(reference.peek().is_none_or(|r| r.0.due > watermark), "seed {seed} step {step}: a due timer was not popped");
                assert_eq!(q.len(), reference.len());
            }
        }
    }

    #[test]
    fn the_next_hour_is_split_as_the_watermark_crosses_this_one() {
        const B: i64 = BUCKET_MS;
        let mut q = TimerQueue::default();
        q.push(t(B / 2, 0));
        for key in 1..=6_000 {
            q.push(t(B + (key as i64 * 599) % B, key));
        }
        assert_eq!(q.pop_due(0), None);
        let left = |crossed: i64| (6_000 * (B - crossed - SLICE_MS) / B) as usize;
        assert_eq!(q.unsplit(), left(0), "a slice's share split at the start");
        assert_eq!(q.pop_due(B / 2).map(|x| x.key), Some(0));
        assert_eq!(q.pop_due(B / 2), None);
        assert_eq!(q.unsplit(), left(B / 2), "half split halfway");
        assert_eq!(q.pop_due(B - SLICE_MS), None);
        assert_eq!(q.unsplit(), 0, "all split a slice before the hour ends");
        let popped: Vec<Timer> = std::iter::from_fn(|| q.pop_due(2 * B)).collect();
        assert_eq!(popped.len(), 6_000);
        assert!(popped.windows(2).all(|w| w[0] < w[1]));
    }
}
