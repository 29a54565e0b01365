//! A shard: owns its customers outright and applies their events, merges,
//! timers and admin ops in queue order. Pure and synchronous: the worker task
//! (`worker.rs`) feeds it batches and publishes what it produced.
//!
//! For each event, in order: timers due at the event's watermark fire; the
//! models step (`Plan::on_event`), each transition credited to the touches
//! that led to it; funnels advance; the segment cell is recomputed.

use super::customer::{earlier_sent, with_earlier_sent, Consent, Customer, CustomerView, Forgotten};
use super::due::{self, inactive_at, rewake};
use super::ops::{EventOp, MergeCause};
use super::table::CustomerTable;
use super::timers::TimerQueue;
use crate::catalog::{ChannelId, IdTypes, CHANNEL_NONE};
use crate::emit::{sort_credits, to_bytes, Cause, Credit, Outbound, Transition, TransitionJson, TransitionSubjects, TriggerJson};
use crate::identity::CustomerKey;
use crate::metrics::local::ShardMetrics;
use crate::model::attribution::PackedTouch;
use crate::model::time48::{Due48, Time48};
use crate::model::{Fired, Plan};
use crate::trigger::{Decision, OnEvent, Suppressed};
use async_nats::Subject;
use bytes::Bytes;
use smallvec::SmallVec;
use std::sync::Arc;

pub struct Shard {
    pub index: usize,
    plan: Arc<Plan>,
    customers: CustomerTable,
    timers: TimerQueue,
    pub metrics: ShardMetrics,
    id_types: IdTypes,
    /// Transitions and triggers, counted and serialised.
    pub out: Output,
    watermark: i64,
    scratch: Scratch,
}

/// What a shard publishes: each transition and trigger is counted, and
/// serialised into `messages` unless nobody will publish it (a replay).
pub struct Output {
    /// Messages produced since the worker last published.
    pub messages: Vec<Outbound>,
    /// False when nothing is ever published (a replay).
    emit: bool,
    /// True while a rebuild replays what an earlier run published.
    muted: bool,
    subjects: TransitionSubjects,
    json: TransitionJson,
    trigger_subjects: Vec<Subject>,
    /// Where a transition's JSON is written before it is copied out at its size.
    buf: Vec<u8>,
}

/// Reused buffers, so attribution allocates only the JSON it publishes.
#[derive(Default)]
struct Scratch {
    credited: Vec<PackedTouch>,
    weights: Vec<f64>,
    credits: Vec<Credit>,
}

/// What caused a transition, for its JSON.
struct Origin<'a> {
    ts: i64,
    event_id: Option<&'a str>,
    channel: ChannelId,
    cause: Cause,
}

impl Shard {
    pub fn new(index: usize, plan: Arc<Plan>, metrics: ShardMetrics) -> Shard {
        Shard {
            index,
            out: Output {
                messages: Vec::new(),
                emit: true,
                muted: false,
                subjects: TransitionSubjects::new(&plan),
                json: TransitionJson::new(&plan),
                trigger_subjects: plan.triggers.iter().map(|t| Subject::from(format!("journey.trigger.{}", t.name))).collect(),
                buf: Vec::new(),
            },
            id_types: plan.catalog.id_types.clone(),
            plan,
            customers: CustomerTable::default(),
            timers: TimerQueue::default(),
            metrics,
            watermark: i64::MIN,
            scratch: Scratch::default(),
        }
    }

    /// Stops serialising output nobody publishes.
    pub fn discard_output(&mut self) {
        self.out.emit = false;
    }

    /// Mutes or unmutes the output (see [`Op::Mute`](super::ops::Op::Mute)).
    pub fn mute(&mut self, on: bool) {
        self.out.muted = on;
        self.metrics.set_replaying(on);
    }

    pub fn customers(&self) -> usize {
        self.customers.len()
    }

