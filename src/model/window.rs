//! `count` + `within`: how many of a customer's matching events fall in
//! `(ts - within, ts]`. Kept exact under out-of-order arrival and bounded:
//! entries that no future event's window can reach are pruned.

/// A slot of `times` that holds no time: before any event time (those are
/// never before 1970), so it sorts first and no window counts it.
const FREE: i64 = i64::MIN;

/// Sorted event times of one customer's events that match one counted rule.
///
/// An exactly sized block (16 bytes in the customer, not a `Vec`'s 24), its
/// free slots at the front: pruning frees slots without reallocating, and a
/// new time takes a free slot before the block grows by one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CountWindow {
    times: Box<[i64]>,
}

impl CountWindow {
    /// The block, free slots included (for a prefetch).
    pub fn times(&self) -> &[i64] {
        &self.times
    }

    fn free(&self) -> usize {
        self.times.partition_point(|&t| t == FREE)
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
        // The first slot is free: shift the times before `ts` into it.
        let at = self.times.partition_point(|&t| t <= ts);
        self.times[..at].rotate_left(1);
        self.times[at - 1] = ts;
    }

    /// Events with time in `(ts - within, ts]`.
    pub fn count_in(&self, ts: i64, within: i64) -> usize {
        let hi = self.times.partition_point(|&t| t <= ts);
        let lo = self.times.partition_point(|&t| t <= ts - within);
        hi.saturating_sub(lo)
    }

    /// Drops what no future event can count. A future event has `ts >= watermark`
    /// (earlier ones are late), so its window starts after `watermark - within`;
    /// and of the times before the watermark, only the `keep` latest can matter
    /// to "at least `keep`".
    pub fn prune(&mut self, watermark: i64, within: i64, keep: usize) {
        let free = self.free();
        let dead = self.times.partition_point(|&t| t <= watermark.saturating_sub(within));
        let before_wm = self.times.partition_point(|&t| t < watermark);
        let drop = dead.max(before_wm.saturating_sub(keep)).max(free);
        self.times[free..drop].fill(FREE);
        let len = self.times.len() - drop;
        if self.times.len() > 4 * len.max(4) {
            self.times = self.times[drop..].into();
        }
    }

    /// Combines two customers' windows (a merge): every event of both counts.
    pub fn merge(&mut self, other: CountWindow) {
        let mut v: Vec<i64> = self.times.iter().chain(other.times.iter()).copied().filter(|&t| t != FREE).collect();
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

    #[test]
    fn pruned_slots_are_reused_before_the_block_grows() {
        let mut w = CountWindow::default();
        for t in [10, 20, 30, 40] {
            w.record(t);
        }
        w.prune(35, 10, 1);
        assert_eq!((w.len(), w.times().len()), (2, 4), "two slots freed in place");
        w.record(25); // late, before every kept time
        w.record(50);
        assert_eq!(w.times(), &[25, 30, 40, 50]);
        w.record(45);
        assert_eq!(w.times(), &[25, 30, 40, 45, 50], "grown by one when full");
        assert_eq!((w.count_in(50, 21), w.count_in(45, 1000)), (4, 4));
        let mut other = CountWindow::default();
        other.record(35);
        other.prune(100, 10, 0);
        other.record(60);
        w.merge(other);
        assert_eq!(w.times(), &[25, 30, 40, 45, 50, 60], "a merge keeps the times of both, no free slots");
    }
}
