//! A funnel's times to convert, for the funnel API's median and p90: exact
//! (every duration kept, quantiles interpolated between the closest ranks,
//! as numpy, pandas and spreadsheets compute them) for the first
//! [`EXACT_DURATIONS`] completions, then from an HDR histogram (three
//! significant digits) that has seen them all.

use hdrhistogram::Histogram;

/// Completions per funnel whose durations are kept exactly (8 bytes each).
pub const EXACT_DURATIONS: usize = 100_000;

#[derive(Clone)]
pub struct Durations {
    exact: Vec<u64>,
    hist: Histogram<u64>,
}

impl Default for Durations {
    fn default() -> Durations {
        // 1 ms to ~3 years: every funnel window fits; longer durations clamp.
        Durations { exact: Vec::new(), hist: Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid HDR bounds") }
    }
}

impl Durations {
    pub fn record(&mut self, ms: i64) {
        let ms = ms.max(0) as u64;
        self.hist.saturating_record(ms);
        if self.exact.len() < EXACT_DURATIONS {
            self.exact.push(ms);
        }
    }

    /// The quantiles `qs` (each 0..=1) in milliseconds; `None` before any completion.
    pub fn quantiles_ms<const N: usize>(&self, qs: [f64; N]) -> [Option<f64>; N] {
        if self.hist.is_empty() {
            return [None; N];
        }
        if self.hist.len() > self.exact.len() as u64 {
            return qs.map(|q| Some(self.hist.value_at_quantile(q) as f64));
        }
        let mut sorted = self.exact.clone();
        sorted.sort_unstable();
        qs.map(|q| {
            let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
            let (lo, hi) = (sorted[pos.floor() as usize] as f64, sorted[pos.ceil() as usize] as f64);
            Some(lo + (hi - lo) * pos.fract())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_exact_and_interpolated_between_ranks() {
        let mut d = Durations::default();
        assert_eq!(d.quantiles_ms([0.5]), [None]);
        d.record(3_600_000);
        assert_eq!(d.quantiles_ms([0.5, 0.9]), [Some(3_600_000.0); 2], "one completion is every quantile");
        d.record(60_000);
        assert_eq!(d.quantiles_ms([0.5]), [Some(1_830_000.0)], "an even count: the mean of the middle two");
        let mut d = Durations::default();
        (1..=10).for_each(|s| d.record(s * 1_000));
        let [median, p90] = d.quantiles_ms([0.5, 0.9]);
        assert_eq!(median, Some(5_500.0));
        assert!(p90.is_some_and(|x| (x - 9_100.0).abs() < 1e-6), "0.9 × 9 = 8.1 ranks in: 9 s and a tenth of the way to 10 s: {p90:?}");
    }

    #[test]
    fn past_the_exact_ones_the_histogram_answers_within_its_precision() {
        let mut d = Durations::default();
        (0..EXACT_DURATIONS).for_each(|_| d.record(3_600_000));
        assert_eq!(d.quantiles_ms([0.5]), [Some(3_600_000.0)], "exact up to the cap");
        d.record(3_600_000);
        assert_eq!(d.exact.len(), EXACT_DURATIONS, "no more kept exactly");
        let [median] = d.quantiles_ms([0.5]);
        let median = median.expect("some");
        assert!(median != 3_600_000.0 && (median - 3_600_000.0).abs() <= 3_600_000.0 * 1e-3, "from the histogram, to 3 significant digits: {median}");
    }
}
