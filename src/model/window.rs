//! `count` + `within`: how many of a customer's matching events fall in
//! `(ts - within, ts]`. Kept exact under out-of-order arrival and bounded:
//! entries that no future event's window can reach are pruned.

/// Sorted event times of one customer's events that match one counted rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CountWindow {
    times: Vec<i64>,
}

impl CountWindow {
    /// The recorded times (for a prefetch).
    pub fn times(&self) -> &[i64] {
        &self.times
    }

    pub fn record(&mut self, ts: i64) {
        // Grown one time at a time: pruning keeps a window at the rule's
        // count (and the few times past the watermark), so a doubled
        // capacity would mostly stay empty, in every customer.
        if self.times.len() == self.times.capacity() {
            self.times.reserve_exact(1);
        }
        let at = self.times.partition_point(|&t| t <= ts);
        self.times.insert(at, ts);
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
        let dead = self.times.partition_point(|&t| t <= watermark.saturating_sub(within));
        let before_wm = self.times.partition_point(|&t| t < watermark);
        let drop = dead.max(before_wm.saturating_sub(keep));
        if drop > 0 {
            self.times.drain(..drop);
        }
        if self.times.capacity() > 4 * self.times.len().max(4) {
            self.times.shrink_to_fit();
        }
    }

    /// Combines two customers' windows (a merge): every event of both counts.
    pub fn merge(&mut self, other: CountWindow) {
        self.times.extend(other.times);
        self.times.sort_unstable();
    }

    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
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
}
