//! journeyd's life as a process: a SIGTERM drains every event in flight,
//! a nats-server restart is survived, and bad configs are refused by the CLI
//! with the file, line and key of every error.

mod common;
mod support;

use common::{NatsServer, POLL_INTERVAL};
use futures::StreamExt;
use std::process::{Command, Output};
use std::time::Duration;
use support::*;

/// Runs `journeyd ARGS...` to completion.
fn journeyd_cli(args: &[&str]) -> Output {
    Command::new(common::journeyd_bin()).args(args).env("NO_COLOR", "1").output().expect("run journeyd")
}

/// A config with two errors (lines 3 and 6) and two unreachable stages.
const BAD_CONFIG: &str = r#"[[model]]
name = "m"
initial = "nowhere"
stages = ["a", "b"]
transitions = [
  { from = ["a"], to = "zz", on = { kind = "x" } },
]
"#;

/// The journeyd binary running the lifecycle model against NATS at `url`: the
/// config's directory (kept while it runs), its HTTP address, the process.
fn spawn_binary(url: &str) -> (tempfile::TempDir, String, common::Journeyd) {
    let dir = common::tempdir();
    let http = common::free_addr();
    let config = common::write_config(dir.path(), &config_text(url, &http, EVENT_TIME_ONLY, LIFECYCLE));
    let journeyd = common::Journeyd::spawn(&["run", "--config", config.to_str().expect("UTF-8 path")]);
    (dir, http, journeyd)
}

