//! Model semantics, as DESIGN.md states them, on the example lifecycle.

use super::*;
use crate::config;

/// The DESIGN.md lifecycle model (shared with the integration tests) with
/// four channels, no lateness, and a `vip` model.
pub(crate) const LIFECYCLE: &str = concat!(
    r#"
[time]
allowed_lateness = "0s"

[channels]
app = "tech"
web = "tech"
sms = "low"
store = "high"

"#,
    include_str!("../../tests/fixtures/lifecycle_model.toml"),
    r#"
[[model]]
name = "vip"
initial = "none"
stages = ["none", "big_spender"]
transitions = [
  { from = "none", to = "big_spender", on = { kind = "purchase", min_value = 1000.0, channel = ["store"] } },
]
"#
);

const DAY: i64 = 86_400_000;

fn plan() -> Plan {
    Plan::new(config::parse(LIFECYCLE).unwrap().config)
}

fn touch(p: &Plan, ts: i64, kind: &str, channel: &str, value: Option<f64>) -> Touch {
    Touch { ts, channel: p.catalog.channel(channel).unwrap(), kind: p.catalog.kind(kind), value }
}

fn stage(p: &Plan, j: &Journey, model: usize) -> String {
    p.models[model].stage_name(j.stages[model].stage).to_string()
}

fn apply(p: &Plan, j: &mut Journey, ts: i64, kind: &str) -> Vec<Fired> {
    let mut out = vec![];
    p.on_event(j, &touch(p, ts, kind, "app", Some(10.0)), ts, |f| out.push(f));
    out
}

#[test]
fn signup_then_purchases_walk_the_lifecycle() {
    let p = plan();
    let mut j = p.new_journey(0);
    apply(&p, &mut j, 1, "view");
    assert_eq!(stage(&p, &j, 0), "visitor");
    apply(&p, &mut j, 2, "signup");
    assert_eq!(stage(&p, &j, 0), "registered");
    apply(&p, &mut j, 3, "purchase");
    assert_eq!(stage(&p, &j, 0), "customer");
    apply(&p, &mut j, 4, "purchase");
    assert_eq!(stage(&p, &j, 0), "repeat");
}

#[test]
fn at_most_one_transition_per_model_per_event() {
    let p = plan();
    let mut j = p.new_journey(0);
    // visitor → customer on a purchase; the same event must not also take customer → repeat.
    let fired = apply(&p, &mut j, 1, "purchase");
    assert_eq!(fired.len(), 1);
    assert_eq!(stage(&p, &j, 0), "customer");
}

#[test]
fn loyal_needs_five_purchases_within_the_window_this_one_included() {
    let p = plan();
    let mut j = p.new_journey(0);
    for (i, ts) in [0, DAY, 2 * DAY, 3 * DAY].into_iter().enumerate() {
        apply(&p, &mut j, ts, "purchase");
        assert_ne!(stage(&p, &j, 0), "loyal", "after purchase {i}");
    }
    apply(&p, &mut j, 4 * DAY, "purchase");
    assert_eq!(stage(&p, &j, 0), "loyal");
}

#[test]
fn purchases_outside_the_window_do_not_count() {
    let p = plan();
    let mut j = p.new_journey(0);
    // the first purchase falls out of (ts - 365d, ts] at the fifth one
    for ts in [0, 300 * DAY, 301 * DAY, 302 * DAY, 365 * DAY] {
        apply(&p, &mut j, ts, "purchase");
    }
    assert_eq!(stage(&p, &j, 0), "repeat");
    apply(&p, &mut j, 366 * DAY, "purchase");
    assert_eq!(stage(&p, &j, 0), "loyal");
}

#[test]
fn channel_and_min_value_restrict_a_rule() {
    let p = plan();
    let mut j = p.new_journey(0);
    let mut fired = vec![];
    p.on_event(&mut j, &touch(&p, 1, "purchase", "app", Some(5000.0)), 1, |f| fired.push(f));
    assert_eq!(stage(&p, &j, 1), "none");
    p.on_event(&mut j, &touch(&p, 2, "purchase", "store", Some(999.0)), 2, |f| fired.push(f));
    assert_eq!(stage(&p, &j, 1), "none");
    p.on_event(&mut j, &touch(&p, 3, "purchase", "store", Some(1000.0)), 3, |f| fired.push(f));
    assert_eq!(stage(&p, &j, 1), "big_spender");
}

#[test]
fn inactivity_timer_moves_only_stages_in_from() {
    let p = plan();
    let mut j = p.new_journey(0);
    let mut fired = vec![];
    p.on_timer(&mut j, 0, 90 * DAY, |f| fired.push(f));
    assert!(fired.is_empty(), "a visitor is not in `from`");
    apply(&p, &mut j, 1, "signup");
    p.on_timer(&mut j, 0, 90 * DAY + 1, |f| fired.push(f));
    assert_eq!(stage(&p, &j, 0), "dormant");
    assert_eq!(j.stages[0].since.get(), 90 * DAY + 1);
    apply(&p, &mut j, 100 * DAY, "view");
    assert_eq!(stage(&p, &j, 0), "reactivated");
}

