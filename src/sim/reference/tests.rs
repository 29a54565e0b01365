//! The reference on small hand-written sequences: DESIGN.md's answers.

use super::*;
use crate::config;

/// The DESIGN.md lifecycle model (shared with the integration tests) with
/// four channels and one user id per customer.
const LIFECYCLE: &str = concat!(
    r#"
[time]
allowed_lateness = "5s"

[identity]
priority = ["user_id", "phone", "anonymous_id"]
max_ids_per_type = { user_id = 1 }

[channels]
app = "tech"
web = "tech"
sms = "low"
store = "high"

"#,
    include_str!("../../../tests/fixtures/lifecycle_model.toml")
);

const DAY: i64 = 86_400_000;
const LATENESS: i64 = 5_000;
const T0: i64 = 1_700_000_000_000;

fn reference(extra: &str) -> Reference {
    let c = config::parse(&format!("{LIFECYCLE}{extra}")).unwrap().config;
    Reference::new(&c, T0 + 3_000 * DAY)
}

/// Feeds one event: `ids` as "type:value" pairs.
fn feed(r: &mut Reference, id: &str, ts: i64, ids: &[&str], kind: &str) -> Outcome {
    let ids: serde_json::Map<String, serde_json::Value> = ids
        .iter()
        .map(|p| {
            let (t, v) = p.split_once(':').unwrap();
            (t.to_string(), v.into())
        })
        .collect();
    let e = serde_json::json!({ "id": id, "ts": ts, "ids": ids, "channel": "app", "kind": kind, "value": 10.0 });
    r.ingest(None, e.to_string().as_bytes())
}

/// Feeds `kinds` for one user at the given days after T0, ids e1, e2…
fn walk(r: &mut Reference, user: &str, steps: &[(i64, &str)]) {
    for (i, (day, kind)) in steps.iter().enumerate() {
        let id = format!("{user}-{i}");
        assert_eq!(feed(r, &id, T0 + day * DAY, &[&format!("user_id:{user}")], kind), Outcome::Applied, "{id}");
    }
}

fn stages(t: &Truth) -> Vec<(String, u64)> {
    t.stages["lifecycle"].iter().filter(|(_, n)| **n > 0).map(|(s, n)| (s.clone(), *n)).collect()
}

fn only(stage: &str) -> Vec<(String, u64)> {
    vec![(stage.to_string(), 1)]
}

#[test]
fn signup_makes_a_visitor_registered() {
    let mut r = reference("");
    walk(&mut r, "u", &[(0, "view"), (0, "signup")]);
    assert_eq!(stages(&r.truth(End::Replay)), only("registered"));
}

#[test]
fn a_purchase_makes_a_customer_and_a_second_a_repeat() {
    let mut r = reference("");
    walk(&mut r, "u", &[(0, "signup"), (1, "purchase")]);
    assert_eq!(stages(&r.truth(End::Replay)), only("customer"));
    walk(&mut r, "v", &[(2, "purchase"), (3, "purchase")]);
    assert_eq!(stages(&r.truth(End::Replay)), vec![("customer".into(), 1), ("repeat".into(), 1)]);
}

#[test]
fn five_purchases_within_365_days_make_loyal() {
    let mut r = reference("");
    walk(&mut r, "u", &[(0, "purchase"), (10, "purchase"), (20, "purchase"), (30, "purchase")]);
    assert_eq!(stages(&r.truth(End::Replay)), only("repeat"));
    feed(&mut r, "u-4", T0 + 40 * DAY, &["user_id:u"], "purchase");
    assert_eq!(stages(&r.truth(End::Replay)), only("loyal"));
}

#[test]
fn the_count_window_is_open_at_its_start() {
    // A purchase at day 0, three in the last two months before day 365 (views
    // keep the customer from going dormant): the fifth, at exactly 365 days,
    // no longer counts the first; one more 1 ms later does.
    let mut r = reference("");
    walk(&mut r, "u", &[(0, "purchase"), (80, "view"), (160, "view"), (240, "view"), (300, "purchase"), (330, "purchase"), (360, "purchase")]);
    assert_eq!(stages(&r.truth(End::Replay)), only("repeat"));
    feed(&mut r, "edge", T0 + 365 * DAY, &["user_id:u"], "purchase");
    assert_eq!(stages(&r.truth(End::Replay)), only("repeat"), "the first purchase left the window");
    feed(&mut r, "edge+1", T0 + 365 * DAY + 1, &["user_id:u"], "purchase");
    assert_eq!(stages(&r.truth(End::Replay)), only("loyal"));
}

#[test]
fn ninety_days_of_inactivity_make_dormant_and_any_event_reactivates() {
    let mut r = reference("");
    walk(&mut r, "u", &[(0, "signup"), (1, "purchase")]);
    walk(&mut r, "other", &[(91, "view")]);
    assert_eq!(r.truth(End::Replay).stages["lifecycle"]["dormant"], 1);
    feed(&mut r, "back", T0 + 200 * DAY, &["user_id:u"], "sms_click");
    assert_eq!(r.truth(End::Replay).stages["lifecycle"]["reactivated"], 1);
}

#[test]
fn the_timer_fires_before_an_event_only_once_the_watermark_reaches_it() {
    // Due at day 91; the event's watermark is its time minus the lateness.
    let mut r = reference("");
    walk(&mut r, "u", &[(0, "signup"), (1, "purchase")]);
    feed(&mut r, "just-before", T0 + 91 * DAY + LATENESS - 1, &["user_id:u"], "view");
    assert_eq!(stages(&r.truth(End::Replay)), only("customer"));

    let mut r = reference("");
    walk(&mut r, "u", &[(0, "signup"), (1, "purchase")]);
    feed(&mut r, "at-due", T0 + 91 * DAY + LATENESS, &["user_id:u"], "view");
    assert_eq!(stages(&r.truth(End::Replay)), only("reactivated"));
}

