//! Rebuilding customer state on start, from the JetStream stream itself.
//!
//! journeyd keeps its state in memory. With `nats.jetstream` the stream holds
//! every event the durable consumer was ever delivered, so a restarted
//! journeyd replays them in stream order (sequence 1 up to the last one
//! delivered, through an ordered consumer with the durable's filter) before
//! it resumes the durable consumer: identity links, stages, count windows,
//! funnels, segments, trigger caps and timers come back as they were.
//!
//! - Up to the consumer's ack floor, every event was applied and published by
//!   an earlier run: the shards' output is muted.
//! - Past it, an earlier run was delivered the event but may not have taken
//!   it (stopped or killed with it in its buffer; the server would send it
//!   again only after the ack wait, behind newer events, and it would then be
//!   late). Those are applied now, in stream order, with their output
//!   published: at least once (one that was applied and acknowledged out of
//!   order is published again). When the server sends them again, the live
//!   input acknowledges them without taking them again (so no duplicate is
//!   counted and no refusal published twice).
//! - An event is judged against the time the stream stored it (for
//!   `max_future_skew`), not the clock of the restart.
//! - Everything is counted in the metrics as any event is, so counters go on
//!   from where the last run left them (`/metrics` answers 503 until the
//!   rebuild is done, so that Prometheus never scrapes them half-way and
//!   takes that for a counter reset).
//! - Customers forgotten by an earlier run are forgotten again where they were
//!   ([`super::forgotten`]).

use super::forgotten::{Forget, ForgetLog};
use crate::config::{JetStreamConfig, NatsConfig};
use crate::engine::Router;
use anyhow::Context;
use async_nats::jetstream::{self, consumer::pull, consumer::DeliverPolicy};
use async_nats::Client;
use futures::StreamExt;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A stream that delivers nothing for this long has nothing more to give.
const STALL: Duration = Duration::from_secs(10);
/// How often a long rebuild logs its progress.
const PROGRESS: Duration = Duration::from_secs(5);

/// What a rebuild replayed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// Messages replayed.
    pub events: u64,
    /// The stream sequence the rebuild went up to (the last delivered).
    pub through: u64,
    /// Of `events`, those past the consumer's ack floor (applied with output).
    pub unacknowledged: u64,
    /// The stream sequence of the last event replayed (0: none).
    pub applied_through: u64,
    /// Recorded forgets made again.
    pub forgets: u64,
}

