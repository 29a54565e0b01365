//! Durations as users write them in the config (`"5s"`, `"90d"`, `"1h30m"`), kept
//! as whole milliseconds because every engine time is epoch milliseconds.

use serde::{Deserialize, Deserializer};
use std::fmt;

/// A non-negative span of time in milliseconds, parsed from humantime syntax.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub i64);

impl Dur {
    pub const fn from_millis(ms: i64) -> Self {
        Dur(ms)
    }
    pub const fn from_secs(s: i64) -> Self {
        Dur(s * 1000)
    }
    pub const fn millis(self) -> i64 {
        self.0
    }
    pub fn as_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.max(0) as u64)
    }
    /// Parses `"5s"`, `"365d"`, `"1h 30m"`; a bare `0` is zero.
    pub fn parse(text: &str) -> Result<Dur, String> {
        let text = text.trim();
        if text == "0" {
            return Ok(Dur(0));
        }
        if text.starts_with('-') {
            return Err(format!("invalid duration `{text}`: durations are not negative"));
        }
        let d = humantime::parse_duration(text).map_err(|e| format!("invalid duration `{text}`: {e} (write e.g. \"5s\", \"30m\", \"90d\")"))?;
        i64::try_from(d.as_millis()).map(Dur).map_err(|_| format!("duration `{text}` is too large"))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.as_std()))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Dur::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_days_hours_and_compound_spans() {
        assert_eq!(Dur::parse("5s").unwrap().millis(), 5_000);
        assert_eq!(Dur::parse("90d").unwrap().millis(), 90 * 86_400_000);
        assert_eq!(Dur::parse("1h 30m").unwrap().millis(), 5_400_000);
        assert_eq!(Dur::parse("0").unwrap().millis(), 0);
    }

    #[test]
    fn rejects_unitless_and_garbage() {
        assert!(Dur::parse("5").is_err());
        assert!(Dur::parse("soon").is_err());
    }
}
