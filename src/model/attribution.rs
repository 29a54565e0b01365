//! Multi-touch attribution: which channels get the credit for a transition.
//!
//! A customer's touches are its applied events (duplicates and late events
//! never reach a shard), the last `max_touches` kept. For a transition at `ts`
//! the touches in `(ts - lookback, ts]` are credited, the causing event as the
//! last touch. Under every model the credits of one transition sum to 1.

use crate::catalog::ChannelId;
use crate::config::AttributionConfig;
use smallvec::SmallVec;

/// The attribution models, in the order of [`crate::config::ATTRIBUTION_MODELS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    FirstTouch,
    LastTouch,
    Linear,
    TimeDecay,
    PositionBased,
}

impl Method {
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "first_touch" => Method::FirstTouch,
            "last_touch" => Method::LastTouch,
            "linear" => Method::Linear,
            "time_decay" => Method::TimeDecay,
            "position_based" => Method::PositionBased,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::FirstTouch => "first_touch",
            Method::LastTouch => "last_touch",
            Method::Linear => "linear",
            Method::TimeDecay => "time_decay",
            Method::PositionBased => "position_based",
        }
    }
}

/// A touch packed in 8 bytes: event time (ms, 48 bits) and channel (16 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedTouch(u64);

const TS_BITS: u32 = 48;
const TS_MASK: u64 = (1 << TS_BITS) - 1;

impl PackedTouch {
    pub fn new(ts: i64, channel: ChannelId) -> PackedTouch {
        PackedTouch((ts.max(0) as u64 & TS_MASK) | ((channel as u64) << TS_BITS))
    }
    pub fn ts(self) -> i64 {
        (self.0 & TS_MASK) as i64
    }
    pub fn channel(self) -> ChannelId {
        (self.0 >> TS_BITS) as ChannelId
    }
}

/// A ring's base is a multiple of this many time units (it is kept in 32 bits).
const BASE_BITS: u32 = 16;
/// A kept touch is 48 bits: its time offset from the ring's base, and its channel.
const OFFSET_BITS: u32 = 36;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
/// Channel ids a kept touch holds (the configured channels, `none` and `other`).
pub const MAX_CHANNEL_IDS: usize = 1 << (48 - OFFSET_BITS);
/// How far back from its newest touch a ring is sure to keep touches, in
/// time units: every offset from the base fits in [`OFFSET_BITS`] (2^36 ms
/// is 795 days).
const SPAN: i64 = (1 << OFFSET_BITS) - (1 << BASE_BITS);

/// How customers' touch histories are kept: the latest `max` touches, their
/// times in units of `2^shift` ms. The unit is 1 ms unless the attribution
/// lookback plus the allowed lateness is longer than [`SPAN`] ms (795 days),
/// the times a ring must keep; then it doubles until they fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct History {
    pub max: usize,
    pub shift: u32,
}

impl History {
    /// A history of `max` touches that keeps every touch up to `span_ms`
    /// older than the newest.
    pub fn new(max: usize, span_ms: i64) -> History {
        let mut shift = 0;
        // +2: a span rounded to units may straddle one more unit at each end.
        while (span_ms.max(0) >> shift) + 2 > SPAN {
            shift += 1;
        }
        History { max: max.min(u16::MAX as usize), shift }
    }
}

/// A touch in its ring: its time as [`OFFSET_BITS`] bits of units after the
/// ring's base, and its channel above them, in six two-byte-aligned bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Kept([u16; 3]);

impl Kept {
    fn new(offset: u64, channel: ChannelId) -> Kept {
        let bits = offset | u64::from(channel) << OFFSET_BITS;
        Kept([bits as u16, (bits >> 16) as u16, (bits >> 32) as u16])
    }
    fn bits(self) -> u64 {
        u64::from(self.0[0]) | u64::from(self.0[1]) << 16 | u64::from(self.0[2]) << 32
    }
    fn offset(self) -> u64 {
        self.bits() & OFFSET_MASK
    }
    fn channel(self) -> ChannelId {
        (self.bits() >> OFFSET_BITS) as ChannelId
    }
}