    /// Starts loading the customers of the events ahead
    /// ([`CustomerTable::prefetch_ahead`]).
    #[inline]
    pub fn prefetch_ahead(&self, ahead: impl Fn(usize) -> Option<CustomerKey>) {
        self.customers.prefetch_ahead(ahead);
    }

    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// Applies one event: fires timers due at its watermark, then the models,
    /// funnels and segments.
    pub fn apply_event(&mut self, ev: &EventOp) {
        self.advance(ev.watermark);
        let plan: &Plan = &self.plan;
        let t = &ev.touch;
        let (c, created) = self.customers.get_or_insert_with(ev.key, || Customer::new(plan, t.ts));
        if created {
            for (mi, s) in c.journey.stages.iter().enumerate() {
                self.metrics.move_customer(mi, None, Some(s.stage));
            }
            self.metrics.move_segment(None, Some(c.segment.cell));
        }
        c.ids.link(&ev.new_ids);
        let stage0 = c.journey.stages.first().map_or(0, |s| s.stage);
        self.metrics.event(t.channel, t.kind, stage0);
        let mut fired: SmallVec<[Fired; 4]> = SmallVec::new();
        plan.on_event(&mut c.journey, t, ev.watermark, |f| fired.push(f));
        let touch = PackedTouch::new(t.ts, t.channel);
        let origin = Origin { ts: t.ts, event_id: Some(ev.event_id()), channel: t.channel, cause: Cause::Event };
        for f in fired {
            self.metrics.move_customer(f.model, Some(f.from), Some(f.to));
            attribute(plan, &mut self.metrics, &mut self.scratch, c, f, touch);
            self.out.transition(&mut self.metrics, &self.scratch.credits, c.one_id(), f, &origin);
        }
        c.touches.push(touch, plan.attribution.history);
        c.first_seen = c.first_seen.min(Time48::new(t.ts));
        c.last_seen = c.last_seen.max(Time48::new(t.ts));
        c.count_activity(t.channel, t.kind);
        if let Some(change) = &ev.consent {
            c.set_consent(Consent { purpose: change.purpose.clone(), channel: change.channel, granted: change.granted, ts: t.ts });
        }
        for (fi, funnel) in plan.funnels.iter().enumerate() {
            let metrics = &mut self.metrics;
            funnel.on_event(&mut c.funnels[fi], t, |e| metrics.funnel(fi, e));
        }
        for (ti, trigger) in plan.triggers.iter().enumerate() {
            if let Some((from, at)) = trigger.take_overdue(&mut c.triggers[ti], t) {
                self.out.trigger(&self.metrics, plan, c, ti, from, at, "timeout");
            }
            match trigger.on_event(&mut c.triggers[ti], t) {
                OnEvent::Nothing => {}
                OnEvent::Cancelled => self.metrics.trigger_suppressed(ti, Suppressed::Cancelled),
                OnEvent::Scheduled { cancelled, .. } => {
                    if cancelled {
                        self.metrics.trigger_suppressed(ti, Suppressed::Cancelled);
                    }
                }
                OnEvent::DueNow => self.out.trigger(&self.metrics, plan, c, ti, t.ts, t.ts, "event"),
            }
        }
        if plan.segments.record(&mut c.segment, t.kind, t.ts) {
            resegment(&self.metrics, plan, c, ev.watermark);
        }
        due::arm(plan, c);
        rewake(&mut self.timers, plan, ev.key, c);
    }

    /// Moves the watermark: fires every timer due at or before it, in due order.
    pub fn advance(&mut self, watermark: i64) {
        if watermark <= self.watermark {
            return;
        }
        self.watermark = watermark;
        let plan: &Plan = &self.plan;
        while let Some(timer) = self.timers.pop_due(watermark) {
            // Timers fall due for customers all over memory: prefetch ahead,
            // as the worker does for events.
            self.customers.prefetch_ahead(|n| self.timers.key_ahead(n));
            let Some(c) = self.customers.get_mut(timer.key) else { continue };
            if c.wake.get() != timer.due {
                continue; // Stale: a sooner timer was queued since.
            }
            c.wake = Due48::NEVER;
            fire_due(&mut self.out, &mut self.metrics, plan, c, timer.due, watermark);
            rewake(&mut self.timers, plan, timer.key, c);
        }
    }

    /// Removes a customer that is merging into one on another shard. Its
    /// gauges stay counted until the survivor's shard absorbs it.
    pub fn evict(&mut self, key: CustomerKey, watermark: i64) -> Option<Customer> {
        self.advance(watermark);
        self.customers.remove(key)
    }

