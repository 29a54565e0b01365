//! The segment matrix: purchase activity × communication activity. Each
//! customer sits in one cell (`high`, `low`, `none` on each axis), from how
//! many purchase-like and engagement events it had with time after
//! `watermark - window`. A customer drifts to `none` as the watermark passes.

use super::matcher::IdSet;
use super::time48::Time48;
use crate::catalog::{Catalog, KindId};
use crate::config::SegmentConfig;
use smallvec::SmallVec;

pub const LEVELS: [&str; 3] = ["none", "low", "high"];

#[derive(Debug)]
pub struct Segments {
    purchase: IdSet,
    engagement: IdSet,
    pub window: i64,
    purchase_high: usize,
    engagement_high: usize,
}

/// Times a customer keeps in its own slot: the default `purchase_high` +
/// `engagement_high`. Larger settings move the times to the heap.
pub const INLINE_ACTIVITY: usize = 13;

/// The most recent event times per axis, at most `high` of each (enough to
/// tell none / low / high): the purchase times, then the engagement times,
/// each in time order, in one array.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    times: SmallVec<[Time48; INLINE_ACTIVITY]>,
    /// How many of `times` are purchases.
    purchases: u32,
    /// The cell these times gave when last computed (in here rather than in
    /// the customer, to share this struct's padding).
    pub cell: Cell,
}

impl Activity {
    fn purchases(&self) -> &[Time48] {
        &self.times[..self.purchases as usize]
    }

    fn engagements(&self) -> &[Time48] {
        &self.times[self.purchases as usize..]
    }

    /// The recorded times, when they have left the customer's slot (for a prefetch).
    pub fn spilled(&self) -> Option<&[Time48]> {
        self.times.spilled().then_some(&self.times[..])
    }
}

/// A cell of the matrix: `purchase * 3 + engagement`, each 0 none, 1 low, 2 high.
pub type Cell = u8;

/// Inserts `ts` in order into `v[lo..hi]`, keeping the latest `max` times
/// there; returns the range's new end. Past the slot, the array grows by
/// doubling but never past `total` (both axes' maximum): this is
/// per-customer state, and plain doubling would leave up to half of it unused.
fn keep_latest(v: &mut SmallVec<[Time48; INLINE_ACTIVITY]>, (lo, hi): (usize, usize), ts: i64, max: usize, total: usize) -> usize {
    let mut at = lo + v[lo..hi].partition_point(|t| t.get() <= ts);
    let ts = Time48::new(ts);
    if hi - lo >= max {
        if at == lo {
            return hi; // older than every time kept
        }
        v.remove(lo);
        at -= 1;
        v.insert(at, ts);
        return hi;
    }
    if v.len() == v.capacity() {
        v.reserve_exact(v.len().max(4).min(total.saturating_sub(v.len()).max(1)));
    }
    v.insert(at, ts);
    hi + 1
}

fn level(v: &[Time48], horizon: i64, high: usize) -> u8 {
    let n = v.len() - v.partition_point(|t| t.get() <= horizon);
    match n {
        0 => 0,
        n if n >= high => 2,
        _ => 1,
    }
}

impl Segments {
    pub fn new(c: &SegmentConfig, cat: &Catalog) -> Segments {
        let set = |kinds: &[String]| {
            let mut s = IdSet::with_capacity(cat.kind_count());
            for k in kinds {
                s.insert(cat.kind(k));
            }
            s
        };
        Segments {
            purchase: set(&c.purchase_kinds),
            engagement: set(&c.engagement_kinds),
            window: c.window.millis(),
            purchase_high: c.purchase_high.max(1) as usize,
            engagement_high: c.engagement_high.max(1) as usize,
        }
    }

    /// Records an event; returns whether it counted on either axis.
    pub fn record(&self, a: &mut Activity, kind: KindId, ts: i64) -> bool {
        let mut counted = false;
        if self.purchase.contains(kind) {
            self.add_purchase(a, ts);
            counted = true;
        }
        if self.engagement.contains(kind) {
            self.add_engagement(a, ts);
            counted = true;
        }
        counted
    }

    fn add_purchase(&self, a: &mut Activity, ts: i64) {
        let total = self.purchase_high + self.engagement_high;
        a.purchases = keep_latest(&mut a.times, (0, a.purchases as usize), ts, self.purchase_high, total) as u32;
    }

    fn add_engagement(&self, a: &mut Activity, ts: i64) {
        let total = self.purchase_high + self.engagement_high;
        let range = (a.purchases as usize, a.times.len());
        keep_latest(&mut a.times, range, ts, self.engagement_high, total);
    }

