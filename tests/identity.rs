//! ONE_ID (issue 4): every channel's ids resolve to one customer, links are
//! transitive, merges combine state without double counting, guard rails
//! refuse conflicting or placeholder ids, and a customer can be looked up and
//! forgotten by any of its ids over HTTP and NATS request-reply.
//!
//! Live tests run journeyd in this process against their own nats-server
//! (`support::Service`); the merge-race property runs `journeyd::replay::replay`
//! against the sequential reference (`journeyd::sim::reference`), which shares
//! no code with the engine.

mod common;
mod support;

use common::{http_request, metric_value, NatsServer};
use serde_json::{json, Value};
use support::{
    days_ago, event_with_ids, next_json, next_msg, now_ms, reason_of, sum_or_zero, value_or_zero, Service, DAY, EVENT_TIME_ONLY, HOUR, SHORT_LIFECYCLE,
};

const MODEL: &str = "lifecycle";

/// journeyd on `nats` with two shards, `[identity]` keys (user_id names the
/// ONE_ID over phone over anonymous_id, then `identity_extra`) and the
/// three-stage lifecycle ([`SHORT_LIFECYCLE`]).
async fn start(nats: &NatsServer, identity_extra: &str) -> Service {
    let body = format!("[engine]\nshards = 2\n\n[identity]\npriority = [\"user_id\", \"phone\", \"anonymous_id\"]\n{identity_extra}\n\n{SHORT_LIFECYCLE}");
    Service::start_on(nats, EVENT_TIME_ONLY, &body).await
}

/// A consent answer for `purpose` on `channel` (`*` for every channel).
fn consent(id: &str, ts: i64, ids: &[(&str, &str)], purpose: &str, channel: &str, granted: bool) -> Value {
    let mut ev = event_with_ids(id, ts, ids, "app", "consent");
    ev["attrs"] = json!({"purpose": purpose, "channel": channel, "granted": granted});
    ev
}

/// Customers per stage of the lifecycle model: [visitor, registered, customer].
fn stage_gauges(text: &str) -> [f64; 3] {
    ["visitor", "registered", "customer"].map(|s| value_or_zero(text, "journey_customers", &[("model", MODEL), ("stage", s)]))
}

fn merges(text: &str) -> f64 {
    metric_value(text, "journey_identity_merges_total", &[]).expect("journey_identity_merges_total is exported")
}

fn ids_of(view: &Value) -> Value {
    view["ids"].clone()
}

// ---------------------------------------------------------------------------------------------
// Linking
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_visitor_who_signs_up_is_one_customer_named_by_the_user_id() {
    let nats = NatsServer::start();
    let j = start(&nats, "").await;
    let mut transitions = j.subscribe("journey.transition.>").await;
    let t = days_ago(10);

    j.publish(&[
        event_with_ids("browse", t, &[("anonymous_id", "dev-1")], "web", "view"),
        event_with_ids("signup", t + HOUR, &[("anonymous_id", "dev-1"), ("user_id", "u-1")], "app", "signup"),
    ])
    .await;
    let metrics = j.wait_applied(2).await;

    let by_alias = j.customer("dev-1").await.expect("the anonymous id still resolves");
    let by_user = j.customer("u-1").await.expect("the user id resolves");
    assert_eq!(by_alias, by_user, "every alias answers with the same customer");
    assert_eq!(j.customer("dev-1?type=anonymous_id").await.as_ref(), Some(&by_user));
    assert_eq!(by_user["one_id"], "u-1", "the user id outranks the anonymous id");
    assert_eq!(ids_of(&by_user), json!({"anonymous_id": ["dev-1"], "user_id": ["u-1"]}));
    assert_eq!(by_user["stages"][MODEL], json!({"stage": "registered", "since": t + HOUR}));
    assert_eq!((by_user["first_seen"].as_i64(), by_user["last_seen"].as_i64()), (Some(t), Some(t + HOUR)));
    assert_eq!(by_user["counts"]["by_channel"], json!({"app": 1, "web": 1}));
    assert_eq!(stage_gauges(&metrics), [0.0, 1.0, 0.0], "one customer, not two");
    assert_eq!(merges(&metrics), 0.0, "a new id joining a customer is a link, not a merge");
    let signup = &next_json(&mut transitions, 1).await[0];
    assert_eq!((signup["one_id"].as_str(), signup["to"].as_str()), (Some("u-1"), Some("registered")));
    j.stop().await;
}

