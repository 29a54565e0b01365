//! `nats.jetstream`: journeyd consumes a durable pull consumer. What the
//! stream held before journeyd started is applied, what was published while
//! it was down is applied when it is back (and nothing twice), a restart (or a
//! kill) rebuilds the customers from the stream, and a burst far beyond the
//! client's subscription buffer loses nothing.

mod common;
mod support;

use common::{free_addr, NatsServer};
use serde_json::Value;
use support::{days_ago, event, subject_of, sum_or_zero, Service, EVENT_TIME_ONLY, LIFECYCLE};

const STREAM: &str = "TOUCH";
const HOUR: i64 = 3_600_000;

/// A config consuming `TOUCH` through the durable consumer `journeyd`.
fn config(nats: &NatsServer, subscription_capacity: usize) -> String {
    format!(
        "[nats]\nurl = \"{}\"\nsubscription_capacity = {subscription_capacity}\njetstream = {{ stream = \"{STREAM}\", consumer = \"journeyd\" }}\n\n\
         [http]\nlisten = \"{}\"\n\n[time]\n{EVENT_TIME_ONLY}\n{LIFECYCLE}\n",
        nats.url(),
        free_addr()
    )
}

/// Publishes into the stream and waits for every store acknowledgement.
async fn publish_stored(js: &async_nats::jetstream::Context, events: &[Value]) {
    let mut acks = Vec::with_capacity(events.len());
    for ev in events {
        acks.push(js.publish(subject_of(ev), serde_json::to_vec(ev).expect("event serialises").into()).await.expect("publish to JetStream"));
    }
    for ack in acks {
        ack.await.expect("JetStream stores the event");
    }
}

/// `n` sign-ups of distinct users, a second apart, from `t`.
fn signups(prefix: &str, t: i64, n: usize) -> Vec<Value> {
    (0..n).map(|i| event(&format!("{prefix}-{i}"), t + i as i64 * 1000, &format!("{prefix}-user-{i}"), "app", "signup")).collect()
}

