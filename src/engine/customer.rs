//! One customer's state, owned by exactly one shard: linked ids, the journey
//! in every model, activity counts, consent. `CustomerView` is its JSON face
//! for the query API.

use crate::catalog::{Catalog, ChannelId, IdTypeId, IdTypes, KindId};
use crate::model::attribution::Touches;
use crate::model::funnel::FunnelState;
use crate::model::segment::{Activity, Cell};
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

/// Funnels and triggers a customer keeps inline (as [`crate::model::INLINE_MODELS`]).
pub const INLINE_FUNNELS: usize = 2;
pub const INLINE_TRIGGERS: usize = 4;

#[derive(Clone, Debug)]
pub struct Customer {
    /// Linked ids in the order they were first seen.
    pub ids: SmallVec<[(IdTypeId, Box<str>); 2]>,
    pub journey: Journey,
    pub first_seen: i64,
    /// The latest event time applied (inactivity is measured from it).
    pub last_seen: i64,
    /// Events by channel and by kind.
    pub counts: Counts,
    pub consent: Vec<Consent>,
    /// Bit `i` set while an inactivity timer of duration `i` is queued.
    pub armed: u32,
    /// The last touches, for attribution.
    pub touches: Touches,
    /// Per funnel, the open attempt.
    pub funnels: SmallVec<[FunnelState; INLINE_FUNNELS]>,
    /// Recent purchase and engagement times, and the segment cell they give.
    pub segment: Activity,
    pub cell: Cell,
    /// Due time of the queued segment timer (`i64::MAX`: none queued).
    pub segment_due: i64,
    /// Per trigger: what is waiting, what was sent.
    pub triggers: SmallVec<[TriggerState; INLINE_TRIGGERS]>,
}

impl Customer {
    pub fn new(plan: &Plan, ts: i64) -> Customer {
        Customer {
            ids: SmallVec::new(),
            journey: plan.new_journey(ts),
            first_seen: ts,
            last_seen: ts,
            counts: Counts::default(),
            consent: Vec::new(),
            armed: 0,
            touches: Touches::default(),
            funnels: SmallVec::from_elem(FunnelState::default(), plan.funnels.len()),
            segment: Activity::default(),
            cell: 0,
            segment_due: i64::MAX,
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
        if self.journey.windows.spilled() {
            prefetch_slice(&self.journey.windows);
        }
        if self.funnels.spilled() {
            prefetch_slice(&self.funnels);
        }
        if self.triggers.spilled() {
            prefetch_slice(&self.triggers);
        }
        for w in &self.journey.windows {
            prefetch_slice(w.times());
        }
        prefetch_slice(self.touches.as_slice());
        // The ONE_ID, for a transition's JSON.
        for (_, v) in &self.ids {
            super::table::prefetch(v.as_ptr());
        }
        prefetch_slice(&self.counts.by_channel);
        prefetch_slice(&self.counts.by_kind);
        let (purchases, engagements) = self.segment.times();
        prefetch_slice(purchases);
        prefetch_slice(engagements);
    }

    /// The ONE_ID: the value of the highest-priority id type (lowest type id),
    /// the earliest linked on a tie.
    pub fn one_id(&self) -> &str {
        self.ids.iter().min_by_key(|(t, _)| *t).map_or("", |(_, v)| v)
    }

    pub fn count_activity(&mut self, channel: ChannelId, kind: KindId) {
        bump(&mut self.counts.by_channel, channel, 1);
        bump(&mut self.counts.by_kind, kind, 1);
    }

    /// Records a consent answer; the latest answer per purpose and channel wins.
    pub fn set_consent(&mut self, c: Consent) {
        match self.consent.iter_mut().find(|e| e.purpose == c.purpose && e.channel == c.channel) {
            Some(e) if e.ts <= c.ts => *e = c,
            Some(_) => {}
            None => self.consent.push(c),
        }
    }

    /// Folds another customer's ids, times, counts, consent, touches and
    /// segment activity into this one (a merge). Consent takes the most
    /// restrictive answer per purpose and channel.
    pub fn absorb_profile(&mut self, plan: &Plan, other: &mut Customer) {
        self.touches.merge(&other.touches, plan.attribution.max_touches);
        plan.segments.merge(&mut self.segment, std::mem::take(&mut other.segment));
        for id in other.ids.drain(..) {
            if !self.ids.contains(&id) {
                self.ids.push(id);
            }
        }
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        for (c, n) in other.counts.by_channel.drain(..) {
            bump(&mut self.counts.by_channel, c, n);
        }
        for (k, n) in other.counts.by_kind.drain(..) {
            bump(&mut self.counts.by_kind, k, n);
        }
        for c in other.consent.drain(..) {
            match self.consent.iter_mut().find(|e| e.purpose == c.purpose && e.channel == c.channel) {
                Some(e) => {
                    e.granted &= c.granted;
                    e.ts = e.ts.max(c.ts);
                }
                None => self.consent.push(c),
            }
        }
    }

    pub fn view(&self, plan: &Plan, types: &IdTypes) -> CustomerView {
        let cat: &Catalog = &plan.catalog;
        let mut ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (t, v) in &self.ids {
            ids.entry(types.name(*t).to_string()).or_default().push(v.to_string());
        }
        let stages = plan
            .models
            .iter()
            .zip(self.journey.stages.iter())
            .map(|(m, (s, since))| (m.name.clone(), StageView { stage: m.stage_name(*s).to_string(), since: *since }))
            .collect();
        let by_channel = self.counts.by_channel.iter().map(|(c, n)| (cat.channel_name(*c).to_string(), *n as u64)).collect();
        let by_kind = self.counts.by_kind.iter().map(|(k, n)| (cat.kind_name(*k).to_string(), *n as u64)).collect();
        let consent = self
            .consent
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
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            counts: CountsView { by_channel, by_kind },
            consent,
        }
    }
}

/// A customer's events by channel and by kind, for the query API. Kept as
/// two short lists rather than one per (channel, kind) pair: a customer on
/// three channels with eight kinds needs 11 entries instead of 24.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub by_channel: Vec<(ChannelId, u32)>,
    pub by_kind: Vec<(KindId, u32)>,
}

/// Adds `n` to the entry of `id`, appending it if absent.
fn bump(entries: &mut Vec<(u16, u32)>, id: u16, n: u32) {
    match entries.iter_mut().find(|(e, _)| *e == id) {
        Some(e) => e.1 = e.1.saturating_add(n),
        None => entries.push((id, n)),
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
