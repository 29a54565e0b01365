//! One customer's state, owned by exactly one shard: linked ids, the journey
//! in every model, activity counts, consent. `CustomerView` is its JSON face
//! for the query API.

use super::ids::Ids;
use crate::catalog::{Catalog, ChannelId, IdTypeId, IdTypes, KindId};
use crate::model::attribution::Touches;
use crate::model::funnel::FunnelState;
use crate::model::segment::Activity;
use crate::model::time48::{Due48, Time48};
use crate::model::{Journey, Plan};
use crate::trigger::TriggerState;
use serde::Serialize;
use smallvec::SmallVec;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
pub struct Consent {
    pub purpose: Box<str>,
    /// `None`: every channel.
    pub channel: Option<ChannelId>,
    pub granted: bool,
    pub ts: i64,
}

/// What few customers have, boxed behind one thin pointer: consent answers,
/// and the earlier send times of triggers capped above one message a period.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Extras {
    pub consent: Vec<Consent>,
    /// Per trigger (by index, as far as one needs it): the sends before its
    /// latest that its cap still counts.
    pub sent: Vec<Vec<i64>>,
}

/// The consent answers in a customer's extras (for a caller that holds
/// another of its fields mutably, where [`Customer::consent`] cannot be called).
pub fn answers(extras: &Option<Box<Extras>>) -> &[Consent] {
    extras.as_deref().map_or(&[], |e| e.consent.as_slice())
}

/// Trigger `ti`'s earlier sends in a customer's extras.
pub fn earlier_sent(extras: &Option<Box<Extras>>, ti: usize) -> &[i64] {
    extras.as_deref().and_then(|e| e.sent.get(ti)).map_or(&[], Vec::as_slice)
}

/// Runs `f` on the consent answers and trigger `ti`'s earlier sends in a
/// customer's extras, and keeps the sends `f` leaves (the extras are
/// created only when there are some to keep).
pub fn with_earlier_sent<R>(extras: &mut Option<Box<Extras>>, ti: usize, f: impl FnOnce(&[Consent], &mut Vec<i64>) -> R) -> R {
    let mut sent = extras.as_mut().and_then(|e| e.sent.get_mut(ti)).map(std::mem::take).unwrap_or_default();
    let r = f(answers(extras), &mut sent);
    if !sent.is_empty() {
        let e = extras.get_or_insert_default();
        if e.sent.len() <= ti {
            e.sent.resize_with(ti + 1, Vec::new);
        }
        e.sent[ti] = sent;
    }
    r
}

/// Funnels and triggers a customer keeps inline (as [`crate::model::INLINE_MODELS`]).
pub const INLINE_FUNNELS: usize = 2;
pub const INLINE_TRIGGERS: usize = 3;

/// A customer's state: a 400-byte slot in the shard's table. It is not
/// aligned to cache lines: rounding it up to seven aligned lines (448 bytes)
/// made no measurable difference to the engine (interleaved runs at 1M
/// customers), and would cost 48 bytes per customer.
#[derive(Clone, Debug)]
pub struct Customer {
    /// Linked ids in the order they were first seen.
    pub ids: Ids,
    pub journey: Journey,
    pub first_seen: Time48,
    /// The latest event time applied (inactivity is measured from it).
    pub last_seen: Time48,
    /// Events by channel and by kind.
    pub counts: Counts,
    /// Consent answers and capped triggers' earlier sends; boxed for a thin
    /// pointer (8 bytes in every customer) for lists most customers never fill.
    pub extras: Option<Box<Extras>>,
    /// Bit `i` set while inactivity duration `i` is yet to fire since the
    /// last event; bit `32 + j` while the `j`-th inactivity trigger is.
    pub armed: u64,
    /// Due time of the customer's queued timer (never: none queued).
    pub wake: Due48,
    /// The last touches, for attribution.
    pub touches: Touches,
    /// Per funnel, the open attempt.
    pub funnels: SmallVec<[FunnelState; INLINE_FUNNELS]>,
    /// Recent purchase and engagement times, and the segment cell they give.
    pub segment: Activity,
    /// When the segment cell may next change (never: it cannot).
    pub segment_due: Due48,
    /// Per trigger: what is waiting, what was sent.
    pub triggers: SmallVec<[TriggerState; INLINE_TRIGGERS]>,
}

impl Customer {
    pub fn new(plan: &Plan, ts: i64) -> Customer {
        Customer {
            ids: Ids::default(),
            journey: plan.new_journey(ts),
            first_seen: Time48::new(ts),
            last_seen: Time48::new(ts),
            counts: Counts::default(),
            extras: None,
            armed: 0,
            wake: Due48::NEVER,
            touches: Touches::default(),
            funnels: SmallVec::from_elem(FunnelState::default(), plan.funnels.len()),
            segment: Activity::default(),
            segment_due: Due48::NEVER,
            triggers: SmallVec::from_elem(TriggerState::default(), plan.triggers.len()),
        }
    }