async fn jetstream_of(nats: &NatsServer) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(nats.connect().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stored_before_start_and_published_after_are_all_applied() {
    let nats = NatsServer::start_jetstream();
    let js = jetstream_of(&nats).await;
    create_stream(&js).await;
    let t = days_ago(3);
    publish_stored(&js, &signups("before", t, 20)).await;

    let j = Service::start(&config(&nats, 1024)).await;
    j.wait_applied(20).await;
    publish_stored(&js, &[event("buy", t + 30 * HOUR, "before-user-0", "web", "purchase")]).await;
    let m = j.wait_applied(21).await;

    let registered = sum_or_zero(&m, "journey_customers", &[("model", "lifecycle"), ("stage", "registered")]);
    let customers = sum_or_zero(&m, "journey_customers", &[("model", "lifecycle"), ("stage", "customer")]);
    assert_eq!((registered, customers), (19.0, 1.0));
    assert_eq!(j.stage("before-user-0", "lifecycle").await.as_deref(), Some("customer"));
    // Everything applied and acknowledged: the consumer's lag drains to zero.
    j.wait_metrics("journey_consumer_lag_messages is 0", |t| common::metric_value(t, "journey_consumer_lag_messages", &[]) == Some(0.0)).await;
    j.stop().await;
}

/// The restarted journeyd rebuilds its customers from what the consumer had
/// acknowledged (muted: nothing is published twice), forgets again those an
/// earlier run forgot, then applies what was published while it was down, on
/// top of that state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_rebuilds_customers_from_the_stream_and_publishes_nothing_twice() {
    let nats = NatsServer::start_jetstream();
    let js = jetstream_of(&nats).await;
    let (seen, collector, watcher) = watch_transitions(&nats).await;
    let t = days_ago(3);

    // The first run creates the stream and the consumer.
    let first = Service::start(&config(&nats, 1024)).await;
    publish_stored(&js, &signups("first", t, 3)).await;
    first.wait_applied(3).await;
    // Two forgotten; one of them comes back as a new customer.
    for user in ["first-user-1", "first-user-2"] {
        assert!(first.request("journey.admin.forget", user).await["forgotten"].is_object(), "{user} forgotten");
    }
    publish_stored(&js, &[event("again", t + 5 * HOUR, "first-user-2", "app", "signup")]).await;
    first.wait_applied(4).await;
    first.stop().await;

    publish_stored(&js, &signups("down", t + 10 * HOUR, 4)).await;

    let second = Service::start(&config(&nats, 1024)).await;
    // Counters continue: the rebuilt 4, then the 4 published while down.
    second.wait_applied(8).await;
    assert_eq!(second.stage("first-user-0", "lifecycle").await.as_deref(), Some("registered"), "rebuilt");
    assert_eq!(second.customer("first-user-1").await, None, "forgotten again");
    let again = second.customer("first-user-2").await.expect("the customer that came back after its forget");
    assert_eq!(again["first_seen"], serde_json::json!(t + 5 * HOUR), "{again}");
    // On top of the rebuilt state: a purchase moves a first-run sign-up on from `registered`.
    publish_stored(&js, &[event("buy", t + 20 * HOUR, "first-user-0", "web", "purchase")]).await;
    let m = second.wait_applied(9).await;
    assert_eq!(sum_or_zero(&m, "journey_customers", &[("model", "lifecycle")]), 6.0);
    assert_eq!(second.stage("first-user-0", "lifecycle").await.as_deref(), Some("customer"));
    // The rebuilt transitions did not happen in the last hour of this run.
    let (_, stats) = second.get_json("/v1/stats").await;
    assert_eq!(stats["transitions_last_hour"], serde_json::json!({"app": 4, "web": 1}), "{stats}");
    second.stop().await;

    // Every event's transition was published once, by the run that first applied it.
    let all = seen.clone();
    common::wait_until("the purchase's transition arrives", std::time::Duration::from_secs(10), || {
        let all = all.clone();
        async move { all.lock().unwrap().contains_key("buy").then_some(()) }
    })
    .await;
    watcher.flush().await.expect("flush");
    collector.abort();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 9, "{seen:?}");
    assert!(seen.values().all(|n| *n == 1), "a transition published twice: {seen:?}");

    // Without `rebuild`, a restart starts from empty state (and still skips what was acknowledged).
    let text = config(&nats, 1024).replace("consumer = \"journeyd\" }", "consumer = \"journeyd\", rebuild = false }");
    let third = Service::start(&text).await;
    publish_stored(&js, &signups("third", t + 30 * HOUR, 1)).await;
    let m = third.wait_applied(1).await;
    assert_eq!(sum_or_zero(&m, "journey_customers", &[("model", "lifecycle")]), 1.0, "this run's customer only");
    third.stop().await;
}

