//! The segment matrix: purchase activity × communication activity. Each
//! customer sits in one cell (`high`, `low`, `none` on each axis), from how
//! many purchase-like and engagement events it had with time after
//! `watermark - window`. A customer drifts to `none` as the watermark passes.

use super::matcher::IdSet;
use crate::catalog::{Catalog, KindId};
use crate::config::SegmentConfig;

pub const LEVELS: [&str; 3] = ["none", "low", "high"];

#[derive(Debug)]
pub struct Segments {
    purchase: IdSet,
    engagement: IdSet,
    pub window: i64,
    purchase_high: usize,
    engagement_high: usize,
}

/// The most recent event times per axis, at most `high` of each (enough to
/// tell none / low / high).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    purchases: Vec<i64>,
    engagements: Vec<i64>,
}

impl Activity {
    /// The recent purchase and engagement times (for a prefetch).
    pub fn times(&self) -> (&[i64], &[i64]) {
        (&self.purchases, &self.engagements)
    }
}

/// A cell of the matrix: `purchase * 3 + engagement`, each 0 none, 1 low, 2 high.
pub type Cell = u8;

/// Inserts `ts` in order, keeping the latest `max` times. The vector grows
/// by doubling but never past `max`: this is per-customer state, and plain
/// doubling would leave up to half of it unused.
fn keep_latest(v: &mut Vec<i64>, ts: i64, max: usize) {
    let mut at = v.partition_point(|&t| t <= ts);
    if v.len() >= max {
        if at == 0 {
            return; // older than every time kept
        }
        v.remove(0);
        at -= 1;
    } else if v.len() == v.capacity() {
        v.reserve_exact(v.len().max(4).min(max - v.len()));
    }
    v.insert(at, ts);
}

fn level(v: &[i64], horizon: i64, high: usize) -> u8 {
    let n = v.len() - v.partition_point(|&t| t <= horizon);
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
            keep_latest(&mut a.purchases, ts, self.purchase_high);
            counted = true;
        }
        if self.engagement.contains(kind) {
            keep_latest(&mut a.engagements, ts, self.engagement_high);
            counted = true;
        }
        counted
    }

    pub fn cell(&self, a: &Activity, watermark: i64) -> Cell {
        let horizon = watermark.saturating_sub(self.window);
        level(&a.purchases, horizon, self.purchase_high) * 3 + level(&a.engagements, horizon, self.engagement_high)
    }

    /// The next watermark at which the cell changes if no event comes: on an
    /// axis at `high`, when its oldest kept event leaves the window; at
    /// `low`, when its newest does. `None` when both axes are at `none`.
    pub fn next_change(&self, a: &Activity, watermark: i64) -> Option<i64> {
        let horizon = watermark.saturating_sub(self.window);
        let axis = |v: &[i64], high: usize| match level(v, horizon, high) {
            2 => v.first().map(|t| t.saturating_add(self.window)),
            1 => v.last().map(|t| t.saturating_add(self.window)),
            _ => None,
        };
        match (axis(&a.purchases, self.purchase_high), axis(&a.engagements, self.engagement_high)) {
            (Some(p), Some(e)) => Some(p.min(e)),
            (p, e) => p.or(e),
        }
    }

    pub fn merge(&self, a: &mut Activity, other: Activity) {
        for t in other.purchases {
            keep_latest(&mut a.purchases, t, self.purchase_high);
        }
        for t in other.engagements {
            keep_latest(&mut a.engagements, t, self.engagement_high);
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

    #[test]
    fn keeps_the_latest_times_in_order_without_slack() {
        let mut v = Vec::new();
        for t in [50, 10, 40, 30, 20, 60, 5] {
            keep_latest(&mut v, t, 4);
        }
        assert_eq!(v, [30, 40, 50, 60]);
        assert_eq!(v.capacity(), 4);
        keep_latest(&mut v, 45, 4);
        assert_eq!(v, [40, 45, 50, 60]);
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
        assert_eq!(cell_labels(s.cell(&a, 2 * DAY)), ("low", "high"));
        assert_eq!(s.next_change(&a, 2 * DAY), Some(30 * DAY), "the only purchase leaves: low → none");
        assert_eq!(cell_labels(s.cell(&a, 30 * DAY)), ("none", "high"), "the purchase left the window");
        assert_eq!(s.next_change(&a, 30 * DAY), Some(31 * DAY), "engagement at high drops when its oldest leaves");
        assert_eq!(cell_labels(s.cell(&a, 31 * DAY)), ("none", "low"));
        assert_eq!(cell_labels(s.cell(&a, 32 * DAY)), ("none", "none"));
        assert_eq!(s.next_change(&a, 32 * DAY), None);
    }
}
