//! Where live events come from: core NATS subscriptions on `nats.subjects`,
//! or, with `nats.jetstream`, a durable JetStream pull consumer on a stream
//! over those subjects. Both hand the router plain NATS messages.
//!
//! Core NATS has no flow control: input faster than journeyd overflows the
//! subscription buffer and the client drops messages (counted and logged as a
//! slow consumer), and what is published while journeyd is down is gone. The
//! pull consumer fetches only as fast as the shards take events, and its
//! position survives a restart, so neither loses anything. Its messages are
//! acknowledged, each on its own, once the shards have applied the burst
//! they came in (not merely queued it), so that a crash leaves every applied
//! but unacknowledged event for the next run's rebuild to apply with output.

use super::forgotten::{Forget, ForgetLog};
use crate::config::{JetStreamConfig, NatsConfig};
use crate::engine::router::AppliedMark;
use anyhow::Context;
use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy};
use async_nats::{Client, Message, Subject, Subscriber};
use futures::stream::SelectAll;
use futures::{FutureExt, StreamExt};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::oneshot::error::TryRecvError;

/// Messages a pull request asks for at once, at most: pulled messages land
/// in a client subscription too, and a batch that overflowed its buffer would
/// be dropped client-side (and, with ack-all, acknowledged by a later ack).
const FETCH_BATCH: usize = 1024;
/// Delivered but unacknowledged messages the server allows the consumer.
const MAX_ACK_PENDING: i64 = 65_536;
/// How often the consumer's lag is read for `journey_consumer_lag_messages`.
const LAG_POLL: Duration = Duration::from_secs(2);

pub enum Input {
    Core(SelectAll<Subscriber>),
    JetStream(Box<JetStreamInput>),
}

pub struct JetStreamInput {
    client: Client,
    context: jetstream::Context,
    consumer: jetstream::consumer::PullConsumer,
    messages: pull::Stream,
    /// Ack subjects of the messages handed on since the last commit (at
    /// most one burst).
    unacked: Vec<Subject>,
    /// Committed bursts waiting for the shards to have applied them, oldest
    /// first (bounded by the shards' queues).
    in_flight: VecDeque<Burst>,
    /// The ack subject of the last message committed (it tells its stream
    /// sequence), if this run committed any.
    last_committed: Option<Subject>,
    /// Where the run started: the consumer's ack floor (what a rebuild went up to).
    start: u64,
    /// Where forgets are recorded, so that a rebuild makes them again, and
    /// the applied mark (see [`super::forgotten`]).
    forgets: Option<ForgetLog>,
    /// Every message delivered up to this stream sequence is applied, with
    /// its output (by the rebuild, from the last one it applied, then by this
    /// run). The server may send such a message again: what an earlier run
    /// was delivered and did not acknowledge, one whose ack was lost, or
    /// those a restarted server forgot were acknowledged. It is only
    /// acknowledged, not taken again.
    applied: u64,
    /// A burst was lost, or a delivery never reached journeyd (see
    /// [`Deliveries`]): the applied mark stays where it was.
    gap: bool,
    deliveries: Deliveries,
    /// The applied mark last recorded, and when.
    recorded: (u64, std::time::Instant),
    /// When the consumer was created (ns since the epoch), to tell its mark from another's.
    created: i128,
}

/// A message taken from the input.
pub struct Taken {
    pub msg: Message,
    /// The time (ms) its event is judged against (`max_future_skew`): the
    /// wall clock for core NATS; for JetStream, when the stream stored it (as
    /// a rebuild judges it, so that an event published while journeyd was
    /// down is not let in by the clock of its late delivery).
    pub now_ms: i64,
    /// JetStream delivered it before (its ack was lost, e.g. in a NATS
    /// server restart): as a duplicate it is not counted again.
    pub again: bool,
}

impl Input {
    /// The next message; `None` when the input has ended.
    pub async fn next(&mut self) -> Option<Taken> {
        match self {
            Input::Core(subs) => subs.next().await.map(|msg| Taken { msg, now_ms: super::nats::wall_ms(), again: false }),
            Input::JetStream(js) => js.next().await,
        }
    }

    /// A message that is already buffered, without waiting.
    pub fn try_next(&mut self) -> Option<Taken> {
        self.next().now_or_never().flatten()
    }

