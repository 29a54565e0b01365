//! The live input: NATS subscriptions on the configured subjects feeding the
//! router, plus the control requests (queries, forget) that must be ordered
//! with events. Bad input goes to `journey.dlq`, late input to `journey.late`,
//! each with the original bytes and a `Journey-Reason` header.

use super::input::{Input, Taken};
use crate::catalog::IdTypeId;
use crate::config::NatsConfig;
use crate::emit::{DETAIL_HEADER, DLQ_SUBJECT, LATE_SUBJECT, REASON_HEADER, TRUNCATED_HEADER};
use crate::engine::{CustomerView, Outcome, Router};
use crate::metrics::Metrics;
use anyhow::Context;
use async_nats::{Client, HeaderMap};
use futures::{FutureExt, StreamExt};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub type ForgetReply = Option<crate::engine::customer::Forgotten>;

/// Requests that go through the router so they are ordered with events.
pub enum Control {
    Query { id_type: Option<String>, id: String, reply: oneshot::Sender<Option<oneshot::Receiver<Option<CustomerView>>>> },
    Forget { id_type: Option<String>, id: String, reply: oneshot::Sender<Option<oneshot::Receiver<ForgetReply>>> },
    Purge(Vec<(IdTypeId, Box<str>)>),
}

pub fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The `event` label of a connection event (one of [`crate::metrics::NATS_EVENTS`]).
fn event_label(event: &async_nats::Event) -> &'static str {
    match event {
        async_nats::Event::Connected => "connected",
        async_nats::Event::Disconnected => "disconnected",
        async_nats::Event::LameDuckMode => "lame_duck",
        async_nats::Event::Draining => "draining",
        async_nats::Event::Closed => "closed",
        async_nats::Event::SlowConsumer(_) => "slow_consumer",
        async_nats::Event::ServerError(_) => "server_error",
        async_nats::Event::ClientError(_) => "client_error",
    }
}

/// Connects with the configured auth; the client reconnects by itself and
/// every connection event is logged and counted.
pub async fn connect(cfg: &NatsConfig, metrics: Arc<Metrics>) -> anyhow::Result<Client> {
    let mut opts =
        async_nats::ConnectOptions::new().name("journeyd").subscription_capacity(cfg.subscription_capacity).max_reconnects(None).event_callback(move |event| {
            let metrics = metrics.clone();
            async move {
                metrics.nats_events.with_label_values(&[event_label(&event)]).inc();
                match event {
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    // Expected once journeyd has drained and dropped its client.
                    async_nats::Event::Closed => tracing::info!("NATS connection closed"),
                    async_nats::Event::SlowConsumer(sid) => {
                        tracing::error!(sid, "NATS slow consumer: the subscription buffer was full and the client dropped messages; raise nats.subscription_capacity or add cores")
                    }
                    other => tracing::warn!(event = %other, "NATS connection event"),
                }
            }
        });
    if let (Some(u), Some(p)) = (&cfg.user, &cfg.password) {
        opts = opts.user_and_password(u.clone(), p.clone());
    }
    if let Some(t) = &cfg.token {
        opts = opts.token(t.clone());
    }
    if let Some(c) = &cfg.credentials {
        opts = opts.credentials_file(c).await.with_context(|| format!("reading the NATS credentials file {c} (nats.credentials)"))?;
    }
    let mut delay = Duration::from_millis(100);
    loop {
        match opts.clone().connect(cfg.url.as_str()).await {
            Ok(c) => return Ok(c),
            // A host name not resolvable yet (a service starting beside journeyd) is waited for too.
            Err(e) if matches!(e.kind(), async_nats::ConnectErrorKind::Io | async_nats::ConnectErrorKind::TimedOut | async_nats::ConnectErrorKind::Dns) => {
                tracing::warn!(url = %cfg.url, error = %e, "NATS not reachable yet; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to NATS at {}", cfg.url)),
        }
    }
}