/// journeyd killed (SIGKILL) after it applied and acknowledged a stream's
/// events comes back with those customers: they go on from where they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_the_next_run_goes_on_from_the_rebuilt_state() {
    const N: usize = 2_000;
    let nats = NatsServer::start_jetstream();
    let js = jetstream_of(&nats).await;
    let (_dir, http, args) = binary_run(&nats);
    let args = args.each_ref().map(String::as_str);
    let ready = || async {
        common::wait_until("journeyd answers /readyz with 200", std::time::Duration::from_secs(30), || async {
            matches!(common::try_http_get(&http, "/readyz").await, Ok((200, _))).then_some(())
        })
        .await
    };
    let metric = |name: &'static str, labels: &'static [(&'static str, &'static str)], want: f64| {
        let http = http.clone();
        async move {
            common::wait_until(&format!("{name}{labels:?} = {want}"), std::time::Duration::from_secs(30), || {
                let http = http.clone();
                async move {
                    let body = scrape(&http).await?;
                    (sum_or_zero(&body, name, labels) == want).then_some(())
                }
            })
            .await
        }
    };
    let t = days_ago(2);

    let mut first = common::Journeyd::spawn(&args);
    ready().await;
    publish_stored_chunked(&js, &signups("k", t, N)).await;
    metric("journey_events_total", &[], N as f64).await;
    // Acknowledged: nothing left for the consumer to deliver or to wait for.
    let consumer: async_nats::jetstream::consumer::PullConsumer = js.get_consumer_from_stream("journeyd", STREAM).await.expect("the consumer");
    common::wait_until("the consumer has every event acknowledged", std::time::Duration::from_secs(30), || {
        let mut consumer = consumer.clone();
        async move {
            let i = consumer.info().await.ok()?;
            (i.num_pending == 0 && i.num_ack_pending == 0 && i.ack_floor.stream_sequence == N as u64).then_some(())
        }
    })
    .await;
    first.kill();

    let client = nats.connect().await;
    let mut moved = client.subscribe("journey.transition.lifecycle.*.customer").await.expect("subscribe");
    client.flush().await.expect("flush");
    let _second = common::Journeyd::spawn(&args);
    ready().await;
    let buys: Vec<Value> = (0..N).map(|i| event(&format!("b-{i}"), t + HOUR, &format!("k-user-{i}"), "app", "purchase")).collect();
    publish_stored_chunked(&js, &buys).await;
    metric("journey_customers", &[("model", "lifecycle"), ("stage", "customer")], N as f64).await;
    for i in 0..N {
        let msg = support::next_msg(&mut moved).await;
        assert_eq!(msg.subject.as_str(), "journey.transition.lifecycle.registered.customer", "transition {i}: the sign-up was rebuilt");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_far_beyond_the_subscription_buffer_loses_nothing() {
    let nats = NatsServer::start_jetstream();
    let js = jetstream_of(&nats).await;
    // A 64-message client buffer: core NATS would drop most of this burst.
    let j = Service::start(&config(&nats, 64)).await;
    let burst = signups("burst", days_ago(3), 5_000);
    publish_stored(&js, &burst).await;

    let m = j.wait_applied(5_000).await;
    assert_eq!(sum_or_zero(&m, "journey_customers", &[("model", "lifecycle"), ("stage", "registered")]), 5_000.0);
    assert_eq!(sum_or_zero(&m, "journey_duplicates_total", &[]), 0.0);
    assert_eq!(sum_or_zero(&m, "journey_dlq_total", &[]), 0.0);
    j.stop().await;
}

/// Publishes into the stream in chunks, awaiting each chunk's store acks.
async fn publish_stored_chunked(js: &async_nats::jetstream::Context, events: &[Value]) {
    for chunk in events.chunks(2_000) {
        publish_stored(js, chunk).await;
    }
}

/// Counts of transitions by `event_id`, kept by a task of [`watch_transitions`].
type Seen = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>;

/// Subscribes to every transition on `nats` (with room for a large burst)
/// and counts them by `event_id` in a task, until it is aborted. The client
/// is returned to be kept (and flushed) as long as the counts are wanted.
async fn watch_transitions(nats: &NatsServer) -> (Seen, tokio::task::JoinHandle<()>, async_nats::Client) {
    use futures::StreamExt;
    let watcher = async_nats::ConnectOptions::new().subscription_capacity(1 << 20).connect(nats.url()).await.expect("connect");
    let mut sub = watcher.subscribe("journey.transition.>").await.expect("subscribe");
    watcher.flush().await.expect("flush");
    let seen = Seen::default();
    let s = seen.clone();
    let task = tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let t: Value = serde_json::from_slice(&msg.payload).expect("transition JSON");
            let id = t["event_id"].as_str().unwrap_or("").to_string();
            *s.lock().unwrap().entry(id).or_default() += 1;
        }
    });
    (seen, task, watcher)
}

