//! What the pipeline tests share on top of `tests/common` (nats-server, HTTP,
//! Prometheus lookups, waiting with a deadline): journeyd running in this
//! process against a test's own nats-server, test configs (the DESIGN.md
//! lifecycle model comes from `tests/fixtures/lifecycle_model.toml`), event
//! payloads and subscriptions. A test crate using it declares `mod common;` too.

#![allow(dead_code)]

use crate::common::{self, NatsServer};
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One day in milliseconds.
pub const DAY: i64 = 86_400_000;
/// One hour in milliseconds.
pub const HOUR: i64 = 3_600_000;

/// How long a test waits for something that normally takes milliseconds.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The wall clock in epoch milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as i64
}

/// An event time `days` before now, on a whole second so offsets read clearly.
pub fn days_ago(days: i64) -> i64 {
    (now_ms() - days * DAY) / 1000 * 1000
}

/// The `[time]` section most tests use: 5 s allowed lateness, and an idle
/// timeout so long that the wall clock never moves the watermark in a test.
pub const EVENT_TIME_ONLY: &str = "allowed_lateness = \"5s\"\nidle_timeout = \"1h\"\n";

/// A whole config: `[nats]` pointing at `nats_url`, `[http]` on `http`,
/// `[time]` with `time` keys, then `body` (tables only).
pub fn config_text(nats_url: &str, http: &str, time: &str, body: &str) -> String {
    format!("[nats]\nurl = \"{nats_url}\"\n\n[http]\nlisten = \"{http}\"\n\n[time]\n{time}\n{body}\n")
}

/// One model `m` with stages a, b, c, z and `transitions` (TOML inline tables,
/// one per line); channels app and web (tech), sms (low), store (high).
pub fn one_model(transitions: &str) -> String {
    format!(
        "[channels]\napp = \"tech\"\nweb = \"tech\"\nsms = \"low\"\nstore = \"high\"\n\n\
         [[model]]\nname = \"m\"\ninitial = \"a\"\nstages = [\"a\", \"b\", \"c\", \"z\"]\n\
         transitions = [\n{transitions}\n]\n"
    )
}

/// The five channels of DESIGN.md: app and web (tech), sms and email (low),
/// store (high). A macro so that `concat!` can build constant configs on it.
macro_rules! five_channels {
    () => {
        "[channels]\napp = \"tech\"\nweb = \"tech\"\nsms = \"low\"\nemail = \"low\"\nstore = \"high\"\n"
    };
}

/// The DESIGN.md lifecycle model (`tests/fixtures/lifecycle_model.toml`) with five channels.
pub const LIFECYCLE: &str = concat!(five_channels!(), "\n", include_str!("../fixtures/lifecycle_model.toml"));

/// The five channels and the lifecycle model cut to its first three stages:
/// a visitor registers on a signup and a visitor or registered customer
/// becomes a customer on a purchase; no count windows, no timers.
pub const SHORT_LIFECYCLE: &str = concat!(
    five_channels!(),
    r#"
[[model]]
name = "lifecycle"
initial = "visitor"
stages = ["visitor", "registered", "customer"]
transitions = [
  { from = ["visitor"], to = "registered", on = { kind = "signup" } },
  { from = ["visitor", "registered"], to = "customer", on = { kind = "purchase" } },
]
"#
);

/// An event of customer `user` (a `user_id`) as its JSON payload.
pub fn event(id: &str, ts: i64, user: &str, channel: &str, kind: &str) -> Value {
    event_with_ids(id, ts, &[("user_id", user)], channel, kind)
}

/// An event of the customer with `ids` (id type, value) as its JSON payload.
pub fn event_with_ids(id: &str, ts: i64, ids: &[(&str, &str)], channel: &str, kind: &str) -> Value {
    let ids: serde_json::Map<String, Value> = ids.iter().map(|(t, v)| (t.to_string(), json!(v))).collect();
    json!({"id": id, "ts": ts, "ids": ids, "channel": channel, "kind": kind})
}

/// `touch.<channel>.<kind>` of an event built by [`event`].
pub fn subject_of(ev: &Value) -> String {
    format!("touch.{}.{}", ev["channel"].as_str().expect("event has a channel"), ev["kind"].as_str().expect("event has a kind"))
}

/// Publishes events on their own subjects, in order, and flushes.
pub async fn publish_events(client: &async_nats::Client, events: &[Value]) {
    for ev in events {
        let payload = serde_json::to_vec(ev).expect("event serialises");
        client.publish(subject_of(ev), payload.into()).await.expect("publish");
    }
    client.flush().await.expect("flush");
}

/// Publishes raw bytes on a subject and flushes.
pub async fn publish_raw(client: &async_nats::Client, subject: &str, payload: &[u8]) {
    client.publish(subject.to_string(), payload.to_vec().into()).await.expect("publish");
    client.flush().await.expect("flush");
}

/// A subscription that is live on the server when this returns.
pub async fn subscribe(client: &async_nats::Client, subject: &str) -> async_nats::Subscriber {
    let sub = client.subscribe(subject.to_string()).await.expect("subscribe");
    client.flush().await.expect("flush the subscription");
    sub
}

