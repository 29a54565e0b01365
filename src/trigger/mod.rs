//! Triggered messages: welcome on a sign-up, an abandoned-cart reminder unless
//! a purchase follows on any channel, reactivation after inactivity. A trigger
//! that comes due is sent on the first of its channels the customer has not
//! withdrawn consent for, unless quiet hours or the frequency cap hold it back:
//! a customer who said no is never disturbed.
//!
//! Semantics, all in event time:
//! - `on` without `within`: due at the matching event.
//! - `on` with `within` (and usually `unless`): due at the matching event's
//!   time + `within`; an `unless` event of the same customer with time in
//!   `(on, due)` cancels it (one at the `on` event's own time too, when it
//!   arrives after it); a later `on` event restarts the wait.
//! - `after_inactivity = D`: due at the customer's latest event time + D,
//!   once per quiet period.
//! - Timed triggers fire when the watermark reaches their due time, like
//!   inactivity transitions.

use crate::catalog::{Catalog, ChannelId};
use crate::config::{parse_hhmm, parse_utc_offset, TriggerConfig};
use crate::engine::customer::Consent;
use crate::model::time48::OptTime48;
use crate::model::{Matcher, Touch};
use smallvec::SmallVec;

/// Why a due trigger was not sent. `as_str` is the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suppressed {
    Consent,
    Cap,
    QuietHours,
    Cancelled,
}

impl Suppressed {
    pub const ALL: [Suppressed; 4] = [Suppressed::Consent, Suppressed::Cap, Suppressed::QuietHours, Suppressed::Cancelled];
    pub fn as_str(self) -> &'static str {
        match self {
            Suppressed::Consent => "consent",
            Suppressed::Cap => "cap",
            Suppressed::QuietHours => "quiet_hours",
            Suppressed::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug)]
pub enum Start {
    On(Matcher),
    Inactivity(i64),
}

#[derive(Debug, Clone, Copy)]
struct QuietHours {
    from: u32,
    to: u32,
    offset: i32,
}

impl QuietHours {
    fn holds(&self, at_ms: i64) -> bool {
        let local = (at_ms.div_euclid(60_000) + self.offset as i64).rem_euclid(1440) as u32;
        if self.from <= self.to {
            local >= self.from && local < self.to
        } else {
            local >= self.from || local < self.to
        }
    }
}

#[derive(Debug)]
pub struct Trigger {
    pub name: String,
    pub start: Start,
    unless: Option<Matcher>,
    within: Option<i64>,
    pub channels: Vec<ChannelId>,
    cap: Option<(u32, i64)>,
    quiet: Option<QuietHours>,
    consent: Option<Box<str>>,
    /// For an inactivity trigger: its bit in the customer's `armed` mask
    /// (set while its timer is queued); 0 otherwise.
    pub armed_bit: u64,
}

/// One customer's state for one trigger: three event times, 18 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TriggerState {
    /// Due time of the waiting trigger (none: none waiting). It fires once
    /// the watermark reaches it, like any timer, so an `unless` event at that
    /// very time is too late to cancel it.
    pending_due: OptTime48,
    /// Time of the latest `unless` event applied, so that one that arrived
    /// before its `on` event (within the allowed lateness) still cancels.
    last_unless: OptTime48,
    /// When it was last sent. A cap above one counts earlier sends too: the
    /// caller keeps those (see [`Trigger::decide`]), since few triggers need them.
    last_sent: OptTime48,
}

impl TriggerState {
    pub fn is_pending(&self) -> bool {
        self.pending_due.is_some()
    }

    /// Due time of the waiting trigger (`i64::MIN`: none waiting).
    pub fn pending_due(&self) -> i64 {
        self.pending_due.get()
    }

    pub fn clear_pending(&mut self) {
        self.pending_due = OptTime48::NONE;
    }

    /// The send times a cap counts, in time order: `earlier`, then the latest.
    fn sent<'a>(&self, earlier: &'a [i64]) -> impl Iterator<Item = i64> + 'a {
        earlier.iter().copied().chain(self.last_sent.option())
    }

    /// Adds `times` to the send log (`earlier` and the latest) and keeps the latest `max`.
    fn keep_sent(&mut self, earlier: &mut Vec<i64>, times: impl Iterator<Item = i64>, max: usize) {
        let mut all: SmallVec<[i64; 8]> = self.sent(earlier).chain(times).collect();
        all.sort_unstable();
        let all = &all[all.len().saturating_sub(max)..];
        earlier.clear();
        match all.split_last() {
            None => self.last_sent = OptTime48::NONE,
            Some((latest, before)) => {
                self.last_sent = OptTime48::new(*latest);
                earlier.extend_from_slice(before);
            }
        }
    }
}