    /// Records that the customer of `id` was forgotten after every event
    /// taken so far, so that a later rebuild forgets it again (JetStream only:
    /// core NATS keeps no history to rebuild from).
    pub async fn record_forget(&mut self, id_type: Option<&str>, id: &str) {
        let Input::JetStream(js) = self else { return };
        let Some(log) = &js.forgets else {
            tracing::warn!(id, "forgotten, but the forget cannot be recorded: a restart will rebuild this customer from the stream");
            return;
        };
        let seq = js.last_committed.as_ref().map_or(js.start, |reply| sequence_of(&js.context, reply).unwrap_or(js.start));
        let f = Forget { seq, id_type: id_type.map(str::to_string), id: id.to_string() };
        if let Err(e) = log.record(&f).await {
            tracing::warn!(error = format!("{e:#}"), id, "forgotten, but the forget was not recorded: a restart will rebuild this customer from the stream");
        }
    }

    /// Whether [`Input::commit`] takes a mark (a JetStream input acknowledges
    /// what the shards have applied; core NATS has nothing to acknowledge).
    pub fn wants_marks(&self) -> bool {
        matches!(self, Input::JetStream(_))
    }

    /// Everything taken so far has been handed to the shards, which answer
    /// `mark` once they have applied it: it is acknowledged then. Also
    /// acknowledges earlier bursts that are applied by now.
    pub async fn commit(&mut self, mark: AppliedMark) {
        if let Input::JetStream(js) = self {
            js.commit(mark);
            js.ack_applied().await;
        }
    }

    /// Acknowledges the committed bursts the shards have applied by now.
    pub async fn ack_applied(&mut self) {
        if let Input::JetStream(js) = self {
            js.ack_applied().await;
            js.record_applied(false).await;
        }
    }

    /// Waits (at most `timeout`) for the shards to apply every committed
    /// burst, and acknowledges what they applied; the rest is left to the
    /// next run.
    pub async fn finish(&mut self, timeout: Duration) {
        let Input::JetStream(js) = self else { return };
        let wait = async {
            for burst in &mut js.in_flight {
                let mut lost = false;
                for rx in burst.mark.iter_mut() {
                    lost |= rx.await.is_err();
                }
                // Answered (a receiver that has answered reads as closed).
                burst.mark.clear();
                burst.lost |= lost;
            }
        };
        if tokio::time::timeout(timeout, wait).await.is_err() {
            tracing::warn!(
                bursts = js.in_flight.len(),
                "the shards did not apply everything in time: what they did not is left unacknowledged, for the next run"
            );
        }
        js.ack_applied().await;
        js.record_applied(true).await;
    }

    /// For a JetStream input, a task that keeps `gauge` at the consumer's lag
    /// (undelivered plus unacknowledged messages) until `stop`.
    pub fn lag_poller(&self, gauge: prometheus::IntGauge, stop: tokio_util::sync::CancellationToken) -> Option<impl std::future::Future<Output = ()>> {
        let Input::JetStream(js) = self else { return None };
        let consumer = js.consumer.clone();
        Some(async move {
            let mut every = tokio::time::interval(LAG_POLL);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = every.tick() => {}
                }
                match consumer.get_info().await {
                    Ok(info) => gauge.set(i64::try_from(info.num_pending.saturating_add(info.num_ack_pending as u64)).unwrap_or(i64::MAX)),
                    Err(e) => tracing::debug!(error = %e, "cannot read the JetStream consumer's lag"),
                }
            }
        })
    }

    /// Stops taking input. Core subscriptions are drained (what the client
    /// already holds is returned, to be applied); a JetStream consumer keeps
    /// what it did not deliver for the next run.
    ///
    /// The client's own drain drops a subscription one poll after sending its
    /// unsubscribe, without waiting for the server, so messages the server
    /// routed before the unsubscribe are lost if they are still on the wire.
    /// A round trip first puts every message routed before the stop in the
    /// client's buffers.
    pub async fn stop(&mut self, client: &Client, deadline: tokio::time::Instant) -> Vec<Message> {
        let Input::Core(subs) = self else { return Vec::new() };
        if !super::nats::connected(client) {
            // No server to drain through: what the client holds is all there is.
            tracing::warn!("NATS is not connected: applying what the client holds; messages on their way to journeyd are lost");
            return std::iter::from_fn(|| subs.next().now_or_never().flatten()).collect();
        }
        if let Err(e) = super::nats::round_trip(client, deadline.saturating_duration_since(tokio::time::Instant::now())).await {
            tracing::warn!(error = format!("{e:#}"), "no round trip through NATS before the drain; messages still on the wire may be lost");
        }
        for s in subs.iter_mut() {
            match tokio::time::timeout_at(deadline, s.drain()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot drain subscription"),
                Err(_) => tracing::warn!("NATS did not take the unsubscribe in time"),
            }
        }
        let mut rest = Vec::new();
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, subs.next()).await {
            rest.push(msg);
        }
        rest
    }
}

