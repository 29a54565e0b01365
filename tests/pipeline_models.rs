//! Journey models end to end over a real nats-server: every kind of `on`
//! rule, rule order, the transition message contract, identity merges, and
//! the exact metrics a sequence of events leaves behind.

mod common;
mod support;

use serde_json::{json, Value};
use support::*;

const M: &str = "m";

/// The `event_id`s of transitions, in the order received.
fn event_ids(transitions: &[Value]) -> Vec<&str> {
    transitions.iter().map(|t| t["event_id"].as_str().expect("event_id is a string")).collect()
}

/// Customers per stage of model `m` (a, b, c, z) from the gauges.
fn stages_of_m(metrics: &str) -> [f64; 4] {
    ["a", "b", "c", "z"].map(|s| value_or_zero(metrics, "journey_customers", &[("model", M), ("stage", s)]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_rule_fires_on_its_kind_and_not_on_another() {
    let mut p = Pipeline::start(EVENT_TIME_ONLY, &one_model(r#"{ from = ["a"], to = "b", on = { kind = "signup" } },"#)).await;
    let t = days_ago(30);

    p.publish(&[event("e-view", t, "u1", "app", "view"), event("e-signup", t + 1000, "u1", "app", "signup")]).await;

    let got = p.next_transitions(1).await;
    assert_eq!(event_ids(&got), ["e-signup"]);
    assert_eq!((got[0]["from"].as_str(), got[0]["to"].as_str()), (Some("a"), Some("b")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_list_rule_fires_on_every_listed_kind_only() {
    let mut p = Pipeline::start(EVENT_TIME_ONLY, &one_model(r#"{ from = ["a"], to = "b", on = { kind = ["login", "view"] } },"#)).await;
    let t = days_ago(30);

    p.publish(&[event("e1", t, "u1", "app", "login"), event("e2", t, "u2", "app", "view"), event("e3", t, "u3", "app", "purchase")]).await;

    let mut ids = event_ids(&p.next_transitions(2).await).into_iter().map(String::from).collect::<Vec<_>>();
    ids.sort();
    assert_eq!(ids, ["e1", "e2"]);
    let metrics = p.journeyd.wait_applied(3).await;
    assert_eq!(stages_of_m(&metrics), [1.0, 2.0, 0.0, 0.0], "u3 stays in a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_rule_fires_on_any_kind_even_one_no_rule_names() {
    let mut p = Pipeline::start(EVENT_TIME_ONLY, &one_model(r#"{ from = ["a"], to = "b", on = { kind = "*" } },"#)).await;

    p.publish(&[event("e1", days_ago(30), "u1", "web", "never_configured")]).await;

    let got = p.next_transitions(1).await;
    assert_eq!(event_ids(&got), ["e1"]);
    assert_eq!(got[0]["channel"], "web");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_list_restricts_a_rule_to_those_channels() {
    let mut p = Pipeline::start(EVENT_TIME_ONLY, &one_model(r#"{ from = ["a"], to = "b", on = { kind = "visit", channel = ["store", "sms"] } },"#)).await;
    let t = days_ago(30);

    p.publish(&[event("e-app", t, "u1", "app", "visit"), event("e-web", t + 1000, "u1", "web", "visit"), event("e-store", t + 2000, "u1", "store", "visit")])
        .await;

    let got = p.next_transitions(1).await;
    assert_eq!(event_ids(&got), ["e-store"]);
    assert_eq!(got[0]["channel"], "store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_value_rule_needs_a_value_of_at_least_the_minimum() {
    let mut p = Pipeline::start(EVENT_TIME_ONLY, &one_model(r#"{ from = ["a"], to = "b", on = { kind = "purchase", min_value = 100.0 } },"#)).await;
    let t = days_ago(30);
    let mut small = event("e-small", t + 1000, "u1", "app", "purchase");
    small["value"] = json!(99.99);
    let mut exact = event("e-exact", t + 2000, "u1", "app", "purchase");
    exact["value"] = json!(100.0);

    p.publish(&[event("e-novalue", t, "u1", "app", "purchase"), small, exact]).await;

    assert_eq!(event_ids(&p.next_transitions(1).await), ["e-exact"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_within_fires_on_the_counted_event_inside_the_window() {
    let mut p = Pipeline::start(EVENT_TIME_ONLY, &one_model(r#"{ from = ["a"], to = "b", on = { kind = "purchase", count = 3, within = "7d" } },"#)).await;
    let t = days_ago(30);

    p.publish(&[
        event("p1", t, "u1", "app", "purchase"),
        event("v1", t + DAY / 2, "u1", "app", "view"),
        event("p2", t + DAY, "u1", "app", "purchase"),
        event("p3", t + 2 * DAY, "u1", "web", "purchase"),
    ])
    .await;

    let got = p.next_transitions(1).await;
    assert_eq!(event_ids(&got), ["p3"], "the third purchase, this one included");
    assert_eq!(got[0]["ts"], t + 2 * DAY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_within_does_not_count_an_event_exactly_one_window_earlier() {
    let mut p = Pipeline::start(EVENT_TIME_ONLY, &one_model(r#"{ from = ["a"], to = "b", on = { kind = "purchase", count = 3, within = "7d" } },"#)).await;
    let t = days_ago(30);

    // The window of p3 is (t, t + 7d]: p1 at t is just outside, so p3 sees 2.
    // The window of p4 is (t + 1 ms, t + 7d + 1 ms]: p2, p3, p4.
    p.publish(&[
        event("p1", t, "u1", "app", "purchase"),
        event("p2", t + DAY, "u1", "app", "purchase"),
        event("p3", t + 7 * DAY, "u1", "app", "purchase"),
        event("p4", t + 7 * DAY + 1, "u1", "app", "purchase"),
    ])
    .await;

    assert_eq!(event_ids(&p.next_transitions(1).await), ["p4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_rule_in_config_order_whose_from_holds_fires_and_only_one_per_event() {
    let mut p = Pipeline::start(
        EVENT_TIME_ONLY,
        &one_model(
            r#"{ from = ["b"], to = "c", on = { kind = "signup" } },
               { from = ["a"], to = "b", on = { kind = "signup" } },
               { from = ["a"], to = "z", on = { kind = "signup" } },"#,
        ),
    )
    .await;

    p.publish(&[event("e1", days_ago(30), "u1", "app", "signup")]).await;

    let got = p.next_transitions(1).await;
    assert_eq!((got[0]["from"].as_str(), got[0]["to"].as_str()), (Some("a"), Some("b")));
    let metrics = p.journeyd.wait_applied(1).await;
    assert_eq!(sum_or_zero(&metrics, "journey_transitions_total", &[("model", M)]), 1.0, "b → c must not chain on the same event");
    assert_eq!(stages_of_m(&metrics), [0.0, 1.0, 0.0, 0.0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transition_message_has_exactly_the_contract_fields() {
    let mut p = Pipeline::start(EVENT_TIME_ONLY, &one_model(r#"{ from = ["a"], to = "b", on = { kind = "signup" } },"#)).await;
    let ts = days_ago(30);
    let ev = json!({"id": "evt-8f2c", "ts": ts, "ids": {"anonymous_id": "dev-9f", "user_id": "u-17"},
                    "channel": "sms", "kind": "signup", "campaign": "spring"});

    publish_raw(&p.client, "touch.sms.signup", ev.to_string().as_bytes()).await;

    let msg = next_msg(&mut p.transitions).await;
    assert_eq!(msg.subject.as_str(), "journey.transition.m.a.b");
    let got: Value = serde_json::from_slice(&msg.payload).expect("JSON");
    let mut keys: Vec<&str> = got.as_object().expect("object").keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["attribution", "channel", "event_id", "from", "model", "one_id", "reason", "to", "ts"]);
    assert_eq!(got["one_id"], "u-17", "user_id comes first in identity.priority");
    assert_eq!(got["model"], "m");
    assert_eq!(got["from"], "a");
    assert_eq!(got["to"], "b");
    assert_eq!(got["ts"], ts);
    assert_eq!(got["event_id"], "evt-8f2c");
    assert_eq!(got["channel"], "sms");
    assert_eq!(got["reason"], "event");
    assert!(got["attribution"].is_object(), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transition_and_customer_metrics_are_exact_after_a_sequence() {
    let mut p = Pipeline::start(EVENT_TIME_ONLY, LIFECYCLE).await;
    let t = days_ago(30);

    p.publish(&[
        event("e1", t, "u1", "app", "signup"),
        event("e2", t + 1000, "u2", "web", "signup"),
        event("e3", t + 2000, "u1", "app", "purchase"),
        event("e4", t + 3000, "u3", "store", "purchase"),
        event("e5", t + 4000, "u1", "store", "purchase"),
        event("e6", t + 5000, "u4", "app", "view"),
        event("e7", t + 6000, "u2", "web", "view"),
    ])
    .await;
    p.next_transitions(5).await;
    let metrics = p.journeyd.wait_applied(7).await;

    let lc = "lifecycle";
    let transitions = common::metric_samples(&metrics, "journey_transitions_total", &[]);
    let mut got: Vec<(String, String, String, String, f64)> = transitions
        .iter()
        .map(|s| {
            let l = |n| s.label(n).unwrap_or("?").to_string();
            (l("model"), l("from"), l("to"), l("channel"), s.value)
        })
        .collect();
    got.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let want = |f: &str, t: &str, ch: &str| (lc.to_string(), f.to_string(), t.to_string(), ch.to_string(), 1.0);
    assert_eq!(
        got,
        [
            want("customer", "repeat", "store"),
            want("registered", "customer", "app"),
            want("visitor", "customer", "store"),
            want("visitor", "registered", "app"),
            want("visitor", "registered", "web"),
        ]
    );
    let stage = |s| value_or_zero(&metrics, "journey_customers", &[("model", lc), ("stage", s)]);
    let counts = ["visitor", "registered", "customer", "repeat", "loyal", "dormant", "reactivated"].map(stage);
    assert_eq!(counts, [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
    assert_eq!(counts.iter().sum::<f64>(), 4.0, "one stage per customer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_and_channel_touch_metrics_are_labelled_by_channel_kind_mode_and_stage() {
    let p = Pipeline::start(EVENT_TIME_ONLY, LIFECYCLE).await;
    let t = days_ago(30);

    p.publish(&[
        event("e1", t, "u1", "app", "signup"),
        event("e2", t + 1000, "u1", "sms", "purchase"),
        event("e3", t + 2000, "u1", "store", "purchase"),
        event("e4", t + 3000, "u2", "web", "hover"),
    ])
    .await;
    let metrics = p.journeyd.wait_applied(4).await;

    let events = |ch, kind| value_or_zero(&metrics, "journey_events_total", &[("channel", ch), ("kind", kind)]);
    assert_eq!(events("app", "signup"), 1.0);
    assert_eq!(events("sms", "purchase"), 1.0);
    assert_eq!(events("store", "purchase"), 1.0);
    assert_eq!(events("web", "other"), 1.0, "a kind no rule names is `other`");
    assert_eq!(common::metric_samples(&metrics, "journey_events_total", &[]).len(), 4);
    // The stage label is the customer's stage (first model) when the touch arrived.
    let touches = |ch, mode, stage| value_or_zero(&metrics, "journey_channel_touches_total", &[("channel", ch), ("mode", mode), ("stage", stage)]);
    assert_eq!(touches("app", "tech", "visitor"), 1.0);
    assert_eq!(touches("sms", "low", "registered"), 1.0);
    assert_eq!(touches("store", "high", "customer"), 1.0);
    assert_eq!(touches("web", "tech", "visitor"), 1.0);
    assert_eq!(sum_or_zero(&metrics, "journey_channel_touches_total", &[]), 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linking_two_customers_merges_them_into_the_later_stage() {
    let mut p = Pipeline::start(EVENT_TIME_ONLY, LIFECYCLE).await;
    let t = days_ago(30);
    let anon = json!({"id": "e-anon", "ts": t, "ids": {"anonymous_id": "dev-1"}, "channel": "web", "kind": "view"});
    let link = json!({"id": "e-link", "ts": t + 2000, "ids": {"anonymous_id": "dev-1", "user_id": "u1"},
                      "channel": "app", "kind": "view"});

    p.publish(&[anon, event("e-signup", t + 1000, "u1", "app", "signup"), link]).await;

    let got = p.next_transitions(2).await;
    let merge = got.iter().find(|m| m["reason"] == "merge").unwrap_or_else(|| panic!("no merge transition in {got:?}"));
    assert_eq!(merge["from"], "visitor", "the anonymous side's stage changed");
    assert_eq!(merge["to"], "registered");
    assert_eq!(merge["one_id"], "u1", "{got:?}");
    assert_eq!(merge["event_id"], "e-link");
    let metrics = p.journeyd.wait_applied(3).await;
    let stage = |s| value_or_zero(&metrics, "journey_customers", &[("model", "lifecycle"), ("stage", s)]);
    assert_eq!((stage("visitor"), stage("registered")), (0.0, 1.0), "two customers became one");
    assert_eq!(value_or_zero(&metrics, "journey_identity_merges_total", &[]), 1.0);
    assert_eq!(p.journeyd.stage("dev-1", "lifecycle").await.as_deref(), Some("registered"));
}
