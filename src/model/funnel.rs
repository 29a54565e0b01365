//! Funnels: ordered steps within a window from the first step.
//!
//! An attempt starts at an event matching step 1 when the customer has no
//! open attempt (that event reaches step 1). It advances on the first later
//! event matching the next step with `ts <= start + window` (and, when the
//! step has `within`, no later than that after the previous step). It
//! completes at the last step. It is dropped when the watermark passes
//! `start + window`, or at once by an exclusion event (with time at or after
//! the start); `at_step` names the first step not reached. After an attempt
//! ends (completed, expired or excluded) a new one may start when `reentry`
//! is on (the default); with it off, a customer enters a funnel once.

use super::matcher::{Matcher, Touch};
use super::time48::Time48;
use crate::catalog::{Catalog, ChannelId};
use crate::config::{FunnelConfig, FunnelStepConfig, OneOrMany};

#[derive(Debug)]
pub struct Step {
    pub label: String,
    pub matcher: Matcher,
    pub within: Option<i64>,
}

#[derive(Debug)]
pub struct Funnel {
    pub name: String,
    pub steps: Vec<Step>,
    pub window: i64,
    pub exclusions: Matcher,
    pub has_exclusions: bool,
    pub reentry: bool,
}

/// A customer's position in one funnel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FunnelState {
    /// Steps reached by the open attempt; 0 = no open attempt.
    pub reached: u8,
    /// An attempt was ever started (with `reentry` off, no other may start).
    pub entered_once: bool,
    pub entry_channel: ChannelId,
    /// Event times of the attempt's first and latest step.
    pub start: Time48,
    pub last: Time48,
}

/// What an event or the watermark did to one funnel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FunnelEvent {
    /// Step `step` (0-based) reached; step 0 means an attempt entered via `channel`.
    Reached { step: usize, channel: ChannelId },
    /// The attempt completed after `duration_ms`, having entered via `entry_channel`.
    Completed { duration_ms: i64, entry_channel: ChannelId },
    /// The attempt ended without completing; `at_step` is the first step not reached.
    Dropped { at_step: usize },
}

impl Funnel {
    pub fn compile(f: &FunnelConfig, cat: &Catalog) -> Funnel {
        let steps = f
            .steps
            .iter()
            .map(|s| match s {
                FunnelStepConfig::Kind(k) => Step { label: k.clone(), matcher: Matcher::new(cat, &OneOrMany::One(k.clone()), None, None), within: None },
                FunnelStepConfig::Step(t) => Step {
                    label: t.name.clone().unwrap_or_else(|| t.kind.names().join("|")),
                    matcher: Matcher::new(cat, &t.kind, t.channel.as_ref(), t.min_value),
                    within: t.within.map(|w| w.millis()),
                },
            })
            .collect();
        Funnel {
            name: f.name.clone(),
            steps,
            window: f.window.millis(),
            exclusions: Matcher::new(cat, &OneOrMany::Many(f.exclusions.clone()), None, None),
            has_exclusions: !f.exclusions.is_empty(),
            reentry: f.reentry,
        }
    }

    /// The time at which an open attempt expires: the first watermark past `start + window`.
    pub fn expiry(&self, s: &FunnelState) -> i64 {
        s.start.get().saturating_add(self.window).saturating_add(1)
    }

    /// Applies one event. Returns whether an attempt was opened (its expiry needs a timer).
    pub fn on_event(&self, s: &mut FunnelState, t: &Touch, mut out: impl FnMut(FunnelEvent)) -> bool {
        let past = s.reached > 0 && t.ts > s.start.get().saturating_add(self.window);
        if past && self.steps[0].matcher.matches(t) {
            // A first step past the window by event time: the attempt is over
            // even if the watermark (held back by the allowed lateness) has
            // not dropped it yet, and this event starts the next one. Any
            // other event leaves the drop to the watermark: a step inside the
            // window may still arrive.
            out(FunnelEvent::Dropped { at_step: s.reached as usize });
            s.reached = 0;
        }
        if s.reached > 0 {
            // An exclusion that happened before the attempt began (it arrived
            // late) does not end it: in time order it came first.
            if self.has_exclusions && t.ts >= s.start.get() && self.exclusions.matches(t) {
                out(FunnelEvent::Dropped { at_step: s.reached as usize });
                s.reached = 0;
                return false;
            }
            let next = &self.steps[s.reached as usize];
            // Later than the previous step (an event that arrived late but
            // happened before it is not a next step), within the step's gap.
            let later = t.ts >= s.last.get();
            let in_gap = next.within.is_none_or(|w| t.ts - s.last.get() <= w);
            if later && in_gap && !past && next.matcher.matches(t) {
                out(FunnelEvent::Reached { step: s.reached as usize, channel: t.channel });
                s.reached += 1;
                s.last = Time48::new(t.ts);
                if s.reached as usize == self.steps.len() {
                    out(FunnelEvent::Completed { duration_ms: t.ts - s.start.get(), entry_channel: s.entry_channel });
                    s.reached = 0;
                }
            }
            return false;
        }
        if (s.entered_once && !self.reentry) || !self.steps[0].matcher.matches(t) {
            return false;
        }
        out(FunnelEvent::Reached { step: 0, channel: t.channel });
        if self.steps.len() == 1 {
            out(FunnelEvent::Completed { duration_ms: 0, entry_channel: t.channel });
            s.entered_once = true;
            return false;
        }
        *s = FunnelState { reached: 1, entered_once: true, entry_channel: t.channel, start: Time48::new(t.ts), last: Time48::new(t.ts) };
        true
    }

