//! Tests of the shared harness in `tests/common/mod.rs` itself.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

const DEADLINE: Duration = Duration::from_secs(15);

/// Publishes a unique payload on `subject` and waits (briefly) for it on `sub`; `Some(())` when
/// the round trip worked. Meant to be polled with `wait_until`.
async fn round_trip(client: &async_nats::Client, sub: &Mutex<async_nats::Subscriber>, subject: &str, payload: String) -> Option<()> {
    client.publish(subject.to_string(), payload.clone().into()).await.ok()?;
    tokio::time::timeout(Duration::from_millis(500), client.flush()).await.ok()?.ok()?;
    let mut sub = sub.lock().await;
    loop {
        // Older payloads (sent while disconnected) may arrive first: skip them.
        let msg = tokio::time::timeout(Duration::from_millis(500), sub.next()).await.ok()??;
        if msg.payload == payload.as_bytes() {
            return Some(());
        }
    }
}

#[tokio::test]
async fn nats_server_starts_and_routes_messages() {
    let server = NatsServer::start();
    assert!(server.url().starts_with("nats://127.0.0.1:"));
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));

    let client = async_nats::connect(server.url()).await.expect("connect");
    let mut sub = client.subscribe("x.>").await.expect("subscribe");
    client.flush().await.expect("flush subscription");
    client.publish("x.hello", "world".into()).await.expect("publish");
    client.flush().await.expect("flush publish");

    let msg = tokio::time::timeout(DEADLINE, sub.next()).await.expect("no message within the deadline").expect("subscription ended");
    assert_eq!(msg.subject.as_str(), "x.hello");
    assert_eq!(&msg.payload[..], b"world");

    // A second server gets its own port and directory.
    let other = NatsServer::start();
    assert_ne!(other.port(), server.port());
    assert_ne!(other.dir(), server.dir());
}

#[tokio::test]
async fn restart_keeps_the_port_and_clients_reconnect() {
    let mut server = NatsServer::start();
    let port = server.port();
    let client = server.connect().await;
    let sub = Mutex::new(client.subscribe("x.>").await.expect("subscribe"));
    let seq = AtomicUsize::new(0);
    let next_payload = || format!("m{}", seq.fetch_add(1, Ordering::Relaxed));

    wait_until("a first round trip", DEADLINE, || round_trip(&client, &sub, "x.before", next_payload())).await;

    server.stop();
    assert!(!server.is_running());
    wait_until("the client notices the server is gone", DEADLINE, || async {
        (client.connection_state() != async_nats::connection::State::Connected).then_some(())
    })
    .await;

    server.restart();
    assert!(server.is_running());
    assert_eq!(server.port(), port, "restart must reuse the port");
    assert!(server.log().contains("starting nats-server"));

    wait_until("a round trip after the restart (client reconnected)", DEADLINE, || round_trip(&client, &sub, "x.after", next_payload())).await;
    assert_eq!(client.connection_state(), async_nats::connection::State::Connected);
}

#[tokio::test]
async fn jetstream_server_creates_streams_and_keeps_them_across_restart() {
    let mut server = NatsServer::start_jetstream();
    assert!(server.jetstream());
    let client = server.connect().await;
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config { name: "SELFTEST".to_string(), subjects: vec!["selftest.>".to_string()], ..Default::default() })
        .await
        .expect("create stream");
    js.publish("selftest.a", "1".into()).await.expect("publish").await.expect("publish ack");
    assert!(server.store_dir().is_dir(), "JetStream store directory");

    server.restart();
    let messages = wait_until("the stream is back after the restart", DEADLINE, || async {
        // A request sent before the client noticed the restart is lost and would wait for the
        // full request timeout: bound each attempt instead.
        let stream = tokio::time::timeout(Duration::from_secs(1), js.get_stream("SELFTEST")).await.ok()?.ok()?;
        Some(stream.cached_info().state.messages)
    })
    .await;
    assert_eq!(messages, 1, "the stored message survives a restart");
}

const EXPOSITION: &str = r#"# HELP journeyd_events_total Events seen.
# TYPE journeyd_events_total counter
journeyd_events_total{channel="email",stage="lead"} 3
journeyd_events_total{stage="lead",channel="sms"} 4
journeyd_events_total{channel="web \"beta\"",stage="a\\b\nc"} 5
# TYPE journeyd_up gauge
journeyd_up 1
# HELP journeyd_lag_seconds Lag.
# TYPE journeyd_lag_seconds histogram
journeyd_lag_seconds_bucket{shard="0",le="0.005"} 1
journeyd_lag_seconds_bucket{shard="0",le="0.5"} 6
journeyd_lag_seconds_bucket{shard="0",le="+Inf"} 7
journeyd_lag_seconds_sum{shard="0"} 1.5e-1
journeyd_lag_seconds_count{shard="0"} 7
journeyd_lag_seconds_bucket{shard="1",le="+Inf"} 2
journeyd_floor { x = "y" , } -Inf 1700000000000
journeyd_nan NaN
"#;

