//! Triggered messages end to end over a real nats-server: welcome on sign-up,
//! abandoned cart cancelled by a purchase on any channel, reactivation after
//! inactivity; consent, frequency caps and quiet hours hold messages back.

mod common;
mod support;

use serde_json::{json, Value};
use support::*;

const TRIGGERS: &str = r#"
[channels]
app = "tech"
web = "tech"
push = "tech"
sms = "low"
email = "low"
store = "high"

[[model]]
name = "lifecycle"
initial = "visitor"
stages = ["visitor", "registered", "customer"]
transitions = [
  { from = ["visitor"], to = "registered", on = { kind = "signup" } },
  { from = ["visitor", "registered"], to = "customer", on = { kind = "purchase" } },
]

[[trigger]]
name = "welcome"
on = { kind = "signup" }
channels = ["email", "sms"]
consent = "marketing"

[[trigger]]
name = "abandoned_cart"
on = { kind = "cart_add" }
unless = { kind = "purchase" }
within = "1h"
channels = ["push", "sms", "email"]
cap = { max = 1, per = "24h" }
quiet_hours = { from = "22:00", to = "08:00", utc_offset = "+08:00" }
consent = "marketing"

[[trigger]]
name = "reactivation"
after_inactivity = "30d"
channels = ["email"]
"#;

/// Noon at +08:00 (04:00 UTC), `days` days ago: outside quiet hours.
fn noon_days_ago(days: i64) -> i64 {
    (days_ago(days) / DAY) * DAY + 4 * HOUR
}

async fn start() -> (Pipeline, async_nats::Subscriber) {
    let p = Pipeline::start(EVENT_TIME_ONLY, TRIGGERS).await;
    let triggers = subscribe(&p.client, "journey.trigger.>").await;
    (p, triggers)
}

fn consent(id: &str, ts: i64, user: &str, channel: &str, granted: bool) -> Value {
    json!({"id": id, "ts": ts, "ids": {"user_id": user}, "channel": "app", "kind": "consent",
           "attrs": {"purpose": "marketing", "channel": channel, "granted": granted}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_sends_a_welcome_on_the_first_consented_channel() {
    let (p, mut triggers) = start().await;
    let t = noon_days_ago(5);
    p.publish(&[event("s1", t, "u1", "web", "signup")]).await;
    let got = next_json(&mut triggers, 1).await;
    assert_eq!(got[0]["trigger"], "welcome");
    assert_eq!(got[0]["one_id"], "u1");
    assert_eq!(got[0]["channel"], "email");
    assert_eq!(got[0]["ts"], t);
    assert_eq!(got[0]["due_ts"], t);
    assert_eq!(got[0]["reason"], "event");
    let m = p.journeyd.wait_applied(1).await;
    assert_eq!(value_or_zero(&m, "journey_triggers_total", &[("trigger", "welcome"), ("channel", "email")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_who_said_no_is_never_disturbed() {
    let (p, mut triggers) = start().await;
    let t = noon_days_ago(5);
    p.publish(&[
        consent("c1", t, "u1", "email", false),
        event("s1", t + 1000, "u1", "web", "signup"),
        consent("c2", t + 2000, "u2", "*", false),
        event("s2", t + 3000, "u2", "web", "signup"),
    ])
    .await;
    let got = next_json(&mut triggers, 1).await;
    assert_eq!((got[0]["one_id"].as_str(), got[0]["channel"].as_str()), (Some("u1"), Some("sms")), "email withdrawn: the next channel");
    let m = p.journeyd.wait_applied(4).await;
    assert_eq!(value_or_zero(&m, "journey_triggers_suppressed_total", &[("trigger", "welcome"), ("reason", "consent")]), 1.0);
    assert!(drain_ready(&mut triggers).is_empty(), "nothing is sent to u2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_cart_fires_after_the_hour_unless_a_purchase_on_any_channel_came() {
    let (p, mut triggers) = start().await;
    let t = noon_days_ago(5);
    p.publish(&[
        event("a1", t, "u1", "app", "cart_add"),
        event("b1", t, "u2", "app", "cart_add"),
        event("b2", t + 30 * 60_000, "u2", "store", "purchase"),
        // another customer's event moves the watermark past both due times
        event("x", t + 2 * HOUR, "u3", "web", "view"),
    ])
    .await;
    let got = next_json(&mut triggers, 1).await;
    assert_eq!(got[0]["trigger"], "abandoned_cart");
    assert_eq!(got[0]["one_id"], "u1");
    assert_eq!(got[0]["channel"], "push");
    assert_eq!(got[0]["due_ts"], t + HOUR);
    assert_eq!(got[0]["reason"], "timeout");
    let m = p
        .journeyd
        .wait_metrics("u2's reminder is cancelled", |m| {
            value_or_zero(m, "journey_triggers_suppressed_total", &[("trigger", "abandoned_cart"), ("reason", "cancelled")]) == 1.0
        })
        .await;
    assert_eq!(value_or_zero(&m, "journey_triggers_total", &[("trigger", "abandoned_cart"), ("channel", "push")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_frequency_cap_and_quiet_hours_hold_reminders_back() {
    let (p, mut triggers) = start().await;
    let t = noon_days_ago(5);
    // 21:30 local: due at 22:30, inside quiet hours
    let evening = t + 9 * HOUR + 30 * 60_000;
    p.publish(&[
        event("a1", t, "u1", "app", "cart_add"),
        event("a2", t + 3 * HOUR, "u1", "app", "cart_add"),
        event("b1", evening, "u2", "app", "cart_add"),
        event("x", evening + 2 * HOUR, "u3", "web", "view"),
    ])
    .await;
    let got = next_json(&mut triggers, 1).await;
    assert_eq!(got[0]["due_ts"], t + HOUR);
    let m = p
        .journeyd
        .wait_metrics("the second reminder hits the cap and the evening one quiet hours", |m| {
            value_or_zero(m, "journey_triggers_suppressed_total", &[("trigger", "abandoned_cart"), ("reason", "cap")]) == 1.0
                && value_or_zero(m, "journey_triggers_suppressed_total", &[("trigger", "abandoned_cart"), ("reason", "quiet_hours")]) == 1.0
        })
        .await;
    assert_eq!(value_or_zero(&m, "journey_triggers_total", &[("trigger", "abandoned_cart"), ("channel", "push")]), 1.0);
    assert!(drain_ready(&mut triggers).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactivation_fires_once_after_inactivity_on_event_time() {
    let (p, mut triggers) = start().await;
    let t = noon_days_ago(100);
    p.publish(&[event("a1", t, "u1", "web", "view"), event("x", t + 31 * DAY, "u2", "web", "view"), event("y", t + 70 * DAY, "u2", "web", "view")]).await;
    // u1 is due at t + 30d, u2 at t + 61d; shards publish independently, so in either order.
    let got = next_json(&mut triggers, 2).await;
    let u1: Vec<&Value> = got.iter().filter(|m| m["one_id"] == "u1").collect();
    assert_eq!(u1.len(), 1, "{got:?}");
    assert_eq!(u1[0]["trigger"], "reactivation");
    assert_eq!(u1[0]["ts"], t, "the customer's last event");
    assert_eq!(u1[0]["due_ts"], t + 30 * DAY);
    assert_eq!(u1[0]["reason"], "inactivity");
    p.journeyd.wait_applied(3).await;
    let more = drain_ready(&mut triggers);
    assert!(more.is_empty(), "u1 is reminded once per quiet spell: {more:?}");
}
