//! Per-shard metric handles: resolved once (lazily, on first use of a label
//! combination), counted locally without atomics, and flushed to the shared
//! registry once per batch. A shard never formats a label or takes the
//! registry's lock per event.

use super::{Metrics, Stage};
use crate::catalog::{ChannelId, KindId, CHANNEL_NONE};
use crate::model::{Plan, StageId};
use prometheus::local::{LocalHistogram, LocalIntCounter};
use std::sync::Arc;

/// Lazily created local counters indexed by a flat label-combination index.
struct Slots {
    slots: Vec<Option<LocalIntCounter>>,
    dirty: Vec<u32>,
}

impl Slots {
    fn new(n: usize) -> Slots {
        Slots {
            slots: (0..n).map(|_| None).collect(),
            dirty: Vec::new(),
        }
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
    engine: LocalHistogram,
    end_to_end: LocalHistogram,
    stages_first_model: usize,
}

impl ShardMetrics {
    pub fn new(shared: Arc<Metrics>, plan: Arc<Plan>) -> ShardMetrics {
        let (c, k) = (plan.catalog.channel_count(), plan.catalog.kind_count());
        let transitions = plan
            .models
            .iter()
            .map(|m| Slots::new(m.stages.len() * m.stages.len() * c))
            .collect();
        let stages_first_model = plan.models.first().map_or(1, |m| m.stages.len());
        ShardMetrics {
            engine: shared
                .processing
                .with_label_values(&[Stage::Engine.as_str()])
                .local(),
            end_to_end: shared
                .processing
                .with_label_values(&[Stage::EndToEnd.as_str()])
                .local(),
            events: Slots::new(c * k),
            transitions,
            touches: Slots::new(c * stages_first_model),
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
            .inc_by(channel as usize * k + kind as usize, 1, || {
                shared
                    .events
                    .with_label_values(&[cat.channel_name(channel), cat.kind_name(kind)])
                    .local()
            });
        let stage_name = plan.models.first().map_or("none", |m| m.stage_name(stage));
        let mode = cat.channel_mode(channel).map_or("other", |m| m.as_str());
        self.touches.inc_by(
            channel as usize * self.stages_first_model + stage as usize,
            1,
            || {
                shared
                    .channel_touches
                    .with_label_values(&[cat.channel_name(channel), mode, stage_name])
                    .local()
            },
        );
    }

    pub fn transition(&mut self, model: usize, from: StageId, to: StageId, channel: ChannelId) {
        let (plan, shared) = (&self.plan, &self.shared);
        let m = &plan.models[model];
        let s = m.stages.len();
        let idx =
            (from as usize * s + to as usize) * plan.catalog.channel_count() + channel as usize;
        let ch = if channel == CHANNEL_NONE {
            "none"
        } else {
            plan.catalog.channel_name(channel)
        };
        self.transitions[model].inc_by(idx, 1, || {
            shared
                .transitions
                .with_label_values(&[m.name.as_str(), m.stage_name(from), m.stage_name(to), ch])
                .local()
        });
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

    /// Publishes everything counted since the last flush.
    pub fn flush(&mut self) {
        self.events.flush();
        self.touches.flush();
        for t in &mut self.transitions {
            t.flush();
        }
        self.engine.flush();
        self.end_to_end.flush();
    }
}