/// The latest N touches of a customer by time, oldest first (a ring once
/// full). Events mostly arrive in time order, and then a touch goes in at
/// the end, over the oldest; one that arrived late (within the allowed
/// lateness) is put in its place by time, and one older than every touch
/// kept is not kept.
///
/// Each touch takes six bytes: its channel, and its time as an offset from
/// the ring's base. A touch too late for the base to reach moves the base
/// forward and drops the touches before it, which are more than the
/// history's span older than the newest: older than any later transition's
/// lookback (see [`History`]). The block is a boxed slice with the length
/// and base beside it (24 bytes in the customer), grown by doubling up to N.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touches {
    /// The touches in `..len`; the rest is room to grow into.
    ring: Box<[Kept]>,
    len: u16,
    /// Index of the oldest touch once the ring is full.
    head: u16,
    /// Offsets count from `base << BASE_BITS` time units.
    base: u32,
}

impl Touches {
    fn kept(&self) -> &[Kept] {
        &self.ring[..self.len as usize]
    }

    /// Where the next touch is written, when the ring is full (for a
    /// prefetch: an event writes one touch; only a transition reads them all).
    pub fn next_slot(&self) -> Option<*const u8> {
        self.kept().get(self.head as usize).map(|k| (k as *const Kept).cast())
    }

    fn decode(&self, k: Kept, shift: u32) -> PackedTouch {
        let units = (i64::from(self.base) << BASE_BITS) + k.offset() as i64;
        PackedTouch::new(units << shift, k.channel())
    }

    /// `t` as kept in this ring, if its time is within the base's reach.
    fn encode(&self, t: PackedTouch, shift: u32) -> Option<Kept> {
        let offset = (t.ts() >> shift) - (i64::from(self.base) << BASE_BITS);
        u64::try_from(offset).ok().filter(|o| *o <= OFFSET_MASK).map(|o| Kept::new(o, t.channel()))
    }

    pub fn push(&mut self, t: PackedTouch, h: History) {
        if self.len == 0 {
            self.base = ((t.ts() >> h.shift) >> BASE_BITS) as u32;
        }
        let Some(k) = self.encode(t, h.shift) else {
            let mut all: Gathered = self.iter(h.shift).collect();
            all.push(t);
            return self.rebuild(&mut all, h);
        };
        let (n, head) = (self.len as usize, self.head as usize);
        let newest = self.kept().get(if head == 0 { n.wrapping_sub(1) } else { head - 1 }).map(|x| x.offset());
        let after_newest = newest.is_none_or(|x| k.offset() >= x);
        if n < h.max {
            let at = if after_newest { n } else { self.kept().partition_point(|x| x.offset() <= k.offset()) };
            if n == self.ring.len() {
                let mut grown = Vec::with_capacity((2 * n).max(4).min(h.max));
                grown.extend_from_slice(&self.ring);
                grown.resize(grown.capacity(), Kept::default());
                self.ring = grown.into_boxed_slice();
            }
            self.ring.copy_within(at..n, at + 1);
            self.ring[at] = k;
            self.len += 1;
        } else if n > 0 {
            let ring = &mut self.ring[..n];
            if after_newest {
                ring[head] = k;
                self.head = if head + 1 == n { 0 } else { head as u16 + 1 };
            } else if k.offset() >= ring[head].offset() {
                // Oldest first from 0, then the oldest makes room for `t`.
                ring.rotate_left(head);
                self.head = 0;
                let at = ring[1..].partition_point(|x| x.offset() <= k.offset());
                ring.copy_within(1..1 + at, 0);
                ring[at] = k;
            }
        }
    }

    /// Touches oldest first, their times in the history's unit.
    pub fn iter(&self, shift: u32) -> impl Iterator<Item = PackedTouch> + '_ {
        let (a, b) = self.kept().split_at(self.head as usize);
        b.iter().chain(a.iter()).map(move |k| self.decode(*k, shift))
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Both customers' touches, the latest `max` by time kept (a merge).
    pub fn merge(&mut self, other: &Touches, h: History) {
        let mut all: Gathered = self.iter(h.shift).chain(other.iter(h.shift)).collect();
        self.rebuild(&mut all, h);
    }

    /// Keeps the latest `h.max` of `all` by time (of equal times, the later
    /// in `all`), on a base that reaches the newest: touches more than the
    /// span older than the newest are dropped. The ring's block is reused
    /// when it holds them all (an active customer's base moves every few
    /// weeks of event time; allocating anew was a quarter of an allocation
    /// per event in the engine's steady state).
    fn rebuild(&mut self, all: &mut [PackedTouch], h: History) {
        // A stable sort: of equal times, the later pushed stays the later.
        all.sort_by_key(|t| t.ts());
        let all = &all[all.len().saturating_sub(h.max)..];
        let (Some(lo), Some(hi)) = (all.first(), all.last()) else {
            *self = Touches::default();
            return;
        };
        let block = |t: &PackedTouch| (t.ts() >> h.shift) >> BASE_BITS;
        // The lowest base from which the newest is still in reach: no more
        // than the span (in whole base blocks) below it.
        self.base = block(lo).max(block(hi) - (SPAN >> BASE_BITS)) as u32;
        if self.ring.len() < all.len() {
            self.ring = vec![Kept::default(); all.len()].into_boxed_slice();
        }
        let mut n = 0;
        for t in all {
            if let Some(k) = self.encode(*t, h.shift) {
                self.ring[n] = k;
                n += 1;
            }
        }
        self.len = n as u16;
        self.head = 0;
    }
}