/// The three pairwise links of a chain (anonymous_id–phone, phone–user_id,
/// anonymous_id–user_id), between three customers first seen on their own.
const CHAIN_LINKS: [[(&str, &str); 2]; 3] =
    [[("anonymous_id", "dev-c"), ("phone", "p-c")], [("phone", "p-c"), ("user_id", "u-c")], [("anonymous_id", "dev-c"), ("user_id", "u-c")]];

/// Every order of the three chain links.
const ORDERS: [[usize; 3]; 6] = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_ids_linked_pairwise_are_one_customer_in_every_order_of_the_links() {
    let nats = NatsServer::start();
    for order in ORDERS {
        let j = start(&nats, "").await;
        let t = days_ago(10);
        let events: Vec<Value> = order
            .iter()
            .enumerate()
            .map(|(i, link)| event_with_ids(&format!("link-{link}"), t + HOUR * i as i64, &CHAIN_LINKS[*link], "web", "view"))
            .collect();

        j.publish(&events).await;
        let metrics = j.wait_applied(3).await;

        let view = j.customer("dev-c").await.unwrap_or_else(|| panic!("order {order:?}: the anonymous id resolves"));
        assert_eq!(view["one_id"], "u-c", "order {order:?}");
        assert_eq!(ids_of(&view), json!({"anonymous_id": ["dev-c"], "phone": ["p-c"], "user_id": ["u-c"]}), "order {order:?}");
        for alias in ["p-c", "u-c"] {
            assert_eq!(j.customer(alias).await.as_ref(), Some(&view), "order {order:?}: {alias} is the same customer");
        }
        assert_eq!(stage_gauges(&metrics).iter().sum::<f64>(), 1.0, "order {order:?}: one customer in the gauges");
        assert_eq!(merges(&metrics), 0.0, "order {order:?}: each link shares an id with the one before: nothing to merge");
        j.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_customers_seen_apart_merge_into_one_in_every_order_of_the_links() {
    let nats = NatsServer::start();
    for order in ORDERS {
        let j = start(&nats, "").await;
        let t = days_ago(10);
        let mut events = vec![
            event_with_ids("web", t, &[("anonymous_id", "dev-c")], "web", "view"),
            event_with_ids("sms", t + 1000, &[("phone", "p-c")], "sms", "click"),
            event_with_ids("app", t + 2000, &[("user_id", "u-c")], "app", "signup"),
        ];
        for (i, link) in order.iter().enumerate() {
            events.push(event_with_ids(&format!("link-{link}"), t + HOUR * (i as i64 + 1), &CHAIN_LINKS[*link], "store", "view"));
        }

        j.publish(&events).await;
        let metrics = j.wait_applied(6).await;

        let view = j.customer("dev-c").await.unwrap_or_else(|| panic!("order {order:?}: the anonymous id resolves"));
        assert_eq!(view["one_id"], "u-c", "order {order:?}");
        assert_eq!(ids_of(&view), json!({"anonymous_id": ["dev-c"], "phone": ["p-c"], "user_id": ["u-c"]}), "order {order:?}");
        for alias in ["p-c", "u-c"] {
            assert_eq!(j.customer(alias).await.as_ref(), Some(&view), "order {order:?}: {alias} is the same customer");
        }
        assert_eq!(stage_gauges(&metrics).iter().sum::<f64>(), 1.0, "order {order:?}: one customer in the gauges");
        assert_eq!(stage_gauges(&metrics), [0.0, 1.0, 0.0], "order {order:?}: the signup's stage wins");
        assert_eq!(merges(&metrics), 2.0, "order {order:?}: three customers became one in two merges");
        assert_eq!(view["counts"]["by_kind"], json!({"view": 4, "click": 1, "signup": 1}), "order {order:?}: every event counted once");
        j.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Merging
// ---------------------------------------------------------------------------------------------

/// Two customers, one a buyer (customer) and one signed up (registered), merge
/// on a store visit naming both. `buyer_first` decides which is seen first
/// (and so which side's state survives in the engine).
async fn customers_in_different_stages_merge_into_the_later_stage(buyer_first: bool) {
    let nats = NatsServer::start();
    let j = start(&nats, "").await;
    let mut transitions = j.subscribe("journey.transition.>").await;
    let t = days_ago(10);
    let (buy_ts, sign_ts) = if buyer_first { (t, t + HOUR) } else { (t + HOUR, t) };
    let buy = event_with_ids("buy", buy_ts, &[("anonymous_id", "dev-2")], "web", "purchase");
    let sign = event_with_ids("sign", sign_ts, &[("user_id", "u-2")], "app", "signup");
    j.publish(&if buyer_first { [buy, sign] } else { [sign, buy] }).await;
    let before = j.wait_applied(2).await;
    assert_eq!(stage_gauges(&before), [0.0, 1.0, 1.0]);
    next_json(&mut transitions, 2).await;

    j.publish(&[event_with_ids("link", t + DAY, &[("anonymous_id", "dev-2"), ("user_id", "u-2")], "store", "view")]).await;
    let after = j.wait_applied(3).await;

    assert_eq!(stage_gauges(&after), [0.0, 0.0, 1.0], "one customer, in the later stage: the count drops by one");
    assert_eq!(sum_or_zero(&after, "journey_segment_customers", &[]), 1.0, "and one segment cell");
    for purchase in ["none", "low", "high"] {
        for engagement in ["none", "low", "high"] {
            let cell = [("purchase", purchase), ("engagement", engagement)];
            // One purchase and one view in the window: low on both axes.
            let want = if cell == [("purchase", "low"), ("engagement", "low")] { 1.0 } else { 0.0 };
            assert_eq!(sum_or_zero(&after, "journey_segment_customers", &cell), want, "segment cell {cell:?}: each side's old cell was left");
        }
    }
    assert_eq!(merges(&after), 1.0);
    assert_eq!(sum_or_zero(&after, "journey_transitions_total", &[("model", MODEL)]), 3.0, "two event transitions and one merge transition");
    let merge = &next_json(&mut transitions, 1).await[0];
    assert_eq!(
        merge,
        &json!({
            "one_id": "u-2", "model": MODEL, "from": "registered", "to": "customer", "ts": t + DAY,
            "event_id": "link", "channel": "store", "reason": "merge", "attribution": merge["attribution"],
        }),
        "only the side whose stage changed publishes, under the merged ONE_ID"
    );
    let first = if buyer_first { "web" } else { "app" };
    assert_eq!(merge["attribution"]["first_touch"], json!({first: 1.0}), "the merge is credited to both sides' touches");
    assert_eq!(merge["attribution"]["last_touch"], json!({"store": 1.0}), "the linking event is the last touch");
    let view = j.customer("dev-2").await.expect("merged customer");
    assert_eq!(view["stages"][MODEL], json!({"stage": "customer", "since": buy_ts}), "the stage keeps the time it was reached");
    assert_eq!(view["one_id"], "u-2");
    j.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_into_a_customer_that_is_further_along_moves_the_other_side_with_reason_merge() {
    customers_in_different_stages_merge_into_the_later_stage(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_into_a_customer_that_is_behind_moves_it_with_reason_merge() {
    customers_in_different_stages_merge_into_the_later_stage(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_after_a_merge_is_the_most_restrictive_answer_per_purpose_and_channel() {
    let nats = NatsServer::start();
    let j = start(&nats, "").await;
    let t = days_ago(10);
    // Pair 1: the customer seen first refused sms; the other granted it later.
    // Pair 2: the customer seen first granted sms; the other refused it earlier.
    j.publish(&[
        consent("c1", t, &[("anonymous_id", "dev-3")], "marketing", "sms", false),
        consent("c2", t + 1000, &[("anonymous_id", "dev-3")], "marketing", "email", true),
        consent("c3", t + HOUR, &[("user_id", "u-3")], "marketing", "sms", true),
        consent("c4", t + HOUR, &[("user_id", "u-3")], "analytics", "*", true),
        consent("c5", t + 2 * HOUR, &[("anonymous_id", "dev-4")], "marketing", "sms", true),
        consent("c6", t + 2 * HOUR, &[("user_id", "u-4")], "marketing", "sms", false),
    ])
    .await;
    j.wait_applied(6).await;

    j.publish(&[
        event_with_ids("link-3", t + DAY, &[("anonymous_id", "dev-3"), ("user_id", "u-3")], "web", "view"),
        event_with_ids("link-4", t + DAY, &[("anonymous_id", "dev-4"), ("user_id", "u-4")], "web", "view"),
    ])
    .await;
    j.wait_applied(8).await;

    let answers = |view: &Value| {
        let mut a: Vec<(String, String, bool)> = view["consent"]
            .as_array()
            .expect("consent is a list")
            .iter()
            .map(|c| (c["purpose"].as_str().unwrap().into(), c["channel"].as_str().unwrap().into(), c["granted"].as_bool().unwrap()))
            .collect();
        a.sort();
        a
    };
    let pair1 = j.customer("u-3").await.expect("merged customer 3");
    assert_eq!(
        answers(&pair1),
        [("analytics".into(), "*".into(), true), ("marketing".into(), "email".into(), true), ("marketing".into(), "sms".into(), false)],
        "a refusal beats a later grant; answers only one side gave are kept: {pair1}"
    );
    let pair2 = j.customer("u-4").await.expect("merged customer 4");
    assert_eq!(answers(&pair2), [("marketing".into(), "sms".into(), false)], "a refusal beats an earlier grant: {pair2}");
    j.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Guard rails
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_user_id_is_refused_to_the_dlq_as_an_identity_conflict_and_links_nothing() {
    let nats = NatsServer::start();
    let j = start(&nats, "max_ids_per_type = { user_id = 1 }").await;
    let mut dlq = j.subscribe("journey.dlq").await;
    let t = days_ago(10);
    j.publish(&[
        event_with_ids("e1", t, &[("user_id", "u-1"), ("anonymous_id", "d-1")], "web", "view"),
        event_with_ids("e2", t + 1000, &[("user_id", "u-2")], "app", "view"),
    ])
    .await;
    j.wait_applied(2).await;

    let conflict = event_with_ids("e3", t + 2000, &[("anonymous_id", "d-1"), ("user_id", "u-2")], "app", "purchase");
    j.publish(std::slice::from_ref(&conflict)).await;

    let msg = next_msg(&mut dlq).await;
    let reason = reason_of(&msg);
    assert_eq!(reason.as_deref(), Some("identity_conflict"));
    assert_eq!(serde_json::from_slice::<Value>(&msg.payload).expect("original payload"), conflict);
    let metrics = j.metrics().await;
    assert_eq!(metric_value(&metrics, "journey_dlq_total", &[("reason", "identity_conflict")]), Some(1.0));
    assert_eq!(sum_or_zero(&metrics, "journey_events_total", &[]), 2.0, "the refused event is not applied");
    assert_eq!(stage_gauges(&metrics), [2.0, 0.0, 0.0], "two customers, neither moved by the refused purchase");
    assert_eq!(merges(&metrics), 0.0);
    let first = j.customer("d-1").await.expect("first customer");
    assert_eq!(ids_of(&first), json!({"anonymous_id": ["d-1"], "user_id": ["u-1"]}));
    let second = j.customer("u-2").await.expect("second customer");
    assert_eq!(ids_of(&second), json!({"user_id": ["u-2"]}));
    j.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_would_grow_a_customer_past_the_group_limit_is_refused() {
    let nats = NatsServer::start();
    let j = start(&nats, "max_group_size = 2").await;
    let mut dlq = j.subscribe("journey.dlq").await;
    let t = days_ago(10);
    j.publish(&[
        event_with_ids("e1", t, &[("anonymous_id", "d-1"), ("phone", "p-1")], "web", "view"),
        event_with_ids("e2", t + 1000, &[("user_id", "u-1")], "app", "view"),
    ])
    .await;
    j.wait_applied(2).await;

    j.publish(&[event_with_ids("e3", t + 2000, &[("phone", "p-1"), ("user_id", "u-1")], "app", "signup")]).await;

    let msg = next_msg(&mut dlq).await;
    let reason = reason_of(&msg);
    assert_eq!(reason.as_deref(), Some("group_limit"));
    let metrics = j.metrics().await;
    assert_eq!((stage_gauges(&metrics), merges(&metrics)), ([2.0, 0.0, 0.0], 0.0), "still two customers, nothing merged or moved");
    assert_eq!(ids_of(&j.customer("u-1").await.expect("second customer")), json!({"user_id": ["u-1"]}));
    j.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_id_values_never_link_two_customers() {
    let nats = NatsServer::start();
    let j = start(&nats, r#"blocked_values = ["guest"]"#).await;
    let mut dlq = j.subscribe("journey.dlq").await;
    let t = days_ago(10);
    let blocked = ["null", "undefined", "0", "anonymous", "", "guest"];
    let mut events = Vec::new();
    for (i, value) in blocked.iter().enumerate() {
        for side in ["a", "b"] {
            let user = format!("u-{i}-{side}");
            events.push(event_with_ids(
                &format!("e-{i}-{side}"),
                t + i as i64 * 1000,
                &[("user_id", &user), ("anonymous_id", value), ("phone", value)],
                "web",
                "view",
            ));
        }
    }
    j.publish(&events).await;
    let metrics = j.wait_applied(12).await;

    assert_eq!(stage_gauges(&metrics), [12.0, 0.0, 0.0], "twelve customers: no placeholder linked any two");
    assert_eq!(merges(&metrics), 0.0);
    for (i, value) in blocked.iter().enumerate() {
        let view = j.customer(&format!("u-{i}-a")).await.expect("customer by user id");
        assert_eq!(ids_of(&view), json!({"user_id": [format!("u-{i}-a")]}), "`{value}` is not kept as an id");
    }
    for value in ["null", "undefined", "0", "anonymous", "guest"] {
        assert_eq!(j.customer(value).await, None, "`{value}` identifies nobody");
    }

    let only_blocked = event_with_ids("e-only", t + DAY, &[("anonymous_id", "undefined")], "web", "view");
    j.publish(&[only_blocked]).await;
    let msg = next_msg(&mut dlq).await;
    let reason = reason_of(&msg);
    assert_eq!(reason.as_deref(), Some("no_usable_id"), "an event with only placeholder ids has nobody to belong to");
    j.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Merges racing with events on different shards (property)
// ---------------------------------------------------------------------------------------------

mod merge_race {
    use super::*;
    use journeyd::sim::reference::{End, Reference};
    use proptest::prelude::*;
    use std::io::Write;

    /// Three stages plus a count window (combined on a merge), and a second
    /// model whose merge order is not its stage order.
    const CONFIG: &str = r#"
[time]
allowed_lateness = "5s"

[identity]
priority = ["user_id", "phone", "anonymous_id"]

[channels]
app = "tech"
web = "tech"
sms = "low"
store = "high"

[[model]]
name = "lifecycle"
initial = "visitor"
stages = ["visitor", "registered", "customer", "repeat", "loyal"]
transitions = [
  { from = ["visitor"], to = "registered", on = { kind = "signup" } },
  { from = ["visitor", "registered"], to = "customer", on = { kind = "purchase" } },
  { from = ["customer"], to = "repeat", on = { kind = "purchase" } },
  { from = ["repeat"], to = "loyal", on = { kind = "purchase", count = 4, within = "30d" } },
]

[[model]]
name = "mood"
initial = "cold"
stages = ["cold", "warm", "hot"]
merge_order = ["hot", "cold", "warm"]
transitions = [
  { from = ["cold"], to = "warm", on = { kind = "view" } },
  { from = ["warm"], to = "hot", on = { kind = "purchase" } },
  { from = ["hot"], to = "cold", on = { kind = "signup" } },
]
"#;

    const KINDS: [&str; 3] = ["view", "signup", "purchase"];
    const CHANNELS: [&str; 4] = ["app", "web", "sms", "store"];
    /// Customer `i` is first known by `ID_TYPES[i]`.
    const ID_TYPES: [&str; 3] = ["anonymous_id", "phone", "user_id"];

    /// One input: an event of one customer under its own id, or a link naming
    /// the ids of several customers (a bitmask over them).
    #[derive(Debug, Clone)]
    enum Step {
        Own { who: usize, kind: usize, channel: usize },
        Link { whom: u8, kind: usize, channel: usize },
    }

    #[derive(Debug, Clone)]
    struct Case {
        steps: Vec<Step>,
        /// Backwards jitter of each input's time, within the allowed lateness.
        jitter: Vec<i64>,
        batch_size: usize,
    }

    fn case() -> impl Strategy<Value = Case> {
        (2usize..=3)
            .prop_flat_map(|n| {
                let own = prop::collection::vec((0..n, 0..KINDS.len(), 0..CHANNELS.len()), 2..16);
                let subsets: Vec<u8> = (1u8..(1 << n)).filter(|m| m.count_ones() >= 2).collect();
                let links = prop::collection::vec((prop::sample::select(subsets), 0..KINDS.len(), 0..CHANNELS.len(), any::<prop::sample::Index>()), 1..=2);
                (own, links, 1usize..=4)
            })
            .prop_flat_map(|(own, links, batch_size)| {
                let mut steps: Vec<Step> = own.into_iter().map(|(who, kind, channel)| Step::Own { who, kind, channel }).collect();
                for (whom, kind, channel, at) in links {
                    let i = at.index(steps.len() + 1);
                    steps.insert(i, Step::Link { whom, kind, channel });
                }
                let n = steps.len();
                (Just(steps), prop::collection::vec(0i64..4_000, n), Just(batch_size))
            })
            .prop_map(|(steps, jitter, batch_size)| Case { steps, jitter, batch_size })
    }

    fn id_of(who: usize) -> (&'static str, String) {
        (ID_TYPES[who], format!("{}-{who}", ID_TYPES[who]))
    }

    /// Inputs one second apart, each up to 4 s earlier than its slot: out of
    /// order, never late (the watermark trails the latest time by 5 s).
    fn payloads(case: &Case, start: i64) -> Vec<String> {
        case.steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let ts = start + i as i64 * 1000 - case.jitter[i];
                let (ids, kind, channel): (Vec<(&str, String)>, _, _) = match step {
                    Step::Own { who, kind, channel } => (vec![id_of(*who)], kind, channel),
                    Step::Link { whom, kind, channel } => ((0..3).filter(|w| whom & (1 << w) != 0).map(id_of).collect(), kind, channel),
                };
                let ids: serde_json::Map<String, Value> = ids.into_iter().map(|(t, v)| (t.to_string(), json!(v))).collect();
                json!({"id": format!("e{i}"), "ts": ts, "ids": ids, "channel": CHANNELS[*channel], "kind": KINDS[*kind]}).to_string()
            })
            .collect()
    }

    /// The plain sequential identity model: customers are groups of the
    /// customers' ids seen so far; returns (customers, merges).
    fn sequential_identity(case: &Case) -> (u64, u64) {
        let mut group: [Option<usize>; 3] = [None; 3];
        let mut next = 0;
        let mut merges = 0;
        for step in &case.steps {
            let whom: Vec<usize> = match step {
                Step::Own { who, .. } => vec![*who],
                Step::Link { whom, .. } => (0..3).filter(|w| whom & (1 << w) != 0).collect(),
            };
            let mut known: Vec<usize> = whom.iter().filter_map(|w| group[*w]).collect();
            known.sort_unstable();
            known.dedup();
            merges += known.len().saturating_sub(1) as u64;
            let into = known.first().copied().unwrap_or_else(|| {
                next += 1;
                next
            });
            for g in group.iter_mut() {
                if g.is_some_and(|g| known.contains(&g)) {
                    *g = Some(into);
                }
            }
            for w in whom {
                group[w] = Some(into);
            }
        }
        let mut live: Vec<usize> = group.iter().flatten().copied().collect();
        live.sort_unstable();
        live.dedup();
        (live.len() as u64, merges)
    }

    fn run_case(case: &Case) -> Result<(), TestCaseError> {
        let now = now_ms();
        let start = (now - 10 * DAY) / 1000 * 1000;
        let lines = payloads(case, start);
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        for l in &lines {
            writeln!(file, "{l}").expect("write NDJSON");
        }
        file.flush().expect("flush NDJSON");
        let text = format!("{CONFIG}\n[engine]\nshards = 2\nbatch_size = {}\n", case.batch_size);
        let cfg = journeyd::config::parse(&text).unwrap_or_else(|d| panic!("{d:?}")).config;

        let mut reference = Reference::new(&cfg, now);
        for l in &lines {
            reference.ingest(None, l.as_bytes());
        }
        let truth = reference.truth(End::Replay);

        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let mut bad = Vec::new();
        let summary = rt
            .block_on(journeyd::replay::replay(cfg, file.path(), |line, reason, detail| bad.push(format!("line {line}: {reason}: {detail}"))))
            .expect("replay runs");
        prop_assert!(bad.is_empty(), "every input is valid: {bad:?}");

        let (customers, merges) = sequential_identity(case);
        prop_assert_eq!(truth.customers, customers, "the reference and the plain identity model agree");
        prop_assert_eq!(summary.customers, customers, "customers");
        prop_assert_eq!(summary.merges, merges, "merges");
        prop_assert_eq!(summary.applied, lines.len() as u64, "every input applied once (none late, none lost)");
        for m in &summary.stages {
            let want = &truth.stages[&m.model];
            for s in &m.stages {
                prop_assert_eq!(s.customers, want[&s.stage] as i64, "{}.{}: engine {:?} vs reference {:?}", m.model, s.stage, m.stages, want);
            }
            prop_assert_eq!(m.stages.iter().map(|s| s.customers).sum::<i64>(), customers as i64, "{}: one stage per customer", m.model);
        }
        Ok(())
    }

    #[test]
    fn the_first_two_customers_live_on_different_shards() {
        // What makes the property below a cross-shard race: customer keys are
        // handed out in order of first appearance from 0.
        use journeyd::engine::router::shard_of;
        assert_ne!(shard_of(0, 2), shard_of(1, 2));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn merges_interleaved_with_both_sides_events_match_the_sequential_model(case in case()) {
            run_case(&case)?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Query and forget
// ---------------------------------------------------------------------------------------------

const PHONE: &str = "+8613800000000";
const PHONE_IN_PATH: &str = "%2B8613800000000";

/// Customer X: anonymous on the web, then its phone over SMS, then a signup
/// in the app by phone; customer Y: a visitor by user id.
async fn two_customers(j: &Service, t: i64) -> Value {
    j.publish(&[
        event_with_ids("x1", t, &[("anonymous_id", "dev-q")], "web", "view"),
        event_with_ids("x2", t + HOUR, &[("anonymous_id", "dev-q"), ("phone", PHONE)], "sms", "click"),
        event_with_ids("x3", t + 2 * HOUR, &[("phone", PHONE)], "app", "signup"),
        event_with_ids("y1", t + 2 * HOUR, &[("user_id", "u-y")], "web", "view"),
    ])
    .await;
    j.wait_applied(4).await;
    json!({
        "one_id": PHONE,
        "ids": {"anonymous_id": ["dev-q"], "phone": [PHONE]},
        "stages": {MODEL: {"stage": "registered", "since": t + 2 * HOUR}},
        "first_seen": t,
        "last_seen": t + 2 * HOUR,
        "counts": {"by_channel": {"web": 1, "sms": 1, "app": 1}, "by_kind": {"view": 1, "click": 1, "signup": 1}},
        "consent": [],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_by_any_alias_over_http_and_nats_returns_the_whole_customer() {
    let nats = NatsServer::start();
    let j = start(&nats, "").await;
    let expected = two_customers(&j, days_ago(10)).await;

    assert_eq!(j.customer("dev-q").await, Some(expected.clone()));
    assert_eq!(j.customer(PHONE_IN_PATH).await, Some(expected.clone()));
    assert_eq!(j.customer(&format!("{PHONE_IN_PATH}?type=phone")).await, Some(expected.clone()));
    assert_eq!(j.request("journey.query.customer", "dev-q").await, expected, "plain-text request");
    assert_eq!(j.request("journey.query.customer", &json!({"id": PHONE, "type": "phone"}).to_string()).await, expected, "JSON request");
    j.stop().await;
}

/// A customer whose view is over the NATS server's max_payload (1 MiB) gets
/// an error reply that says so, not a timeout; HTTP still serves the view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_over_the_nats_max_payload_gets_an_error_reply_and_http_serves_it() {
    let nats = NatsServer::start();
    let j = Service::start_on(
        &nats,
        EVENT_TIME_ONLY,
        &format!("[limits]\nmax_event_bytes = 200000\n\n[identity]\npriority = [\"user_id\", \"anonymous_id\"]\n\n{SHORT_LIFECYCLE}"),
    )
    .await;
    let t = days_ago(10);
    let events: Vec<Value> = (0..8)
        .map(|i| event_with_ids(&format!("big-{i}"), t + i, &[("user_id", "u-big"), ("anonymous_id", &format!("a{i}-{}", "x".repeat(150_000)))], "app", "view"))
        .collect();
    j.publish(&events).await;
    j.wait_applied(8).await;
    let reply = j.request("journey.query.customer", "u-big").await;
    let error = reply["error"].as_str().unwrap_or_default();
    assert!(error.contains("over the NATS server's max_payload (1048576)"), "{reply}");
    let view = j.customer("u-big").await.expect("HTTP serves the view");
    assert_eq!(view["ids"]["anonymous_id"].as_array().map(Vec::len), Some(8));
    let reply = j.request("journey.admin.forget", "u-big").await;
    assert!(reply["error"].as_str().is_some_and(|e| e.starts_with("the customer was forgotten, but the answer is")), "{reply}");
    assert_eq!(j.customer("u-big").await, None);
    j.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_get_a_404_or_an_error_reply_never_an_empty_success() {
    let nats = NatsServer::start();
    let j = start(&nats, "").await;
    two_customers(&j, days_ago(10)).await;

    assert_eq!(j.customer("nobody").await, None);
    assert_eq!(j.customer("dev-q?type=phone").await, None, "a known value under another id type is unknown");
    for payload in ["nobody".to_string(), json!({"id": "dev-q", "type": "phone"}).to_string()] {
        let reply = j.request("journey.query.customer", &payload).await;
        assert!(reply["error"].as_str().is_some_and(|e| !e.is_empty()), "{payload}: {reply}");
        assert!(reply.get("one_id").is_none(), "{payload}: {reply}");
        let reply = j.request("journey.admin.forget", &payload).await;
        assert!(reply["error"].as_str().is_some_and(|e| !e.is_empty()), "{payload}: {reply}");
    }
    let (status, body) = http_request(&j.http, "DELETE", "/v1/customers/nobody", None).await;
    assert_eq!(status, 404, "{body}");
    // No id at all: not the customer route, and still an error to read.
    let (status, body) = http_request(&j.http, "GET", "/v1/customers/", None).await;
    assert_eq!(status, 404, "{body}");
    assert!(serde_json::from_str::<Value>(&body).is_ok_and(|v| v["error"].is_string()), "{body}");
    j.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_over_http_removes_every_alias_updates_the_gauges_and_later_events_start_a_new_customer() {
    let nats = NatsServer::start();
    let j = start(&nats, "").await;
    let t = days_ago(10);
    let x = two_customers(&j, t).await;

    let (status, body) = http_request(&j.http, "DELETE", "/v1/customers/dev-q", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).expect("JSON"), json!({"forgotten": x}), "the answer is what was removed");

    assert_eq!(j.customer("dev-q").await, None);
    assert_eq!(j.customer(PHONE_IN_PATH).await, None, "every alias is gone");
    assert!(j.customer("u-y").await.is_some(), "other customers stay");
    let metrics = j.metrics().await;
    assert_eq!(stage_gauges(&metrics), [1.0, 0.0, 0.0], "the forgotten customer left its stage gauge");
    assert_eq!(sum_or_zero(&metrics, "journey_segment_customers", &[]), 1.0, "and its segment cell");
    let (status, _) = http_request(&j.http, "DELETE", "/v1/customers/dev-q", None).await;
    assert_eq!(status, 404, "forgetting twice finds nobody");

    j.publish(&[event_with_ids("x4", t + DAY, &[("anonymous_id", "dev-q")], "web", "view")]).await;
    let metrics = j.wait_applied(5).await;
    let again = j.customer("dev-q").await.expect("the id is a customer again");
    assert_eq!(again["one_id"], "dev-q");
    assert_eq!(ids_of(&again), json!({"anonymous_id": ["dev-q"]}), "nothing of the old customer comes back");
    assert_eq!((again["first_seen"].as_i64(), again["counts"]["by_channel"].clone()), (Some(t + DAY), json!({"web": 1})));
    assert_eq!(again["stages"][MODEL]["stage"], "visitor");
    assert_eq!(j.customer(PHONE_IN_PATH).await, None, "the old phone stays forgotten");
    assert_eq!(stage_gauges(&metrics), [2.0, 0.0, 0.0]);
    j.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_over_nats_removes_the_customer_and_answers_with_what_was_removed() {
    let nats = NatsServer::start();
    let j = start(&nats, "").await;
    let t = days_ago(10);
    let x = two_customers(&j, t).await;

    let reply = j.request("journey.admin.forget", &json!({"id": PHONE, "type": "phone"}).to_string()).await;
    assert_eq!(reply, json!({"forgotten": x}));

    let gone = j.request("journey.query.customer", "dev-q").await;
    assert!(gone["error"].is_string(), "{gone}");
    assert!(j.request("journey.admin.forget", "dev-q").await["error"].is_string(), "forgetting twice finds nobody");
    assert_eq!(stage_gauges(&j.metrics().await), [1.0, 0.0, 0.0]);

    j.publish(&[event_with_ids("x4", t + DAY, &[("phone", PHONE)], "sms", "signup")]).await;
    let metrics = j.wait_applied(5).await;
    let again = j.request("journey.query.customer", PHONE).await;
    assert_eq!(ids_of(&again), json!({"phone": [PHONE]}));
    assert_eq!(again["stages"][MODEL]["stage"], "registered");
    assert_eq!(stage_gauges(&metrics), [1.0, 1.0, 0.0]);
    j.stop().await;
}