    /// The watermark moved: drops the open attempt if its window has passed.
    pub fn on_watermark(&self, s: &mut FunnelState, watermark: i64, mut out: impl FnMut(FunnelEvent)) {
        if s.reached > 0 && self.expiry(s) <= watermark {
            out(FunnelEvent::Dropped { at_step: s.reached as usize });
            s.reached = 0;
        }
    }

    /// Merges two customers' attempts: the one further along stays open (the
    /// earlier on a tie); the other is dropped. Returns the drop, if any.
    pub fn merge(&self, s: &mut FunnelState, other: FunnelState) -> Option<FunnelEvent> {
        let entered = s.entered_once || other.entered_once;
        let dropped = match (s.reached, other.reached) {
            (_, 0) => None,
            (0, _) => {
                *s = other;
                None
            }
            (a, b) if b > a || (a == b && other.start < s.start) => {
                let d = Some(FunnelEvent::Dropped { at_step: a as usize });
                *s = other;
                d
            }
            (_, b) => Some(FunnelEvent::Dropped { at_step: b as usize }),
        };
        s.entered_once = entered;
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    const DAY: i64 = 86_400_000;

    fn setup(extra: &str) -> (Catalog, Funnel) {
        let c = config::parse(&format!("[channels]\napp = \"tech\"\nweb = \"tech\"\n[[funnel]]\nname = \"onboarding\"\nsteps = [\"signup\", \"activate\", \"purchase\"]\nwindow = \"7d\"\n{extra}")).unwrap().config;
        let cat = Catalog::new(&c);
        let f = Funnel::compile(&c.funnels[0], &cat);
        (cat, f)
    }

    fn run(cat: &Catalog, f: &Funnel, s: &mut FunnelState, events: &[(i64, &str)]) -> Vec<FunnelEvent> {
        let mut out = vec![];
        for (ts, kind) in events {
            let t = Touch { ts: *ts, channel: cat.channel("web").unwrap(), kind: cat.kind(kind), value: None };
            f.on_event(s, &t, |e| out.push(e));
        }
        out
    }

    #[test]
    fn completes_in_order_within_the_window() {
        let (cat, f) = setup("");
        let mut s = FunnelState::default();
        let out = run(&cat, &f, &mut s, &[(0, "signup"), (DAY, "activate"), (2 * DAY, "purchase")]);
        assert_eq!(out.len(), 4);
        assert!(matches!(out[3], FunnelEvent::Completed { duration_ms, .. } if duration_ms == 2 * DAY));
    }

    #[test]
    fn out_of_order_kinds_do_not_advance() {
        let (cat, f) = setup("");
        let mut s = FunnelState::default();
        let out = run(&cat, &f, &mut s, &[(0, "signup"), (1, "purchase"), (2, "activate")]);
        assert_eq!(out.len(), 2);
        assert_eq!(s.reached, 2);
    }

    #[test]
    fn window_expiry_drops_at_the_first_step_not_reached() {
        let (cat, f) = setup("");
        let mut s = FunnelState::default();
        run(&cat, &f, &mut s, &[(0, "signup"), (DAY, "activate")]);
        let mut out = vec![];
        f.on_watermark(&mut s, 7 * DAY, |e| out.push(e));
        assert!(out.is_empty(), "start + window is not yet earlier than the watermark");
        f.on_watermark(&mut s, 7 * DAY + 1, |e| out.push(e));
        assert_eq!(out, vec![FunnelEvent::Dropped { at_step: 2 }]);
    }

    #[test]
    fn a_first_step_past_the_window_drops_the_attempt_before_the_watermark_does() {
        let (cat, f) = setup("");
        let mut s = FunnelState::default();
        let out = run(&cat, &f, &mut s, &[(0, "signup"), (DAY, "activate"), (7 * DAY + 1, "purchase")]);
        assert_eq!((out.len(), s.reached), (2, 2), "a step after the window does not count, and leaves the drop to the watermark");
        let out = run(&cat, &f, &mut s, &[(7 * DAY + 2, "signup")]);
        let web = cat.channel("web").unwrap();
        assert_eq!(out, [FunnelEvent::Dropped { at_step: 2 }, FunnelEvent::Reached { step: 0, channel: web }], "a first step ends it and starts the next");
        let mut out = vec![];
        f.on_watermark(&mut s, 7 * DAY + 1, |e| out.push(e));
        assert!(out.is_empty(), "the old attempt's expiry finds the new one open");
    }

    #[test]
    fn a_step_inside_the_window_arriving_after_an_event_past_it_still_counts() {
        let (cat, f) = setup("");
        let mut s = FunnelState::default();
        // In time order the activate (within the lateness) came before the view.
        let out = run(&cat, &f, &mut s, &[(0, "signup"), (7 * DAY + 1_000, "view"), (7 * DAY - 1_000, "activate")]);
        assert_eq!((out.len(), s.reached), (2, 2), "{out:?}");
    }

    #[test]
    fn a_step_that_happened_before_the_previous_one_does_not_advance() {
        let (cat, f) = setup("");
        let mut s = FunnelState::default();
        let out = run(&cat, &f, &mut s, &[(DAY, "signup"), (DAY - 1, "activate"), (DAY, "activate")]);
        assert_eq!(out.len(), 2, "the late activate is not a next step; the one at the same time is");
        assert_eq!(s.reached, 2);
    }

    #[test]
    fn exclusion_ends_the_attempt() {
        let (cat, f) = setup("exclusions = [\"refund\"]\n");
        let mut s = FunnelState::default();
        let out = run(&cat, &f, &mut s, &[(0, "signup"), (1, "refund"), (2, "activate")]);
        assert_eq!(out[1], FunnelEvent::Dropped { at_step: 1 });
        assert_eq!(s.reached, 0);
    }

    #[test]
    fn an_exclusion_from_before_the_attempt_began_does_not_end_it() {
        let (cat, f) = setup("exclusions = [\"refund\"]\n");
        let mut s = FunnelState::default();
        let out = run(&cat, &f, &mut s, &[(DAY, "signup"), (DAY - 2_000, "refund"), (DAY + 1, "activate")]);
        assert_eq!(out.len(), 2, "the refund arrived late but happened first: {out:?}");
        assert_eq!(s.reached, 2);
        let out = run(&cat, &f, &mut s, &[(DAY, "refund")]);
        assert_eq!(out, [FunnelEvent::Dropped { at_step: 2 }], "one at the start's time or later ends it");
    }

    #[test]
    fn reentry_after_completion_or_expiry_is_configurable() {
        let (cat, f) = setup("reentry = false\n");
        let mut s = FunnelState::default();
        run(&cat, &f, &mut s, &[(0, "signup"), (1, "activate"), (2, "purchase")]);
        let out = run(&cat, &f, &mut s, &[(3, "signup")]);
        assert!(out.is_empty());
        let mut s = FunnelState::default();
        run(&cat, &f, &mut s, &[(0, "signup")]);
        f.on_watermark(&mut s, 7 * DAY + 1, |_| {});
        assert!(run(&cat, &f, &mut s, &[(8 * DAY, "signup")]).is_empty(), "nor after an expired attempt");
        let (cat, f) = setup("");
        let mut s = FunnelState::default();
        run(&cat, &f, &mut s, &[(0, "signup"), (1, "activate"), (2, "purchase")]);
        assert_eq!(run(&cat, &f, &mut s, &[(3, "signup")]).len(), 1);
    }

    #[test]
    fn per_step_gap_limits_the_time_since_the_previous_step() {
        let c = config::parse("[[funnel]]\nname = \"f\"\nwindow = \"7d\"\nsteps = [\"signup\", { kind = \"activate\", within = \"1h\" }]\n").unwrap().config;
        let cat = Catalog::new(&c);
        let f = Funnel::compile(&c.funnels[0], &cat);
        let mut s = FunnelState::default();
        let t = |ts, k: &str| Touch { ts, channel: 1, kind: cat.kind(k), value: None };
        f.on_event(&mut s, &t(0, "signup"), |_| {});
        f.on_event(&mut s, &t(3_600_001, "activate"), |_| {});
        assert_eq!(s.reached, 1);
        f.on_event(&mut s, &t(3_600_000, "activate"), |_| {});
        assert_eq!(s.reached, 0, "completed");
    }
}
