//! Journey models, compiled from the config into a [`Plan`] that every shard
//! shares read-only. A customer's position in every model is a [`Journey`];
//! `Plan::on_event` and `Plan::on_timer` are the whole model semantics, pure
//! functions of (journey, event or timer, watermark), so the engine is
//! deterministic and replayable.

pub mod attribution;
pub mod funnel;
pub mod machine;
pub mod matcher;
pub mod segment;
pub mod time48;
pub mod window;

pub use machine::{Model, Rule, RuleTrigger, StageId};
pub use matcher::{IdSet, Matcher, Touch};
use time48::Time48;
pub use window::CountWindow;

use crate::catalog::Catalog;
use crate::config::Config;
use smallvec::SmallVec;

/// A `count` + `within` window that some rule reads.
#[derive(Debug)]
pub struct Counted {
    pub matcher: Matcher,
    pub within: i64,
    pub count: u32,
}

/// Everything the engine needs from the config, compiled.
#[derive(Debug)]
pub struct Plan {
    pub config: Config,
    pub catalog: Catalog,
    pub models: Vec<Model>,
    pub counted: Vec<Counted>,
    /// Distinct `after_inactivity` durations (ms), each with a bit of a
    /// customer's `armed` mask by index.
    pub inactivity: Vec<i64>,
    /// Every inactivity bit of the `armed` mask: the durations' and the
    /// inactivity triggers'.
    pub inactivity_bits: u64,
    pub attribution: attribution::Attributor,
    pub funnels: Vec<funnel::Funnel>,
    pub segments: segment::Segments,
    pub triggers: Vec<crate::trigger::Trigger>,
}

/// Models and counted rules a customer keeps inline, in its own slot of the
/// shard's table rather than in blocks of their own (more spill to the heap):
/// every event reads them, and each separate block is one more cache and TLB
/// miss at millions of customers.
pub const INLINE_MODELS: usize = 2;
pub const INLINE_COUNTED: usize = 2;

/// A customer's stage in one model and the event time it was entered (8
/// bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageAt {
    pub stage: StageId,
    pub since: Time48,
}

impl StageAt {
    pub fn new(stage: StageId, since: i64) -> StageAt {
        StageAt { stage, since: Time48::new(since) }
    }
}

/// A customer's stage in every model, and the windows its counted rules read.
#[derive(Clone, Debug, PartialEq)]
pub struct Journey {
    pub stages: SmallVec<[StageAt; INLINE_MODELS]>,
    pub windows: SmallVec<[CountWindow; INLINE_COUNTED]>,
}

/// A stage change in one model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fired {
    pub model: usize,
    pub from: StageId,
    pub to: StageId,
}

/// What a merge did to one model: both sides' stages and the result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Merged {
    pub model: usize,
    pub survivor: StageId,
    pub absorbed: StageId,
    pub to: StageId,
}

impl Plan {
    pub fn new(config: Config) -> Plan {
        let catalog = Catalog::new(&config);
        let mut counted: Vec<Counted> = Vec::new();
        let mut inactivity: Vec<i64> = Vec::new();
        let models = config
            .models
            .iter()
            .map(|m| {
                Model::compile(
                    m,
                    &catalog,
                    &mut |matcher, within, count| {
                        counted.push(Counted { matcher, within, count });
                        counted.len() - 1
                    },
                    &mut |d| match inactivity.iter().position(|x| *x == d) {
                        Some(i) => i,
                        None => {
                            inactivity.push(d);
                            inactivity.len() - 1
                        }
                    },
                )
            })
            .collect();
        let attribution = attribution::Attributor::new(&config.attribution, config.time.allowed_lateness.millis());
        let funnels = config.funnels.iter().map(|f| funnel::Funnel::compile(f, &catalog)).collect();
        let segments = segment::Segments::new(&config.segments, &catalog);
        let mut triggers: Vec<crate::trigger::Trigger> = config.triggers.iter().map(|t| crate::trigger::Trigger::compile(t, &catalog)).collect();
        // Inactivity durations take the low 32 bits of a customer's `armed`
        // mask, inactivity triggers the high 32 (both limits are validated).
        for (n, t) in triggers.iter_mut().filter(|t| t.inactivity().is_some()).enumerate() {
            t.armed_bit = 1u64.checked_shl(32 + n as u32).unwrap_or(0);
        }
        let inactivity_bits = (0..inactivity.len()).fold(0, |m, i| m | 1u64 << i) | triggers.iter().fold(0, |m, t| m | t.armed_bit);
        Plan { config, catalog, models, counted, inactivity, inactivity_bits, attribution, funnels, segments, triggers }
    }