#[test]
fn metric_value_and_sum_parse_the_exposition() {
    let e = EXPOSITION;
    let v = |name, labels: &[(&str, &str)]| metric_value(e, name, labels);

    assert_eq!(v("journeyd_events_total", &[("channel", "email"), ("stage", "lead")]), Some(3.0));
    // Order of the given pairs does not matter.
    assert_eq!(v("journeyd_events_total", &[("channel", "sms"), ("stage", "lead")]), Some(4.0));
    // metric_value wants the whole label set; a subset is not enough.
    assert_eq!(v("journeyd_events_total", &[("channel", "email")]), None);
    assert_eq!(v("journeyd_events_total", &[]), None);
    // Escaped quotes, backslashes and newlines in label values.
    assert_eq!(v("journeyd_events_total", &[("channel", "web \"beta\""), ("stage", "a\\b\nc")]), Some(5.0));
    assert_eq!(v("journeyd_up", &[]), Some(1.0));
    assert_eq!(v("journeyd_missing", &[]), None);

    // Histograms: exact names only, `le` compares as a number too.
    assert_eq!(v("journeyd_lag_seconds_bucket", &[("shard", "0"), ("le", "+Inf")]), Some(7.0));
    assert_eq!(v("journeyd_lag_seconds_bucket", &[("le", "0.50"), ("shard", "0")]), Some(6.0));
    assert_eq!(v("journeyd_lag_seconds_sum", &[("shard", "0")]), Some(0.15));
    assert_eq!(v("journeyd_lag_seconds", &[("shard", "0")]), None);

    // Spaces, trailing comma, special values, timestamps.
    assert_eq!(v("journeyd_floor", &[("x", "y")]), Some(f64::NEG_INFINITY));
    assert!(v("journeyd_nan", &[]).expect("NaN sample").is_nan());

    // Sums over label subsets.
    assert_eq!(metric_sum(e, "journeyd_events_total", &[]), Some(12.0));
    assert_eq!(metric_sum(e, "journeyd_events_total", &[("stage", "lead")]), Some(7.0));
    assert_eq!(metric_sum(e, "journeyd_lag_seconds_bucket", &[("le", "+Inf")]), Some(9.0));
    assert_eq!(metric_sum(e, "journeyd_events_total", &[("stage", "nope")]), None);
    assert_eq!(metric_sum(e, "journeyd_lag_seconds_bucket", &[("shard", "0")]), Some(14.0));
    assert_eq!(metric_samples(e, "journeyd_lag_seconds_bucket", &[("shard", "0")]).len(), 3);

    let samples = parse_exposition(e);
    assert_eq!(samples.len(), 12);
    assert_eq!(samples[2].label("channel"), Some("web \"beta\""));

    for bad in ["journeyd_x{a=\"b\" 1", "journeyd_x{a=\"b} 1", "journeyd_x{a=b} 1", "journeyd_x", "journeyd_x one", "journeyd_x 1 2 3", "1journeyd 1"] {
        assert!(try_parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

/// A tiny HTTP/1.1 server: `/chunked` answers with a chunked body written in pieces,
/// `/echo` echoes method, content type and body with a Content-Length, anything else is 404.
async fn serve_http(listener: tokio::net::TcpListener, connections: usize) {
    for _ in 0..connections {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        let header_end = loop {
            let n = socket.read(&mut buf).await.expect("read request");
            assert!(n > 0, "client closed before the end of the request headers");
            request.extend_from_slice(&buf[..n]);
            if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8(request[..header_end].to_vec()).expect("UTF-8 headers");
        let content_length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().expect("content length"))
            })
            .unwrap_or(0);
        while request.len() < header_end + content_length {
            let n = socket.read(&mut buf).await.expect("read body");
            assert!(n > 0, "client closed before the end of the body");
            request.extend_from_slice(&buf[..n]);
        }
        let body = String::from_utf8(request[header_end..].to_vec()).expect("UTF-8 body");
        let mut request_line = head.split_whitespace();
        let method = request_line.next().expect("method").to_string();
        let path = request_line.next().expect("path").to_string();
        assert!(head.contains("Connection: close\r\n"));
        let content_type = head.lines().find_map(|l| l.strip_prefix("Content-Type: ")).unwrap_or("-").to_string();

        match path.as_str() {
            "/chunked" => {
                for piece in [
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
                    "7\r\nHello, \r\n",
                    "8;note=x\r\nchunked ",
                    "\r\nB\r\nworld\r\n\"ok\"\r\n",
                    "0\r\nX-Trailer: yes\r\n\r\n",
                ] {
                    socket.write_all(piece.as_bytes()).await.expect("write");
                    socket.flush().await.expect("flush");
                }
            }
            "/echo" => {
                let reply = format!("{method} {content_type} {body}");
                let response = format!("HTTP/1.1 201 Created\r\nContent-Length: {}\r\n\r\n{reply}", reply.len());
                socket.write_all(response.as_bytes()).await.expect("write");
            }
            _ => {
                socket.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n\r\nnot found").await.expect("write");
            }
        }
        socket.shutdown().await.expect("shutdown");
    }
}

#[tokio::test]
async fn http_client_handles_chunked_and_sized_bodies() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let server = tokio::spawn(serve_http(listener, 4));

    assert_eq!(http_get(&addr, "/chunked").await, (200, "Hello, chunked world\r\n\"ok\"".to_string()));
    assert_eq!(http_request(&addr, "POST", "/echo", Some(r#"{"a":1}"#)).await, (201, r#"POST application/json {"a":1}"#.to_string()));
    assert_eq!(http_request(&addr, "PUT", "/echo", Some("plain")).await, (201, "PUT text/plain; charset=utf-8 plain".to_string()));
    assert_eq!(http_get(&addr, "/missing").await, (404, "not found".to_string()));
    tokio::time::timeout(DEADLINE, server).await.expect("server task finished").expect("server task did not panic");

    // Nothing listens there any more: the fallible variant reports the error.
    let closed = free_addr();
    assert!(try_http_get(&closed, "/").await.is_err());
}

#[test]
fn chunked_decoding_rejects_truncated_bodies() {
    assert_eq!(decode_chunked(b"3\r\nabc\r\n0\r\n\r\n").unwrap(), b"abc");
    assert!(decode_chunked(b"5\r\nabc").is_err());
    assert!(decode_chunked(b"zz\r\nabc\r\n").is_err());
    let response = parse_http_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n2\r\nhi\r\n0\r\n\r\n", false).unwrap();
    assert_eq!(response.body, "hi");
    assert_eq!(response.header("x-a"), Some("b"));
}

#[tokio::test]
async fn wait_until_returns_the_first_some() {
    let calls = Arc::new(AtomicUsize::new(0));
    let value = wait_until("the third call", DEADLINE, || {
        let calls = calls.clone();
        async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            (n >= 3).then_some(n * 10)
        }
    })
    .await;
    assert_eq!(value, 30);

    let mut n = 0;
    let value = wait_until_sync("the second call", DEADLINE, || {
        n += 1;
        (n == 2).then_some("done")
    });
    assert_eq!(value, "done");
}

#[tokio::test]
#[should_panic(expected = "waiting until never")]
async fn wait_until_panics_at_the_deadline() {
    wait_until("never", Duration::from_millis(50), || async { None::<()> }).await;
}

#[test]
#[should_panic(expected = "waiting until never")]
fn wait_until_sync_panics_at_the_deadline() {
    wait_until_sync("never", Duration::from_millis(50), || None::<()>);
}

#[test]
fn child_process_wrapper_captures_output_and_signals() {
    // The wrapper around an ordinary program: output capture, SIGTERM, exit status.
    let sh = std::path::Path::new("/bin/sh");
    let mut proc = Journeyd::spawn_program(sh, &["-c", "echo ready-$GREETING; echo oops >&2; exec sleep 30"], &[("GREETING", "hi")]);
    let log = proc.wait_for_log("ready-hi", DEADLINE);
    assert!(proc.is_running());
    proc.terminate();
    let status = proc.wait_timeout(DEADLINE).expect("exits after SIGTERM");
    assert_eq!(describe_status(status), "signal 15");
    let log = format!("{log}{}", proc.log());
    assert!(log.contains("oops"), "stderr captured too: {log:?}");

    let mut quick = Journeyd::spawn_program(sh, &["-c", "exit 3"], &[]);
    let status = quick.wait_timeout(DEADLINE).expect("exits");
    assert_eq!(status.code(), Some(3));
    quick.kill(); // already exited: no-op

    // The real binary answers --help.
    let mut journeyd = Journeyd::spawn(&["--help"]);
    let status = journeyd.wait_timeout(DEADLINE).expect("journeyd --help exits");
    assert!(status.success(), "journeyd --help: {}", journeyd.log());
    assert!(!journeyd.log().is_empty());
    assert!(journeyd_bin().is_file());
}

#[test]
fn helpers_for_ports_and_files() {
    let addr = free_addr();
    let (host, port) = addr.split_once(':').expect("host:port");
    assert_eq!(host, "127.0.0.1");
    assert!(port.parse::<u16>().expect("port") > 0);

    let dir = tempdir();
    let path = write_config(dir.path(), "[nats]\nurl = \"nats://127.0.0.1:1\"\n");
    assert_eq!(path, dir.path().join("journeyd.toml"));
    assert!(std::fs::read_to_string(&path).unwrap().contains("[nats]"));
    assert_eq!(strip_ansi("\u{1b}[2mINFO\u{1b}[0m x"), "INFO x");
    assert_eq!(tail("a\nb\nc", 2), "b\nc");
    assert!(nats_server_bin().is_file());
}