/// Touches gathered for a rebuild: two full default histories fit without
/// a heap block.
type Gathered = SmallVec<[PackedTouch; 64]>;

/// Compiled attribution settings.
#[derive(Debug, Clone)]
pub struct Attributor {
    pub methods: Vec<Method>,
    /// Each method's place among the methods in name order.
    pub method_rank: Vec<u16>,
    pub lookback: i64,
    pub half_life: i64,
    /// How many touches a customer keeps, and in what unit.
    pub history: History,
    pub first_share: f64,
    pub last_share: f64,
}

impl Attributor {
    /// `lateness_ms`: the allowed lateness, which a customer's history must
    /// keep beyond the lookback (a transition can be that much older than
    /// the newest touch).
    pub fn new(c: &AttributionConfig, lateness_ms: i64) -> Attributor {
        let methods: Vec<Method> = c.models.iter().filter_map(|m| Method::parse(m)).collect();
        Attributor {
            method_rank: crate::catalog::name_ranks(&methods.iter().map(|m| m.as_str()).collect::<Vec<_>>()),
            methods,
            lookback: c.lookback.millis(),
            half_life: c.half_life.millis(),
            history: History::new(c.max_touches, c.lookback.millis().saturating_add(lateness_ms)),
            first_share: c.position_first,
            last_share: c.position_last,
        }
    }

    /// The credited touches for a transition caused by `cause` (not yet in
    /// `touches`): the earlier touches in `(ts - lookback, ts]` by time, then
    /// the cause, the last touch. At most `max_touches` in all.
    pub fn credited(&self, touches: &Touches, cause: PackedTouch, out: &mut Vec<PackedTouch>) {
        out.clear();
        let ts = cause.ts();
        out.extend(touches.iter(self.history.shift).filter(|t| t.ts() > ts - self.lookback && t.ts() <= ts));
        out.sort_by_key(|t| t.ts());
        let keep = self.history.max.saturating_sub(1);
        if out.len() > keep {
            out.drain(..out.len() - keep);
        }
        out.push(cause);
    }

