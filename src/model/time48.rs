//! Event times in six bytes, for the times every customer keeps (stage
//! entry, funnel attempts, segment activity): milliseconds since 1970 in 48
//! bits, up to the year 10889. Every event time fits (decoding refuses times
//! before 1970, and ones far in the future), and so does any deadline a
//! config can set from one; a time outside the range is clamped to it.
//! Two-byte aligned, so that these times pack with the small fields beside
//! them where an `i64` would need eight-byte alignment and padding.

const MAX: i64 = (1 << 48) - 1;

#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Time48([u16; 3]);

impl Time48 {
    pub const ZERO: Time48 = Time48([0; 3]);

    pub fn new(ms: i64) -> Time48 {
        let v = ms.clamp(0, MAX) as u64;
        Time48([v as u16, (v >> 16) as u16, (v >> 32) as u16])
    }

    pub fn get(self) -> i64 {
        (u64::from(self.0[0]) | u64::from(self.0[1]) << 16 | u64::from(self.0[2]) << 32) as i64
    }
}

impl std::fmt::Debug for Time48 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

impl PartialOrd for Time48 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Time48 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.get().cmp(&other.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_event_time_and_clamps_the_rest() {
        for ms in [0, 1, 65_535, 65_536, 1_700_000_000_123, 253_402_300_799_999, MAX] {
            assert_eq!(Time48::new(ms).get(), ms);
        }
        assert_eq!(Time48::new(-5).get(), 0);
        assert_eq!(Time48::new(i64::MAX).get(), MAX);
        assert!(Time48::new(65_536) > Time48::new(65_535), "ordered by time, not by bytes");
        assert_eq!(std::mem::size_of::<Time48>(), 6);
        assert_eq!(std::mem::align_of::<Time48>(), 2);
    }
}