    /// A new customer's journey: every model at its initial stage since `ts`.
    pub fn new_journey(&self, ts: i64) -> Journey {
        Journey {
            stages: self.models.iter().map(|m| StageAt::new(m.initial, ts)).collect(),
            windows: self.counted.iter().map(|_| CountWindow::default()).collect(),
        }
    }

    /// Applies one event: records it in the counted windows it matches, then in
    /// every model fires the first rule whose `from` holds and whose `on` matches.
    pub fn on_event(&self, j: &mut Journey, t: &Touch, watermark: i64, mut fired: impl FnMut(Fired)) {
        for (w, c) in j.windows.iter_mut().zip(&self.counted) {
            if c.matcher.matches(t) {
                w.record(t.ts);
                // Only a recorded time can grow a window, so prune here; what
                // no later event can count is dropped.
                w.prune(watermark, c.within, c.count as usize);
            }
        }
        for (mi, m) in self.models.iter().enumerate() {
            let cur = j.stages[mi].stage;
            for rule in &m.rules {
                let RuleTrigger::On { matcher, counted } = &rule.trigger else {
                    continue;
                };
                if !rule.holds(cur) || !matcher.matches(t) {
                    continue;
                }
                if let Some(ci) = counted {
                    let c = &self.counted[*ci];
                    if j.windows[*ci].count_in(t.ts, c.within) < c.count as usize {
                        continue;
                    }
                }
                j.stages[mi] = StageAt::new(rule.to, t.ts);
                fired(Fired { model: mi, from: cur, to: rule.to });
                break;
            }
        }
    }

    /// An inactivity timer fell due: in every model, the first `after_inactivity`
    /// rule of that duration whose `from` holds fires.
    pub fn on_timer(&self, j: &mut Journey, timer: usize, due: i64, mut fired: impl FnMut(Fired)) {
        for (mi, m) in self.models.iter().enumerate() {
            let cur = j.stages[mi].stage;
            let rule = m.rules.iter().find(|r| matches!(r.trigger, RuleTrigger::Inactivity { timer: t } if t == timer) && r.holds(cur));
            if let Some(rule) = rule {
                j.stages[mi] = StageAt::new(rule.to, due);
                fired(Fired { model: mi, from: cur, to: rule.to });
            }
        }
    }

    /// Merges `other` into `j`: per model the stage of higher merge rank wins
    /// (the survivor's on a tie), windows combine.
    pub fn merge(&self, j: &mut Journey, other: Journey, mut merged: impl FnMut(Merged)) {
        for (mi, m) in self.models.iter().enumerate() {
            let StageAt { stage: a, since: a_since } = j.stages[mi];
            let StageAt { stage: b, since: b_since } = other.stages[mi];
            let (to, since) = if m.rank[b as usize] > m.rank[a as usize] {
                (b, b_since)
            } else if a == b {
                (a, a_since.min(b_since))
            } else {
                (a, a_since)
            };
            j.stages[mi] = StageAt { stage: to, since };
            merged(Merged { model: mi, survivor: a, absorbed: b, to });
        }
        for (w, o) in j.windows.iter_mut().zip(other.windows.into_vec()) {
            w.merge(o);
        }
    }
}

#[cfg(test)]
mod tests;