/// Core subscriptions on every subject.
pub async fn subscribe(client: &Client, subjects: &[String]) -> anyhow::Result<Input> {
    let mut all = SelectAll::new();
    for s in subjects {
        all.push(client.subscribe(s.clone()).await.with_context(|| format!("subscribing to {s}"))?);
    }
    Ok(Input::Core(all))
}

/// When the stream stored a message (ms): the time its event is judged against.
pub fn stored_ms(info: &jetstream::message::Info<'_>) -> i64 {
    (info.published.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The stream sequence in a JetStream ack subject.
fn sequence_of(context: &jetstream::Context, reply: &Subject) -> Option<u64> {
    let message = async_nats::Message {
        subject: Subject::from_static(""),
        reply: Some(reply.clone()),
        payload: Default::default(),
        headers: None,
        status: None,
        description: None,
        length: 0,
    };
    jetstream::Message { message, context: context.clone() }.info().ok().map(|i| i.stream_sequence)
}

/// The durable pull consumer `js.consumer` on stream `js.stream` (the stream
/// is created over `nats.subjects` if it does not exist; a new consumer
/// starts at the stream's first message).
pub async fn consume(client: &Client, nats: &NatsConfig, js: &JetStreamConfig, rebuilt_through: u64) -> anyhow::Result<Input> {
    let context = jetstream::new(client.clone());
    let stream = context
        .get_or_create_stream(jetstream::stream::Config { name: js.stream.clone(), subjects: nats.subjects.clone(), ..Default::default() })
        .await
        .with_context(|| format!("opening JetStream stream {}", js.stream))?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            &js.consumer,
            pull::Config {
                durable_name: Some(js.consumer.clone()),
                filter_subjects: nats.subjects.clone(),
                ack_policy: AckPolicy::Explicit,
                max_ack_pending: MAX_ACK_PENDING,
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("opening JetStream consumer {} on stream {}", js.consumer, js.stream))?;
    if consumer.cached_info().config.ack_policy != AckPolicy::Explicit {
        tracing::warn!(consumer = %js.consumer, "the JetStream consumer does not acknowledge explicitly: events delivered to a stopped run can be acknowledged unapplied; delete it so that journeyd creates it anew");
    }
    let messages = consumer
        .clone()
        .stream()
        .max_messages_per_batch(FETCH_BATCH.min(nats.subscription_capacity / 2).max(1))
        .messages()
        .await
        .with_context(|| format!("pulling from JetStream consumer {}", js.consumer))?;
    let forgets = match ForgetLog::open(&context, js).await {
        Ok(log) => Some(log),
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "forgets cannot be recorded: a restart would rebuild forgotten customers from the stream");
            None
        }
    };
    tracing::info!(stream = %js.stream, consumer = %js.consumer, "consuming from JetStream");
    let info = consumer.cached_info();
    let (start, created, delivered) = (info.ack_floor.stream_sequence, info.created.unix_timestamp_nanos(), info.delivered.consumer_sequence);
    let mut input = Box::new(JetStreamInput {
        client: client.clone(),
        context,
        consumer,
        messages,
        unacked: Vec::new(),
        in_flight: VecDeque::new(),
        last_committed: None,
        start,
        forgets,
        applied: start.max(rebuilt_through),
        gap: false,
        deliveries: Deliveries { last: delivered, lost: false },
        recorded: (start, std::time::Instant::now()),
        created,
    });
    // What the rebuild applied past the ack floor is not to be published again.
    input.record_applied(true).await;
    Ok(Input::JetStream(input))
}

impl JetStreamInput {
    /// Acknowledges one message (by its reply subject), without waiting for the server.
    async fn ack(&self, reply: Subject) -> Result<(), async_nats::PublishError> {
        self.client.publish(reply, bytes::Bytes::from_static(b"+ACK")).await
    }

