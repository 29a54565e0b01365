//! Channel effect (issue 5): which channels move customers forward.
//! Multi-touch attribution on hand-computed journeys and on a large simulated
//! stream, funnels with windows, exclusions, re-entry and per-step gaps, the
//! funnel API, service modes, the segment matrix following the watermark, and
//! metric cardinality bounded whatever channels and kinds arrive.
//!
//! Live tests run journeyd in this process against their own nats-server
//! (`support::Service`); stream-wide invariants run `journeyd::replay::replay`
//! over NDJSON.

mod common;
mod support;

use common::{parse_exposition, NatsServer};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use support::{days_ago, event, event_with_ids, next_json, now_ms, sum_or_zero, value_or_zero, Service, DAY, EVENT_TIME_ONLY, HOUR, SHORT_LIFECYCLE};

/// The allowed lateness of every live config ([`EVENT_TIME_ONLY`]): the
/// watermark trails the latest event time by this.
const LATENESS: i64 = 5_000;

const MODEL: &str = "lifecycle";
const METHODS: [&str; 5] = ["first_touch", "last_touch", "linear", "time_decay", "position_based"];

/// journeyd on `nats` with two shards, channels of every mode and the
/// three-stage lifecycle ([`SHORT_LIFECYCLE`]); `body` adds sections.
async fn start(nats: &NatsServer, body: &str) -> Service {
    Service::start_on(nats, EVENT_TIME_ONLY, &format!("[engine]\nshards = 2\n\n{SHORT_LIFECYCLE}\n{body}\n")).await
}

/// Events sorted by time (stable), so that none arrives behind the watermark.
fn in_time_order(mut events: Vec<Value>) -> Vec<Value> {
    events.sort_by_key(|e| e["ts"].as_i64().expect("ts"));
    events
}