/// The `/metrics` of the journeyd binary at `http`, once it serves them (not
/// while it starts or rebuilds its state: it answers 503 then).
async fn scrape(http: &str) -> Option<String> {
    match common::try_http_get(http, "/metrics").await {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

/// Creates the stream `TOUCH` over `touch.>`.
async fn create_stream(js: &async_nats::jetstream::Context) {
    js.create_stream(async_nats::jetstream::stream::Config { name: STREAM.into(), subjects: vec!["touch.>".into()], ..Default::default() })
        .await
        .expect("create the stream");
}

/// A config file for the journeyd binary (consuming through JetStream), its
/// HTTP address and its `run` arguments; the directory holds the file.
fn binary_run(nats: &NatsServer) -> (tempfile::TempDir, String, [String; 3]) {
    let dir = common::tempdir();
    let text = config(nats, 262_144);
    let http = journeyd::config::parse(&text).expect("config").config.http.listen;
    let path = common::write_config(dir.path(), &text);
    (dir, http, ["run".into(), "--config".into(), path.to_str().expect("UTF-8 path").into()])
}

/// What was delivered to a run but not taken when it stopped (the pull stream is ahead of
/// the loop) is applied by the next run's rebuild, in stream order (not late, as it would
/// be when the server sent it again after the ack wait, behind newer events), with its
/// transition published once. A third run started while those are still unacknowledged
/// (the ack floor is behind what was applied) still rebuilds every customer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untaken_events_of_a_stopped_run_are_applied_in_order_and_survive_a_quick_second_restart() {
    // Enough that the first run is stopped with events still on their way
    // (with 10k, a fast run sometimes had taken them all).
    const N: usize = 40_000;
    let nats = NatsServer::start_jetstream();
    let js = jetstream_of(&nats).await;
    create_stream(&js).await;
    let (seen, collector, _watcher) = watch_transitions(&nats).await;
    let t = days_ago(1);
    // A second apart: an event taken after much later ones would be late.
    let events: Vec<Value> = (0..N).map(|i| event(&format!("d-{i}"), t + i as i64 * 1000, &format!("d-user-{i}"), "app", "signup")).collect();
    publish_stored_chunked(&js, &events).await;

    let first = Service::start(&config(&nats, 262_144)).await;
    first.wait_metrics("the first run applied some events", |m| sum_or_zero(m, "journey_events_total", &[]) >= 2_000.0).await;
    first.stop().await; // what SIGTERM does: drain, publish what is pending
    let info = consumer_info(&js).await;
    assert!(info.num_ack_pending > 0, "precondition: delivered and not taken: {info:?}");
    let untaken = info.ack_floor.stream_sequence as usize; // the first not acknowledged, 0-based

    let second = Service::start(&config(&nats, 262_144)).await;
    let all = seen.clone();
    common::wait_until("every event produced its transition", std::time::Duration::from_secs(30), || {
        let all = all.clone();
        async move { (all.lock().unwrap().len() == N).then_some(()) }
    })
    .await;
    let m = second.wait_applied(N as u64).await;
    assert_eq!(sum_or_zero(&m, "journey_late_events_total", &[]), 0.0, "nothing late");
    assert_eq!(second.stage(&format!("d-user-{untaken}"), "lifecycle").await.as_deref(), Some("registered"));
    second.stop().await;
    assert!(seen.lock().unwrap().values().all(|n| *n == 1), "a transition published twice");
    collector.abort();

    // Stopped again before the server's ack wait: the ack floor is still behind.
    let third = Service::start(&config(&nats, 262_144)).await;
    let m = third.wait_applied(N as u64).await;
    assert_eq!(sum_or_zero(&m, "journey_customers", &[("model", "lifecycle"), ("stage", "registered")]), N as f64);
    assert_eq!(third.stage(&format!("d-user-{}", N - 1), "lifecycle").await.as_deref(), Some("registered"));
    third.stop().await;
}

/// Events an earlier run was delivered and never acknowledged are applied by
/// the rebuild, with their output; when the server sends them again (after its
/// ack wait, here 1 s) they are only acknowledged: no duplicate counted, no
/// refusal published or counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_rebuild_applied_is_not_taken_again_when_the_server_sends_it_again() {
    use futures::StreamExt;
    let nats = NatsServer::start_jetstream();
    let js = jetstream_of(&nats).await;
    create_stream(&js).await;
    let t = days_ago(1);
    publish_stored(&js, &signups("u", t, 3)).await;
    js.publish("touch.app.view", "not json".into()).await.expect("publish").await.expect("stored");
    // An earlier run's consumer: all four delivered, none acknowledged.
    delivered_unacknowledged(&js, 4, std::time::Duration::from_secs(1)).await;
    let dlq = nats.connect().await;
    let mut dead = dlq.subscribe("journey.dlq").await.expect("subscribe journey.dlq");
    dlq.flush().await.expect("flush");

    let run = Service::start(&config(&nats, 1024)).await;
    run.wait_applied(3).await;
    common::wait_until("the server has every message acknowledged", std::time::Duration::from_secs(20), || async {
        let info = consumer_info(&js).await;
        (info.ack_floor.stream_sequence == 4 && info.num_ack_pending == 0).then_some(())
    })
    .await;
    let m = run.metrics().await;
    assert_eq!(sum_or_zero(&m, "journey_duplicates_total", &[]), 0.0, "{m}");
    assert_eq!(sum_or_zero(&m, "journey_dlq_total", &[]), 1.0, "{m}");
    assert_eq!(sum_or_zero(&m, "journey_events_total", &[]), 3.0, "{m}");
    run.stop().await;
    dlq.flush().await.expect("flush");
    let mut refused = 0;
    while let Ok(Some(_)) = tokio::time::timeout(common::POLL_INTERVAL, dead.next()).await {
        refused += 1;
    }
    assert_eq!(refused, 1, "the refused input was published to journey.dlq once");
}