    /// Merges `other` into the customer `into` (DESIGN.md: each model takes the
    /// later stage; histories combine; last event time is the later one). A
    /// side whose stage changes publishes a `merge` transition.
    pub fn merge(&mut self, into: CustomerKey, mut other: Customer, cause: &MergeCause) {
        self.advance(cause.watermark);
        let plan: &Plan = &self.plan;
        let Some(c) = self.customers.get_mut(into) else {
            // The survivor has no state here (it was forgotten meanwhile): the
            // absorbed customer continues under the survivor's key.
            // Its timers are queued under its old key, which no longer finds
            // it: queue them again under the survivor's.
            other.wake = Due48::NEVER;
            other.segment_due = Due48::NEVER;
            other.ids.link(&cause.new_ids);
            due::arm(plan, &mut other);
            resegment(&self.metrics, plan, &mut other, cause.watermark);
            let c = self.customers.insert(into, other);
            rewake(&mut self.timers, plan, into, c);
            return;
        };
        let mut merged = SmallVec::<[crate::model::Merged; 4]>::new();
        let journey = std::mem::replace(&mut other.journey, plan.new_journey(0));
        plan.merge(&mut c.journey, journey, |m| merged.push(m));
        // The absorbed side's segment cell, before its activity moves over.
        let absorbed_cell = other.segment.cell;
        // Ids, touches and activity first: the merge transitions carry the
        // merged ONE_ID and credit both sides' touches. The event's new ids
        // were linked last.
        c.absorb_profile(plan, &mut other);
        c.ids.link(&cause.new_ids);
        let touch = PackedTouch::new(cause.ts, cause.channel);
        let origin = Origin { ts: cause.ts, event_id: Some(&cause.event_id), channel: cause.channel, cause: Cause::Merge };
        for m in merged {
            self.metrics.move_customer(m.model, Some(m.absorbed), None);
            for side in [m.survivor, m.absorbed] {
                if side != m.to {
                    let f = Fired { model: m.model, from: side, to: m.to };
                    attribute(plan, &mut self.metrics, &mut self.scratch, c, f, touch);
                    self.out.transition(&mut self.metrics, &self.scratch.credits, c.one_id(), f, &origin);
                }
            }
            if m.survivor != m.to {
                self.metrics.move_customer(m.model, Some(m.survivor), Some(m.to));
            }
        }
        for (fi, funnel) in plan.funnels.iter().enumerate() {
            if let Some(dropped) = funnel.merge(&mut c.funnels[fi], other.funnels[fi]) {
                self.metrics.funnel(fi, dropped);
            }
        }
        for (ti, trigger) in plan.triggers.iter().enumerate() {
            let theirs = earlier_sent(&other.extras, ti);
            let state = &mut c.triggers[ti];
            match with_earlier_sent(&mut c.extras, ti, |_, earlier| trigger.merge(state, other.triggers[ti], earlier, theirs)) {
                OnEvent::Cancelled => self.metrics.trigger_suppressed(ti, Suppressed::Cancelled),
                OnEvent::Scheduled { .. } | OnEvent::Nothing | OnEvent::DueNow => {}
            }
        }
        self.metrics.move_segment(Some(absorbed_cell), None);
        resegment(&self.metrics, plan, c, cause.watermark);
        due::arm(plan, c);
        rewake(&mut self.timers, plan, into, c);
    }

    pub fn view(&self, key: CustomerKey) -> Option<CustomerView> {
        self.customers.get(key).map(|c| c.view(&self.plan, &self.id_types))
    }

    /// Removes a customer for good (right to erasure); gauges drop it.
    pub fn forget(&mut self, key: CustomerKey) -> Option<Forgotten> {
        let c = self.customers.remove(key)?;
        for (mi, s) in c.journey.stages.iter().enumerate() {
            self.metrics.move_customer(mi, Some(s.stage), None);
        }
        self.metrics.move_segment(Some(c.segment.cell), None);
        let view = c.view(&self.plan, &self.id_types);
        Some((view, c.ids.to_vec()))
    }
}

