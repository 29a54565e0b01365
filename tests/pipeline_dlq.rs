//! Bad input over a real nats-server: every refusal an input can cause goes
//! to `journey.dlq` with its original bytes and a `Journey-Reason` header, is
//! counted in `journey_dlq_total{reason}`, and the pipeline goes on with the
//! next good event. Duplicates are counted and applied once.

mod common;
mod support;

use serde_json::{json, Value};
use support::*;

/// Extra config for the refusals that need limits: small events, one
/// `user_id` per customer, at most three ids per customer.
const LIMITS: &str = "
[limits]
max_event_bytes = 512

[identity]
max_ids_per_type = { user_id = 1 }
max_group_size = 3
";

/// Publishes `before` (good events), then `payload` on `subject`; asserts it
/// is refused for `reason` and that a good signup after it still applies.
async fn assert_refused(before: &[Value], subject: &str, payload: &[u8], reason: &str) {
    let mut p = Pipeline::start(EVENT_TIME_ONLY, &format!("{LIFECYCLE}{LIMITS}")).await;
    let mut dlq = subscribe(&p.client, "journey.dlq").await;
    p.publish(before).await;

    publish_raw(&p.client, subject, payload).await;

    let msg = next_msg(&mut dlq).await;
    assert_eq!(String::from_utf8_lossy(&msg.payload), String::from_utf8_lossy(payload), "the DLQ carries the original bytes");
    assert_eq!(reason_of(&msg).as_deref(), Some(reason), "headers: {:?}", msg.headers);
    let metrics = p
        .journeyd
        .wait_metrics(&format!("journey_dlq_total{{reason=\"{reason}\"}} 1"), |m| value_or_zero(m, "journey_dlq_total", &[("reason", reason)]) == 1.0)
        .await;
    assert_eq!(sum_or_zero(&metrics, "journey_dlq_total", &[]), 1.0, "one refusal in all");

    p.publish(&[event("after", days_ago(1), "after-bad", "app", "signup")]).await;
    let (after, _) = p.transition_where("of the good event after the bad one", |t| t["event_id"] == "after").await;
    assert_eq!(after["to"], "registered");
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_is_not_json_is_refused_as_not_json() {
    assert_refused(&[], "touch.app.signup", b"signup for u1, please", "not_json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_without_an_id_is_refused_as_missing_field() {
    let ev = json!({"ts": days_ago(1), "ids": {"user_id": "u1"}});
    assert_refused(&[], "touch.app.signup", &bytes(&ev), "missing_field").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_is_not_a_number_is_refused_as_wrong_type() {
    let ev = json!({"id": "e1", "ts": days_ago(1), "ids": {"user_id": "u1"}, "value": "12.5"});
    assert_refused(&[], "touch.app.purchase", &bytes(&ev), "wrong_type").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_that_is_not_rfc_3339_is_refused_as_invalid_timestamp() {
    let ev = json!({"id": "e1", "ts": "2024-13-45 25:61", "ids": {"user_id": "u1"}});
    assert_refused(&[], "touch.app.signup", &bytes(&ev), "invalid_timestamp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_with_no_ids_is_refused_as_empty_ids() {
    let ev = json!({"id": "e1", "ts": days_ago(1), "ids": {}});
    assert_refused(&[], "touch.app.signup", &bytes(&ev), "empty_ids").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_ids_are_all_placeholders_is_refused_as_no_usable_id() {
    let ev = json!({"id": "e1", "ts": days_ago(1), "ids": {"user_id": "undefined", "anonymous_id": "null"}});
    assert_refused(&[], "touch.app.signup", &bytes(&ev), "no_usable_id").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_channel_that_contradicts_the_subject_is_refused_as_subject_mismatch() {
    let ev = event("e1", days_ago(1), "u1", "web", "signup");
    assert_refused(&[], "touch.app.signup", &bytes(&ev), "subject_mismatch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_not_in_the_closed_channel_list_is_refused_as_unknown_channel() {
    let ev = json!({"id": "e1", "ts": days_ago(1), "ids": {"user_id": "u1"}});
    assert_refused(&[], "touch.fax.signup", &bytes(&ev), "unknown_channel").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_over_max_event_bytes_is_refused_as_oversized() {
    let mut ev = event("e1", days_ago(1), "u1", "app", "signup");
    ev["campaign"] = json!("x".repeat(600));
    assert_refused(&[], "touch.app.signup", &bytes(&ev), "oversized").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_further_ahead_than_max_future_skew_is_refused_as_future_timestamp() {
    let ev = event("e1", now_ms() + HOUR, "u1", "app", "signup");
    assert_refused(&[], "touch.app.signup", &bytes(&ev), "future_timestamp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linking_a_second_user_id_to_a_customer_is_refused_as_identity_conflict() {
    let t = days_ago(1);
    let first = json!({"id": "e1", "ts": t, "ids": {"user_id": "u1", "anonymous_id": "dev-1"}, "channel": "app", "kind": "signup"});
    let conflict = json!({"id": "e2", "ts": t + 1000, "ids": {"user_id": "u2", "anonymous_id": "dev-1"}});
    assert_refused(&[first], "touch.app.view", &bytes(&conflict), "identity_conflict").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_with_more_ids_than_max_group_size_is_refused_as_group_limit() {
    let ev = json!({"id": "e1", "ts": days_ago(1),
                    "ids": {"user_id": "u1", "phone": "+1555", "email": "a@example.com", "anonymous_id": "dev-1"}});
    assert_refused(&[], "touch.app.signup", &bytes(&ev), "group_limit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_with_too_many_distinct_id_types_is_refused_as_too_many_id_types() {
    let ids: serde_json::Map<String, Value> = (0..300).map(|i| (format!("t{i}"), json!(format!("v{i}")))).collect();
    let ev = json!({"id": "e1", "ts": days_ago(1), "ids": ids});
    let mut p = Pipeline::start(EVENT_TIME_ONLY, LIFECYCLE).await;
    let mut dlq = subscribe(&p.client, "journey.dlq").await;

    publish_raw(&p.client, "touch.app.signup", &bytes(&ev)).await;

    let msg = next_msg(&mut dlq).await;
    assert_eq!(reason_of(&msg).as_deref(), Some("too_many_id_types"));
    assert_eq!(&msg.payload[..], &bytes(&ev)[..]);
    p.journeyd
        .wait_metrics("journey_dlq_total{reason=\"too_many_id_types\"} 1", |m| value_or_zero(m, "journey_dlq_total", &[("reason", "too_many_id_types")]) == 1.0)
        .await;
    p.publish(&[event("after", days_ago(1), "after-bad", "app", "signup")]).await;
    p.transition_where("of the good event after the bad one", |t| t["event_id"] == "after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_event_id_is_counted_and_applied_once() {
    let mut p = Pipeline::start(EVENT_TIME_ONLY, LIFECYCLE).await;
    let t = days_ago(1);
    let purchase = event("order-1", t, "u1", "app", "purchase");
    let mut again = purchase.clone();
    again["ts"] = json!(t + 1000);

    p.publish(&[purchase, again]).await;

    let metrics = p
        .journeyd
        .wait_metrics("one duplicate and one applied event", |m| {
            value_or_zero(m, "journey_duplicates_total", &[]) == 1.0 && sum_or_zero(m, "journey_events_total", &[]) == 1.0
        })
        .await;
    let stage = |s| value_or_zero(&metrics, "journey_customers", &[("model", "lifecycle"), ("stage", s)]);
    assert_eq!((stage("customer"), stage("repeat")), (1.0, 0.0), "the second purchase was not applied");
    assert_eq!(sum_or_zero(&metrics, "journey_dlq_total", &[]), 0.0, "a duplicate is no refusal");
    let got = p.next_transitions(1).await;
    assert_eq!(got[0]["to"], "customer");
    assert!(drain_ready(&mut p.transitions).is_empty());
}

// A refusal detail with a line break must not stop the router (async-nats header values refuse CR/LF).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_timestamp_with_a_line_break_is_refused_and_the_pipeline_goes_on() {
    let ev = json!({"id": "e1", "ts": "2024-01-01\nT00:00:00Z", "ids": {"user_id": "u1"}});
    assert_refused(&[], "touch.app.signup", &bytes(&ev), "invalid_timestamp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_channel_with_a_line_break_contradicting_the_subject_is_refused_and_the_pipeline_goes_on() {
    let ev = json!({"id": "e1", "ts": days_ago(1), "ids": {"user_id": "u1"}, "channel": "fax\r\n", "kind": "signup"});
    assert_refused(&[], "touch.app.signup", &bytes(&ev), "subject_mismatch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_channel_with_a_line_break_is_refused_and_the_pipeline_goes_on() {
    let ev = json!({"id": "e1", "ts": days_ago(1), "ids": {"user_id": "u1"}, "channel": "fax\n", "kind": "signup"});
    assert_refused(&[], "touch.other", &bytes(&ev), "unknown_channel").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_type_with_a_line_break_and_a_wrong_typed_id_is_refused_and_the_pipeline_goes_on() {
    let ev = json!({"id": "e1", "ts": days_ago(1), "ids": {"user\nid": 7}});
    assert_refused(&[], "touch.app.signup", &bytes(&ev), "wrong_type").await;
}

// The same id twice in `ids` is one id.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_id_twice_in_ids_links_one_id_and_is_no_identity_conflict() {
    let mut p = Pipeline::start(EVENT_TIME_ONLY, &format!("{LIFECYCLE}{LIMITS}")).await;
    let mut dlq = subscribe(&p.client, "journey.dlq").await;
    let payload = format!(r#"{{"id":"e1","ts":{},"ids":{{"user_id":"u1","user_id":"u1"}}}}"#, days_ago(1));
    publish_raw(&p.client, "touch.app.signup", payload.as_bytes()).await;
    // Applied (a refusal would have gone to the DLQ, before any transition).
    let (e1, _) = p.transition_where("of e1 (max_ids_per_type user_id = 1 refuses only a second, different user_id)", |t| t["event_id"] == "e1").await;
    assert_eq!(e1["to"], "registered");
    let refused: Vec<String> =
        std::iter::from_fn(|| futures::FutureExt::now_or_never(futures::StreamExt::next(&mut dlq)).flatten()).filter_map(|m| reason_of(&m)).collect();
    assert!(refused.is_empty(), "refused as {refused:?}");
    let c = p.journeyd.customer("u1").await.expect("u1 exists");
    assert_eq!(c["ids"]["user_id"], json!(["u1"]));
}

// A payload near the server's max_payload still reaches journey.dlq (with Journey-Reason alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_payload_near_the_nats_max_payload_still_reaches_the_dlq() {
    // nats-server's default max_payload is 1 MiB. The original bytes plus a bare
    // `Journey-Reason: oversized` header block (40 bytes) fit; journeyd's extra
    // Journey-Detail and Journey-Subject headers push the message over, and the
    // client refuses to publish it.
    let mut ev = event("e1", days_ago(1), "u1", "app", "signup");
    ev["campaign"] = json!("");
    let base = bytes(&ev).len();
    ev["campaign"] = json!("x".repeat(1_048_576 - 40 - base));
    assert_refused(&[], "touch.app.signup", &bytes(&ev), "oversized").await;
}

// A payload of exactly the server's max_payload leaves no room for any header:
// it reaches journey.dlq cut to fit, with its reason and its full length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_of_the_whole_nats_max_payload_reaches_the_dlq_cut_to_fit() {
    let mut ev = event("e1", days_ago(1), "u1", "app", "signup");
    ev["campaign"] = json!("");
    let base = bytes(&ev).len();
    ev["campaign"] = json!("x".repeat(1_048_576 - base));
    let payload = bytes(&ev);
    assert_eq!(payload.len(), 1_048_576);
    let p = Pipeline::start(EVENT_TIME_ONLY, &format!("{LIFECYCLE}{LIMITS}")).await;
    let mut dlq = subscribe(&p.client, "journey.dlq").await;
    publish_raw(&p.client, "touch.app.signup", &payload).await;
    let msg = next_msg(&mut dlq).await;
    assert_eq!(reason_of(&msg).as_deref(), Some("oversized"), "headers: {:?}", msg.headers);
    let truncated = msg.headers.as_ref().and_then(|h| h.get("Journey-Truncated")).map(|v| v.to_string());
    assert_eq!(truncated.as_deref(), Some("1048576"), "headers: {:?}", msg.headers);
    assert!(msg.payload.len() < payload.len() && payload.starts_with(&msg.payload), "the original bytes, cut: {} bytes", msg.payload.len());
    p.journeyd.wait_metrics("journey_dlq_total{reason=\"oversized\"} 1", |m| value_or_zero(m, "journey_dlq_total", &[("reason", "oversized")]) == 1.0).await;
}