async fn wait_ready(http: &str) {
    common::wait_until("journeyd answers /readyz with 200", DEADLINE, || async {
        matches!(common::try_http_get(http, "/readyz").await, Ok((200, _))).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_every_event_in_flight_and_exits_zero() {
    const EVENTS: usize = 20_000;
    let nats = NatsServer::start();
    let (_dir, http, mut journeyd) = spawn_binary(&nats.url());
    wait_ready(&http).await;
    let client = nats.connect().await;
    let mut transitions = subscribe(&client, "journey.transition.lifecycle.visitor.registered").await;
    let ts = days_ago(1);
    for i in 0..EVENTS {
        let ev = event(&format!("e{i}"), ts, &format!("u{i}"), "app", "signup");
        client.publish("touch.app.signup", serde_json::to_vec(&ev).expect("JSON").into()).await.expect("publish");
    }
    // In flight: the server has every event (a flush only empties the
    // client's buffer into the socket) when the signal comes.
    journeyd::ingest::nats::round_trip(&client, DEADLINE).await.expect("round trip through NATS");

    journeyd.terminate();
    let status = tokio::task::block_in_place(|| journeyd.wait_timeout(Duration::from_secs(30)));

    let status = status.expect("journeyd exits within 30 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status: {}", common::describe_status(status));
    let mut received = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while received < EVENTS {
        match tokio::time::timeout_at(deadline, transitions.next()).await {
            Ok(Some(_)) => received += 1,
            _ => panic!("received {received} of {EVENTS} transitions"),
        }
    }
    client.flush().await.expect("flush");
    let extra = tokio::time::timeout(POLL_INTERVAL, transitions.next()).await;
    assert!(extra.is_err(), "more than {EVENTS} transitions: {extra:?}");
}

// A process manager's stop must work whatever NATS is doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_journeyd_while_nats_was_never_reachable() {
    let (_dir, _http, mut journeyd) = spawn_binary(&format!("nats://127.0.0.1:{}", common::free_port()));
    tokio::task::block_in_place(|| journeyd.wait_for_log("NATS not reachable yet", DEADLINE));
    journeyd.terminate();
    let status = tokio::task::block_in_place(|| journeyd.wait_timeout(Duration::from_secs(10))).expect("journeyd exits within 10 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status: {}\n{}", common::describe_status(status), journeyd.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_journeyd_while_the_nats_connection_is_lost() {
    let mut nats = NatsServer::start();
    let (_dir, http, mut journeyd) = spawn_binary(&nats.url());
    wait_ready(&http).await;
    tokio::task::block_in_place(|| nats.stop());
    common::wait_until("/readyz answers 503 once the connection is lost", DEADLINE, || async {
        matches!(common::try_http_get(&http, "/readyz").await, Ok((503, body)) if body.contains("reconnecting")).then_some(())
    })
    .await;
    journeyd.terminate();
    let status = tokio::task::block_in_place(|| journeyd.wait_timeout(Duration::from_secs(10))).expect("journeyd exits within 10 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status: {}\n{}", common::describe_status(status), journeyd.log());
}

// With the connection lost while output is waiting for the client (its
// queue full), the signal still ends journeyd, within the drain's and the
// shards' bounds (that output is lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_journeyd_with_the_connection_lost_under_load() {
    const EVENTS: usize = 30_000;
    let mut nats = NatsServer::start();
    let (_dir, http, mut journeyd) = spawn_binary(&nats.url());
    wait_ready(&http).await;
    let client = nats.connect().await;
    let ts = days_ago(1);
    for i in 0..EVENTS {
        let ev = event(&format!("e{i}"), ts, &format!("u{i}"), "app", "signup");
        client.publish("touch.app.signup", serde_json::to_vec(&ev).expect("JSON").into()).await.expect("publish");
    }
    journeyd::ingest::nats::round_trip(&client, DEADLINE).await.expect("round trip through NATS");
    tokio::task::block_in_place(|| nats.stop());
    journeyd.terminate();
    let status = tokio::task::block_in_place(|| journeyd.wait_timeout(Duration::from_secs(90)));
    assert!(status.is_some(), "journeyd still runs 90 s after SIGTERM:\n{}", common::tail(&journeyd.log(), 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journeyd_reconnects_after_nats_restarts_and_processes_new_events() {
    let mut p = Pipeline::start(EVENT_TIME_ONLY, LIFECYCLE).await;
    let ts = days_ago(1);
    p.publish(&[event("before", ts, "u-before", "app", "signup")]).await;
    p.transition_where("of the event before the restart", |t| t["event_id"] == "before").await;

    // While the server is gone, journeyd is not ready (it consumes nothing).
    tokio::task::block_in_place(|| p.nats.stop());
    common::wait_until("/readyz answers 503 while NATS is down", Duration::from_secs(10), || async {
        matches!(common::try_http_get(&p.journeyd.http, "/readyz").await, Ok((503, _))).then_some(())
    })
    .await;
    tokio::task::block_in_place(|| p.nats.restart());

    // Publish a fresh event each attempt until one comes through journeyd:
    // events sent while either client is still reconnecting may be lost.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut attempt = 0;
    'attempts: loop {
        assert!(tokio::time::Instant::now() < deadline, "no event processed after the restart ({attempt} attempts)");
        attempt += 1;
        let id = format!("after-{attempt}");
        let ev = event(&id, ts, &format!("u-{id}"), "app", "signup");
        let _ = p.client.publish("touch.app.signup", serde_json::to_vec(&ev).expect("JSON").into()).await;
        let _ = tokio::time::timeout(Duration::from_millis(200), p.client.flush()).await;
        let wait = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(Some(msg)) = tokio::time::timeout_at(wait, p.transitions.next()).await {
            let t: serde_json::Value = serde_json::from_slice(&msg.payload).expect("JSON");
            if t["event_id"].as_str().is_some_and(|e| e.starts_with("after-")) {
                break 'attempts;
            }
        }
    }

    assert_eq!(common::try_http_get(&p.journeyd.http, "/readyz").await.map(|r| r.0).ok(), Some(200), "ready again once reconnected");
    let metrics = p.journeyd.metrics().await;
    let events = |e| value_or_zero(&metrics, "journey_nats_connection_events_total", &[("event", e)]);
    assert!(events("disconnected") >= 1.0, "{metrics}");
    assert!(events("connected") >= 2.0, "the first connection and the reconnection: {metrics}");
}

#[test]
fn check_config_exits_2_and_reports_every_error_with_file_line_and_key() {
    let dir = common::tempdir();
    let path = common::write_config(dir.path(), BAD_CONFIG);
    let file = path.display().to_string();

    let out = journeyd_cli(&["check-config", &file]);

    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{file}: line 3: error: model[0].initial: unknown stage `nowhere`")), "{stderr}");
    assert!(stderr.contains(&format!("{file}: line 6: error: model[0].transitions[0].to: unknown stage `zz`")), "{stderr}");
}

#[test]
fn run_with_a_bad_config_exits_non_zero_with_the_same_errors() {
    let dir = common::tempdir();
    let path = common::write_config(dir.path(), BAD_CONFIG);
    let file = path.display().to_string();

    let out = journeyd_cli(&["run", "--config", &file]);

    assert!(!out.status.success(), "{:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{file}: line 3: error: model[0].initial: unknown stage `nowhere`")), "{stderr}");
    assert!(stderr.contains(&format!("{file}: line 6: error: model[0].transitions[0].to: unknown stage `zz`")), "{stderr}");
}

#[test]
fn check_config_warns_about_an_unreachable_stage_and_exits_0() {
    let dir = common::tempdir();
    let text = "[[model]]\nname = \"m\"\ninitial = \"a\"\nstages = [\"a\", \"b\", \"c\"]\n\
                transitions = [{ from = [\"a\"], to = \"b\", on = { kind = \"x\" } }]\n";
    let path = common::write_config(dir.path(), text);
    let file = path.display().to_string();

    let out = journeyd_cli(&["check-config", &file]);

    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("{file}: line 4: warning: model[0].stages[2]: stage `c` is unreachable")), "{stdout}");
}

#[test]
fn the_retail_example_passes_check_config() {
    assert_passes_check_config(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/retail.toml"));
}

#[test]
fn the_wealth_example_passes_check_config() {
    assert_passes_check_config(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/wealth.toml"));
}

#[test]
fn the_compose_deployment_config_passes_check_config() {
    assert_passes_check_config(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/journeyd.toml"));
}

/// `journeyd check-config FILE` exits 0 and says the file is ok.
fn assert_passes_check_config(file: &str) {
    let out = journeyd_cli(&["check-config", file]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{file}: ok")), "{}", String::from_utf8_lossy(&out.stdout));
}

// README: "GET /readyz: 200 once subscribed to NATS, 503 before and while draining".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_while_journeyd_drains() {
    let mut nats = NatsServer::start();
    let svc = Service::start_on(&nats, EVENT_TIME_ONLY, LIFECYCLE).await;
    // The drain's round trip through NATS waits for a server that answers
    // nothing (its connection still open): the drain lasts.
    nats.pause();
    svc.token.cancel();
    common::wait_until("/readyz answers 503 once journeyd is draining", Duration::from_secs(3), || async {
        matches!(common::try_http_get(&svc.http, "/readyz").await, Ok((503, body)) if body.contains("not consuming")).then_some(())
    })
    .await;
    nats.resume();
}

// The slow-consumer alert is an `increase()`: the series must exist at 0
// before the first slow-consumer event, or it is born at its first value
// (async-nats reports one event per dropped message) and shows no increase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nats_connection_event_series_is_exported_at_zero_from_start_up() {
    let nats = NatsServer::start();
    let svc = Service::start_on(&nats, EVENT_TIME_ONLY, LIFECYCLE).await;
    let text = svc.metrics().await;
    for event in ["slow_consumer", "disconnected", "server_error", "client_error"] {
        assert_eq!(
            common::metric_value(&text, "journey_nats_connection_events_total", &[("event", event)]),
            Some(0.0),
            "journey_nats_connection_events_total{{event={event:?}}} at start-up; /metrics has:\n{}",
            text.lines().filter(|l| l.starts_with("journey_nats_connection_events_total")).collect::<Vec<_>>().join("\n")
        );
    }
    svc.stop().await;
}
