//! The global event-time watermark, kept by the router and handed to every
//! shard with each event and on idle ticks, so all shards fire timers at the
//! same event time (DESIGN.md):
//! - it is the largest event time seen minus `allowed_lateness`;
//! - while live and idle for `idle_timeout`, it follows the wall clock minus
//!   `idle_timeout` minus `allowed_lateness`;
//! - at the end of a replay it jumps to the largest event time seen.

#[derive(Debug, Clone)]
pub struct Watermark {
    lateness: i64,
    idle: i64,
    max_ts: i64,
    current: i64,
}

impl Watermark {
    pub fn new(lateness_ms: i64, idle_ms: i64) -> Watermark {
        Watermark { lateness: lateness_ms, idle: idle_ms, max_ts: i64::MIN, current: i64::MIN }
    }

    pub fn current(&self) -> i64 {
        self.current
    }

    pub fn max_ts(&self) -> i64 {
        self.max_ts
    }

    /// An event before the watermark (as it stands before the event) is late.
    pub fn is_late(&self, ts: i64) -> bool {
        ts < self.current
    }

    /// Takes an applied event's time into account; returns the new watermark.
    pub fn observe(&mut self, ts: i64) -> i64 {
        if ts > self.max_ts {
            self.max_ts = ts;
            self.current = self.current.max(ts.saturating_sub(self.lateness));
        }
        self.current
    }

    /// The idle rule: with no event for `idle_timeout`, follow the clock.
    /// Returns the new watermark if it moved.
    pub fn on_idle(&mut self, wall_ms: i64) -> Option<i64> {
        let candidate = wall_ms - self.idle - self.lateness;
        (candidate > self.current).then(|| {
            self.current = candidate;
            candidate
        })
    }

    /// End of input (replay): every event time seen is final.
    pub fn finish(&mut self) -> i64 {
        self.current = self.current.max(self.max_ts);
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_trails_the_largest_time_by_the_lateness() {
        let mut w = Watermark::new(5, 10);
        assert_eq!(w.observe(100), 95);
        assert_eq!(w.observe(90), 95, "an older event does not move it back");
        assert!(w.is_late(94));
        assert!(!w.is_late(95));
    }

    #[test]
    fn idle_clock_never_moves_it_back() {
        let mut w = Watermark::new(5, 10);
        w.observe(1_000);
        assert_eq!(w.on_idle(500), None);
        assert_eq!(w.on_idle(2_000), Some(1_985));
        assert_eq!(w.finish(), 1_985);
    }
}