    /// The next message, judged by when the stream stored it.
    async fn next(&mut self) -> Option<Taken> {
        loop {
            match self.messages.next().await? {
                Ok(m) => {
                    let info = m.info().ok();
                    if let Some(i) = &info {
                        if self.deliveries.saw(i.consumer_sequence) {
                            self.gap = true;
                            tracing::warn!(
                                "a JetStream delivery did not reach journeyd (lost in a reconnection?): the server sends it again after its ack wait; \
                                 until then a restart publishes again what this run applied"
                            );
                        }
                    }
                    let info = info.map(|i| (i.stream_sequence, stored_ms(&i), i.delivered > 1));
                    if let (Some((seq, _, _)), Some(reply)) = (info, &m.message.reply) {
                        if seq <= self.applied {
                            // Applied, with its output, by the rebuild or by this run
                            // (sent again: its ack was lost, or a restarted server lost
                            // the consumer's latest state): only the ack is owed.
                            if let Err(e) = self.ack(reply.clone()).await {
                                tracing::warn!(error = %e, "cannot acknowledge a JetStream message already applied; it will be sent again and skipped");
                            }
                            continue;
                        }
                    }
                    let (now_ms, again) = info.map_or_else(|| (super::nats::wall_ms(), false), |(_, stored, again)| (stored, again));
                    self.unacked.extend(m.message.reply.clone());
                    return Some(Taken { msg: m.message, now_ms, again });
                }
                // Heartbeats missed during a reconnect and the like: the
                // stream recovers by itself; back off so as not to spin.
                Err(e) => {
                    tracing::warn!(error = %e, "JetStream pull error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn commit(&mut self, mark: AppliedMark) {
        if let Some(last) = self.unacked.last() {
            self.last_committed = Some(last.clone());
            self.in_flight.push_back(Burst { mark, acks: std::mem::take(&mut self.unacked), lost: false });
        }
    }

    /// Acknowledges, in order, the bursts whose shards have all answered;
    /// each message on its own: an ack-all would also acknowledge messages a
    /// previous run was delivered and never applied.
    async fn ack_applied(&mut self) {
        while let Some(burst) = self.in_flight.front_mut() {
            burst.mark.retain_mut(|rx| match rx.try_recv() {
                Ok(()) => false,
                Err(TryRecvError::Closed) => {
                    burst.lost = true;
                    false
                }
                Err(TryRecvError::Empty) => true,
            });
            if !burst.mark.is_empty() {
                return;
            }
            let Some(burst) = self.in_flight.pop_front() else { return };
            if burst.lost {
                tracing::error!(messages = burst.acks.len(), "a shard worker is gone: its messages are left unacknowledged, for the next run");
                self.gap = true;
                continue;
            }
            if !self.gap {
                // Delivered in stream order (what is sent again is below the mark already).
                let last = burst.acks.last().and_then(|reply| sequence_of(&self.context, reply));
                self.applied = self.applied.max(last.unwrap_or(0));
            }
            for reply in burst.acks {
                if let Err(e) = self.ack(reply).await {
                    tracing::warn!(error = %e, "cannot acknowledge a JetStream message; it will be redelivered and deduplicated");
                }
            }
        }
    }

    /// Records the applied mark if it moved, at most once a second unless `now`.
    async fn record_applied(&mut self, now: bool) {
        let (mark, at) = self.recorded;
        if self.applied <= mark || !(now || at.elapsed() >= RECORD_APPLIED) {
            return;
        }
        // Not while disconnected: the consuming loop would wait for nothing.
        let Some(log) = self.forgets.as_ref().filter(|_| super::nats::connected(&self.client)) else { return };
        match tokio::time::timeout(RECORD_APPLIED, log.record_applied(self.applied, self.created)).await {
            Ok(Ok(())) => self.recorded = (self.applied, std::time::Instant::now()),
            Ok(Err(e)) => tracing::warn!(error = format!("{e:#}"), "a restart may publish again the output of what this run applied"),
            Err(_) => tracing::warn!("NATS did not store the applied mark in time: a restart may publish again the output of what this run applied"),
        }
    }
}

/// The consumer's delivery sequence as journeyd sees it: it counts every
/// delivery, so a number skipped is a message delivered on the way to
/// journeyd and lost (e.g. with the connection). The applied mark must not
/// pass such a message, which the server sends again only after its ack wait.
struct Deliveries {
    last: u64,
    lost: bool,
}

impl Deliveries {
    /// Notes delivery `seq`; true the first time one is found missing.
    fn saw(&mut self, seq: u64) -> bool {
        let skipped = seq > self.last + 1 && !self.lost;
        self.lost |= skipped;
        self.last = self.last.max(seq);
        skipped
    }
}

/// How often the applied mark is recorded, at most (and how long that may take).
const RECORD_APPLIED: Duration = Duration::from_secs(1);

/// Messages handed to the shards in one go, acknowledged once they are applied.
struct Burst {
    mark: AppliedMark,
    acks: Vec<Subject>,
    /// A shard went away before it answered.
    lost: bool,
}

#[cfg(test)]
mod tests {
    use super::Deliveries;

    #[test]
    fn a_skipped_delivery_is_found_and_redeliveries_are_not_gaps() {
        let mut d = Deliveries { last: 10, lost: false };
        assert!(!d.saw(11) && !d.saw(12));
        assert!(!d.saw(5), "an older delivery sent again");
        assert!(d.saw(14), "13 never arrived");
        assert!(!d.saw(16), "told once");
    }
}