/// A run that rebuilt an earlier run's unacknowledged messages (acknowledged
/// only when the server sends them again, after its 30 s ack wait) and is
/// stopped before then leaves the ack floor behind what it applied; the next
/// run's rebuild still publishes nothing again: it goes by the applied mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_restart_within_the_ack_wait_publishes_nothing_again() {
    let nats = NatsServer::start_jetstream();
    let js = jetstream_of(&nats).await;
    create_stream(&js).await;
    let t = days_ago(1);
    publish_stored(&js, &signups("u", t, 3)).await;
    // An earlier run's consumer: all three delivered, none acknowledged (30 s ack wait).
    delivered_unacknowledged(&js, 3, std::time::Duration::from_secs(30)).await;
    let (seen, collector, watcher) = watch_transitions(&nats).await;

    let second = Service::start(&config(&nats, 1024)).await;
    publish_stored(&js, &signups("v", t + HOUR, 3)).await;
    second.wait_applied(6).await;
    second.stop().await;
    assert_eq!(consumer_info(&js).await.ack_floor.stream_sequence, 0, "precondition: the floor is behind");

    let third = Service::start(&config(&nats, 1024)).await;
    third.wait_applied(6).await;
    third.stop().await;
    watcher.flush().await.expect("flush");
    collector.abort();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert!(seen.values().all(|n| *n == 1), "a transition published twice: {seen:?}");
}

/// Creates the consumer `journeyd` as an earlier run would have, and has the
/// first `n` messages of the stream delivered to it and never acknowledged.
async fn delivered_unacknowledged(js: &async_nats::jetstream::Context, n: usize, ack_wait: std::time::Duration) {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    use futures::StreamExt;
    let stream = js.get_stream(STREAM).await.expect("the stream");
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("journeyd".into()),
            filter_subjects: vec!["touch.>".into()],
            ack_policy: AckPolicy::Explicit,
            ack_wait,
            ..Default::default()
        })
        .await
        .expect("create the consumer");
    let mut delivered = consumer.fetch().max_messages(n).messages().await.expect("fetch");
    for _ in 0..n {
        delivered.next().await.expect("a message").expect("delivered");
    }
}

