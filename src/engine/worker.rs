//! The shard worker task: receives batches of ops, applies them to its shard
//! in order, publishes what each event produced as soon as it is applied, and
//! records latency. Inside a batch it waits only for room in the NATS
//! client's buffer and for a cross-shard merge's hand-over.

use super::ops::Op;
use super::shard::Shard;
use crate::emit::Outbound;
use crate::metrics::latency::Recorder;
use std::time::Instant;
use tokio::sync::mpsc;

/// How long a stopping worker waits for NATS to confirm its last output.
const FINAL_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

/// Where a shard's output goes.
#[derive(Clone)]
pub enum Sink {
    Nats(async_nats::Client),
    /// Replay without publishing, benchmarks.
    Discard,
}

impl Sink {
    pub async fn publish(&self, out: &mut Vec<Outbound>) {
        match self {
            Sink::Nats(client) => {
                for o in out.drain(..) {
                    let bytes = o.payload.len();
                    if let Err(e) = client.publish(o.subject, o.payload).await {
                        // Closed client, or a message over the server's max_payload.
                        tracing::error!(error = %e, bytes, "cannot publish");
                    }
                }
            }
            Sink::Discard => out.clear(),
        }
    }

    pub async fn flush(&self) {
        if let Sink::Nats(client) = self {
            if let Err(e) = client.flush().await {
                tracing::warn!(error = %e, "NATS flush failed");
            }
        }
    }

    /// The last flush of a stopping worker.
    async fn final_flush(&self) {
        if let Sink::Nats(client) = self {
            final_flush(client).await;
        }
    }
}

/// Flushes `client` one last time before journeyd stops, bounded (to
/// [`FINAL_FLUSH`]) since a flush waits for the server and the server may
/// be gone.
pub async fn final_flush(client: &async_nats::Client) {
    if !crate::ingest::nats::connected(client) {
        tracing::error!("NATS is not connected: output not yet written to it is lost");
        return;
    }
    match tokio::time::timeout(FINAL_FLUSH, client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "final NATS flush failed"),
        Err(_) => tracing::error!(timeout = ?FINAL_FLUSH, "NATS did not confirm the final flush; the last output may be lost"),
    }
}

/// What a shard reports when its queue closes.
#[derive(Debug, Clone, Copy)]
pub struct ShardReport {
    pub index: usize,
    pub customers: usize,
    pub pending_timers: usize,
}

pub async fn run(mut shard: Shard, mut rx: mpsc::Receiver<Vec<Op>>, sink: Sink, engine_lat: Recorder, e2e_lat: Recorder) -> ShardReport {
    let mut engine_ns: Vec<u64> = Vec::new();
    let mut e2e: Vec<u64> = Vec::new();
    let mut barriers = Vec::new();
    let depth = shard.metrics.shared.queue_depth.with_label_values(&[&shard.index.to_string()]);
    while let Some(batch) = rx.recv().await {
        depth.set(rx.len() as i64);
        let mut ops = batch.into_iter();
        while let Some(op) = ops.next() {
            // Customers live all over memory: start loading those of the
            // events ahead while this op is applied.
            let ahead = ops.as_slice();
            shard.prefetch_ahead(|n| match ahead.get(n) {
                Some(Op::Event(e)) => Some(e.key),
                _ => None,
            });
            match op {
                Op::Event(ev) => {
                    // An event's output goes out as soon as it is applied,
                    // not at the end of the batch.
                    let start = Instant::now();
                    shard.apply_event(&ev);
                    let mut done = Instant::now();
                    let engine = done.duration_since(start);
                    if !shard.out.messages.is_empty() {
                        sink.publish(&mut shard.out.messages).await;
                        done = Instant::now();
                    }
                    let end_to_end = done.duration_since(ev.received);
                    shard.metrics.observe(engine.as_secs_f64(), end_to_end.as_secs_f64());
                    engine_ns.push(engine.as_nanos() as u64);
                    e2e.push(end_to_end.as_nanos() as u64);
                }
                Op::Evict { key, watermark, to } => {
                    let evicted = shard.evict(key, watermark).map(Box::new);
                    // What its due timers published goes out before the
                    // survivor's shard, woken by the hand-over, publishes the
                    // merge: the customer's output stays in order.
                    sink.publish(&mut shard.out.messages).await;
                    let _ = to.send(evicted);
                }
                Op::Absorb { into, from, cause } => {
                    // The other shard replies in its queue order; a dropped
                    // sender means that customer was already gone.
                    if let Ok(Some(other)) = from.await {
                        shard.merge(into, *other, &cause);
                    }
                }
                Op::MergeLocal { into, from, cause } => {
                    if let Some(other) = shard.evict(from, cause.watermark) {
                        shard.merge(into, other, &cause);
                    }
                }
                Op::Tick { watermark } => shard.advance(watermark),
                Op::Query { key, reply } => {
                    let _ = reply.send(shard.view(key));
                }
                Op::Forget { key, reply } => {
                    let _ = reply.send(shard.forget(key));
                }
                Op::Barrier(tx) => barriers.push(tx),
                Op::Applied(tx) => {
                    sink.publish(&mut shard.out.messages).await;
                    let _ = tx.send(());
                }
                Op::Mute(on) => shard.mute(on),
            }
        }
        sink.publish(&mut shard.out.messages).await;
        if !e2e.is_empty() {
            e2e_lat.record_all(&e2e);
            engine_lat.record_all(&engine_ns);
            e2e.clear();
            engine_ns.clear();
        }
        shard.metrics.flush();
        if !barriers.is_empty() {
            sink.flush().await;
            for b in barriers.drain(..) {
                let _ = b.send(());
            }
        }
    }
    sink.publish(&mut shard.out.messages).await;
    sink.final_flush().await;
    shard.metrics.flush();
    ShardReport { index: shard.index, customers: shard.customers(), pending_timers: shard.pending_timers() }
}