    /// Starts loading the heap blocks an event reads (the customer itself
    /// should be cached by now), so that their misses overlap.
    #[inline]
    pub fn prefetch_parts(&self) {
        use super::table::prefetch_slice;
        // Inline parts are in the customer's own lines, loaded already.
        if self.journey.stages.spilled() {
            prefetch_slice(&self.journey.stages);
        }
        if self.funnels.spilled() {
            prefetch_slice(&self.funnels);
        }
        if self.triggers.spilled() {
            prefetch_slice(&self.triggers);
        }
        for w in &self.journey.windows {
            prefetch_slice(w.block());
        }
        if let Some(t) = self.touches.next_slot() {
            super::table::prefetch(t);
        }
        // The ONE_ID, for a transition's JSON.
        super::table::prefetch(self.ids.block());
        self.counts.prefetch();
        if let Some(times) = self.segment.spilled() {
            prefetch_slice(times);
        }
    }

    /// The ONE_ID: the value of the highest-priority id type (lowest type id),
    /// the earliest linked on a tie.
    pub fn one_id(&self) -> &str {
        self.ids.one_id()
    }

    pub fn count_activity(&mut self, channel: ChannelId, kind: KindId) {
        self.counts.add(channel, kind);
    }

    /// Records a consent answer; the latest answer per purpose and channel wins.
    pub fn set_consent(&mut self, c: Consent) {
        let log = &mut self.extras.get_or_insert_default().consent;
        match log.iter_mut().find(|e| e.purpose == c.purpose && e.channel == c.channel) {
            Some(e) if e.ts <= c.ts => *e = c,
            Some(_) => {}
            None => log.push(c),
        }
    }

    /// The consent answers given.
    pub fn consent(&self) -> &[Consent] {
        answers(&self.extras)
    }

    /// Folds another customer's ids, times, counts, consent, touches and
    /// segment activity into this one (a merge). Consent takes the most
    /// restrictive answer per purpose and channel, at the time it was given.
    pub fn absorb_profile(&mut self, plan: &Plan, other: &mut Customer) {
        self.touches.merge(&other.touches, plan.attribution.history);
        plan.segments.merge(&mut self.segment, std::mem::take(&mut other.segment));
        // Ids in the order they were linked, as near as is known: the side
        // first seen earlier linked its ids first (ONE_ID ties go to the earliest).
        if other.first_seen < self.first_seen {
            std::mem::swap(&mut self.ids, &mut other.ids);
        }
        self.ids.absorb(&other.ids);
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.counts.absorb(&other.counts);
        // The triggers' earlier sends stay in `other` for the triggers' merge.
        for c in other.extras.as_mut().map(|e| std::mem::take(&mut e.consent)).unwrap_or_default() {
            let log = &mut self.extras.get_or_insert_default().consent;
            match log.iter_mut().find(|e| e.purpose == c.purpose && e.channel == c.channel) {
                // The refusal wins, with its own time (so that a later answer
                // on a single channel still overrides a refusal on `*`).
                Some(e) if e.granted != c.granted => {
                    if !c.granted {
                        *e = c;
                    }
                }
                Some(e) => e.ts = e.ts.max(c.ts),
                None => log.push(c),
            }
        }
    }

    pub fn view(&self, plan: &Plan, types: &IdTypes) -> CustomerView {
        let cat: &Catalog = &plan.catalog;
        let mut ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (t, v) in self.ids.iter() {
            ids.entry(types.name(t).to_string()).or_default().push(v.to_string());
        }
        let stages = plan
            .models
            .iter()
            .zip(self.journey.stages.iter())
            .map(|(m, s)| (m.name.clone(), StageView { stage: m.stage_name(s.stage).to_string(), since: s.since.get() }))
            .collect();
        let mut by_channel = BTreeMap::new();
        for (c, n) in self.counts.channels() {
            *by_channel.entry(cat.channel_name(c).to_string()).or_default() += n;
        }
        let mut by_kind = BTreeMap::new();
        for (k, n) in self.counts.kinds() {
            *by_kind.entry(cat.kind_name(k).to_string()).or_default() += n;
        }
        let consent = self
            .consent()
            .iter()
            .map(|c| ConsentView {
                purpose: c.purpose.to_string(),
                channel: c.channel.map_or("*", |ch| cat.channel_name(ch)).to_string(),
                granted: c.granted,
                ts: c.ts,
            })
            .collect();
        CustomerView {
            one_id: self.one_id().to_string(),
            ids,
            stages,
            first_seen: self.first_seen.get(),
            last_seen: self.last_seen.get(),
            counts: CountsView { by_channel, by_kind },
            consent,
        }
    }
}

/// A customer's events by channel and by kind, for the query API. Kept as
/// one short list of `(id, count)` entries, kinds tagged with [`KIND_TAG`],
/// rather than one entry per (channel, kind) pair: a customer on three
/// channels with eight kinds needs 11 entries instead of 24, and up to
/// [`INLINE_COUNTS`] live in the customer's slot. A count is 16 bits: one
/// that is full gets a second entry for the same id, and readers add up an
/// id's entries, so no event goes uncounted.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    entries: SmallVec<[(u16, u16); INLINE_COUNTS]>,
}