/// What an applied event does to a trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnEvent {
    Nothing,
    /// A waiting trigger was cancelled by an `unless` event.
    Cancelled,
    /// The trigger now waits until this due time (a timer is needed); the
    /// flag says whether the same event cancelled the previous wait.
    Scheduled {
        due: i64,
        cancelled: bool,
    },
    /// The trigger is due now.
    DueNow,
}

/// The outcome of a due trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Send(ChannelId),
    Suppress(Suppressed),
}

/// Whether the customer's latest consent answer for `purpose` on `channel`
/// (or on every channel, `*`) lets us write to them; no answer means yes.
pub fn consented(consent: &[Consent], purpose: &str, channel: ChannelId) -> bool {
    consent
        .iter()
        .filter(|c| &*c.purpose == purpose && c.channel.is_none_or(|ch| ch == channel))
        // the latest answer wins; on the same time the channel's own answer beats `*`
        .max_by_key(|c| (c.ts, c.channel.is_some()))
        .is_none_or(|c| c.granted)
}

impl Trigger {
    pub fn compile(t: &TriggerConfig, cat: &Catalog) -> Trigger {
        let start = match (&t.on, t.after_inactivity) {
            (Some(on), _) => Start::On(Matcher::from_config(cat, on)),
            (None, Some(d)) => Start::Inactivity(d.millis()),
            (None, None) => unreachable!("validated: a trigger has `on` or `after_inactivity`"),
        };
        let quiet = t
            .quiet_hours
            .as_ref()
            .and_then(|q| Some(QuietHours { from: parse_hhmm(&q.from)?, to: parse_hhmm(&q.to)?, offset: parse_utc_offset(&q.utc_offset)? }));
        Trigger {
            name: t.name.clone(),
            start,
            unless: t.unless.as_ref().map(|u| Matcher::from_config(cat, u)),
            within: t.within.map(|w| w.millis()),
            channels: t.channels.iter().filter_map(|c| cat.configured_channel(c).or_else(|| cat.channel(c))).collect(),
            cap: t.cap.as_ref().map(|c| (c.max, c.per.millis())),
            quiet,
            consent: t.consent.as_deref().map(Box::from),
            armed_bit: 0,
        }
    }

    /// Time of the event that started the wait (`within` before its due time).
    pub fn pending_from(&self, s: &TriggerState) -> i64 {
        s.pending_due() - self.within.unwrap_or(0)
    }

    /// Whether an `unless` event at `at` cancels a wait from `from` until
    /// `due`: it falls in `(from, due)` (at `due` the message is due
    /// already), or at `from` itself when it `arrived_after` the `on` event
    /// (events apply in arrival order).
    fn cancels(at: i64, from: i64, due: i64, arrived_after: bool) -> bool {
        (at > from || (arrived_after && at == from)) && at < due
    }

    /// Whether an `unless` event at `at` cancels the waiting trigger.
    fn cancels_pending(&self, s: &TriggerState, at: i64, arrived_after: bool) -> bool {
        s.is_pending() && Self::cancels(at, self.pending_from(s), s.pending_due(), arrived_after)
    }

    pub fn inactivity(&self) -> Option<i64> {
        match self.start {
            Start::Inactivity(d) => Some(d),
            Start::On(_) => None,
        }
    }

    /// Takes out a waiting trigger that came due at or before `t`, an `on`
    /// event that would restart it: in time order it came due first (a
    /// timer fires before an event at its time), so it is
    /// decided now (as of its due time), before `t` starts the next wait.
    /// Returns its start and due times.
    pub fn take_overdue(&self, s: &mut TriggerState, t: &Touch) -> Option<(i64, i64)> {
        let Start::On(on) = &self.start else { return None };
        if self.within.is_none() || !s.is_pending() || t.ts < s.pending_due() || !on.matches(t) {
            return None;
        }
        let due = (self.pending_from(s), s.pending_due());
        s.clear_pending();
        Some(due)
    }