/// A round trip through the server on `client`'s connection. The server
/// handles one connection's commands in order and sends it its messages in
/// order, so once a message to a fresh inbox comes back, every command sent
/// before it is in place (a SUB: another connection's events find the
/// subscriber) and every message routed to the client before it has
/// arrived. `Client::flush` only writes the client's buffer to the socket.
pub async fn round_trip(client: &Client, timeout: Duration) -> anyhow::Result<()> {
    // Every step waits for the server (a flush, while disconnected, for the reconnection).
    tokio::time::timeout(timeout, probe_once(client)).await.with_context(|| format!("NATS did not return the probe within {timeout:?}"))?
}

/// Whether `client` has a live connection (not reconnecting).
pub fn connected(client: &Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

async fn probe_once(client: &Client) -> anyhow::Result<()> {
    let inbox = client.new_inbox();
    let mut probe = client.subscribe(inbox.clone()).await.context("subscribing to a probe inbox")?;
    client.publish(inbox, bytes::Bytes::new()).await.context("publishing the probe")?;
    client.flush().await.context("flushing to NATS")?;
    probe.next().await.context("the probe subscription closed")?;
    probe.unsubscribe().await.context("unsubscribing the probe inbox")?;
    Ok(())
}

/// Publishes a refused or late input with its reason. A header value cannot
/// hold a line break, and a detail quotes the input: line breaks become
/// spaces. When the input is so close to the server's `max_payload` that the
/// detail headers do not fit, it goes with its reason alone; when not even
/// that fits, its bytes are cut to fit and `Journey-Truncated` gives their
/// full length (rather than the server refusing the message).
async fn publish_aside(client: &Client, subject: &'static str, reason: &str, detail: Option<&str>, source: &str, mut payload: bytes::Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(REASON_HEADER, reason);
    let reason_only = headers.clone();
    if let Some(d) = detail {
        headers.insert(DETAIL_HEADER, header_safe(d).as_ref());
    }
    headers.insert("Journey-Subject", header_safe(source).as_ref());
    let max_payload = client.server_info().max_payload;
    let fits = |h: &HeaderMap| payload.len() + header_bytes(h) <= max_payload;
    let headers = if fits(&headers) {
        headers
    } else if fits(&reason_only) {
        reason_only
    } else {
        let mut cut = reason_only;
        cut.insert(TRUNCATED_HEADER, payload.len().to_string().as_str());
        payload.truncate(max_payload.saturating_sub(header_bytes(&cut)));
        cut
    };
    if let Err(e) = client.publish_with_headers(subject, headers, payload).await {
        tracing::error!(error = %e, subject, "cannot publish aside");
    }
}

/// `s` without line breaks (which a header value cannot hold).
fn header_safe(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\r', '\n']) {
        s.replace(['\r', '\n'], " ").into()
    } else {
        s.into()
    }
}

/// The size of a header block on the wire: `NATS/1.0\r\n`, `name: value\r\n` each, `\r\n`.
fn header_bytes(h: &HeaderMap) -> usize {
    10 + h.iter().map(|(name, values)| values.iter().map(|v| AsRef::<str>::as_ref(name).len() + 2 + v.as_str().len() + 2).sum::<usize>()).sum::<usize>() + 2
}

/// Takes one input: applies it, or publishes it aside (DLQ, late). `now_ms`
/// is the wall clock it is judged against (`max_future_skew`).
pub(crate) async fn handle(client: &Client, router: &mut Router, taken: Taken) {
    let Taken { msg, now_ms, again } = taken;
    let received = Instant::now();
    match router.ingest_delivered(&msg.payload, Some(msg.subject.as_str()), received, now_ms, again).await {
        Outcome::Accepted | Outcome::Duplicate => {}
        Outcome::Rejected(r) => {
            tracing::debug!(reason = r.reason.as_str(), detail = %r.detail, subject = %msg.subject, "event refused to the DLQ");
            publish_aside(client, DLQ_SUBJECT, r.reason.as_str(), Some(&r.detail), msg.subject.as_str(), msg.payload).await;
        }
        Outcome::Late => {
            publish_aside(client, LATE_SUBJECT, "late", None, msg.subject.as_str(), msg.payload).await;
        }
    }
}