/// The consumer `journeyd` of `TOUCH`, as the server has it now.
async fn consumer_info(js: &async_nats::jetstream::Context) -> async_nats::jetstream::consumer::Info {
    let mut c: async_nats::jetstream::consumer::PullConsumer = js.get_consumer_from_stream("journeyd", STREAM).await.expect("the consumer");
    c.info().await.expect("consumer info").clone()
}

/// An event refused as too far ahead of the clock stays refused in a rebuild
/// that runs once its time has come: it is judged by when the stream stored it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_refused_as_future_stays_refused_after_a_restart() {
    let nats = NatsServer::start_jetstream();
    let js = jetstream_of(&nats).await;
    let text = config(&nats, 1024).replace(EVENT_TIME_ONLY, "allowed_lateness = \"5s\"\nidle_timeout = \"1h\"\nmax_future_skew = \"1s\"");
    let first = Service::start(&text).await;
    let ahead = support::now_ms() + 3_000;
    publish_stored(&js, &[event("ok", support::now_ms() - 60_000, "present-user", "app", "signup"), event("ahead", ahead, "future-user", "app", "signup")])
        .await;
    first
        .wait_metrics("one applied, one refused", |m| {
            sum_or_zero(m, "journey_events_total", &[]) == 1.0 && sum_or_zero(m, "journey_dlq_total", &[("reason", "future_timestamp")]) == 1.0
        })
        .await;
    first.stop().await;
    // The restart comes after the event's time.
    common::wait_until("the event's time has passed", std::time::Duration::from_secs(10), || async { (support::now_ms() > ahead + 500).then_some(()) }).await;
    let second = Service::start(&text).await;
    let m = second.metrics().await;
    assert_eq!(second.customer("future-user").await, None, "not applied by the rebuild");
    assert_eq!(sum_or_zero(&m, "journey_dlq_total", &[("reason", "future_timestamp")]), 1.0, "counted as the first run did");
    second.stop().await;
}

/// The same for an event stored while journeyd was down and delivered live
/// only after its time has come: it is judged by when the stream stored it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stored_too_far_ahead_while_journeyd_was_down_is_refused_when_delivered() {
    let nats = NatsServer::start_jetstream();
    let js = jetstream_of(&nats).await;
    create_stream(&js).await;
    let text = config(&nats, 1024).replace(EVENT_TIME_ONLY, "allowed_lateness = \"5s\"\nidle_timeout = \"1h\"\nmax_future_skew = \"1s\"");
    let ahead = support::now_ms() + 3_000;
    publish_stored(&js, &[event("ok", support::now_ms() - 60_000, "present-user", "app", "signup"), event("ahead", ahead, "future-user", "app", "signup")])
        .await;
    common::wait_until("the event's time has passed", std::time::Duration::from_secs(10), || async { (support::now_ms() > ahead + 500).then_some(()) }).await;
    let j = Service::start(&text).await;
    let m = j.wait_metrics("one applied, one refused", |m| sum_or_zero(m, "journey_events_total", &[]) + sum_or_zero(m, "journey_dlq_total", &[]) == 2.0).await;
    assert_eq!(sum_or_zero(&m, "journey_dlq_total", &[("reason", "future_timestamp")]), 1.0, "{m}");
    assert_eq!(j.customer("future-user").await, None);
    assert!(j.customer("present-user").await.is_some());
    j.stop().await;
}