/// The next message of a subscription; panics after [`DEADLINE`].
pub async fn next_msg(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(DEADLINE, sub.next()).await.unwrap_or_else(|_| panic!("no message within {DEADLINE:?}")).expect("subscription open")
}

/// The next `n` messages of a subscription as JSON; panics after [`DEADLINE`].
pub async fn next_json(sub: &mut async_nats::Subscriber, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let msg = tokio::time::timeout_at(deadline, sub.next())
            .await
            .unwrap_or_else(|_| panic!("got {} of {n} messages within {DEADLINE:?}: {out:?}", out.len()))
            .expect("subscription open");
        out.push(serde_json::from_slice(&msg.payload).expect("message is JSON"));
    }
    out
}

/// Messages already delivered to a subscription, without waiting for more.
pub fn drain_ready(sub: &mut async_nats::Subscriber) -> Vec<Value> {
    use futures::FutureExt;
    let mut out = Vec::new();
    while let Some(Some(msg)) = sub.next().now_or_never() {
        out.push(serde_json::from_slice(&msg.payload).expect("message is JSON"));
    }
    out
}

/// The `Journey-Reason` header of a message.
pub fn reason_of(msg: &async_nats::Message) -> Option<String> {
    msg.headers.as_ref().and_then(|h| h.get("Journey-Reason")).map(|v| v.to_string())
}

/// A series' value, 0 when the series is absent (Prometheus omits a
/// counter vector's series until it is first touched).
pub fn value_or_zero(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    common::metric_value(text, name, labels).unwrap_or(0.0)
}

/// The sum of every series of `name` including `labels`, 0 when there is none.
pub fn sum_or_zero(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    common::metric_sum(text, name, labels).unwrap_or(0.0)
}

/// journeyd's `run` in this process, with its HTTP address and a test client
/// of its nats-server.
pub struct Service {
    pub http: String,
    /// Connected to the config's `nats.url`, without credentials.
    pub client: async_nats::Client,
    pub token: CancellationToken,
    pub task: JoinHandle<anyhow::Result<journeyd::RunReport>>,
}

impl Service {
    /// Starts `journeyd::run` with `config` (TOML), waits until `/readyz` is
    /// 200 (journeyd is then subscribed) and connects the test client.
    pub async fn start(config: &str) -> Service {
        let loaded = journeyd::config::parse(config).unwrap_or_else(|d| panic!("test config is invalid: {d:?}\n{config}"));
        let http = loaded.config.http.listen.clone();
        let nats_url = loaded.config.nats.url.clone();
        let token = CancellationToken::new();
        let task = tokio::spawn(journeyd::run(loaded.config, token.clone()));
        common::wait_until("journeyd answers /readyz with 200", DEADLINE, || async {
            assert!(!task.is_finished(), "journeyd stopped before it was ready");
            match common::try_http_get(&http, "/readyz").await {
                Ok((200, _)) => Some(()),
                _ => None,
            }
        })
        .await;
        let client = async_nats::connect(&nats_url).await.unwrap_or_else(|e| panic!("connect to {nats_url}: {e}"));
        Service { http, client, token, task }
    }

    /// Starts journeyd on `nats` with a free HTTP address, `time` keys for
    /// `[time]` and `body` (channels, models, ...); see [`config_text`].
    pub async fn start_on(nats: &NatsServer, time: &str, body: &str) -> Service {
        Service::start(&config_text(&nats.url(), &common::free_addr(), time, body)).await
    }

    /// Publishes events on their own subjects, in order, and flushes.
    pub async fn publish(&self, events: &[Value]) {
        publish_events(&self.client, events).await;
    }

    /// A subscription of the test client that is live on the server when this returns.
    pub async fn subscribe(&self, subject: &str) -> async_nats::Subscriber {
        subscribe(&self.client, subject).await
    }