    pub fn cell(&self, a: &Activity, watermark: i64) -> Cell {
        let horizon = watermark.saturating_sub(self.window);
        level(a.purchases(), horizon, self.purchase_high) * 3 + level(a.engagements(), horizon, self.engagement_high)
    }

    /// The next watermark at which the cell the activity last gave
    /// (`a.cell`) changes if no event comes: on an axis at `high`, when its
    /// oldest kept event leaves the window (an axis keeps at most `high`
    /// times); at `low`, when its newest does. `None` when both axes are at
    /// `none`.
    pub fn next_change(&self, a: &Activity) -> Option<i64> {
        let axis = |v: &[Time48], level: u8| match level {
            2 => v.first().map(|t| t.get().saturating_add(self.window)),
            1 => v.last().map(|t| t.get().saturating_add(self.window)),
            _ => None,
        };
        match (axis(a.purchases(), a.cell / 3), axis(a.engagements(), a.cell % 3)) {
            (Some(p), Some(e)) => Some(p.min(e)),
            (p, e) => p.or(e),
        }
    }

    pub fn merge(&self, a: &mut Activity, other: Activity) {
        for &t in other.purchases() {
            self.add_purchase(a, t.get());
        }
        for &t in other.engagements() {
            self.add_engagement(a, t.get());
        }
    }
}

pub fn cell_labels(cell: Cell) -> (&'static str, &'static str) {
    (LEVELS[(cell / 3) as usize], LEVELS[(cell % 3) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    const DAY: i64 = 86_400_000;

    fn ms(v: &[Time48]) -> Vec<i64> {
        v.iter().map(|t| t.get()).collect()
    }

    #[test]
    fn keeps_the_latest_times_of_each_axis_in_order() {
        let mut v = SmallVec::new();
        let mut p = 0;
        for t in [50, 10, 40, 30, 20, 60, 5] {
            p = keep_latest(&mut v, (0, p), t, 4, 7);
        }
        for t in [7, 3, 9, 1] {
            let end = v.len();
            keep_latest(&mut v, (p, end), t, 3, 7);
        }
        assert_eq!(ms(&v), [30, 40, 50, 60, 3, 7, 9]);
        p = keep_latest(&mut v, (0, p), 45, 4, 7);
        assert_eq!((p, ms(&v)), (4, vec![40, 45, 50, 60, 3, 7, 9]));
    }

    #[test]
    fn past_the_slot_the_times_grow_to_the_total_without_slack() {
        let mut v = SmallVec::new();
        let mut p = 0;
        for t in 0..40 {
            p = keep_latest(&mut v, (0, p), t, 20, 40);
            let end = v.len();
            keep_latest(&mut v, (p, end), 100 + t, 20, 40);
        }
        assert_eq!(v.len(), 40);
        assert_eq!(v.capacity(), 40);
        assert_eq!(ms(&v), (20..40).chain(120..140).collect::<Vec<i64>>());
    }

    #[test]
    fn cells_follow_counts_and_the_watermark() {
        let c = config::parse(
            "[segments]\nwindow = \"30d\"\npurchase_high = 2\nengagement_high = 2\npurchase_kinds = [\"purchase\"]\nengagement_kinds = [\"view\"]\n",
        )
        .unwrap()
        .config;
        let cat = Catalog::new(&c);
        let s = Segments::new(&c.segments, &cat);
        let mut a = Activity::default();
        assert_eq!(cell_labels(s.cell(&a, 0)), ("none", "none"));
        s.record(&mut a, cat.kind("purchase"), 0);
        s.record(&mut a, cat.kind("view"), DAY);
        s.record(&mut a, cat.kind("view"), 2 * DAY);
        let at = |a: &mut Activity, watermark: i64| {
            a.cell = s.cell(a, watermark);
            (cell_labels(a.cell), s.next_change(a))
        };
        assert_eq!(at(&mut a, 2 * DAY), (("low", "high"), Some(30 * DAY)), "the only purchase leaves: low → none");
        assert_eq!(at(&mut a, 30 * DAY), (("none", "high"), Some(31 * DAY)), "the purchase left; engagement at high drops when its oldest leaves");
        assert_eq!(at(&mut a, 31 * DAY), (("none", "low"), Some(32 * DAY)), "at low, it drops when its newest leaves");
        assert_eq!(at(&mut a, 32 * DAY), (("none", "none"), None));
    }
}