#[test]
fn at_the_end_of_a_replay_timers_due_by_the_last_event_fire() {
    let mut r = reference("");
    walk(&mut r, "u", &[(0, "signup")]);
    walk(&mut r, "other", &[(90, "view")]);
    assert_eq!(r.truth(End::Replay).stages["lifecycle"]["dormant"], 1, "due exactly at the last event time");
    let mut r = reference("");
    walk(&mut r, "u", &[(0, "signup")]);
    feed(&mut r, "other", T0 + 90 * DAY - 1, &["user_id:other"], "view");
    assert_eq!(r.truth(End::Replay).stages["lifecycle"]["dormant"], 0);
    assert_eq!(r.truth(End::Watermark(T0 + 90 * DAY)).stages["lifecycle"]["dormant"], 1, "a later final watermark fires it");
}

#[test]
fn a_merge_takes_the_later_stage() {
    let mut r = reference("");
    feed(&mut r, "a1", T0, &["anonymous_id:d"], "view");
    walk(&mut r, "u", &[(1, "signup"), (2, "purchase")]);
    feed(&mut r, "link", T0 + 3 * DAY, &["anonymous_id:d", "user_id:u"], "view");
    let t = r.truth(End::Replay);
    assert_eq!(t.customers, 1);
    assert_eq!(stages(&t), only("customer"));
}

#[test]
fn a_merge_uses_merge_order_when_given() {
    let order = "merge_order = [\"visitor\", \"dormant\", \"reactivated\", \"registered\", \"customer\", \"repeat\", \"loyal\"]\n";
    let text = LIFECYCLE.replace("transitions = [", &format!("{order}transitions = ["));
    let c = config::parse(&text).unwrap().config;
    let mut r = Reference::new(&c, T0 + 3_000 * DAY);
    walk(&mut r, "u", &[(0, "signup")]);
    walk(&mut r, "other", &[(100, "view")]);
    feed(&mut r, "p", T0 + 100 * DAY, &["phone:p"], "signup");
    // u is dormant, the phone's customer registered; registered ranks later here.
    feed(&mut r, "link", T0 + 100 * DAY, &["phone:p", "user_id:u"], "email_open");
    assert_eq!(r.truth(End::Replay).stages["lifecycle"]["registered"], 1);
}

#[test]
fn merged_histories_count_together() {
    let mut r = reference("");
    walk(&mut r, "u", &[(0, "purchase"), (1, "purchase"), (2, "purchase")]);
    feed(&mut r, "p1", T0 + 3 * DAY, &["phone:p"], "purchase");
    feed(&mut r, "link", T0 + 4 * DAY, &["phone:p", "user_id:u"], "purchase");
    assert_eq!(stages(&r.truth(End::Replay)), only("loyal"));
}

#[test]
fn duplicates_late_and_invalid_inputs_change_nothing() {
    let mut r = reference("");
    walk(&mut r, "u", &[(0, "signup"), (10, "purchase")]);
    assert_eq!(feed(&mut r, "u-1", T0 + 10 * DAY, &["user_id:u"], "purchase"), Outcome::Duplicate);
    assert_eq!(feed(&mut r, "old", T0 + 10 * DAY - LATENESS - 1, &["user_id:u"], "purchase"), Outcome::Late);
    assert_eq!(feed(&mut r, "edge", T0 + 10 * DAY - LATENESS, &["user_id:u"], "view"), Outcome::Applied, "at the watermark is on time");
    assert_eq!(r.ingest(None, b"{\"id\":"), Outcome::Dlq);
    assert_eq!(r.ingest(None, br#"{"id":"x","ts":1,"ids":{"user_id":"u"},"channel":"fax","kind":"view"}"#), Outcome::Dlq);
    assert_eq!(r.ingest(None, br#"{"id":"y","ts":1,"ids":{"user_id":"null"},"channel":"app","kind":"view"}"#), Outcome::Dlq);
    let t = r.truth(End::Replay);
    assert_eq!((t.events, t.duplicates, t.late, t.dlq), (3, 1, 1, 3));
    assert_eq!(stages(&t), only("customer"));
}

#[test]
fn an_event_linking_two_user_ids_is_refused_and_links_nothing() {
    let mut r = reference("");
    feed(&mut r, "a", T0, &["user_id:a", "anonymous_id:da"], "signup");
    feed(&mut r, "b", T0, &["user_id:b"], "view");
    assert_eq!(feed(&mut r, "x", T0 + 1, &["user_id:b", "anonymous_id:da"], "purchase"), Outcome::Dlq);
    let t = r.truth(End::Replay);
    assert_eq!(t.customers, 2);
    assert_eq!(stages(&t), vec![("registered".into(), 1), ("visitor".into(), 1)]);
}

#[test]
fn only_accepted_events_move_the_watermark() {
    let mut r = reference("");
    feed(&mut r, "a", T0, &["user_id:a"], "signup");
    let future = format!(r#"{{"id":"f","ts":{},"ids":{{"user_id":"b"}},"channel":"app","kind":"view"}}"#, T0 + 4_000 * DAY);
    assert_eq!(r.ingest(None, future.as_bytes()), Outcome::Dlq);
    assert_eq!(feed(&mut r, "b", T0 + 1, &["user_id:a"], "purchase"), Outcome::Applied);
}
