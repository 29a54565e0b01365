//! Event time over a real nats-server: inactivity timers on the watermark,
//! the idle clock that moves the watermark when traffic stops, late events
//! and the allowed lateness.

mod common;
mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactivity_fires_when_another_customers_event_moves_the_watermark_past_the_due_time() {
    let mut p = Pipeline::start(EVENT_TIME_ONLY, LIFECYCLE).await;
    let t = days_ago(100);

    p.publish(&[event("a-signup", t, "cust-a", "app", "signup"), event("b-signup", t + 91 * DAY, "cust-b", "web", "signup")]).await;

    let (dormant, _) = p.transition_where("to dormant", |t| t["to"] == "dormant").await;
    assert_eq!(dormant["one_id"], "cust-a");
    assert_eq!(dormant["from"], "registered");
    assert_eq!(dormant["ts"], t + 90 * DAY, "the due time, not an event time");
    assert_eq!(dormant["channel"], "none");
    assert_eq!(dormant["reason"], "inactivity");
    assert!(dormant["event_id"].is_null(), "{dormant}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_event_renews_inactivity_so_only_the_silent_customer_goes_dormant() {
    // One shard, so the transitions of one customer's event and the timers it
    // lets fire are published in the order they happen.
    let body = format!("{LIFECYCLE}\n[engine]\nshards = 1\n");
    let mut p = Pipeline::start(EVENT_TIME_ONLY, &body).await;
    let t = days_ago(100);

    p.publish(&[
        event("a-signup", t, "renewed", "app", "signup"),
        event("s-signup", t, "silent", "app", "signup"),
        event("a-view", t + 50 * DAY, "renewed", "app", "view"),
        event("b-signup", t + 91 * DAY, "cust-b", "web", "signup"),
    ])
    .await;

    let (_, before_b) = p.transition_where("of cust-b", |t| t["one_id"] == "cust-b").await;
    let dormant: Vec<&str> = before_b.iter().filter(|t| t["to"] == "dormant").map(|t| t["one_id"].as_str().unwrap_or("?")).collect();
    assert_eq!(dormant, ["silent"]);
    p.journeyd.wait_applied(4).await;
    assert_eq!(p.journeyd.stage("renewed", "lifecycle").await.as_deref(), Some("registered"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_traffic_for_the_idle_timeout_the_watermark_follows_the_clock_and_timers_fire() {
    let time = "allowed_lateness = \"0s\"\nidle_timeout = \"300ms\"\n";
    let model = one_model(
        r#"{ from = ["a"], to = "b", on = { kind = "signup" } },
           { from = ["b"], to = "c", after_inactivity = "1s" },"#,
    );
    let mut p = Pipeline::start(time, &model).await;
    let ts = now_ms();

    p.publish(&[event("e1", ts, "u1", "app", "signup")]).await;

    let (timer, _) = p.transition_where("b → c by the idle clock", |t| t["to"] == "c").await;
    assert_eq!(timer["ts"], ts + 1000);
    assert_eq!(timer["channel"], "none");
    assert_eq!(timer["reason"], "inactivity");
    assert!(now_ms() >= ts + 1000 + 300, "fired only once the clock passed due + idle timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_before_the_watermark_is_published_to_journey_late_counted_and_not_applied() {
    let mut p = Pipeline::start(EVENT_TIME_ONLY, LIFECYCLE).await;
    let mut late = subscribe(&p.client, "journey.late").await;
    let t = days_ago(30);
    p.publish(&[event("a-signup", t, "cust-a", "app", "signup"), event("b-signup", t + HOUR, "cust-b", "app", "signup")]).await;
    p.next_transitions(2).await;
    let too_old = event("a-purchase", t + HOUR - 6000, "cust-a", "app", "purchase");
    let bytes = serde_json::to_vec(&too_old).expect("JSON");

    publish_raw(&p.client, "touch.app.purchase", &bytes).await;

    let msg = next_msg(&mut late).await;
    assert_eq!(&msg.payload[..], &bytes[..], "the original bytes");
    assert_eq!(reason_of(&msg).as_deref(), Some("late"));
    let metrics = p.journeyd.wait_metrics("one late event", |m| value_or_zero(m, "journey_late_events_total", &[]) == 1.0).await;
    assert_eq!(sum_or_zero(&metrics, "journey_events_total", &[]), 2.0, "not applied");
    assert_eq!(p.journeyd.stage("cust-a", "lifecycle").await.as_deref(), Some("registered"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_order_event_within_the_allowed_lateness_is_applied() {
    let mut p = Pipeline::start(EVENT_TIME_ONLY, LIFECYCLE).await;
    let t = days_ago(30);

    p.publish(&[event("b-signup", t, "cust-b", "app", "signup"), event("a-signup", t - 3000, "cust-a", "app", "signup")]).await;

    let (a, _) = p.transition_where("of cust-a", |t| t["one_id"] == "cust-a").await;
    assert_eq!(a["ts"], t - 3000);
    let metrics = p.journeyd.wait_applied(2).await;
    assert_eq!(value_or_zero(&metrics, "journey_late_events_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_exactly_at_the_watermark_is_not_late() {
    let mut p = Pipeline::start(EVENT_TIME_ONLY, LIFECYCLE).await;
    let t = days_ago(30);

    p.publish(&[event("b-signup", t, "cust-b", "app", "signup"), event("a-signup", t - 5000, "cust-a", "app", "signup")]).await;

    let (a, _) = p.transition_where("of cust-a", |t| t["one_id"] == "cust-a").await;
    assert_eq!(a["ts"], t - 5000);
}