    /// Applies one event: `unless` may cancel the waiting trigger, `on` may
    /// start one. An `unless` event with time in `(ts, due_ts)` of the `on`
    /// event cancels, whichever of the two arrived first.
    pub fn on_event(&self, s: &mut TriggerState, t: &Touch) -> OnEvent {
        let mut cancelled = false;
        if let Some(unless) = &self.unless {
            if unless.matches(t) {
                s.last_unless = OptTime48::new(s.last_unless.get().max(t.ts));
                if self.cancels_pending(s, t.ts, true) {
                    s.clear_pending();
                    cancelled = true;
                }
            }
        }
        if let Start::On(on) = &self.start {
            if on.matches(t) {
                return match self.within {
                    Some(w) => {
                        let due = t.ts.saturating_add(w);
                        let last_unless = s.last_unless.get();
                        if self.unless.is_some() && Self::cancels(last_unless, t.ts, due, false) {
                            // Its `unless` came already: this wait is over
                            // before it began. In time order this event also
                            // restarted a wait that started before it (the
                            // `unless` came after that one's due time, or it
                            // would have cancelled it): that wait is over too.
                            if s.is_pending() && due >= s.pending_due() {
                                s.clear_pending();
                            }
                            return OnEvent::Cancelled;
                        }
                        if s.is_pending() && due < s.pending_due() {
                            // Older than the `on` event that started the wait
                            // (it arrived late): in time order that one came
                            // after it and restarted the wait, which stands.
                            // (Still pending: no `unless` cancelled it above.)
                            return OnEvent::Nothing;
                        }
                        s.pending_due = OptTime48::new(due);
                        OnEvent::Scheduled { due, cancelled }
                    }
                    None => OnEvent::DueNow,
                };
            }
        }
        if cancelled {
            OnEvent::Cancelled
        } else {
            OnEvent::Nothing
        }
    }

    /// Decides a due trigger at event time `at`: consent first (never disturb
    /// a customer who said no), then quiet hours, then the frequency cap.
    /// `earlier`: the sends before the latest that a cap above one counts
    /// (the caller keeps them; with a cap of one it stays empty).
    pub fn decide(&self, s: &mut TriggerState, consent: &[Consent], earlier: &mut Vec<i64>, at: i64) -> Decision {
        let channel = match &self.consent {
            Some(purpose) => self.channels.iter().copied().find(|ch| consented(consent, purpose, *ch)),
            None => self.channels.first().copied(),
        };
        let Some(channel) = channel else { return Decision::Suppress(Suppressed::Consent) };
        if self.quiet.is_some_and(|q| q.holds(at)) {
            return Decision::Suppress(Suppressed::QuietHours);
        }
        if let Some((max, per)) = self.cap {
            // Sent within `per` of `at` on either side: due times run
            // backwards by up to the allowed lateness.
            let recent = s.sent(earlier).filter(|&x| x > at.saturating_sub(per) && x < at.saturating_add(per)).count();
            if recent >= max as usize {
                return Decision::Suppress(Suppressed::Cap);
            }
            s.keep_sent(earlier, std::iter::once(at), max as usize);
        }
        Decision::Send(channel)
    }