/// Replays what the durable consumer `js.consumer` was delivered (see the
/// module doc), unless there is nothing (no stream, no consumer, nothing
/// delivered). Returns early, with what it replayed so far, if `shutdown` is
/// cancelled.
pub async fn rebuild(
    client: &Client,
    nats: &NatsConfig,
    js: &JetStreamConfig,
    router: &mut Router,
    shutdown: &CancellationToken,
    burst: usize,
) -> anyhow::Result<Rebuilt> {
    let context = jetstream::new(client.clone());
    let Ok(stream) = context.get_stream(&js.stream).await else {
        return Ok(Rebuilt::default());
    };
    let Ok(mut durable) = stream.get_consumer::<pull::Config>(&js.consumer).await else {
        return Ok(Rebuilt::default());
    };
    let info = durable.info().await.with_context(|| format!("reading JetStream consumer {}", js.consumer))?.clone();
    let (acknowledged, through) = (info.ack_floor.stream_sequence, info.delivered.stream_sequence);
    if through == 0 {
        return Ok(Rebuilt::default());
    }
    let first = stream.cached_info().state.first_sequence;
    if first > through {
        tracing::warn!(stream = %js.stream, first, through, "the stream no longer holds the events the consumer was delivered (its limits removed them): customers start afresh");
        return Ok(Rebuilt::default());
    }
    if first > 1 {
        tracing::warn!(stream = %js.stream, first, "the stream's limits removed its first events: customers are rebuilt from what it still holds");
    }
    let filter_subjects = match (&info.config.filter_subjects, &info.config.filter_subject) {
        (many, _) if !many.is_empty() => many.clone(),
        (_, one) if !one.is_empty() => vec![one.clone()],
        _ => nats.subjects.clone(),
    };
    let mut messages = stream
        .create_consumer(pull::OrderedConfig { filter_subjects, deliver_policy: DeliverPolicy::All, ..Default::default() })
        .await
        .context("creating an ordered consumer to rebuild from")?
        .messages()
        .await
        .context("reading the stream to rebuild from")?;
    let log = ForgetLog::existing(&context, js).await;
    let forgets = match &log {
        Some(log) => log.all().await.context("reading the recorded forgets")?,
        None => Vec::new(),
    };
    // Applied, with output, by an earlier run even where not acknowledged yet.
    let created = info.created.unix_timestamp_nanos();
    let applied = match &log {
        Some(log) => log.applied(created).await.unwrap_or(0).min(through),
        None => 0,
    };
    let acknowledged = acknowledged.max(applied);
    tracing::info!(stream = %js.stream, consumer = %js.consumer, acknowledged, through, forgets = forgets.len(), "rebuilding customer state from the stream");
    let started = Instant::now();
    let mut progress = started;
    let mut muted = acknowledged > 0;
    if muted {
        router.mute(true).await;
    }
    let mut done = Rebuilt { events: 0, through, unacknowledged: 0, applied_through: 0, forgets: 0 };
    let mut forgets = forgets.into_iter().peekable();
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = tokio::time::timeout(STALL, messages.next()) => next,
        };
        let m = match next {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => {
                // The ordered consumer recreates itself after a gap or a reconnect.
                tracing::warn!(error = %e, "error while reading the stream to rebuild from");
                continue;
            }
            Ok(None) => break,
            Err(_) => {
                tracing::warn!(
                    through,
                    replayed = done.events,
                    "the stream delivered nothing for {STALL:?}: rebuild ends short of what the consumer was delivered"
                );
                break;
            }
        };
        let (seq, pending, stored_ms) = match m.info() {
            Ok(i) => (i.stream_sequence, i.pending, super::input::stored_ms(&i)),
            Err(e) => anyhow::bail!("a replayed message has no JetStream metadata: {e}"),
        };
        if seq > through {
            break;
        }
        // Forgets made after the messages before this one.
        while let Some(f) = forgets.next_if(|f| f.seq < seq) {
            forget(router, &f, &mut done).await;
        }
        if muted && seq > acknowledged {
            router.mute(false).await;
            muted = false;
        }
        if muted {
            // Refused and late inputs went aside when first taken; only the router's state matters now.
            let _ = router.ingest(&m.message.payload, Some(m.message.subject.as_str()), Instant::now(), stored_ms).await;
        } else {
            super::nats::handle(client, router, super::input::Taken { msg: m.message, now_ms: stored_ms, again: false }).await;
            done.unacknowledged += 1;
        }
        done.events += 1;
        done.applied_through = seq;
        if done.events.is_multiple_of(burst as u64) {
            router.flush().await;
            if progress.elapsed() >= PROGRESS {
                progress = Instant::now();
                tracing::info!(replayed = done.events, at = seq, through, "rebuilding");
            }
        }
        if seq >= through || pending == 0 {
            break;
        }
    }
    // The rest were made after the last message replayed.
    for f in forgets {
        forget(router, &f, &mut done).await;
    }
    if muted {
        router.mute(false).await;
    }
    router.barrier().await;
    if shutdown.is_cancelled() {
        tracing::info!(replayed = done.events, through, "rebuild interrupted by the shutdown");
        return Ok(done);
    }
    tracing::info!(
        replayed = done.events,
        unacknowledged = done.unacknowledged,
        through,
        forgets = done.forgets,
        seconds = started.elapsed().as_secs_f64(),
        "customer state rebuilt"
    );
    Ok(done)
}

/// Forgets again a customer an earlier run forgot (if the id names one by now).
async fn forget(router: &mut Router, f: &Forget, done: &mut Rebuilt) {
    // The shard's reply (what was removed) is of no use here.
    if router.forget(f.id_type.as_deref(), &f.id).await.is_some() {
        done.forgets += 1;
    }
}
