//! Per-shard metric handles: resolved once (lazily, on first use of a label
//! combination), counted locally without atomics, and flushed to the shared
//! registry once per batch. A shard never formats a label or takes the
//! registry's lock per event.

use super::{Metrics, Stage};
use crate::catalog::{ChannelId, KindId, CHANNEL_NONE};
use crate::model::funnel::FunnelEvent;
use crate::model::segment::Cell;
use crate::model::{Plan, StageId};
use prometheus::local::{LocalHistogram, LocalIntCounter};
use prometheus::Counter;
use std::sync::Arc;

/// Lazily created local counters indexed by a flat label-combination index.
struct Slots {
    slots: Vec<Option<LocalIntCounter>>,
    dirty: Vec<u32>,
}

impl Slots {
    fn new(n: usize) -> Slots {
        Slots { slots: (0..n).map(|_| None).collect(), dirty: Vec::new() }
    }

    fn inc_by(&mut self, idx: usize, by: u64, make: impl FnOnce() -> LocalIntCounter) {
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
        let c = slot.get_or_insert_with(make);
        if c.get() == 0 {
            self.dirty.push(idx as u32);
        }
        c.inc_by(by);
    }

    fn flush(&mut self) {
        for idx in self.dirty.drain(..) {
            if let Some(Some(c)) = self.slots.get(idx as usize) {
                c.flush();
            }
        }
    }
}

pub struct ShardMetrics {
    pub shared: Arc<Metrics>,
    plan: Arc<Plan>,
    events: Slots,
    transitions: Vec<Slots>,
    touches: Slots,
    /// Funnel attempts started and completed, by funnel and entry channel.
    funnel_entered: Slots,
    funnel_completed: Slots,
    engine: LocalHistogram,
    end_to_end: LocalHistogram,
    stages_first_model: usize,
    /// Offset of each model's stages in the flat (model, stage) index.
    stage_offset: Vec<usize>,
    attributed: Vec<Option<Counter>>,
    attributed_by_mode: Vec<Option<Counter>>,
    /// Transitions per channel in the current batch, for the recent-window stats.
    recent: Vec<u32>,
    recent_any: bool,
    /// Replaying what an earlier run applied: its transitions did not happen
    /// in the last minute, so they stay out of the recent window.
    replaying: bool,
}

const MODES: [&str; 4] = ["tech", "low", "high", "other"];

impl ShardMetrics {
    pub fn new(shared: Arc<Metrics>, plan: Arc<Plan>) -> ShardMetrics {
        let (c, k) = (plan.catalog.channel_count(), plan.catalog.kind_count());
        let transitions = plan.models.iter().map(|m| Slots::new(m.stages.len() * m.stages.len() * c)).collect();
        let stages_first_model = plan.models.first().map_or(1, |m| m.stages.len());
        let mut stage_offset = Vec::new();
        let mut total = 0;
        for m in &plan.models {
            stage_offset.push(total);
            total += m.stages.len();
        }
        let methods = plan.attribution.methods.len();
        ShardMetrics {
            stage_offset,
            attributed: vec![None; total * c * methods],
            attributed_by_mode: vec![None; total * MODES.len() * methods],
            recent: vec![0; c],
            recent_any: false,
            replaying: false,
            engine: shared.processing.with_label_values(&[Stage::Engine.as_str()]).local(),
            end_to_end: shared.processing.with_label_values(&[Stage::EndToEnd.as_str()]).local(),
            events: Slots::new(c * k),
            transitions,
            touches: Slots::new(c * stages_first_model),
            funnel_entered: Slots::new(plan.funnels.len() * c),
            funnel_completed: Slots::new(plan.funnels.len() * c),
            stages_first_model,
            shared,
            plan,
        }
    }

    /// One applied event on `channel` of `kind`, the customer in `stage` of the first model.
    pub fn event(&mut self, channel: ChannelId, kind: KindId, stage: StageId) {
        let (plan, shared) = (&self.plan, &self.shared);
        let cat = &plan.catalog;
        let k = cat.kind_count();
        self.events
            .inc_by(channel as usize * k + kind as usize, 1, || shared.events.with_label_values(&[cat.channel_name(channel), cat.kind_name(kind)]).local());
        let stage_name = plan.models.first().map_or("none", |m| m.stage_name(stage));
        let mode = cat.channel_mode(channel).map_or("other", |m| m.as_str());
        self.touches.inc_by(channel as usize * self.stages_first_model + stage as usize, 1, || {
            shared.channel_touches.with_label_values(&[cat.channel_name(channel), mode, stage_name]).local()
        });
    }