async fn control(router: &mut Router, input: &mut Input, c: Control) {
    match c {
        Control::Query { id_type, id, reply } => {
            let _ = reply.send(router.query(id_type.as_deref(), &id).await);
        }
        Control::Forget { id_type, id, reply } => {
            let forgotten = router.forget(id_type.as_deref(), &id).await;
            if forgotten.is_some() {
                input.record_forget(id_type.as_deref(), &id).await;
            }
            let _ = reply.send(forgotten);
        }
        Control::Purge(ids) => router.purge(&ids),
    }
}

/// Consumes until `shutdown`, then drains: stops the input, applies what the
/// client had buffered, and flushes the router.
pub async fn run(client: &Client, router: &mut Router, mut input: Input, mut control_rx: mpsc::Receiver<Control>, shutdown: CancellationToken, burst: usize) {
    let period = (router.idle_timeout() / 2).clamp(Duration::from_millis(10), Duration::from_millis(200));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(c) = control_rx.recv() => control(router, &mut input, c).await,
            msg = input.next() => {
                let Some(msg) = msg else { break };
                let taken = async {
                    handle(client, router, msg).await;
                    // Take what is already buffered, without waiting, then flush partial batches.
                    for _ in 1..burst {
                        match input.try_next() {
                            Some(m) => handle(client, router, m).await,
                            None => break,
                        }
                    }
                    commit(router, &mut input).await;
                    // Input that never runs dry keeps the (biased) select from
                    // reaching the ticker: if all of it is refused, late or
                    // duplicate, the idle clock must still move the watermark,
                    // so a tick that is due is taken here too.
                    if ticker.tick().now_or_never().is_some() {
                        tick(router, &mut input).await;
                    }
                };
                // A burst waits for room in the shards' queues, and they for
                // the NATS client to take their output: with the connection
                // lost and the client's queue full, that lasts until NATS is
                // back. A signal then ends the burst where it is. (The burst
                // first: one that finishes at once never looks at the signal.)
                tokio::select! {
                    biased;
                    _ = taken => {}
                    _ = stuck(client, &shutdown) => {
                        tracing::error!("stopping with the NATS connection lost and output waiting for it: the rest of this burst is not applied");
                        break;
                    }
                }
            }
            _ = ticker.tick() => tick(router, &mut input).await,
        }
    }
    tracing::info!("draining the input");
    let drain = async {
        for msg in input.stop(client, tokio::time::Instant::now() + Duration::from_secs(10)).await {
            handle(client, router, Taken { msg, now_ms: wall_ms(), again: false }).await;
        }
        commit(router, &mut input).await;
        input.finish(Duration::from_secs(10)).await;
    };
    if tokio::time::timeout(DRAIN, drain).await.is_err() {
        tracing::error!(timeout = ?DRAIN, "the drain did not finish (is NATS reachable?): what it had not applied is lost");
    }
}

/// The longest the drain after a signal may take.
const DRAIN: Duration = Duration::from_secs(30);

/// Resolves once `shutdown` is cancelled while the NATS connection is lost.
async fn stuck(client: &Client, shutdown: &CancellationToken) {
    shutdown.cancelled().await;
    while connected(client) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The periodic work of the consuming loop: the idle clock, and the acks of
/// what the shards have applied.
async fn tick(router: &mut Router, input: &mut Input) {
    router.on_idle(Instant::now(), wall_ms()).await;
    input.ack_applied().await;
}

/// Ends a burst: sends the partial batches and hands what was taken to the
/// input, to acknowledge once the shards have applied it.
async fn commit(router: &mut Router, input: &mut Input) {
    if input.wants_marks() {
        let mark = router.applied_mark().await;
        input.commit(mark).await;
    } else {
        router.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::{ClientError, Event, ServerError};

    #[test]
    fn every_connection_event_has_a_label_exported_from_start_up() {
        let events = [
            Event::Connected,
            Event::Disconnected,
            Event::LameDuckMode,
            Event::Draining,
            Event::Closed,
            Event::SlowConsumer(1),
            Event::ServerError(ServerError::AuthorizationViolation),
            Event::ClientError(ClientError::MaxReconnects),
        ];
        let labels: Vec<&str> = events.iter().map(event_label).collect();
        assert_eq!(labels, crate::metrics::NATS_EVENTS);
    }
}