    /// A NATS request whose reply is JSON. Retries while nobody answers yet
    /// (the request-reply service subscribes right after `/readyz` turns 200).
    pub async fn request(&self, subject: &str, payload: &str) -> Value {
        let msg = common::wait_until(&format!("{subject} answers"), DEADLINE, || async {
            match self.client.request(subject.to_string(), payload.to_string().into()).await {
                Ok(msg) => Some(msg),
                Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => None,
                Err(e) => panic!("request on {subject}: {e}"),
            }
        })
        .await;
        serde_json::from_slice(&msg.payload).unwrap_or_else(|e| panic!("reply on {subject} is not JSON ({e}): {:?}", msg.payload))
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let (status, body) = common::http_get(&self.http, "/metrics").await;
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    /// `GET path` with its status and its body, which must be JSON.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let (status, body) = common::http_get(&self.http, path).await;
        (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {status} body is not JSON ({e}): {body}")))
    }

    /// Waits until `holds` is true of the metrics text, and returns that text.
    /// On a timeout, the panic shows what the last scrape said of the input
    /// (its non-zero events, NATS connection events, consumer lag, DLQ,
    /// duplicates and late counts).
    pub async fn wait_metrics(&self, what: &str, holds: impl Fn(&str) -> bool) -> String {
        let last = std::sync::Mutex::new(String::new());
        let waited = tokio::time::timeout(
            DEADLINE,
            common::wait_until(what, 2 * DEADLINE, || async {
                let text = self.metrics().await;
                let found = holds(&text).then(|| text.clone());
                *last.lock().unwrap_or_else(|e| e.into_inner()) = text;
                found
            }),
        )
        .await;
        waited.unwrap_or_else(|_| {
            let text = last.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let input = ["journey_events_total", "journey_nats_", "journey_consumer_lag", "journey_dlq_total", "journey_duplicates_total", "journey_late"];
            let said: Vec<&str> = text.lines().filter(|l| input.iter().any(|m| l.starts_with(m)) && !l.ends_with(" 0")).collect();
            panic!("timed out after {DEADLINE:?} waiting until {what}; the last scrape said:\n{}", said.join("\n"))
        })
    }

    /// Waits until exactly `n` events were applied (`journey_events_total`):
    /// every queued event has then gone through its shard. Returns a scrape
    /// taken after that one: a scrape reads metric families one after another,
    /// so the one that saw the last batch's event count may hold gauges read
    /// just before that batch.
    pub async fn wait_applied(&self, n: u64) -> String {
        self.wait_metrics(&format!("journeyd has applied {n} events"), |t| sum_or_zero(t, "journey_events_total", &[]) as u64 == n).await;
        self.metrics().await
    }

    /// Waits until exactly `n` events were applied, then looks up each of
    /// `customers` (each must exist) through the router: a query is queued
    /// behind the watermark ticks already sent to that customer's shard, so
    /// once it answers, that shard has fired every timer due so far. Returns
    /// `/metrics` scraped after that.
    pub async fn settle(&self, n: u64, customers: &[&str]) -> String {
        self.wait_applied(n).await;
        for id in customers {
            assert!(self.customer(id).await.is_some(), "GET /v1/customers/{id}: no such customer");
        }
        self.metrics().await
    }

    /// `GET /v1/customers/{id}` as JSON, or `None` on 404 (whose body must be
    /// `{"error": ...}`). `id` may carry a query such as `?type=phone`.
    pub async fn customer(&self, id: &str) -> Option<Value> {
        let (status, json) = self.get_json(&format!("/v1/customers/{id}")).await;
        match status {
            200 => Some(json),
            404 => {
                assert!(json["error"].as_str().is_some_and(|e| !e.is_empty()), "GET /v1/customers/{id}: a 404 says why: {json}");
                None
            }
            s => panic!("GET /v1/customers/{id}: {s} {json}"),
        }
    }

    /// A customer's stage in `model`, per the query API.
    pub async fn stage(&self, id: &str, model: &str) -> Option<String> {
        self.customer(id).await.map(|c| c["stages"][model]["stage"].as_str().unwrap_or_else(|| panic!("no stage of {model} in {c}")).to_string())
    }

    /// Cancels the run and waits for it to drain; panics if it failed.
    pub async fn stop(self) -> journeyd::RunReport {
        self.token.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("journeyd drains within the deadline")
            .expect("journeyd's task did not panic")
            .expect("journeyd's run returns Ok")
    }
}

/// A nats-server, journeyd in-process on it, and a test client subscribed
/// to every transition before anything is published.
pub struct Pipeline {
    pub nats: NatsServer,
    pub journeyd: Service,
    pub client: async_nats::Client,
    pub transitions: async_nats::Subscriber,
}

impl Pipeline {
    /// Starts everything with `time` keys for `[time]` and `body` (channels, models, ...).
    pub async fn start(time: &str, body: &str) -> Pipeline {
        let nats = NatsServer::start();
        let journeyd = Service::start_on(&nats, time, body).await;
        let client = journeyd.client.clone();
        let transitions = subscribe(&client, "journey.transition.>").await;
        Pipeline { nats, journeyd, client, transitions }
    }

    /// Publishes events in order and flushes.
    pub async fn publish(&self, events: &[Value]) {
        publish_events(&self.client, events).await;
    }

    /// The next `n` transitions, as JSON.
    pub async fn next_transitions(&mut self, n: usize) -> Vec<Value> {
        next_json(&mut self.transitions, n).await
    }

    /// Receives transitions until one satisfies `wanted`; returns it and the
    /// ones received before it. Panics after [`DEADLINE`] saying `what`.
    pub async fn transition_where(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> (Value, Vec<Value>) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut before = Vec::new();
        loop {
            let Ok(next) = tokio::time::timeout_at(deadline, self.transitions.next()).await else {
                panic!("no transition {what} within {DEADLINE:?}; received before: {before:?}");
            };
            let msg = next.expect("subscription open");
            let t: Value = serde_json::from_slice(&msg.payload).expect("transition is JSON");
            if wanted(&t) {
                return (t, before);
            }
            before.push(t);
        }
    }
}