/// From start-up until state is rebuilt, `/metrics` answers 503, even while NATS
/// is out of reach: a scrape of empty counters would read as a reset. The
/// customer API answers 503 at once too (its router is not reading yet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_customers_answer_503_until_state_is_rebuilt_even_before_nats_is_reached() {
    let mut nats = NatsServer::start_jetstream();
    let text = config(&nats, 1024);
    tokio::task::block_in_place(|| nats.stop());
    let loaded = journeyd::config::parse(&text).expect("config");
    let http = loaded.config.http.listen.clone();
    let token = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(journeyd::run(loaded.config, token.clone()));
    let (status, _) =
        common::wait_until("journeyd serves HTTP", std::time::Duration::from_secs(10), || async { common::try_http_get(&http, "/metrics").await.ok() }).await;
    assert_eq!(status, 503, "/metrics before NATS is reached");
    for method in ["GET", "DELETE"] {
        let (status, body) = common::try_http_request(&http, method, "/v1/customers/u-1", None).await.expect("an answer at once, not a wait");
        assert_eq!(status, 503, "{method} of a customer before journeyd consumes: {body}");
        assert!(body.contains("not consuming yet"), "{body}");
    }
    tokio::task::block_in_place(|| nats.restart());
    common::wait_until("journeyd is ready", std::time::Duration::from_secs(30), || async {
        matches!(common::try_http_get(&http, "/readyz").await, Ok((200, _))).then_some(())
    })
    .await;
    assert_eq!(common::http_get(&http, "/metrics").await.0, 200);
    token.cancel();
    task.await.expect("journeyd task").expect("journeyd run");
}

/// nats-server killed and restarted (same store) while journeyd consumes: the
/// pull consumer comes back by itself, and every stored event is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_restart_mid_stream_loses_nothing_and_applies_nothing_twice() {
    const N: usize = 20_000;
    let mut nats = NatsServer::start_jetstream();
    let js = jetstream_of(&nats).await;
    create_stream(&js).await;
    let t = days_ago(1);
    let events: Vec<Value> = (0..N).map(|i| event(&format!("r-{i}"), t, &format!("r-user-{i}"), "app", "signup")).collect();
    // Most of it stored before journeyd starts, so that the restart comes while it consumes.
    publish_stored_chunked(&js, &events[..3 * N / 4]).await;
    let j = Service::start(&config(&nats, 262_144)).await;
    j.wait_metrics("some events applied", |m| sum_or_zero(m, "journey_events_total", &[]) >= 1.0).await;
    tokio::task::block_in_place(|| nats.restart());
    let js = jetstream_of(&nats).await;
    publish_stored_chunked(&js, &events[3 * N / 4..]).await;
    let m = j.wait_applied(N as u64).await;
    assert_eq!(sum_or_zero(&m, "journey_customers", &[("model", "lifecycle"), ("stage", "registered")]), N as f64);
    j.stop().await;
}

/// journeyd killed (SIGKILL) while it works through a backlog: every event's
/// transition is published, by the killed run or by the next one (at least
/// once). Messages are acknowledged only once the shards have applied them,
/// so none acknowledged at the kill is left unapplied and unpublished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_mid_backlog_loses_no_transition() {
    const N: usize = 20_000;
    let nats = NatsServer::start_jetstream();
    let js = jetstream_of(&nats).await;
    create_stream(&js).await;
    let (seen, collector, _watcher) = watch_transitions(&nats).await;
    let t = days_ago(1);
    let events: Vec<Value> = (0..N).map(|i| event(&format!("k-{i}"), t + i as i64, &format!("k-user-{i}"), "app", "signup")).collect();
    publish_stored_chunked(&js, &events).await;

    let (_dir, http, args) = binary_run(&nats);
    let args = args.each_ref().map(String::as_str);
    let mut first = common::Journeyd::spawn(&args);
    common::wait_until("the first run is in the middle of the backlog", std::time::Duration::from_secs(30), || async {
        let body = scrape(&http).await?;
        (sum_or_zero(&body, "journey_events_total", &[]) >= (N / 4) as f64).then_some(())
    })
    .await;
    first.kill();

    let _second = common::Journeyd::spawn(&args);
    let all = seen.clone();
    common::wait_until("every event's transition was published", std::time::Duration::from_secs(30), || {
        let all = all.clone();
        async move { (all.lock().unwrap().len() == N).then_some(()) }
    })
    .await;
    collector.abort();
}
