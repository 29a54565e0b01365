//! Transitions per channel over the last minute and hour of wall-clock time,
//! for `GET /v1/stats`: a ring of per-second buckets, one lock per batch.

use std::sync::Mutex;

const SECONDS: usize = 3600;

pub struct RecentTransitions {
    channels: usize,
    inner: Mutex<Ring>,
}

struct Ring {
    /// Unix second each bucket holds; a bucket of another second is stale.
    stamp: Vec<i64>,
    counts: Vec<u32>,
}

impl RecentTransitions {
    pub fn new(channels: usize) -> RecentTransitions {
        RecentTransitions { channels, inner: Mutex::new(Ring { stamp: vec![i64::MIN; SECONDS], counts: vec![0; SECONDS * channels] }) }
    }

    /// Adds a batch's transitions per channel at unix second `now`.
    pub fn add(&self, now: i64, per_channel: &[u32]) {
        let mut r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let slot = now.rem_euclid(SECONDS as i64) as usize;
        if r.stamp[slot] != now {
            r.stamp[slot] = now;
            r.counts[slot * self.channels..(slot + 1) * self.channels].fill(0);
        }
        for (c, n) in per_channel.iter().enumerate().take(self.channels) {
            r.counts[slot * self.channels + c] += n;
        }
    }

    /// Per channel, transitions in the last `secs` seconds up to `now`.
    pub fn last(&self, now: i64, secs: i64) -> Vec<u64> {
        let r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = vec![0u64; self.channels];
        for slot in 0..SECONDS {
            let t = r.stamp[slot];
            if t > now - secs && t <= now {
                for (c, o) in out.iter_mut().enumerate() {
                    *o += r.counts[slot * self.channels + c] as u64;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_fall_out_of_the_window() {
        let r = RecentTransitions::new(2);
        r.add(1000, &[1, 2]);
        r.add(1030, &[1, 0]);
        assert_eq!(r.last(1030, 60), vec![2, 2]);
        assert_eq!(r.last(1070, 60), vec![1, 0]);
        assert_eq!(r.last(1070, 3600), vec![2, 2]);
    }
}