pub const INLINE_COUNTS: usize = 12;
/// Marks a kind's entry. Channel and kind ids stay below it: a config names
/// at most [`crate::config::validate::MAX_NAMED`] of each.
const KIND_TAG: u16 = 0x8000;

impl Counts {
    pub fn add(&mut self, channel: ChannelId, kind: KindId) {
        bump(&mut self.entries, channel, 1);
        bump(&mut self.entries, kind | KIND_TAG, 1);
    }

    /// Adds another customer's counts (a merge).
    pub fn absorb(&mut self, other: &Counts) {
        for &(id, n) in &other.entries {
            bump(&mut self.entries, id, u64::from(n));
        }
    }

    /// Starts loading the list if it left the slot.
    pub fn prefetch(&self) {
        if self.entries.spilled() {
            super::table::prefetch_slice(&self.entries);
        }
    }

    /// Channels and their counts; a channel may come more than once (add them up).
    pub fn channels(&self) -> impl Iterator<Item = (ChannelId, u64)> + '_ {
        self.entries.iter().filter(|(id, _)| id & KIND_TAG == 0).map(|&(c, n)| (c, u64::from(n)))
    }

    /// Kinds and their counts; a kind may come more than once (add them up).
    pub fn kinds(&self) -> impl Iterator<Item = (KindId, u64)> + '_ {
        self.entries.iter().filter(|(id, _)| id & KIND_TAG != 0).map(|&(k, n)| (k & !KIND_TAG, u64::from(n)))
    }
}

/// Adds `n` to `id`'s count: to its last entry until that is full, then in new entries.
fn bump(entries: &mut SmallVec<[(u16, u16); INLINE_COUNTS]>, id: u16, mut n: u64) {
    if let Some(e) = entries.iter_mut().rev().find(|(e, _)| *e == id) {
        let room = u64::from(u16::MAX - e.1).min(n);
        e.1 += room as u16;
        n -= room;
    }
    while n > 0 {
        let part = n.min(u64::from(u16::MAX));
        entries.push((id, part as u16));
        n -= part;
    }
}

/// What forgetting a customer removed: its last view and its ids.
pub type Forgotten = (CustomerView, Vec<(IdTypeId, Box<str>)>);

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CustomerView {
    pub one_id: String,
    pub ids: BTreeMap<String, Vec<String>>,
    pub stages: BTreeMap<String, StageView>,
    pub first_seen: i64,
    pub last_seen: i64,
    pub counts: CountsView,
    pub consent: Vec<ConsentView>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StageView {
    pub stage: String,
    pub since: i64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CountsView {
    pub by_channel: BTreeMap<String, u64>,
    pub by_kind: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ConsentView {
    pub purpose: String,
    pub channel: String,
    pub granted: bool,
    pub ts: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_400_bytes() {
        assert_eq!(std::mem::size_of::<Option<Customer>>(), 400);
    }

    fn totals(it: impl Iterator<Item = (u16, u64)>) -> BTreeMap<u16, u64> {
        let mut m = BTreeMap::new();
        for (id, n) in it {
            *m.entry(id).or_default() += n;
        }
        m
    }

    #[test]
    fn counts_past_sixteen_bits_take_more_entries_and_lose_nothing() {
        let mut a = Counts::default();
        for _ in 0..70_000 {
            a.add(1, 7);
        }
        a.add(2, 7);
        let mut b = Counts::default();
        bump(&mut b.entries, 1, 200_000);
        bump(&mut b.entries, 9 | KIND_TAG, 3);
        a.absorb(&b);
        assert_eq!(totals(a.channels()), BTreeMap::from([(1, 270_000), (2, 1)]));
        assert_eq!(totals(a.kinds()), BTreeMap::from([(7, 70_001), (9, 3)]));
        assert!(a.entries.iter().all(|(_, n)| *n > 0), "no empty entries");
        assert_eq!(a.channels().count(), 6, "270000 = 4 full entries + 7860, and channel 2");
    }

    #[test]
    fn a_merged_refusal_keeps_its_own_time() {
        let answer = |channel: Option<ChannelId>, granted: bool, ts: i64| Consent { purpose: "marketing".into(), channel, granted, ts };
        let plan = crate::model::Plan::new(crate::config::parse("[channels]\nsms = \"low\"\n").expect("config").config);
        let sms = plan.catalog.channel("sms");
        let mut a = Customer::new(&plan, 0);
        a.set_consent(answer(None, false, 10));
        a.set_consent(answer(sms, true, 20));
        let mut b = Customer::new(&plan, 0);
        b.set_consent(answer(None, true, 30));
        a.absorb_profile(&plan, &mut b);
        assert_eq!(a.consent(), [answer(None, false, 10), answer(sms, true, 20)]);
        let sms = sms.expect("sms");
        assert!(crate::trigger::consented(a.consent(), "marketing", sms), "sms was granted after the refusal on every channel");
    }
}