/// Asserts that `credit` (channel → credit) holds exactly `expected`'s channels with their credit.
fn assert_credit(credit: &Value, expected: &[(&str, f64)], what: &str) {
    let got: BTreeMap<String, f64> = credit
        .as_object()
        .unwrap_or_else(|| panic!("{what}: credit is an object: {credit}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().expect("a number")))
        .collect();
    let want: BTreeMap<String, f64> = expected.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{what}: credited channels: {credit}");
    for (ch, w) in &want {
        assert!((got[ch] - w).abs() < 1e-9, "{what}: {ch} has {} not {w}: {credit}", got[ch]);
    }
}

// ---------------------------------------------------------------------------------------------
// Attribution, by hand
// ---------------------------------------------------------------------------------------------

/// u-1's touches on web, sms and store `days_before` days before its first
/// purchase, in the app at `p` (ids t-web, t-sms, t-store, t-app).
fn touches_then_purchase(p: i64, days_before: [i64; 3]) -> Vec<Value> {
    let [web, sms, store] = days_before;
    vec![
        event("t-web", p - web * DAY, "u-1", "web", "view"),
        event("t-sms", p - sms * DAY, "u-1", "sms", "click"),
        event("t-store", p - store * DAY, "u-1", "store", "visit"),
        event("t-app", p, "u-1", "app", "purchase"),
    ]
}

/// Starts journeyd on `nats` with `body` (its `[attribution]` section, if
/// any), publishes `events` in order, the last of them a visitor's purchase,
/// and returns journeyd with the first visitor → customer transition.
async fn conversion(nats: &NatsServer, body: &str, events: &[Value]) -> (Service, Value) {
    let j = start(nats, body).await;
    let mut conversions = j.subscribe("journey.transition.lifecycle.visitor.customer").await;
    j.publish(events).await;
    let transition = next_json(&mut conversions, 1).await.remove(0);
    (j, transition)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attribution_model_credits_the_touches_of_a_conversion_as_computed_by_hand() {
    let nats = NatsServer::start();
    let body = "[attribution]\nlookback = \"30d\"\nhalf_life = \"5d\"\n";
    let (j, t) = conversion(&nats, body, &touches_then_purchase(days_ago(5), [10, 7, 3])).await;

    assert_eq!((t["event_id"].as_str(), t["channel"].as_str(), t["reason"].as_str()), (Some("t-app"), Some("app"), Some("event")));
    let a = &t["attribution"];
    assert_eq!(a.as_object().map(|o| o.len()), Some(5), "one credit split per configured model: {a}");
    assert_credit(&a["first_touch"], &[("web", 1.0)], "first_touch");
    assert_credit(&a["last_touch"], &[("app", 1.0)], "last_touch: the converting event is the last touch");
    assert_credit(&a["linear"], &[("web", 0.25), ("sms", 0.25), ("store", 0.25), ("app", 0.25)], "linear");
    // Ages 10, 7, 3 and 0 days with a 5-day half-life weigh 2^-2, 2^-1.4, 2^-0.6 and 1.
    let w = [2f64.powf(-2.0), 2f64.powf(-1.4), 2f64.powf(-0.6), 1.0];
    let total: f64 = w.iter().sum();
    assert_credit(&a["time_decay"], &[("web", w[0] / total), ("sms", w[1] / total), ("store", w[2] / total), ("app", w[3] / total)], "time_decay");
    assert_credit(&a["position_based"], &[("web", 0.4), ("sms", 0.1), ("store", 0.1), ("app", 0.4)], "position_based 40/20/40");

    let m = j.settle(4, &["u-1"]).await;
    let credited = |channel: &str, method: &str| {
        value_or_zero(&m, "journey_attributed_transitions_total", &[("model", MODEL), ("to", "customer"), ("channel", channel), ("attribution", method)])
    };
    assert!((credited("web", "linear") - 0.25).abs() < 1e-9 && (credited("app", "position_based") - 0.4).abs() < 1e-9, "the metrics carry the same credit");
    assert!((credited("store", "time_decay") - w[2] / total).abs() < 1e-9);
    let by_mode = |mode: &str, method: &str| {
        value_or_zero(&m, "journey_attributed_by_mode_total", &[("model", MODEL), ("to", "customer"), ("mode", mode), ("attribution", method)])
    };
    assert!((by_mode("tech", "linear") - 0.5).abs() < 1e-9, "web and app are tech-touch");
    assert!((by_mode("low", "linear") - 0.25).abs() < 1e-9 && (by_mode("high", "linear") - 0.25).abs() < 1e-9);
    assert!((by_mode("tech", "position_based") - 0.8).abs() < 1e-9);
    for (channel, mode) in [("web", "tech"), ("sms", "low"), ("store", "high"), ("app", "tech")] {
        assert_eq!(
            value_or_zero(&m, "journey_channel_touches_total", &[("channel", channel), ("mode", mode), ("stage", "visitor")]),
            1.0,
            "{channel} touched a visitor"
        );
    }

    let (status, stats) = j.get_json("/v1/stats").await;
    assert_eq!(status, 200);
    assert_eq!(stats["customers"][MODEL], json!({"visitor": 0, "registered": 0, "customer": 1}));
    assert_eq!(stats["transitions_last_minute"], json!({"app": 1}), "{stats}");
    assert_eq!(stats["transitions_last_hour"], json!({"app": 1}), "{stats}");
    j.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_touch_exactly_one_lookback_old_is_not_credited() {
    let nats = NatsServer::start();
    let p = days_ago(2);
    let events = [
        event("t-email", p - 30 * DAY, "u-1", "email", "open"),
        event("t-sms", p - 30 * DAY + 1, "u-1", "sms", "click"),
        event("t-app", p, "u-1", "app", "purchase"),
    ];
    let (j, t) = conversion(&nats, "[attribution]\nlookback = \"30d\"\n", &events).await;

    let a = &t["attribution"];
    assert_credit(&a["first_touch"], &[("sms", 1.0)], "first_touch: the window is (ts - lookback, ts]");
    assert_credit(&a["linear"], &[("sms", 0.5), ("app", 0.5)], "linear");
    assert_credit(&a["position_based"], &[("sms", 0.5), ("app", 0.5)], "position_based with two touches");
    j.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_last_max_touches_are_credited() {
    let nats = NatsServer::start();
    let (j, t) = conversion(&nats, "[attribution]\nmax_touches = 2\n", &touches_then_purchase(days_ago(5), [3, 2, 1])).await;

    let a = &t["attribution"];
    assert_credit(&a["first_touch"], &[("store", 1.0)], "first_touch: older touches were not kept");
    assert_credit(&a["linear"], &[("store", 0.5), ("app", 0.5)], "linear");
    assert_credit(&a["position_based"], &[("store", 0.5), ("app", 0.5)], "position_based");
    // Ages 1 day and 0 with the default 7-day half-life.
    let (old, new) = (2f64.powf(-1.0 / 7.0), 1.0);
    assert_credit(&a["time_decay"], &[("store", old / (old + new)), ("app", new / (old + new))], "time_decay");
    j.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn position_based_shares_are_configurable() {
    let nats = NatsServer::start();
    let body = "[attribution]\nposition_first = 0.5\nposition_last = 0.3\n";
    let (j, t) = conversion(&nats, body, &touches_then_purchase(days_ago(5), [3, 2, 1])).await;

    assert_credit(
        &t["attribution"]["position_based"],
        &[("web", 0.5), ("sms", 0.1), ("store", 0.1), ("app", 0.3)],
        "50% first, 30% last, 20% shared by the middle",
    );
    j.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touches_of_every_linked_id_are_credited_and_duplicates_and_late_events_are_not() {
    let nats = NatsServer::start();
    let p = days_ago(5);
    let sms = event_with_ids("t-sms", p - DAY, &[("phone", "p-a")], "sms", "click");
    let events = [
        event_with_ids("t-web", p - 2 * DAY, &[("anonymous_id", "dev-a")], "web", "view"),
        sms.clone(),
        // A duplicate of the SMS touch, and a store touch before the watermark (late).
        sms,
        event_with_ids("t-store", p - DAY - LATENESS - 1, &[("phone", "p-a")], "store", "visit"),
        event_with_ids("t-app", p, &[("anonymous_id", "dev-a"), ("phone", "p-a"), ("user_id", "u-a")], "app", "purchase"),
    ];
    let (j, t) = conversion(&nats, "", &events).await;

    assert_eq!(t["one_id"], "u-a");
    let a = &t["attribution"];
    assert_credit(&a["first_touch"], &[("web", 1.0)], "first_touch: the anonymous id's touch");
    assert_credit(&a["linear"], &[("web", 1.0 / 3.0), ("sms", 1.0 / 3.0), ("app", 1.0 / 3.0)], "linear: once per applied touch");
    let m = j.settle(3, &["u-a"]).await;
    assert_eq!((value_or_zero(&m, "journey_duplicates_total", &[]), value_or_zero(&m, "journey_late_events_total", &[])), (1.0, 1.0));
    j.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Attribution over a large simulated stream
// ---------------------------------------------------------------------------------------------

/// A retail config: two models (one with an inactivity timer, whose
/// transitions are not credited), funnels, segments, every attribution model.
const SIM_CONFIG: &str = concat!(
    r#"
[time]
allowed_lateness = "5s"

[engine]
shards = 2

[identity]
priority = ["user_id", "phone", "wechat_unionid", "anonymous_id"]
max_ids_per_type = { user_id = 1 }

[channels]
app = "tech"
web = "tech"
wechat = "tech"
push = "tech"
sms = "low"
email = "low"
call_center = "high"
store = "high"

"#,
    include_str!("fixtures/lifecycle_model.toml"),
    r#"
[[model]]
name = "tier"
initial = "member"
stages = ["member", "silver", "gold"]
transitions = [
  { from = ["member"], to = "silver", on = { kind = "purchase", count = 3, within = "180d" } },
  { from = ["silver"], to = "gold", on = { kind = "purchase", min_value = 500.0 } },
]

[[funnel]]
name = "onboarding"
steps = ["signup", "activate", "purchase"]
window = "7d"

[attribution]
lookback = "30d"
half_life = "7d"
max_touches = 8
"#
);

#[test]
fn credit_sums_to_the_number_of_event_caused_transitions_on_a_simulated_stream() {
    let config = journeyd::config::parse(SIM_CONFIG).unwrap_or_else(|d| panic!("{d:?}")).config;
    let generated = journeyd::sim::generate(&config, 2000, 7, now_ms());
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    for e in &generated.events {
        file.write_all(&e.payload).and_then(|_| file.write_all(b"\n")).expect("write NDJSON");
    }
    file.flush().expect("flush NDJSON");

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let summary = rt.block_on(journeyd::replay::replay(config, file.path(), |_, _, _| {})).expect("replay runs");
    let m = &summary.metrics_text;

    for model in ["lifecycle", "tier"] {
        let all = sum_or_zero(m, "journey_transitions_total", &[("model", model)]);
        let timers = sum_or_zero(m, "journey_transitions_total", &[("model", model), ("channel", "none")]);
        let credited_transitions = all - timers;
        assert!(credited_transitions > 100.0, "{model}: the stream has event-caused transitions ({credited_transitions})");
        if model == "lifecycle" {
            assert!(timers > 0.0, "the stream has timer transitions, which are not credited");
        }
        for method in METHODS {
            let by_channel = sum_or_zero(m, "journey_attributed_transitions_total", &[("model", model), ("attribution", method)]);
            let by_mode = sum_or_zero(m, "journey_attributed_by_mode_total", &[("model", model), ("attribution", method)]);
            for (what, credit) in [("by channel", by_channel), ("by mode", by_mode)] {
                assert!(
                    (credit - credited_transitions).abs() <= 1e-6 * credited_transitions,
                    "{model}/{method} {what}: credit {credit} vs {credited_transitions} event-caused transitions"
                );
            }
        }
        // Per target stage too: every transition into a stage is credited exactly once.
        let stages: BTreeSet<String> = parse_exposition(m)
            .into_iter()
            .filter(|s| s.name == "journey_transitions_total" && s.label("model") == Some(model))
            .map(|s| s.label("to").unwrap().to_string())
            .collect();
        for to in &stages {
            let n = sum_or_zero(m, "journey_transitions_total", &[("model", model), ("to", to)])
                - sum_or_zero(m, "journey_transitions_total", &[("model", model), ("to", to), ("channel", "none")]);
            let credit = sum_or_zero(m, "journey_attributed_transitions_total", &[("model", model), ("to", to), ("attribution", "linear")]);
            assert!((credit - n).abs() <= 1e-6 * n.max(1.0), "{model} → {to}: credit {credit} vs {n}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Funnels
// ---------------------------------------------------------------------------------------------

const FUNNELS: &str = r#"
[[funnel]]
name = "onboarding"
steps = ["signup", "activate", "purchase"]
window = "7d"
exclusions = ["refund"]

[[funnel]]
name = "once"
steps = ["signup", "activate", "purchase"]
window = "7d"
reentry = false

[[funnel]]
name = "checkout"
steps = ["cart_add", { kind = "purchase", name = "paid", within = "1h" }]
window = "1d"
"#;

fn step(m: &str, funnel: &str, step: &str) -> f64 {
    value_or_zero(m, "journey_funnel_step_total", &[("funnel", funnel), ("step", step)])
}

fn completed(m: &str, funnel: &str) -> f64 {
    value_or_zero(m, "journey_funnel_completed_total", &[("funnel", funnel)])
}

fn dropped(m: &str, funnel: &str, at_step: &str) -> f64 {
    value_or_zero(m, "journey_funnel_dropped_total", &[("funnel", funnel), ("at_step", at_step)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_attempt_is_dropped_when_the_watermark_passes_its_window_at_the_first_step_not_reached() {
    let nats = NatsServer::start();
    let j = start(&nats, FUNNELS).await;
    let t = days_ago(20);
    j.publish(&[event("s", t, "u-1", "web", "signup"), event("a", t + DAY, "u-1", "web", "activate")]).await;

    // Another customer moves the watermark to exactly start + window: still open.
    j.publish(&[event("w1", t + 7 * DAY + LATENESS, "u-9", "web", "view")]).await;
    let m = j.settle(3, &["u-1", "u-9"]).await;
    assert_eq!(sum_or_zero(&m, "journey_funnel_dropped_total", &[("funnel", "onboarding")]), 0.0, "start + window is not yet earlier than the watermark");

    // One millisecond later the window has passed.
    j.publish(&[event("w2", t + 7 * DAY + LATENESS + 1, "u-9", "web", "view")]).await;
    let m = j.settle(4, &["u-1", "u-9"]).await;
    assert_eq!(dropped(&m, "onboarding", "purchase"), 1.0, "purchase is the first step not reached");
    assert_eq!(sum_or_zero(&m, "journey_funnel_dropped_total", &[("funnel", "onboarding")]), 1.0);
    assert_eq!(dropped(&m, "once", "purchase"), 1.0);

    // A purchase after the window completes nothing; a new signup re-enters.
    j.publish(&[event("late-buy", t + 7 * DAY + LATENESS + 2, "u-1", "app", "purchase"), event("s2", t + 7 * DAY + LATENESS + 3, "u-1", "app", "signup")])
        .await;
    let m = j.settle(6, &["u-1"]).await;
    assert_eq!((step(&m, "onboarding", "purchase"), completed(&m, "onboarding")), (0.0, 0.0));
    assert_eq!(step(&m, "onboarding", "signup"), 2.0, "re-entry after expiry");
    assert_eq!(step(&m, "once", "signup"), 1.0, "`reentry = false`: no new attempt after an expired one either");
    assert_eq!(value_or_zero(&m, "journey_funnel_entered_total", &[("funnel", "onboarding"), ("channel", "web")]), 1.0);
    assert_eq!(value_or_zero(&m, "journey_funnel_entered_total", &[("funnel", "onboarding"), ("channel", "app")]), 1.0);
    j.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusion_ends_the_attempt_at_once_and_a_later_step_one_starts_another() {
    let nats = NatsServer::start();
    let j = start(&nats, FUNNELS).await;
    let t = days_ago(20);

    j.publish(&[event("s1", t, "u-2", "web", "signup"), event("r", t + HOUR, "u-2", "web", "refund"), event("a1", t + 2 * HOUR, "u-2", "web", "activate")])
        .await;
    let m = j.settle(3, &["u-2"]).await;
    assert_eq!(dropped(&m, "onboarding", "activate"), 1.0, "counted at the exclusion, not when the window closes");
    assert_eq!(step(&m, "onboarding", "activate"), 0.0, "the attempt was over");
    assert_eq!((step(&m, "once", "activate"), dropped(&m, "once", "activate")), (1.0, 0.0), "a funnel without the exclusion goes on");

    j.publish(&[event("s2", t + 3 * HOUR, "u-2", "web", "signup"), event("a2", t + 4 * HOUR, "u-2", "web", "activate")]).await;
    let m = j.settle(5, &["u-2"]).await;
    assert_eq!((step(&m, "onboarding", "signup"), step(&m, "onboarding", "activate")), (2.0, 1.0));
    assert_eq!(step(&m, "once", "signup"), 1.0, "a signup during an open attempt starts nothing");
    j.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_funnel_is_entered_again_only_when_reentry_is_on() {
    let nats = NatsServer::start();
    let j = start(&nats, FUNNELS).await;
    let t = days_ago(20);
    let kinds = ["signup", "activate", "purchase", "signup", "activate", "purchase"];
    let events: Vec<Value> = kinds.iter().enumerate().map(|(i, k)| event(&format!("e{i}"), t + i as i64 * HOUR, "u-3", "app", k)).collect();

    j.publish(&events).await;
    let m = j.settle(6, &["u-3"]).await;

    assert_eq!(completed(&m, "onboarding"), 2.0);
    assert_eq!(["signup", "activate", "purchase"].map(|s| step(&m, "onboarding", s)), [2.0, 2.0, 2.0]);
    assert_eq!(completed(&m, "once"), 1.0);
    assert_eq!(["signup", "activate", "purchase"].map(|s| step(&m, "once", s)), [1.0, 1.0, 1.0]);
    assert_eq!(value_or_zero(&m, "journey_funnel_duration_seconds_count", &[("funnel", "onboarding")]), 2.0);
    assert_eq!(value_or_zero(&m, "journey_funnel_duration_seconds_sum", &[("funnel", "onboarding")]), 2.0 * 7200.0, "two hours each, first step to completion");
    assert_eq!(value_or_zero(&m, "journey_funnel_completed_by_channel_total", &[("funnel", "onboarding"), ("channel", "app")]), 2.0);
    j.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_count_only_in_order() {
    let nats = NatsServer::start();
    let j = start(&nats, FUNNELS).await;
    let t = days_ago(20);

    j.publish(&in_time_order(vec![
        // u-4 buys before activating: the purchase waits for its turn.
        event("s4", t, "u-4", "web", "signup"),
        event("p4", t + HOUR, "u-4", "web", "purchase"),
        event("a4", t + 2 * HOUR, "u-4", "web", "activate"),
        event("q4", t + 3 * HOUR, "u-4", "web", "purchase"),
        // u-5 does everything backwards: only the signup counts, as an entry.
        event("p5", t, "u-5", "web", "purchase"),
        event("a5", t + HOUR, "u-5", "web", "activate"),
        event("s5", t + 2 * HOUR, "u-5", "web", "signup"),
    ]))
    .await;
    let m = j.settle(7, &["u-4", "u-5"]).await;

    assert_eq!(["signup", "activate", "purchase"].map(|s| step(&m, "onboarding", s)), [2.0, 1.0, 1.0]);
    assert_eq!(completed(&m, "onboarding"), 1.0);
    assert_eq!(value_or_zero(&m, "journey_funnel_duration_seconds_sum", &[("funnel", "onboarding")]), 3.0 * 3600.0);
    j.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_with_within_must_follow_the_previous_step_in_time_and_is_labelled_by_its_name() {
    let nats = NatsServer::start();
    let j = start(&nats, FUNNELS).await;
    let t = days_ago(20);

    j.publish(&in_time_order(vec![
        event("c6", t, "u-6", "web", "cart_add"),
        event("p6", t + HOUR + 1, "u-6", "app", "purchase"),
        event("c7", t, "u-7", "web", "cart_add"),
        event("p7", t + HOUR, "u-7", "app", "purchase"),
    ]))
    .await;
    let m = j.settle(4, &["u-6", "u-7"]).await;

    assert_eq!(step(&m, "checkout", "cart_add"), 2.0);
    assert_eq!(step(&m, "checkout", "paid"), 1.0, "only u-7 paid within the hour; the step's label is its name");
    assert_eq!(completed(&m, "checkout"), 1.0);
    assert_eq!(value_or_zero(&m, "journey_funnel_duration_seconds_sum", &[("funnel", "checkout")]), 3600.0);
    assert_eq!(value_or_zero(&m, "journey_funnel_entered_total", &[("funnel", "checkout"), ("channel", "web")]), 2.0);
    assert_eq!(
        value_or_zero(&m, "journey_funnel_completed_by_channel_total", &[("funnel", "checkout"), ("channel", "web")]),
        1.0,
        "credited to the entry channel"
    );
    j.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_can_require_a_channel_and_a_minimum_value() {
    let nats = NatsServer::start();
    let body = "[[funnel]]\nname = \"in_store\"\nwindow = \"7d\"\nsteps = [\"view\", { kind = \"purchase\", channel = \"store\", min_value = 50.0 }]\n";
    let j = start(&nats, body).await;
    let t = days_ago(20);
    let priced = |id: &str, ts: i64, channel: &str, value: f64| {
        let mut e = event(id, ts, "u-8", channel, "purchase");
        e["value"] = json!(value);
        e
    };

    j.publish(&[
        event("v", t, "u-8", "web", "view"),
        priced("online", t + HOUR, "app", 80.0),
        priced("cheap", t + 2 * HOUR, "store", 49.99),
        priced("bought", t + 3 * HOUR, "store", 50.0),
    ])
    .await;
    let m = j.settle(4, &["u-8"]).await;

    assert_eq!(completed(&m, "in_store"), 1.0);
    assert_eq!(value_or_zero(&m, "journey_funnel_duration_seconds_sum", &[("funnel", "in_store")]), 3.0 * 3600.0, "completed by the store purchase of 50");
    assert_eq!(step(&m, "in_store", "purchase"), 1.0, "an unnamed step is labelled by its kind");
    j.stop().await;
}

/// Four attempts at onboarding: `a` enters on web and converts in 2 days, `b`
/// enters on app and converts in 4 days, `c` enters on app and is still open
/// at activate, `d` enters on sms and asks for a refund. Returns
/// `GET /v1/funnels/onboarding`.
async fn four_onboarding_attempts(j: &Service) -> Value {
    let t = days_ago(20);
    j.publish(&in_time_order(vec![
        event("a1", t, "a", "web", "signup"),
        event("a2", t + DAY, "a", "web", "activate"),
        event("a3", t + 2 * DAY, "a", "web", "purchase"),
        event("b1", t, "b", "app", "signup"),
        event("b2", t + DAY, "b", "app", "activate"),
        event("b3", t + 4 * DAY, "b", "app", "purchase"),
        event("c1", t, "c", "app", "signup"),
        event("c2", t + DAY, "c", "app", "activate"),
        event("d1", t, "d", "sms", "signup"),
        event("d2", t + HOUR, "d", "sms", "refund"),
    ]))
    .await;
    j.settle(10, &["a", "b", "c", "d"]).await;
    let (status, f) = j.get_json("/v1/funnels/onboarding").await;
    assert_eq!(status, 200, "{f}");
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_funnel_api_reports_step_counts_conversion_and_conversion_by_entry_channel() {
    let nats = NatsServer::start();
    let j = start(&nats, FUNNELS).await;

    let f = four_onboarding_attempts(&j).await;

    assert_eq!(f["name"], "onboarding");
    assert_eq!(f["window_seconds"].as_f64(), Some(7.0 * 86_400.0));
    let steps: Vec<(String, u64, f64, f64, u64)> = f["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["reached"].as_u64().unwrap(),
                s["conversion_from_start"].as_f64().unwrap(),
                s["conversion_from_previous"].as_f64().unwrap(),
                s["dropped_here"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [("signup".to_string(), 4, 1.0, 1.0, 0), ("activate".to_string(), 3, 0.75, 0.75, 1), ("purchase".to_string(), 2, 0.5, 2.0 / 3.0, 0)],
        "{f}"
    );
    assert_eq!((f["completed"].as_u64(), f["dropped"].as_u64(), f["conversion"].as_f64()), (Some(2), Some(1), Some(0.5)));
    assert_eq!(
        f["by_entry_channel"],
        json!({
            "web": {"entered": 1, "completed": 1, "conversion": 1.0},
            "app": {"entered": 2, "completed": 1, "conversion": 0.5},
            "sms": {"entered": 1, "completed": 0, "conversion": 0.0},
        })
    );

    let (status, all) = j.get_json("/v1/funnels").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = all.as_array().expect("a list").iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["onboarding", "once", "checkout"]);
    assert_eq!(all[0], f, "the list holds the same report");
    let (status, missing) = j.get_json("/v1/funnels/nope").await;
    assert_eq!(status, 404);
    assert!(missing["error"].is_string(), "{missing}");
    j.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_funnel_api_reports_median_and_p90_time_to_convert() {
    let nats = NatsServer::start();
    let j = start(&nats, FUNNELS).await;

    let f = four_onboarding_attempts(&j).await;

    // Exact, interpolated between the closest ranks (as numpy computes them).
    let close = |v: &Value, want: f64| v.as_f64().is_some_and(|x| (x - want).abs() < 1e-6);
    assert!(close(&f["median_seconds_to_convert"], 3.0 * 86_400.0), "median of 2 and 4 days: {f}");
    assert!(close(&f["p90_seconds_to_convert"], 3.8 * 86_400.0), "p90 of 2 and 4 days: {f}");
    let m = j.metrics().await;
    assert_eq!(value_or_zero(&m, "journey_funnel_duration_seconds_sum", &[("funnel", "onboarding")]), 6.0 * 86_400.0, "the histogram metric agrees");
    j.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Segment matrix
// ---------------------------------------------------------------------------------------------

const SEGMENTS: &str = r#"
[segments]
window = "30d"
purchase_kinds = ["purchase"]
engagement_kinds = ["view", "click"]
purchase_high = 2
engagement_high = 2
"#;

/// The segment gauges as (purchase, engagement) → customers, zero cells left out;
/// asserts they add up to the customers of the lifecycle model.
fn cells(m: &str) -> BTreeMap<(String, String), f64> {
    let samples = common::metric_samples(m, "journey_segment_customers", &[]);
    let total: f64 = samples.iter().map(|s| s.value).sum();
    let customers = sum_or_zero(m, "journey_customers", &[("model", MODEL)]);
    assert_eq!(total, customers, "every customer sits in exactly one cell");
    samples.into_iter().filter(|s| s.value != 0.0).map(|s| ((s.label("purchase").unwrap().into(), s.label("engagement").unwrap().into()), s.value)).collect()
}

fn cell(purchase: &str, engagement: &str) -> (String, String) {
    (purchase.to_string(), engagement.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_cells_follow_the_watermark_as_activity_leaves_the_window() {
    let nats = NatsServer::start();
    let j = start(&nats, SEGMENTS).await;
    let t = days_ago(40);

    j.publish(&[event("a1", t, "a", "web", "purchase"), event("a2", t + DAY, "a", "app", "purchase"), event("a3", t + DAY + 1000, "a", "web", "view")]).await;
    let m = j.settle(3, &["a"]).await;
    assert_eq!(cells(&m), BTreeMap::from([(cell("high", "low"), 1.0)]), "two purchases and one view");

    // b's events move the watermark; a's first purchase leaves the window at t + 30d.
    j.publish(&[event("b1", t + 30 * DAY + LATENESS - 1, "b", "web", "view")]).await;
    let m = j.settle(4, &["a", "b"]).await;
    assert_eq!(cells(&m), BTreeMap::from([(cell("high", "low"), 1.0), (cell("none", "low"), 1.0)]), "watermark t + 30d - 1 ms");

    j.publish(&[event("b2", t + 30 * DAY + LATENESS, "b", "web", "view")]).await;
    let m = j.settle(5, &["a", "b"]).await;
    assert_eq!(cells(&m), BTreeMap::from([(cell("low", "low"), 1.0), (cell("none", "high"), 1.0)]), "watermark t + 30d: one purchase left");

    j.publish(&[event("b3", t + 31 * DAY + 1000 + LATENESS, "b", "sms", "click")]).await;
    let m = j.settle(6, &["a", "b"]).await;
    assert_eq!(cells(&m), BTreeMap::from([(cell("none", "none"), 1.0), (cell("none", "high"), 1.0)]), "a has nothing left in the window");
    j.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Cardinality
// ---------------------------------------------------------------------------------------------

mod cardinality {
    use super::*;
    use proptest::prelude::*;

    /// Open channels (no `[channels]`): any channel name is accepted and
    /// labelled `other`; kinds no rule names are `other` too.
    const OPEN: &str = r#"
[time]
allowed_lateness = "5s"

[engine]
shards = 2

[[model]]
name = "lifecycle"
initial = "visitor"
stages = ["visitor", "registered", "customer", "dormant"]
transitions = [
  { from = ["visitor"], to = "registered", on = { kind = "signup" } },
  { from = ["visitor", "registered"], to = "customer", on = { kind = "purchase" } },
  { from = ["registered", "customer"], to = "dormant", after_inactivity = "3d" },
]

[[funnel]]
name = "onboarding"
steps = ["signup", "purchase"]
window = "2d"

[segments]
purchase_kinds = ["purchase"]
engagement_kinds = ["view"]
"#;

    /// The metric family a sample belongs to (histograms export `_bucket`, `_sum`, `_count`).
    fn family<'a>(name: &'a str, families: &BTreeMap<&'static str, usize>) -> &'a str {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if families.contains_key(base) {
                    return base;
                }
            }
        }
        name
    }

    fn run_case(events: &[(String, String, u8, u32)]) -> Result<(), TestCaseError> {
        let config = journeyd::config::parse(OPEN).unwrap_or_else(|d| panic!("{d:?}")).config;
        let plan = journeyd::model::Plan::new(config.clone());
        let bounds: BTreeMap<&'static str, usize> = journeyd::metrics::worst_case_series(&plan).into_iter().collect();
        let known_kinds: BTreeSet<&str> = plan.catalog.kinds().map(|(_, k)| k).collect();

        let start = days_ago(30);
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        for (i, (channel, kind, user, gap)) in events.iter().enumerate() {
            let ts = start + i as i64 * 1000 + *gap as i64 * HOUR;
            writeln!(file, "{}", json!({"id": format!("e{i}"), "ts": ts, "ids": {"user_id": format!("u{user}")}, "channel": channel, "kind": kind}))
                .expect("write");
        }
        file.flush().expect("flush");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let summary = rt.block_on(journeyd::replay::replay(config, file.path(), |_, _, _| {})).expect("replay runs");
        let samples = parse_exposition(&summary.metrics_text);

        let mut series: BTreeMap<String, usize> = BTreeMap::new();
        for s in &samples {
            *series.entry(family(&s.name, &bounds).to_string()).or_default() += 1;
            if let Some(channel) = s.label("channel") {
                prop_assert!(channel == "other" || channel == "none", "{}: channel label {channel:?} not from the config", s.name);
            }
            if let Some(kind) = s.label("kind") {
                prop_assert!(known_kinds.contains(kind), "{}: kind label {kind:?} not from the config", s.name);
            }
            if let Some(mode) = s.label("mode") {
                prop_assert_eq!(mode, "other", "{}: an unconfigured channel has no service mode", s.name);
            }
        }
        for (name, n) in &series {
            let bound = bounds.get(name.as_str()).copied();
            prop_assert!(bound.is_some(), "{name} has no worst-case bound");
            prop_assert!(*n <= bound.unwrap_or(0), "{name}: {n} series, worst case {bound:?}");
        }
        Ok(())
    }

    fn events() -> impl Strategy<Value = Vec<(String, String, u8, u32)>> {
        let channel = "[a-z]{1,12}";
        let kind = prop_oneof![3 => "[a-z_]{1,12}", 1 => Just("signup".to_string()), 1 => Just("purchase".to_string()), 1 => Just("view".to_string())];
        prop::collection::vec((channel, kind, 0u8..20, 0u32..200), 50..300)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

        #[test]
        fn label_values_and_series_counts_stay_within_the_configured_vocabulary(events in events()) {
            run_case(&events)?;
        }
    }
}