    /// Combines two customers' states (a merge): the wait started later
    /// stays (the one that restarted the other, in time order), so either
    /// side's; send history combines for the cap.
    /// An `unless` event of either side in the waiting trigger's window
    /// cancels it (`Cancelled`). `Scheduled` when the survivor took over the
    /// other's wait, whose timer is queued under the other's key. `earlier`
    /// and `other_earlier`: both sides' earlier sends (see [`Trigger::decide`]).
    pub fn merge(&self, s: &mut TriggerState, other: TriggerState, earlier: &mut Vec<i64>, other_earlier: &[i64]) -> OnEvent {
        // Both waiting: the later `on` event restarted the wait, in time order.
        let took = other.is_pending() && (!s.is_pending() || other.pending_due() > s.pending_due());
        s.last_unless = s.last_unless.max(other.last_unless);
        if took {
            s.pending_due = other.pending_due;
        }
        if let Some((max, _)) = self.cap {
            s.keep_sent(earlier, other.sent(other_earlier), max as usize);
        }
        let last_unless = s.last_unless.get();
        // Which of the two arrived first is not known across the sides.
        if self.unless.is_some() && self.cancels_pending(s, last_unless, false) {
            s.clear_pending();
            return OnEvent::Cancelled;
        }
        match took {
            true => OnEvent::Scheduled { due: s.pending_due(), cancelled: false },
            false => OnEvent::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    const CONFIG: &str = r#"
[channels]
app = "tech"
push = "tech"
sms = "low"
email = "low"

[[trigger]]
name = "abandoned_cart"
on = { kind = "cart_add" }
unless = { kind = "purchase" }
within = "1h"
channels = ["push", "sms", "email"]
cap = { max = 1, per = "24h" }
quiet_hours = { from = "22:00", to = "08:00", utc_offset = "+08:00" }
consent = "marketing"
"#;

    const HOUR: i64 = 3_600_000;
    /// 2024-11-22 12:00 at +08:00 (04:00 UTC): outside quiet hours.
    const NOON: i64 = 1_732_248_000_000;

    fn setup() -> (Catalog, Trigger) {
        let c = config::parse(CONFIG).unwrap().config;
        let cat = Catalog::new(&c);
        let t = Trigger::compile(&c.triggers[0], &cat);
        (cat, t)
    }

    fn touch(cat: &Catalog, ts: i64, kind: &str) -> Touch {
        Touch { ts, channel: cat.channel("app").unwrap(), kind: cat.kind(kind), value: None }
    }

    #[test]
    fn cart_add_waits_and_a_purchase_within_the_hour_cancels() {
        let (cat, t) = setup();
        let mut s = TriggerState::default();
        assert_eq!(t.on_event(&mut s, &touch(&cat, NOON, "cart_add")), OnEvent::Scheduled { due: NOON + HOUR, cancelled: false });
        assert_eq!(t.on_event(&mut s, &touch(&cat, NOON + HOUR - 1, "purchase")), OnEvent::Cancelled);
        assert!(!s.is_pending());
    }

    #[test]
    fn an_older_cart_add_arriving_late_does_not_move_the_wait_back() {
        let (cat, t) = setup();
        let purchase = touch(&cat, NOON + HOUR + 2_000, "purchase");
        // In time order: the second cart add restarts the wait, and the
        // purchase falls inside it.
        let mut in_order = TriggerState::default();
        t.on_event(&mut in_order, &touch(&cat, NOON, "cart_add"));
        t.on_event(&mut in_order, &touch(&cat, NOON + 3_000, "cart_add"));
        assert_eq!(t.on_event(&mut in_order, &purchase), OnEvent::Cancelled);
        // The two cart adds swapped (within the allowed lateness): the same.
        let mut swapped = TriggerState::default();
        t.on_event(&mut swapped, &touch(&cat, NOON + 3_000, "cart_add"));
        assert_eq!(t.on_event(&mut swapped, &touch(&cat, NOON, "cart_add")), OnEvent::Nothing);
        assert_eq!(swapped.pending_due(), NOON + HOUR + 3_000);
        assert_eq!(t.on_event(&mut swapped, &purchase), OnEvent::Cancelled);
        assert!(!swapped.is_pending());
    }

    #[test]
    fn a_merge_keeps_the_wait_started_later_and_a_purchase_in_it_cancels() {
        let (cat, t) = setup();
        let (mut survivor, mut other) = (TriggerState::default(), TriggerState::default());
        t.on_event(&mut survivor, &touch(&cat, NOON, "cart_add"));
        t.on_event(&mut other, &touch(&cat, NOON + HOUR / 2, "cart_add"));
        assert_eq!(t.merge(&mut survivor, other, &mut Vec::new(), &[]), OnEvent::Scheduled { due: NOON + 3 * HOUR / 2, cancelled: false });
        assert_eq!(t.on_event(&mut survivor, &touch(&cat, NOON + HOUR + 600_000, "purchase")), OnEvent::Cancelled, "inside the later wait");
        assert!(!survivor.is_pending());
    }

    #[test]
    fn a_purchase_at_the_cart_adds_own_time_cancels_when_it_arrives_after_it() {
        let (cat, t) = setup();
        let mut s = TriggerState::default();
        t.on_event(&mut s, &touch(&cat, NOON, "cart_add"));
        assert_eq!(t.on_event(&mut s, &touch(&cat, NOON, "purchase")), OnEvent::Cancelled, "a buy-now flow: both in one millisecond");
        // Arriving first, it came before the cart add: the wait stands.
        let mut s = TriggerState::default();
        t.on_event(&mut s, &touch(&cat, NOON, "purchase"));
        assert_eq!(t.on_event(&mut s, &touch(&cat, NOON, "cart_add")), OnEvent::Scheduled { due: NOON + HOUR, cancelled: false });
    }

    #[test]
    fn a_purchase_after_the_hour_does_not_cancel() {
        let (cat, t) = setup();
        let mut s = TriggerState::default();
        t.on_event(&mut s, &touch(&cat, NOON, "cart_add"));
        assert_eq!(t.on_event(&mut s, &touch(&cat, NOON + HOUR, "purchase")), OnEvent::Nothing, "at the due time the message is due");
    }

    #[test]
    fn consent_withdrawn_on_a_channel_moves_to_the_next_and_on_all_suppresses() {
        let (cat, t) = setup();
        let mut s = TriggerState::default();
        let push = cat.channel("push").unwrap();
        let no_push = Consent { purpose: "marketing".into(), channel: Some(push), granted: false, ts: 1 };
        assert_eq!(t.decide(&mut s, std::slice::from_ref(&no_push), &mut Vec::new(), NOON), Decision::Send(cat.channel("sms").unwrap()));
        let mut s = TriggerState::default();
        let no_all = Consent { purpose: "marketing".into(), channel: None, granted: false, ts: 2 };
        assert_eq!(t.decide(&mut s, &[no_push, no_all], &mut Vec::new(), NOON), Decision::Suppress(Suppressed::Consent));
    }

    #[test]
    fn quiet_hours_and_the_cap_hold_messages_back() {
        let (_, t) = setup();
        let mut s = TriggerState::default();
        let night = NOON + 11 * HOUR; // 23:00 local
        assert_eq!(t.decide(&mut s, &[], &mut Vec::new(), night), Decision::Suppress(Suppressed::QuietHours));
        assert!(matches!(t.decide(&mut s, &[], &mut Vec::new(), NOON), Decision::Send(_)));
        assert_eq!(t.decide(&mut s, &[], &mut Vec::new(), NOON + HOUR), Decision::Suppress(Suppressed::Cap));
        assert!(matches!(t.decide(&mut s, &[], &mut Vec::new(), NOON + 24 * HOUR), Decision::Send(_)), "the cap window has passed");
    }

    #[test]
    fn a_cap_above_one_keeps_that_many_send_times_across_sends_and_merges() {
        let c = config::parse(&CONFIG.replace("max = 1, per = \"24h\"", "max = 3, per = \"24h\"")).unwrap().config;
        let t = Trigger::compile(&c.triggers[0], &Catalog::new(&c));
        let (mut s, mut e) = (TriggerState::default(), Vec::new());
        for h in [0, 1, 2] {
            assert!(matches!(t.decide(&mut s, &[], &mut e, NOON + h * HOUR), Decision::Send(_)), "send {h}");
        }
        assert_eq!(t.decide(&mut s, &[], &mut e, NOON + 3 * HOUR), Decision::Suppress(Suppressed::Cap), "three in 24h");
        assert!(matches!(t.decide(&mut s, &[], &mut e, NOON + 24 * HOUR), Decision::Send(_)), "the first left the window");
        assert_eq!(s.sent(&e).collect::<Vec<_>>(), [NOON + HOUR, NOON + 2 * HOUR, NOON + 24 * HOUR]);
        assert_eq!(e, [NOON + HOUR, NOON + 2 * HOUR], "the caller keeps the sends before the latest");
        let (mut other, mut other_e) = (TriggerState::default(), Vec::new());
        t.decide(&mut other, &[], &mut other_e, NOON + 23 * HOUR);
        assert!(other_e.is_empty(), "one send: nothing before the latest");
        t.merge(&mut s, other, &mut e, &other_e);
        assert_eq!(s.sent(&e).collect::<Vec<_>>(), [NOON + 2 * HOUR, NOON + 23 * HOUR, NOON + 24 * HOUR], "the latest three of both");
        assert_eq!(t.decide(&mut s, &[], &mut e, NOON + 25 * HOUR), Decision::Suppress(Suppressed::Cap));
    }

    #[test]
    fn with_channels_open_consent_withdrawn_on_one_channel_leaves_the_others() {
        let c = config::parse("[[trigger]]\nname = \"welcome\"\non = { kind = \"signup\" }\nchannels = [\"push\", \"sms\"]\nconsent = \"marketing\"\n")
            .unwrap()
            .config;
        let cat = Catalog::new(&c);
        let t = Trigger::compile(&c.triggers[0], &cat);
        let no_push = Consent { purpose: "marketing".into(), channel: cat.channel("push"), granted: false, ts: 1 };
        let mut s = TriggerState::default();
        match t.decide(&mut s, std::slice::from_ref(&no_push), &mut Vec::new(), NOON) {
            Decision::Send(ch) => assert_eq!(cat.channel_name(ch), "sms"),
            other => panic!("sms was never withdrawn, got {other:?}"),
        }
    }

    #[test]
    fn the_cap_counts_a_message_sent_at_a_later_event_time() {
        let (_, t) = setup();
        let mut s = TriggerState::default();
        assert!(matches!(t.decide(&mut s, &[], &mut Vec::new(), NOON), Decision::Send(_)));
        assert_eq!(t.decide(&mut s, &[], &mut Vec::new(), NOON - 3_000), Decision::Suppress(Suppressed::Cap), "one went out 3 s from this one");
        assert!(matches!(t.decide(&mut s, &[], &mut Vec::new(), NOON - 24 * HOUR), Decision::Send(_)), "a day before is outside the cap");
    }
}