    /// Credit per touch position under `method`; `weights` gets one entry per touch, summing to 1.
    pub fn weights(&self, method: Method, touches: &[PackedTouch], ts: i64, weights: &mut Vec<f64>) {
        weights.clear();
        let k = touches.len();
        if k == 0 {
            return;
        }
        weights.resize(k, 0.0);
        match method {
            Method::FirstTouch => weights[0] = 1.0,
            Method::LastTouch => weights[k - 1] = 1.0,
            Method::Linear => weights.iter_mut().for_each(|w| *w = 1.0 / k as f64),
            Method::TimeDecay => {
                let hl = self.half_life.max(1) as f64;
                for (w, t) in weights.iter_mut().zip(touches) {
                    *w = (-((ts - t.ts()).max(0) as f64) / hl).exp2();
                }
                let sum: f64 = weights.iter().sum();
                weights.iter_mut().for_each(|w| *w /= sum);
            }
            Method::PositionBased => match k {
                1 => weights[0] = 1.0,
                // Whatever the shares: with no middle, first and last are equals.
                2 => weights.iter_mut().for_each(|w| *w = 0.5),
                _ => {
                    let middle = (1.0 - self.first_share - self.last_share) / (k - 2) as f64;
                    weights.iter_mut().for_each(|w| *w = middle);
                    weights[0] = self.first_share;
                    weights[k - 1] = self.last_share;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributor() -> Attributor {
        Attributor::new(&AttributionConfig::default(), 5_000)
    }

    fn history(max: usize) -> History {
        History { max, shift: 0 }
    }

    const DAY: i64 = 86_400_000;

    fn touches(list: &[(i64, u16)], max: usize) -> Touches {
        let mut t = Touches::default();
        for (ts, ch) in list {
            t.push(PackedTouch::new(*ts, *ch), history(max));
        }
        t
    }

    /// Credits with the last touch of `t` as the cause.
    fn credit(a: &Attributor, m: Method, t: &Touches, ts: i64) -> Vec<(u16, f64)> {
        let all: Vec<PackedTouch> = t.iter(0).collect();
        let (cause, earlier) = all.split_last().unwrap();
        let mut before = Touches::default();
        for e in earlier {
            before.push(*e, history(1024));
        }
        let mut credited = Vec::new();
        a.credited(&before, PackedTouch::new(ts, cause.channel()), &mut credited);
        let mut w = Vec::new();
        a.weights(m, &credited, ts, &mut w);
        credited.iter().map(|t| t.channel()).zip(w).collect()
    }

    #[test]
    fn packed_touch_round_trips() {
        let t = PackedTouch::new(1_732_233_600_123, 513);
        assert_eq!((t.ts(), t.channel()), (1_732_233_600_123, 513));
    }

    #[test]
    fn ring_keeps_the_last_n_by_time() {
        let t = touches(&[(1, 1), (2, 2), (3, 3), (4, 4)], 3);
        assert_eq!(t.iter(0).map(|t| t.channel()).collect::<Vec<_>>(), vec![2, 3, 4]);
    }

    #[test]
    fn a_touch_that_arrives_late_takes_its_place_by_time() {
        let ts = |t: &Touches| t.iter(0).map(|t| t.ts()).collect::<Vec<_>>();
        let mut t = touches(&[(10, 1), (30, 3), (20, 2)], 4);
        assert_eq!(ts(&t), [10, 20, 30], "not full yet");
        t.push(PackedTouch::new(40, 4), history(4));
        t.push(PackedTouch::new(50, 5), history(4));
        assert_eq!(ts(&t), [20, 30, 40, 50], "full: the oldest by time goes");
        t.push(PackedTouch::new(35, 6), history(4));
        assert_eq!(ts(&t), [30, 35, 40, 50], "late, within the kept range");
        t.push(PackedTouch::new(25, 7), history(4));
        assert_eq!(ts(&t), [30, 35, 40, 50], "older than every touch kept: not kept");
        t.push(PackedTouch::new(60, 8), history(4));
        assert_eq!(ts(&t), [35, 40, 50, 60], "in order again after a reordering");
    }

    #[test]
    fn the_unit_is_a_millisecond_unless_lookback_and_lateness_span_more_than_36_bits() {
        assert_eq!(History::new(32, 30 * DAY + 5_000).shift, 0);
        assert_eq!(History::new(32, 365 * DAY).shift, 0);
        assert_eq!(History::new(32, 795 * DAY).shift, 0);
        assert_eq!(History::new(32, 796 * DAY).shift, 1);
        let top = (MAX_CHANNEL_IDS - 1) as ChannelId;
        for (span, kept) in [(90 * DAY, 1_700_000_000_003), (365 * DAY, 1_700_000_000_003), (1000 * DAY, 1_700_000_000_002)] {
            let h = History::new(4, span);
            let mut t = Touches::default();
            t.push(PackedTouch::new(1_700_000_000_003, top), h);
            t.push(PackedTouch::new(1_700_000_000_003 + span - DAY, 2), h);
            let got: Vec<PackedTouch> = t.iter(h.shift).collect();
            assert_eq!(got[0], PackedTouch::new(kept, top), "span {span}: kept to {} ms", 1 << h.shift);
            assert_eq!(got[1].channel(), 2);
        }
    }

    /// Random pushes (in time order, late within a bound, and after gaps of
    /// up to 60 days, so the base moves) and merges, against the latest `max`
    /// of everything pushed: the ring keeps a suffix of those, and drops
    /// none within its span of the newest.
    #[test]
    fn the_ring_keeps_the_latest_touches_within_its_span_as_the_base_moves() {
        let mut rng = crate::test_rng::Rng(0x9E37_79B9_7F4A_7C15);
        let mut next = |n: u64| rng.below(n);
        let lateness = DAY;
        for max in [1, 3, 32] {
            let h = History::new(max, 30 * DAY + lateness);
            let (mut ring, mut other) = (Touches::default(), Touches::default());
            let (mut all, mut other_all): (Vec<PackedTouch>, Vec<PackedTouch>) = (Vec::new(), Vec::new());
            let mut newest = 1_700_000_000_000_i64;
            for step in 0..20_000 {
                let ts = match next(10) {
                    0 => newest + (next(60) as i64) * DAY,
                    1..=3 => newest - next(lateness as u64) as i64,
                    _ => newest + next(3_600_000) as i64,
                };
                newest = newest.max(ts);
                let t = PackedTouch::new(ts, (step % 7) as u16);
                if next(50) == 0 {
                    // A merge with a second customer's ring, then that one starts over.
                    other.push(t, h);
                    other_all.push(t);
                    ring.merge(&other, h);
                    all.append(&mut other_all);
                    other = Touches::default();
                } else {
                    ring.push(t, h);
                    all.push(t);
                }
                all.sort_by_key(|t| t.ts());
                all.drain(..all.len().saturating_sub(max));
                let kept: Vec<PackedTouch> = ring.iter(h.shift).collect();
                assert!(all.ends_with(&kept), "step {step}: {kept:?} is not a suffix of {all:?}");
                let dropped = &all[..all.len() - kept.len()];
                assert!(dropped.iter().all(|d| d.ts() < newest - 30 * DAY - lateness), "step {step}: dropped {dropped:?}, newest {newest}");
            }
        }
    }

    #[test]
    fn first_last_and_linear_on_three_touches() {
        let a = attributor();
        let t = touches(&[(DAY, 2), (2 * DAY, 3), (3 * DAY, 4)], 32);
        assert_eq!(credit(&a, Method::FirstTouch, &t, 3 * DAY), vec![(2, 1.0), (3, 0.0), (4, 0.0)]);
        assert_eq!(credit(&a, Method::LastTouch, &t, 3 * DAY), vec![(2, 0.0), (3, 0.0), (4, 1.0)]);
        let lin = credit(&a, Method::Linear, &t, 3 * DAY);
        assert!(lin.iter().all(|(_, w)| (*w - 1.0 / 3.0).abs() < 1e-12));
    }

    #[test]
    fn time_decay_halves_per_half_life() {
        let a = attributor(); // half-life 7d
        let t = touches(&[(0, 2), (7 * DAY, 3)], 32);
        let c = credit(&a, Method::TimeDecay, &t, 7 * DAY);
        // weights 0.5 and 1, normalised: 1/3 and 2/3
        assert!((c[0].1 - 1.0 / 3.0).abs() < 1e-12 && (c[1].1 - 2.0 / 3.0).abs() < 1e-12, "{c:?}");
    }

    #[test]
    fn position_based_gives_forty_forty_twenty() {
        let a = attributor();
        let t = touches(&[(1, 2), (2, 3), (3, 4), (4, 5)], 32);
        let c = credit(&a, Method::PositionBased, &t, 4);
        let w: Vec<f64> = c.iter().map(|x| x.1).collect();
        assert!((w[0] - 0.4).abs() < 1e-12 && (w[3] - 0.4).abs() < 1e-12 && (w[1] - 0.1).abs() < 1e-12 && (w[2] - 0.1).abs() < 1e-12);
        let two = touches(&[(1, 2), (2, 3)], 32);
        assert_eq!(credit(&a, Method::PositionBased, &two, 2), vec![(2, 0.5), (3, 0.5)]);
        let skewed = Attributor { first_share: 0.5, last_share: 0.3, ..attributor() };
        assert_eq!(credit(&skewed, Method::PositionBased, &two, 2), vec![(2, 0.5), (3, 0.5)], "two touches take half each, whatever the shares");
        let one = touches(&[(1, 2)], 32);
        assert_eq!(credit(&a, Method::PositionBased, &one, 1), vec![(2, 1.0)]);
    }

    #[test]
    fn lookback_window_is_open_at_its_start() {
        let a = attributor(); // lookback 30d
        let t = touches(&[(0, 2), (1, 3), (30 * DAY, 4)], 32);
        let c = credit(&a, Method::FirstTouch, &t, 30 * DAY);
        assert_eq!(c.iter().map(|x| x.0).collect::<Vec<_>>(), vec![3, 4], "a touch exactly lookback old is out");
    }

    #[test]
    fn history_bound_drops_the_oldest_touches() {
        let a = attributor();
        let t = touches(&[(1, 2), (2, 3), (3, 4)], 2);
        assert_eq!(credit(&a, Method::FirstTouch, &t, 3)[0], (3, 1.0));
    }

    #[test]
    fn the_causing_event_is_the_last_touch_even_if_older_touches_arrived_later() {
        let a = attributor();
        // arrival order: ts 5 on channel 2, then the cause at ts 4 on channel 3
        let before = touches(&[(5, 2)], 32);
        let mut credited = Vec::new();
        a.credited(&before, PackedTouch::new(4, 3), &mut credited);
        assert_eq!(credited, [PackedTouch::new(4, 3)], "a touch after the transition's time is not credited");
    }
}