    /// Adds `credit` of a transition into `to` of `model` to `channel` under attribution method `method` (an index into the plan's methods).
    pub fn credit(&mut self, model: usize, to: StageId, channel: ChannelId, method: usize, credit: f64) {
        let (plan, shared) = (&self.plan, &self.shared);
        let cat = &plan.catalog;
        let methods = plan.attribution.methods.len();
        let m = &plan.models[model];
        let st = self.stage_offset[model] + to as usize;
        let method_name = plan.attribution.methods[method].as_str();
        let idx = (st * cat.channel_count() + channel as usize) * methods + method;
        if let Some(slot) = self.attributed.get_mut(idx) {
            slot.get_or_insert_with(|| shared.attributed.with_label_values(&[m.name.as_str(), m.stage_name(to), cat.channel_name(channel), method_name]))
                .inc_by(credit);
        }
        let mode = cat.channel_mode(channel).map_or(3, |md| MODES.iter().position(|x| *x == md.as_str()).unwrap_or(3));
        let idx = (st * MODES.len() + mode) * methods + method;
        if let Some(slot) = self.attributed_by_mode.get_mut(idx) {
            slot.get_or_insert_with(|| shared.attributed_by_mode.with_label_values(&[m.name.as_str(), m.stage_name(to), MODES[mode], method_name]))
                .inc_by(credit);
        }
    }

    /// A funnel moved for one customer.
    pub fn funnel(&mut self, funnel: usize, ev: FunnelEvent) {
        let (plan, shared) = (&self.plan, &self.shared);
        let f = &shared.funnels[funnel];
        let name = plan.funnels[funnel].name.as_str();
        let per_channel = |channel: ChannelId| funnel * plan.catalog.channel_count() + channel as usize;
        match ev {
            FunnelEvent::Reached { step, channel } => {
                f.steps[step].inc();
                if step == 0 {
                    let label = plan.catalog.channel_name(channel);
                    self.funnel_entered.inc_by(per_channel(channel), 1, || shared.funnel_entered.with_label_values(&[name, label]).local());
                }
            }
            FunnelEvent::Completed { duration_ms, entry_channel } => {
                f.completed.inc();
                f.duration.observe(duration_ms.max(0) as f64 / 1000.0);
                f.durations_ms.lock().unwrap_or_else(|p| p.into_inner()).record(duration_ms);
                let label = plan.catalog.channel_name(entry_channel);
                self.funnel_completed.inc_by(per_channel(entry_channel), 1, || shared.funnel_completed_by_channel.with_label_values(&[name, label]).local());
            }
            FunnelEvent::Dropped { at_step } => f.dropped_at[at_step.min(f.dropped_at.len() - 1)].inc(),
        }
    }

    /// A trigger was sent on `channel`.
    pub fn trigger_sent(&self, trigger: usize, channel: ChannelId) {
        if let Some((_, c)) = self.shared.triggers[trigger].sent.iter().find(|(ch, _)| *ch == channel) {
            c.inc();
        }
    }

    /// A due trigger was held back.
    pub fn trigger_suppressed(&self, trigger: usize, reason: crate::trigger::Suppressed) {
        self.shared.triggers[trigger].suppressed[reason as usize].inc();
    }

    /// Moves one customer between cells of the segment matrix (exact, shared gauges).
    pub fn move_segment(&self, from: Option<Cell>, to: Option<Cell>) {
        if from == to {
            return;
        }
        if let Some(f) = from {
            self.shared.segment_cells[f as usize].dec();
        }
        if let Some(t) = to {
            self.shared.segment_cells[t as usize].inc();
        }
    }

    pub fn transition(&mut self, model: usize, from: StageId, to: StageId, channel: ChannelId) {
        if let Some(r) = self.recent.get_mut(channel as usize) {
            *r += 1;
            self.recent_any = true;
        }
        let (plan, shared) = (&self.plan, &self.shared);
        let m = &plan.models[model];
        let s = m.stages.len();
        let idx = (from as usize * s + to as usize) * plan.catalog.channel_count() + channel as usize;
        let ch = if channel == CHANNEL_NONE { "none" } else { plan.catalog.channel_name(channel) };
        self.transitions[model].inc_by(idx, 1, || shared.transitions.with_label_values(&[m.name.as_str(), m.stage_name(from), m.stage_name(to), ch]).local());
    }

    /// Moves one customer between stages of a model (exact, shared gauges).
    pub fn move_customer(&self, model: usize, from: Option<StageId>, to: Option<StageId>) {
        let g = &self.shared.stage_gauges[model];
        if let Some(f) = from {
            g[f as usize].dec();
        }
        if let Some(t) = to {
            g[t as usize].inc();
        }
    }

    pub fn observe(&mut self, engine_secs: f64, end_to_end_secs: f64) {
        self.engine.observe(engine_secs);
        self.end_to_end.observe(end_to_end_secs);
    }

    /// Marks what follows as a replay (see `replaying`), or not; what was
    /// counted before the switch is settled as it was counted.
    pub fn set_replaying(&mut self, on: bool) {
        self.flush_recent();
        self.replaying = on;
    }

    fn flush_recent(&mut self) {
        if !self.recent_any {
            return;
        }
        if !self.replaying {
            self.shared.recent.add(crate::ingest::nats::wall_ms() / 1000, &self.recent);
        }
        self.recent.fill(0);
        self.recent_any = false;
    }

    /// Publishes everything counted since the last flush.
    pub fn flush(&mut self) {
        self.events.flush();
        self.touches.flush();
        self.funnel_entered.flush();
        self.funnel_completed.flush();
        for t in &mut self.transitions {
            t.flush();
        }
        self.engine.flush();
        self.end_to_end.flush();
        self.flush_recent();
    }
}
