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

/// An event time or none, in six bytes: the time one past its value (event
/// times are never before 1970), zero for none. `i64::MIN` stands for none
/// on the way in and out, as in the fields these replace.
/// Ordered as the `i64` it stands for: none first.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct OptTime48(Time48);

impl OptTime48 {
    pub const NONE: OptTime48 = OptTime48(Time48::ZERO);

    pub fn new(ms: i64) -> OptTime48 {
        if ms == i64::MIN {
            OptTime48::NONE
        } else {
            OptTime48(Time48::new(ms.max(0).saturating_add(1)))
        }
    }

    /// The time, or `i64::MIN` for none.
    pub fn get(self) -> i64 {
        self.option().unwrap_or(i64::MIN)
    }

    pub fn option(self) -> Option<i64> {
        (self != OptTime48::NONE).then(|| self.0.get() - 1)
    }

    pub fn is_some(self) -> bool {
        self != OptTime48::NONE
    }
}

impl std::fmt::Debug for OptTime48 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.option().fmt(f)
    }
}

/// A due time or never, in six bytes. Never is the largest value, so that
/// `min` keeps the sooner of two; `i64::MAX` stands for it on the way in
/// and out. A time at or past the largest 48-bit time (the year 10889) is
/// never.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Due48(Time48);

impl Due48 {
    pub const NEVER: Due48 = Due48(Time48([u16::MAX; 3]));

    pub fn new(ms: i64) -> Due48 {
        if ms >= MAX {
            Due48::NEVER
        } else {
            Due48(Time48::new(ms))
        }
    }

    /// The due time, or `i64::MAX` for never.
    pub fn get(self) -> i64 {
        if self == Due48::NEVER {
            i64::MAX
        } else {
            self.0.get()
        }
    }
}

impl std::fmt::Debug for Due48 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
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

    #[test]
    fn a_due_time_round_trips_and_never_sorts_last() {
        for ms in [0, 1_700_000_000_123, MAX - 1] {
            assert_eq!(Due48::new(ms).get(), ms);
        }
        assert_eq!((Due48::new(i64::MAX).get(), Due48::new(MAX).get()), (i64::MAX, i64::MAX), "never, and past 48 bits");
        assert!(Due48::new(MAX - 1) < Due48::NEVER && Due48::new(65_536) > Due48::new(65_535));
        assert_eq!(Due48::new(5).min(Due48::NEVER), Due48::new(5));
    }

    #[test]
    fn an_optional_time_keeps_zero_apart_from_none() {
        for ms in [0, 1, 1_700_000_000_123, MAX - 1] {
            assert_eq!((OptTime48::new(ms).get(), OptTime48::new(ms).option()), (ms, Some(ms)));
        }
        assert_eq!((OptTime48::new(i64::MIN).get(), OptTime48::default().option()), (i64::MIN, None));
        assert!(!OptTime48::default().is_some() && OptTime48::new(0).is_some());
        assert!(OptTime48::NONE < OptTime48::new(0) && OptTime48::new(65_536) > OptTime48::new(65_535));
        assert_eq!(std::mem::size_of::<OptTime48>(), 6);
    }
}