/// Fires a customer's deadlines that fall at `due`, its queued timer's time
/// (none falls earlier: the timer is queued at the earliest), in the order
/// inactivity durations, funnel expiries, the segment cell, waiting
/// triggers, inactivity triggers.
fn fire_due(out: &mut Output, metrics: &mut ShardMetrics, plan: &Plan, c: &mut Customer, due: i64, watermark: i64) {
    for (which, d) in plan.inactivity.iter().enumerate() {
        let bit = 1u64 << which;
        let Some(at) = inactive_at(c, bit, *d).filter(|at| *at <= due) else { continue };
        c.armed &= !bit;
        let mut fired: SmallVec<[Fired; 4]> = SmallVec::new();
        plan.on_timer(&mut c.journey, which, at, |f| fired.push(f));
        let origin = Origin { ts: at, event_id: None, channel: CHANNEL_NONE, cause: Cause::Inactivity };
        for f in fired {
            metrics.move_customer(f.model, Some(f.from), Some(f.to));
            out.transition(metrics, &[], c.one_id(), f, &origin);
        }
    }
    for (fi, funnel) in plan.funnels.iter().enumerate() {
        if c.funnels[fi].reached > 0 && funnel.expiry(&c.funnels[fi]) <= due {
            funnel.on_watermark(&mut c.funnels[fi], watermark, |e| metrics.funnel(fi, e));
        }
    }
    if c.segment_due.get() <= due {
        c.segment_due = Due48::NEVER;
        resegment(metrics, plan, c, watermark);
    }
    for ti in 0..plan.triggers.len() {
        let state = &mut c.triggers[ti];
        if state.is_pending() && state.pending_due() <= due {
            let (from, at) = (plan.triggers[ti].pending_from(state), state.pending_due());
            state.clear_pending();
            out.trigger(metrics, plan, c, ti, from, at, "timeout");
        }
    }
    for (ti, trigger) in plan.triggers.iter().enumerate() {
        let Some(at) = trigger.inactivity().and_then(|d| inactive_at(c, trigger.armed_bit, d)).filter(|at| *at <= due) else { continue };
        c.armed &= !trigger.armed_bit;
        let from = c.last_seen.get();
        out.trigger(metrics, plan, c, ti, from, at, "inactivity");
    }
}

/// Recomputes the customer's segment cell at `watermark` and notes when it
/// may next change (an event leaves its window), unless that is sooner.
fn resegment(metrics: &ShardMetrics, plan: &Plan, c: &mut Customer, watermark: i64) {
    let cell = plan.segments.cell(&c.segment, watermark);
    metrics.move_segment(Some(c.segment.cell), Some(cell));
    c.segment.cell = cell;
    if let Some(due) = plan.segments.next_change(&c.segment) {
        c.segment_due = c.segment_due.min(Due48::new(due));
    }
}

/// Credits a transition to the customer's touches under every attribution
/// method: counts the credit, and leaves it in `scratch.credits`, one entry
/// per method and channel in JSON key order, for the transition's JSON.
fn attribute(plan: &Plan, metrics: &mut ShardMetrics, scratch: &mut Scratch, c: &Customer, f: Fired, cause: PackedTouch) {
    let a = &plan.attribution;
    let credits = &mut scratch.credits;
    credits.clear();
    a.credited(&c.touches, cause, &mut scratch.credited);
    for (mi, method) in a.methods.iter().enumerate() {
        a.weights(*method, &scratch.credited, cause.ts(), &mut scratch.weights);
        let first = credits.len();
        for (t, w) in scratch.credited.iter().zip(&scratch.weights) {
            if *w > 0.0 {
                match credits[first..].iter_mut().find(|e| e.1 == t.channel()) {
                    Some(e) => e.2 += *w,
                    None => credits.push((mi as u8, t.channel(), *w)),
                }
            }
        }
    }
    for &(mi, channel, w) in credits.iter() {
        metrics.credit(f.model, f.to, channel, mi as usize, w);
    }
    sort_credits(plan, credits);
}