#[test]
fn merge_takes_the_later_stage_and_combines_windows() {
    let p = plan();
    let mut a = p.new_journey(0);
    let mut b = p.new_journey(0);
    apply(&p, &mut a, 1, "signup");
    for ts in [1, 2, 3] {
        apply(&p, &mut b, ts, "purchase");
    }
    assert_eq!(stage(&p, &b, 0), "repeat");
    let mut merged = vec![];
    p.merge(&mut a, b, |m| merged.push(m));
    assert_eq!(stage(&p, &a, 0), "repeat");
    assert_eq!(merged[0].survivor, p.models[0].stage("registered").unwrap());
    // three purchases carried over: two more reach five.
    apply(&p, &mut a, 4, "purchase");
    assert_eq!(stage(&p, &a, 0), "repeat");
    apply(&p, &mut a, 5, "purchase");
    assert_eq!(stage(&p, &a, 0), "loyal");
}

/// A model a → b on `on`, with channels open.
fn one_rule(on: &str) -> Plan {
    let cfg = format!("[[model]]\nname = \"m\"\ninitial = \"a\"\nstages = [\"a\", \"b\"]\ntransitions = [{{ from = \"a\", to = \"b\", on = {on} }}]\n");
    Plan::new(config::parse(&cfg).unwrap().config)
}

#[test]
fn with_channels_open_a_channel_filter_tells_the_channels_it_names_apart() {
    let p = one_rule(r#"{ kind = "purchase", channel = ["app"] }"#);
    let t = |ch: &str| Touch { ts: 1, channel: p.catalog.channel(ch).unwrap(), kind: p.catalog.kind("purchase"), value: None };
    let mut j = p.new_journey(0);
    let mut fired = vec![];
    p.on_event(&mut j, &t("sms"), 1, |f| fired.push(f));
    assert!(fired.is_empty(), "sms is not in channel = [\"app\"]");
    p.on_event(&mut j, &t("app"), 1, |f| fired.push(f));
    assert_eq!(fired.len(), 1, "a purchase on app matches channel = [\"app\"]");
    assert_eq!(p.catalog.channel_name(p.catalog.channel("app").unwrap()), "app", "and is labelled app");
}

#[test]
fn a_rule_on_a_kind_named_other_matches_only_that_kind() {
    let p = one_rule(r#"{ kind = "other" }"#);
    let mut j = p.new_journey(0);
    let mut fired = vec![];
    let touch = |kind: &str| Touch { ts: 1, channel: p.catalog.channel("app").unwrap(), kind: p.catalog.kind(kind), value: None };
    p.on_event(&mut j, &touch("wave"), 1, |f| fired.push(f));
    assert!(fired.is_empty(), "a `wave` event is not of kind `other`");
    p.on_event(&mut j, &touch("other"), 1, |f| fired.push(f));
    assert_eq!(fired.len(), 1);
}

#[test]
fn from_star_holds_every_stage() {
    let text = "[[model]]\nname = \"m\"\ninitial = \"a\"\nstages = [\"a\", \"b\", \"gone\"]\ntransitions = [\n  { from = [\"a\"], to = \"b\", on = { kind = \"x\" } },\n  { from = \"*\", to = \"gone\", on = { kind = \"erase\" } },\n]\n";
    let loaded = config::parse(text).expect("`*` is a valid `from`");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let p = Plan::new(loaded.config);
    for first in [None, Some("x")] {
        let mut j = p.new_journey(0);
        if let Some(kind) = first {
            apply(&p, &mut j, 1, kind);
        }
        apply(&p, &mut j, 2, "erase");
        assert_eq!(stage(&p, &j, 0), "gone", "from {first:?}");
    }
}

#[test]
fn count_counts_events_of_the_kind_whatever_their_channel_or_value() {
    let text = "[channels]\nweb = \"tech\"\nstore = \"high\"\n[[model]]\nname = \"m\"\ninitial = \"member\"\nstages = [\"member\", \"vip\"]\ntransitions = [\n  { from = [\"member\"], to = \"vip\", on = { kind = \"purchase\", channel = [\"store\"], min_value = 100.0, count = 3, within = \"1h\" } },\n]\n";
    let p = Plan::new(config::parse(text).expect("config").config);
    let mut j = p.new_journey(0);
    let mut on = |ts, channel, value| {
        let mut out = vec![];
        p.on_event(&mut j, &touch(&p, ts, "purchase", channel, Some(value)), ts, |f| out.push(f));
        out.len()
    };
    assert_eq!(on(1, "web", 5.0), 0);
    assert_eq!(on(2, "store", 5.0), 0, "below min_value: does not fire, but counts");
    assert_eq!(on(3, "store", 100.0), 1, "the third purchase in the hour, on the store, of 100");
}
