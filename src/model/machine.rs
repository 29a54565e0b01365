//! A journey model compiled from `[[model]]`: stages as indices, `from` sets as
//! bitmasks, rules in config order. The semantics (DESIGN.md): on each event
//! the first rule whose `from` holds the stage and whose `on` matches fires, at
//! most one per model per event; `after_inactivity` rules fire on timers.

use super::matcher::Matcher;
use crate::catalog::Catalog;
use crate::config::ModelConfig;

pub type StageId = u16;

#[derive(Debug)]
pub struct Model {
    pub name: String,
    pub stages: Vec<String>,
    pub initial: StageId,
    /// Merge rank per stage: on a merge the stage with the higher rank wins.
    pub rank: Vec<u16>,
    pub rules: Vec<Rule>,
}

#[derive(Debug)]
pub struct Rule {
    /// Bit `s` set when stage `s` is in `from`.
    pub from: u64,
    pub to: StageId,
    pub trigger: RuleTrigger,
}

#[derive(Debug)]
pub enum RuleTrigger {
    /// `on`: the matcher, and for `count` + `within` the index of its window.
    On { matcher: Matcher, counted: Option<usize> },
    /// `after_inactivity`: the index of its duration in [`super::Plan::inactivity`].
    Inactivity { timer: usize },
}

impl Rule {
    pub fn holds(&self, stage: StageId) -> bool {
        self.from & (1u64 << stage) != 0
    }
}

impl Model {
    pub fn stage(&self, name: &str) -> Option<StageId> {
        self.stages.iter().position(|s| s == name).map(|i| i as StageId)
    }

    pub fn stage_name(&self, id: StageId) -> &str {
        &self.stages[id as usize]
    }

    /// Compiles a validated model; `counter` and `timer` intern the counted
    /// windows and inactivity durations shared across models.
    pub fn compile(m: &ModelConfig, cat: &Catalog, counter: &mut impl FnMut(Matcher, i64, u32) -> usize, timer: &mut impl FnMut(i64) -> usize) -> Model {
        let idx = |s: &str| m.stages.iter().position(|x| x == s).unwrap_or(0) as StageId;
        let order = m.merge_order.as_ref().unwrap_or(&m.stages);
        let rank = m.stages.iter().map(|s| order.iter().position(|o| o == s).unwrap_or(0) as u16).collect();
        let rules = m
            .transitions
            .iter()
            .map(|t| {
                // `*`: every stage (at most 64).
                let every = u64::MAX >> (64 - m.stages.len().clamp(1, 64));
                let from = t.from.names().iter().fold(0u64, |acc, s| acc | if *s == "*" { every } else { 1u64 << idx(s) });
                let trigger = match (&t.on, t.after_inactivity) {
                    (Some(on), _) => {
                        let matcher = Matcher::from_config(cat, on);
                        // The window counts the customer's events of the
                        // rule's kind(s), whatever their channel or value.
                        let counted = match (on.count, on.within) {
                            (Some(n), Some(w)) => Some(counter(Matcher::new(cat, &on.kind, None, None), w.millis(), n)),
                            _ => None,
                        };
                        RuleTrigger::On { matcher, counted }
                    }
                    (None, Some(d)) => RuleTrigger::Inactivity { timer: timer(d.millis()) },
                    (None, None) => {
                        unreachable!("validated: every transition has `on` or `after_inactivity`")
                    }
                };
                Rule { from, to: idx(&t.to), trigger }
            })
            .collect();
        Model { name: m.name.clone(), stages: m.stages.clone(), initial: idx(&m.initial), rank, rules }
    }
}