impl Output {
    /// Counts a transition and, when output is kept, writes its JSON (in
    /// `buf`, then copied out at its size) with its attribution `credits`.
    fn transition(&mut self, metrics: &mut ShardMetrics, credits: &[Credit], one_id: &str, f: Fired, o: &Origin) {
        metrics.transition(f.model, f.from, f.to, o.channel);
        if !self.emit || self.muted {
            return;
        }
        let t = Transition { one_id, model: f.model, from: f.from, to: f.to, ts: o.ts, event_id: o.event_id, channel: o.channel, reason: o.cause, credits };
        self.buf.clear();
        self.json.write(&mut self.buf, &t);
        self.messages.push(Outbound { subject: self.subjects.get(f.model, f.from, f.to), payload: Bytes::copy_from_slice(&self.buf) });
    }

    /// Decides a due trigger (consent, quiet hours, cap), counts the outcome
    /// and, when sent and output is kept, writes its message.
    #[allow(clippy::too_many_arguments)]
    fn trigger(&mut self, metrics: &ShardMetrics, plan: &Plan, c: &mut Customer, ti: usize, from: i64, at: i64, reason: &str) {
        let trigger = &plan.triggers[ti];
        let state = &mut c.triggers[ti];
        match with_earlier_sent(&mut c.extras, ti, |consent, earlier| trigger.decide(state, consent, earlier, at)) {
            Decision::Send(channel) => {
                metrics.trigger_sent(ti, channel);
                if !self.emit || self.muted {
                    return;
                }
                let json =
                    TriggerJson { one_id: c.one_id(), trigger: &trigger.name, channel: plan.catalog.channel_name(channel), ts: from, due_ts: at, reason };
                self.messages.push(Outbound { subject: self.trigger_subjects[ti].clone(), payload: to_bytes(&json) });
            }
            Decision::Suppress(why) => metrics.trigger_suppressed(ti, why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::EventId;
    use crate::metrics::Metrics;
    use crate::model::matcher::Touch;
    use std::time::Instant;

    const HOUR: i64 = 3_600_000;
    const CONFIG: &str = r#"
[channels]
app = "tech"
email = "low"

[[model]]
name = "lifecycle"
stages = ["new", "customer"]
initial = "new"
transitions = [{ from = "new", to = "customer", on = { kind = "purchase" } }]

[[funnel]]
name = "checkout"
steps = [{ kind = "cart_add" }, { kind = "purchase" }]
window = "2h"

[[trigger]]
name = "abandoned_cart"
on = { kind = "cart_add" }
unless = { kind = "purchase" }
within = "1h"
channels = ["email"]

[[trigger]]
name = "reactivation"
after_inactivity = "10h"
channels = ["email"]
"#;

    fn shard() -> (Shard, Arc<Metrics>) {
        shard_of(CONFIG)
    }

    fn shard_of(config: &str) -> (Shard, Arc<Metrics>) {
        let plan = Arc::new(Plan::new(crate::config::parse(config).expect("config").config));
        let metrics = Arc::new(Metrics::new(&plan));
        (Shard::new(0, plan.clone(), ShardMetrics::new(metrics.clone(), plan)), metrics)
    }

    fn event(shard: &Shard, key: CustomerKey, kind: &str, ts: i64) -> EventOp {
        event_at(shard, key, kind, ts, ts)
    }

    /// An event at `ts` applied at `watermark` (after a later one, within the lateness).
    fn event_at(shard: &Shard, key: CustomerKey, kind: &str, ts: i64, watermark: i64) -> EventOp {
        let cat = &shard.plan.catalog;
        EventOp {
            key,
            touch: Touch { ts, channel: cat.channel("app").expect("app"), kind: cat.kind(kind), value: None },
            watermark,
            event_id: EventId::new(&format!("e{ts}")),
            new_ids: Vec::new(),
            consent: None,
            received: Instant::now(),
        }
    }

    fn triggers_sent(shard: &mut Shard) -> Vec<String> {
        let subjects = shard.out.messages.iter().map(|o| o.subject.to_string()).filter(|s| s.starts_with("journey.trigger.")).collect();
        shard.out.messages.clear();
        subjects
    }

    #[test]
    fn a_customer_absorbed_into_a_forgotten_survivor_keeps_its_timers() {
        let (mut s, metrics) = shard();
        s.apply_event(&event(&s, 1, "cart_add", 0));
        let other = s.evict(1, 0).expect("customer 1");
        let cause = MergeCause { ts: 1, channel: 0, event_id: "m".into(), watermark: 1, new_ids: Vec::new() };
        s.merge(2, other, &cause);
        s.advance(HOUR + 1);
        assert_eq!(triggers_sent(&mut s), ["journey.trigger.abandoned_cart"], "the pending trigger fires under the new key");
        s.advance(3 * HOUR);
        s.metrics.flush();
        assert_eq!(dropped(&metrics), 1, "the open funnel attempt expires");
        s.advance(11 * HOUR);
        assert_eq!(triggers_sent(&mut s), ["journey.trigger.reactivation"], "inactivity is armed again");
    }

    fn dropped(metrics: &Metrics) -> u64 {
        metrics.funnels[0].dropped_at.iter().map(|c| c.get()).sum()
    }

    #[test]
    fn a_customer_queues_one_timer_and_each_deadline_fires_at_its_own_time() {
        let (mut s, metrics) = shard();
        for ts in (0..10).map(|i| i * 1_000) {
            s.apply_event(&event(&s, 1, "cart_add", ts));
        }
        assert_eq!(s.pending_timers(), 1, "one timer, at the earliest deadline, however many events moved them");
        let steps: [(i64, &[&str], u64); 6] = [
            (HOUR, &[], 0),
            (HOUR + 9_001, &["journey.trigger.abandoned_cart"], 0), // due 1h after the last cart_add, fires past it
            (2 * HOUR, &[], 0),
            (2 * HOUR + 1, &[], 1), // the funnel attempt opened at 0 expires after its 2h window
            (10 * HOUR + 8_999, &[], 1),
            (10 * HOUR + 9_000, &["journey.trigger.reactivation"], 1), // 10h after the last event
        ];
        for (watermark, sent, drops) in steps {
            s.advance(watermark);
            s.metrics.flush();
            assert_eq!((triggers_sent(&mut s), dropped(&metrics)), (sent.iter().map(|x| x.to_string()).collect(), drops), "at {watermark}");
        }
        assert_eq!(s.pending_timers(), 0, "nothing left to wait for");
        s.apply_event(&event(&s, 1, "view", 11 * HOUR));
        s.advance(21 * HOUR);
        assert_eq!(triggers_sent(&mut s), ["journey.trigger.reactivation"], "an event arms inactivity again");
    }

    fn cancelled(metrics: &Metrics, trigger: usize) -> u64 {
        metrics.triggers[trigger].suppressed[Suppressed::Cancelled as usize].get()
    }

    #[test]
    fn an_unless_event_that_arrived_before_its_on_event_cancels() {
        let (mut s, metrics) = shard();
        s.apply_event(&event_at(&s, 1, "purchase", 2_000, 0));
        s.apply_event(&event_at(&s, 1, "cart_add", 0, 0));
        s.advance(2 * HOUR);
        assert_eq!(triggers_sent(&mut s), Vec::<String>::new(), "the purchase in (ts, due_ts) cancels");
        assert_eq!(cancelled(&metrics, 0), 1);
    }

    #[test]
    fn a_wait_that_came_due_before_the_next_cart_add_is_sent_not_replaced() {
        let (mut s, _) = shard();
        s.apply_event(&event(&s, 1, "cart_add", 0));
        // A second cart add after the first wait's due time, while the
        // watermark (its time less the lateness) has not passed that yet.
        s.apply_event(&event_at(&s, 1, "cart_add", HOUR + 2_000, HOUR - 3_000));
        let sent: Vec<serde_json::Value> =
            s.out.messages.iter().filter(|o| o.subject.starts_with("journey.trigger.")).map(|o| serde_json::from_slice(&o.payload).expect("json")).collect();
        assert_eq!(sent.len(), 1, "the first reminder came due before the second cart add");
        assert_eq!((&sent[0]["ts"], &sent[0]["due_ts"], &sent[0]["reason"]), (&0.into(), &HOUR.into(), &"timeout".into()));
        s.out.messages.clear();
        s.advance(2 * HOUR + 2_001);
        assert_eq!(triggers_sent(&mut s), ["journey.trigger.abandoned_cart"], "and the second wait runs its own hour");
    }

    #[test]
    fn a_cart_add_that_restarts_a_wait_is_cancelled_by_a_purchase_that_arrived_first() {
        let (mut s, metrics) = shard();
        s.apply_event(&event(&s, 1, "cart_add", 0));
        // After the first wait's hour: it does not cancel that one.
        s.apply_event(&event_at(&s, 1, "purchase", HOUR + 1_000, HOUR - 4_000));
        // In time order this cart add came before the purchase and restarted the wait.
        s.apply_event(&event_at(&s, 1, "cart_add", HOUR - 2_000, HOUR - 4_000));
        s.advance(3 * HOUR);
        assert_eq!(triggers_sent(&mut s), Vec::<String>::new(), "the restarted wait was cancelled by the purchase");
        assert_eq!(cancelled(&metrics, 0), 1);
    }

    #[test]
    fn a_waiting_message_fires_when_the_watermark_reaches_its_due_time_like_a_timer() {
        let (mut s, _) = shard();
        s.apply_event(&event(&s, 1, "cart_add", 0));
        s.apply_event(&event_at(&s, 2, "view", HOUR + 4_999, HOUR - 1));
        assert_eq!(triggers_sent(&mut s), Vec::<String>::new(), "not yet: the watermark is short of due_ts");
        s.apply_event(&event_at(&s, 2, "view", HOUR + 5_000, HOUR)); // the watermark reaches due_ts
        assert_eq!(triggers_sent(&mut s), ["journey.trigger.abandoned_cart"], "due at or before the watermark: it fires first");
        // A purchase at exactly due_ts (on time: not before the watermark) comes after it.
        s.apply_event(&event_at(&s, 1, "purchase", HOUR, HOUR));
        s.apply_event(&event(&s, 3, "cart_add", 3 * HOUR));
        s.apply_event(&event_at(&s, 3, "purchase", 4 * HOUR, 4 * HOUR - 1));
        s.advance(5 * HOUR);
        assert_eq!(
            triggers_sent(&mut s),
            ["journey.trigger.abandoned_cart"],
            "a purchase at due_ts that came before the watermark got there does not cancel either"
        );
    }

    #[test]
    fn a_wait_cancelled_by_an_event_that_starts_the_next_one_is_counted() {
        let (mut s, metrics) = shard_of(
            "[channels]\napp = \"tech\"\nemail = \"low\"\n[[trigger]]\nname = \"replenishment\"\non = { kind = \"purchase\" }\nunless = { kind = \"purchase\" }\nwithin = \"25d\"\nchannels = [\"email\"]\n",
        );
        s.apply_event(&event(&s, 1, "purchase", 0));
        s.apply_event(&event(&s, 1, "purchase", 24 * HOUR));
        assert_eq!(cancelled(&metrics, 0), 1, "the first reminder was cancelled by a purchase in its window");
        s.advance(24 * HOUR + 25 * 24 * HOUR + 1);
        assert_eq!(triggers_sent(&mut s), ["journey.trigger.replenishment"], "the second one fires");
    }

    /// A cap above one keeps the earlier sends in the customer's extras,
    /// and a merge combines both sides' sends.
    #[test]
    fn a_cap_of_two_counts_both_customers_sends_after_a_merge() {
        let (mut s, metrics) = shard_of(
            "[channels]\napp = \"tech\"\n[[trigger]]\nname = \"welcome\"\non = { kind = \"signup\" }\nchannels = [\"app\"]\ncap = { max = 2, per = \"24h\" }\n",
        );
        let capped = |m: &Metrics| m.triggers[0].suppressed[Suppressed::Cap as usize].get();
        for ts in [0, HOUR, 2 * HOUR] {
            s.apply_event(&event(&s, 1, "signup", ts));
        }
        s.metrics.flush();
        assert_eq!((triggers_sent(&mut s).len(), capped(&metrics)), (2, 1), "two sends in 24h, the third held back");
        let earlier = |s: &mut Shard, key| s.customers.get(key).and_then(|c| c.extras.as_ref()).map(|e| e.sent.clone());
        assert_eq!(earlier(&mut s, 1), Some(vec![vec![0]]), "the send before the latest is kept in the extras");
        s.apply_event(&event(&s, 2, "signup", 26 * HOUR));
        assert_eq!(earlier(&mut s, 2), None, "one send: no extras");
        s.apply_event(&event(&s, 2, "signup", 30 * HOUR));
        assert_eq!(earlier(&mut s, 2), Some(vec![vec![26 * HOUR]]));
        assert_eq!(triggers_sent(&mut s).len(), 2);
        let other = s.evict(2, 30 * HOUR).expect("customer 2");
        let cause = MergeCause { ts: 30 * HOUR, channel: 0, event_id: "m".into(), watermark: 30 * HOUR, new_ids: Vec::new() };
        s.merge(1, other, &cause);
        assert_eq!(earlier(&mut s, 1), Some(vec![vec![26 * HOUR]]), "the latest two of both sides' four: 26h and 30h");
        s.apply_event(&event(&s, 1, "signup", 31 * HOUR));
        s.metrics.flush();
        assert_eq!((triggers_sent(&mut s).len(), capped(&metrics)), (0, 2), "the other side's two sends hold this one back");
        s.apply_event(&event(&s, 1, "signup", 50 * HOUR + 1));
        s.metrics.flush();
        assert_eq!((triggers_sent(&mut s).len(), capped(&metrics)), (1, 2), "26h has left the window");
    }

    #[test]
    fn a_purchase_of_the_other_side_cancels_a_wait_at_the_merge() {
        let (mut s, metrics) = shard();
        s.apply_event(&event(&s, 1, "cart_add", 0));
        s.apply_event(&event(&s, 2, "purchase", 10 * 60_000));
        let other = s.evict(2, 10 * 60_000).expect("customer 2");
        let cause = MergeCause { ts: 20 * 60_000, channel: 2, event_id: "m".into(), watermark: 20 * 60_000, new_ids: Vec::new() };
        s.merge(1, other, &cause);
        s.advance(2 * HOUR);
        assert_eq!(triggers_sent(&mut s), Vec::<String>::new(), "a purchase on any of the customer's ids cancels");
        assert_eq!(cancelled(&metrics, 0), 1);
    }

    #[test]
    fn after_a_merge_a_one_id_tie_goes_to_the_id_linked_earliest() {
        let (mut s, _) = shard();
        let ty = |n: &str| s.plan.catalog.id_types.lookup(n).expect("id type");
        let (user, anon) = (ty("user_id"), ty("anonymous_id"));
        let mut a = event(&s, 1, "view", 1);
        a.new_ids = vec![(anon, "d-a".into())];
        s.apply_event(&a);
        let mut b = event(&s, 2, "view", 0);
        b.new_ids = vec![(user, "u-1".into())];
        s.apply_event(&b);
        let other = s.evict(2, 2).expect("customer 2");
        let cause = MergeCause { ts: 2, channel: 2, event_id: "m".into(), watermark: 2, new_ids: vec![(user, "u-2".into())] };
        s.merge(1, other, &cause);
        let view = s.view(1).expect("merged");
        assert_eq!(view.one_id, "u-1", "u-1 was linked before u-2");
        assert_eq!(view.ids["user_id"], ["u-1", "u-2"]);
    }

    #[test]
    fn the_most_recent_touches_are_credited_when_touches_arrive_out_of_order() {
        let (mut s, metrics) = shard_of(&format!("{CONFIG}\n[attribution]\nmax_touches = 2\n"));
        let on = |s: &Shard, kind: &str, channel: &str, ts: i64, watermark: i64| {
            let mut e = event_at(s, 1, kind, ts, watermark);
            e.touch.channel = s.plan.catalog.channel(channel).expect("channel");
            e
        };
        // Within the allowed lateness, an app touch arrives before two older email touches.
        s.apply_event(&on(&s, "view", "app", 10_000, 5_000));
        s.apply_event(&on(&s, "view", "email", 8_000, 5_000));
        s.apply_event(&on(&s, "view", "email", 9_000, 5_000));
        s.apply_event(&on(&s, "purchase", "email", 11_000, 6_000));
        s.metrics.flush();
        let credit = |channel: &str| metrics.attributed.with_label_values(&["lifecycle", "customer", channel, "first_touch"]).get();
        // max_touches = 2: the conversion and the most recent touch before it, app at 10 s.
        assert_eq!((credit("app"), credit("email")), (1.0, 0.0), "first_touch goes to the most recent earlier touch");
    }
}
