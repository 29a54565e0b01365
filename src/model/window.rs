//! `count` + `within`: how many of a customer's matching events fall in
//! `(ts - within, ts]`. Kept exact under out-of-order arrival and bounded:
//! entries that no future event's window can reach are pruned.

use super::time48::OptTime48;

/// A slot of `times` that holds no time: it reads as `i64::MIN`, so it sorts
/// before every time and no window counts it.
const FREE: OptTime48 = OptTime48::NONE;

/// Sorted event times of one customer's events that match one counted rule.
///
/// An exactly sized block of 48-bit times (16 bytes in the customer, not a
/// `Vec`'s 24), its free slots at the front: pruning frees slots without
/// reallocating, and a new time takes a free slot before the block grows by one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CountWindow {
    times: Box<[OptTime48]>,
}

impl CountWindow {
    /// The block, free slots included (for a prefetch).
    pub fn block(&self) -> &[OptTime48] {
        &self.times
    }

    /// The times kept, oldest first.
    pub fn times(&self) -> impl Iterator<Item = i64> + '_ {
        self.times[self.free()..].iter().map(|t| t.get())
    }

    fn free(&self) -> usize {
        self.times.partition_point(|&t| t == FREE)
    }

    /// How many slots hold a time at or before `ts`, or none.
    fn upto(&self, ts: i64) -> usize {
        self.times.partition_point(|&t| t.get() <= ts)
    }

    pub fn record(&mut self, ts: i64) {
        // Grown one time at a time: pruning keeps a window at the rule's
        // count (and the few times past the watermark), so a doubled
        // capacity would mostly stay empty, in every customer.
        if self.free() == 0 {
            let mut v = Vec::with_capacity(self.times.len() + 1);
            v.push(FREE);
            v.extend_from_slice(&self.times);
            self.times = v.into_boxed_slice();
        }
        // The first slot is free (so `at` is at least 1): shift the times
        // before `ts` into it.
        let at = self.upto(ts);
        self.times[..at].rotate_left(1);
        self.times[at - 1] = OptTime48::new(ts);
    }

    /// Events with time in `(ts - within, ts]`.
    pub fn count_in(&self, ts: i64, within: i64) -> usize {
        let hi = self.upto(ts);
        let lo = self.upto(ts.saturating_sub(within));
        hi.saturating_sub(lo)
    }

    /// Drops what no future event can count. A future event has `ts >= watermark`
    /// (earlier ones are late), so its window starts after `watermark - within`;
    /// and of the times before the watermark, only the `keep` latest can matter
    /// to "at least `keep`".
    pub fn prune(&mut self, watermark: i64, within: i64, keep: usize) {
        let free = self.free();
        let dead = self.upto(watermark.saturating_sub(within));
        let before_wm = self.upto(watermark.saturating_sub(1));
        let drop = dead.max(before_wm.saturating_sub(keep)).max(free);
        self.times[free..drop].fill(FREE);
        let len = self.times.len() - drop;
        if self.times.len() > 4 * len.max(4) {
            self.times = self.times[drop..].into();
        }
    }

    /// Combines two customers' windows (a merge): every event of both counts.
    pub fn merge(&mut self, other: CountWindow) {
        let mut v: Vec<OptTime48> = self.times.iter().chain(other.times.iter()).copied().filter(|&t| t != FREE).collect();
        v.sort_unstable();
        self.times = v.into_boxed_slice();
    }

    pub fn len(&self) -> usize {
        self.times.len() - self.free()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_open_at_the_start_and_closed_at_the_end() {
        let mut w = CountWindow::default();
        for t in [100, 200, 300] {
            w.record(t);
        }
        assert_eq!(w.count_in(300, 200), 2); // (100, 300]
        assert_eq!(w.count_in(300, 201), 3);
        assert_eq!(w.count_in(250, 1000), 2); // 300 is after the event
    }

    #[test]
    fn pruning_keeps_answers_for_every_future_event() {
        let mut w = CountWindow::default();
        for t in [10, 20, 30, 40, 50, 60] {
            w.record(t);
        }
        let mut pruned = w.clone();
        pruned.prune(55, 100, 3);
        assert!(pruned.len() <= 4);
        for future in 55..200 {
            assert_eq!(w.count_in(future, 100).min(3), pruned.count_in(future, 100).min(3), "at {future}");
        }
    }

    /// Random times (from 0, the first possible), queries and prunes at a
    /// rising watermark, against every time recorded.
    #[test]
    fn counts_match_every_time_recorded_with_pruning() {
        let mut rng = crate::test_rng::Rng(0x2545_F491_4F6C_DD1D);
        let mut next = |n: u64| rng.below(n);
        let (within, keep) = (50, 3);
        for _ in 0..200 {
            let (mut w, mut all, mut watermark) = (CountWindow::default(), Vec::new(), 0_i64);
            for _ in 0..100 {
                // Events at or after the watermark; the watermark trails the latest by up to 20.
                let ts = watermark + next(30) as i64;
                w.record(ts);
                all.push(ts);
                let latest = *all.iter().max().unwrap_or(&0);
                watermark = watermark.max(latest - next(20) as i64);
                w.prune(watermark, within, keep);
                let q = watermark + next(40) as i64;
                let naive = all.iter().filter(|&&t| t > q - within && t <= q).count();
                assert_eq!(w.count_in(q, within).min(keep), naive.min(keep), "at {q}, times {all:?}");
            }
        }
    }

    #[test]
    fn pruned_slots_are_reused_before_the_block_grows() {
        let mut w = CountWindow::default();
        for t in [10, 20, 30, 40] {
            w.record(t);
        }
        w.prune(35, 10, 1);
        assert_eq!((w.len(), w.block().len()), (2, 4), "two slots freed in place");
        w.record(25); // late, before every kept time
        w.record(50);
        assert_eq!(w.times().collect::<Vec<_>>(), [25, 30, 40, 50]);
        w.record(45);
        assert_eq!(w.times().collect::<Vec<_>>(), [25, 30, 40, 45, 50], "grown by one when full");
        assert_eq!(w.block().len(), 5);
        assert_eq!((w.count_in(50, 21), w.count_in(45, 1000)), (4, 4));
        let mut other = CountWindow::default();
        other.record(35);
        other.prune(100, 10, 0);
        other.record(60);
        w.merge(other);
        assert_eq!(w.times().collect::<Vec<_>>(), [25, 30, 40, 45, 50, 60]);
        assert_eq!(w.block().len(), 6, "a merge keeps the times of both, no free slots");
    }
}
