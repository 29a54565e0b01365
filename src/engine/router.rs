//! The router: the single task between input and shards. For each input it
//! decodes and validates, drops duplicates, detects late events, resolves the
//! ONE_ID, advances the global watermark and appends the event to its
//! shard's batch. It owns the dedup window, the identity index and the
//! watermark, so none of them needs a lock.

use super::customer::{CustomerView, Forgotten};
use super::ops::{CustomerReply, EventId, EventOp, MergeCause, Op};
use super::watermark::Watermark;
use crate::catalog::IdTypeId;
use crate::event::{decode, BlockedIds, DecodeContext, Rejection};
use crate::identity::{CustomerKey, Resolver};
use crate::ingest::dedup::Dedup;
use crate::metrics::latency::Recorder;
use crate::metrics::{Metrics, Stage};
use crate::model::{Plan, Touch};
use prometheus::local::LocalHistogram;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// What became of one input.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Accepted,
    Rejected(Rejection),
    Duplicate,
    Late,
}

pub struct Router {
    plan: Arc<Plan>,
    metrics: Arc<Metrics>,
    resolver: Resolver,
    dedup: Dedup,
    watermark: Watermark,
    blocked: BlockedIds,
    senders: Vec<mpsc::Sender<Vec<Op>>>,
    pending: Vec<Vec<Op>>,
    /// The watermark each shard has been handed last.
    handed: Vec<i64>,
    batch_size: usize,
    /// Live: when the oldest event of a shard's batch was taken in.
    batch_since: Vec<Option<Instant>>,
    /// Live: a batch is sent once its oldest event has waited this long, full or not.
    max_hold: Option<std::time::Duration>,
    /// Per shard: batches were sent since the last [`Router::applied_mark`].
    unmarked: Vec<bool>,
    decode_hist: LocalHistogram,
    decode_lat: Recorder,
    decode_samples: Vec<u64>,
    last_accepted: Instant,
}

/// One receiver per shard that had work: see [`Router::applied_mark`].
pub type AppliedMark = smallvec::SmallVec<[oneshot::Receiver<()>; 2]>;

/// Which shard owns a customer: a multiplicative hash of its key.
pub fn shard_of(key: CustomerKey, shards: usize) -> usize {
    (((key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % shards as u64) as usize
}

impl Router {
    pub fn new(plan: Arc<Plan>, metrics: Arc<Metrics>, senders: Vec<mpsc::Sender<Vec<Op>>>, batch_size: usize, decode_lat: Recorder) -> Router {
        let cfg = &plan.config;
        Router {
            resolver: Resolver::new(&cfg.identity, plan.catalog.id_types.clone()),
            dedup: Dedup::new(cfg.limits.dedup_window),
            watermark: Watermark::new(cfg.time.allowed_lateness.millis(), cfg.time.idle_timeout.millis()),
            blocked: BlockedIds::new(&cfg.identity.blocked_values),
            pending: senders.iter().map(|_| Vec::with_capacity(batch_size)).collect(),
            handed: vec![i64::MIN; senders.len()],
            batch_since: vec![None; senders.len()],
            max_hold: None,
            unmarked: vec![false; senders.len()],
            decode_hist: metrics.processing.with_label_values(&[Stage::Decode.as_str()]).local(),
            decode_samples: Vec::new(),
            senders,
            batch_size,
            decode_lat,
            last_accepted: Instant::now(),
            plan,
            metrics,
        }
    }

    /// Bounds how long an event waits in a partial batch while more input
    /// keeps coming (live traffic); replay leaves batches to fill.
    pub fn set_max_hold(&mut self, hold: std::time::Duration) {
        self.max_hold = Some(hold);
    }

    pub fn watermark(&self) -> i64 {
        self.watermark.current()
    }

    pub fn idle_timeout(&self) -> std::time::Duration {
        self.plan.config.time.idle_timeout.as_std()
    }

    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// Takes one input through decode, dedup, lateness and identity, and queues it.
    pub async fn ingest(&mut self, payload: &[u8], subject: Option<&str>, received: Instant, now_ms: i64) -> Outcome {
        self.ingest_delivered(payload, subject, received, now_ms, false).await
    }

    /// [`Router::ingest`] of a message the input may have delivered before
    /// (`again`: JetStream sent it again after its ack was lost); as a
    /// duplicate, such a one is not counted again.
    pub async fn ingest_delivered(&mut self, payload: &[u8], subject: Option<&str>, received: Instant, now_ms: i64, again: bool) -> Outcome {
        let cfg = &self.plan.config;
        let cx = DecodeContext {
            catalog: &self.plan.catalog,
            max_event_bytes: cfg.limits.max_event_bytes,
            max_future_skew_ms: cfg.time.max_future_skew.millis(),
            blocked: &self.blocked,
        };
        let d = match decode(payload, subject, now_ms, &cx) {
            Ok(d) => d,
            Err(r) => {
                self.metrics.rejected(r.reason);
                return Outcome::Rejected(r);
            }
        };
        let dedup_key = Dedup::key(&d.id);
        if self.dedup.contains(dedup_key) {
            if !again {
                self.metrics.duplicates.inc();
            }
            return Outcome::Duplicate;
        }
        if self.watermark.is_late(d.ts) {
            self.metrics.late.inc();
            return Outcome::Late;
        }
        let resolved = match self.resolver.resolve(&d.ids) {
            Ok(r) => r,
            Err(r) => {
                self.metrics.rejected(r.reason);
                return Outcome::Rejected(r);
            }
        };
        self.dedup.insert(dedup_key);
        let watermark = self.watermark.observe(d.ts);
        self.last_accepted = received;
        let key = resolved.key;
        let shard = shard_of(key, self.senders.len());
        let touch = Touch { ts: d.ts, channel: d.channel, kind: d.kind, value: d.value };
        let event_id = EventId::new(&d.id);
        let mut new_ids = resolved.new_ids;
        for (i, &absorbed) in resolved.absorbed.iter().enumerate() {
            self.metrics.merges.inc();
            let cause = MergeCause {
                ts: d.ts,
                channel: d.channel,
                event_id: d.id.as_ref().into(),
                watermark,
                new_ids: if i == 0 { std::mem::take(&mut new_ids) } else { Vec::new() },
            };
            let from_shard = shard_of(absorbed, self.senders.len());
            if from_shard == shard {
                self.pending[shard].push(Op::MergeLocal { into: key, from: absorbed, cause });
            } else {
                // The absorbed side's hand-over is queued (and sent) before the
                // survivor's shard can wait for it: no cycle, no deadlock.
                let (tx, rx) = oneshot::channel();
                self.pending[from_shard].push(Op::Evict { key: absorbed, watermark, to: tx });
                self.flush_shard(from_shard).await;
                self.pending[shard].push(Op::Absorb { into: key, from: rx, cause });
            }
        }
        let consent = d.consent;
        let decode_ns = received.elapsed();
        self.decode_hist.observe(decode_ns.as_secs_f64());
        self.decode_samples.push(decode_ns.as_nanos() as u64);
        self.handed[shard] = watermark;
        self.pending[shard].push(Op::Event(EventOp { key, touch, watermark, event_id, new_ids, consent, received }));
        let since = *self.batch_since[shard].get_or_insert(received);
        if self.pending[shard].len() >= self.batch_size || self.max_hold.is_some_and(|h| received.duration_since(since) >= h) {
            self.flush_shard(shard).await;
        }
        Outcome::Accepted
    }

    async fn flush_shard(&mut self, shard: usize) {
        self.batch_since[shard] = None;
        if self.pending[shard].is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.pending[shard], Vec::with_capacity(self.batch_size));
        self.unmarked[shard] = true;
        if self.senders[shard].send(batch).await.is_err() {
            tracing::error!(shard, "shard worker is gone; its batch is lost");
        }
    }

    /// Sends every partial batch (end of a burst), and hands the current
    /// watermark to every shard that has not seen it: the watermark is global,
    /// so a shard fires its timers even when none of the burst's events were its.
    pub async fn flush(&mut self) {
        let watermark = self.watermark.current();
        for s in 0..self.pending.len() {
            if self.handed[s] < watermark {
                self.pending[s].push(Op::Tick { watermark });
                self.handed[s] = watermark;
            }
            self.flush_shard(s).await;
        }
        self.decode_hist.flush();
        self.decode_lat.record_all(&self.decode_samples);
        self.decode_samples.clear();
        self.metrics.watermark.set(self.watermark.current().max(0) as f64 / 1000.0);
    }

    /// The live idle rule: if no event was accepted for `idle_timeout`, the
    /// watermark follows the wall clock and every shard fires its due timers.
    /// It waits for the first event: before any traffic there is no timer to
    /// fire, and a clock-made watermark would make a backfill that starts
    /// later than `idle_timeout` after journeyd all late.
    pub async fn on_idle(&mut self, now: Instant, wall_ms: i64) {
        if self.watermark.max_ts() == i64::MIN || now.duration_since(self.last_accepted) < self.plan.config.time.idle_timeout.as_std() {
            return;
        }
        if self.watermark.on_idle(wall_ms).is_some() {
            self.flush().await;
        }
    }

    /// End of a replay: the watermark jumps to the largest event time seen.
    pub async fn finish_input(&mut self) {
        if self.watermark.max_ts() == i64::MIN {
            return;
        }
        self.watermark.finish();
        self.flush().await;
    }

    /// Mutes (or unmutes) every shard's output from the next op on (a
    /// rebuild replays what an earlier run published).
    pub async fn mute(&mut self, on: bool) {
        for p in &mut self.pending {
            p.push(Op::Mute(on));
        }
        self.flush().await;
    }

    /// Sends what is pending, and returns what answers once every shard has
    /// applied what it was sent so far (each receiver resolves, or closes if
    /// its shard is gone): the point up to which input may be acknowledged.
    pub async fn applied_mark(&mut self) -> AppliedMark {
        let mut mark = AppliedMark::new();
        for s in 0..self.pending.len() {
            if self.unmarked[s] || !self.pending[s].is_empty() {
                let (tx, rx) = oneshot::channel();
                self.pending[s].push(Op::Applied(tx));
                mark.push(rx);
            }
        }
        self.flush().await;
        self.unmarked.fill(false);
        mark
    }

    /// Waits until every shard has applied and published everything queued so far.
    pub async fn barrier(&mut self) {
        let mut waits = Vec::new();
        for p in &mut self.pending {
            let (tx, rx) = oneshot::channel();
            p.push(Op::Barrier(tx));
            waits.push(rx);
        }
        self.flush().await;
        for w in waits {
            let _ = w.await;
        }
    }

    /// Queues a query for the customer an id belongs to; `None` if unknown.
    pub async fn query(&mut self, ty: Option<&str>, id: &str) -> Option<oneshot::Receiver<Option<CustomerView>>> {
        let key = self.resolver.lookup(ty, id)?;
        let (tx, rx): (CustomerReply, _) = oneshot::channel();
        let shard = shard_of(key, self.senders.len());
        self.pending[shard].push(Op::Query { key, reply: tx });
        self.flush_shard(shard).await;
        Some(rx)
    }

    /// Forgets the customer an id belongs to: its ids resolve to nobody from
    /// this input on; the shard replies with what it removed.
    pub async fn forget(&mut self, ty: Option<&str>, id: &str) -> Option<oneshot::Receiver<Option<Forgotten>>> {
        let key = self.resolver.lookup(ty, id)?;
        self.resolver.forget(key);
        let (tx, rx) = oneshot::channel();
        let shard = shard_of(key, self.senders.len());
        self.pending[shard].push(Op::Forget { key, reply: tx });
        self.flush_shard(shard).await;
        Some(rx)
    }

    /// Drops a forgotten customer's ids from the identity index.
    pub fn purge(&mut self, ids: &[(IdTypeId, Box<str>)]) {
        self.resolver.purge(ids);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{worker::Sink, Engine};
    use crate::metrics::latency::LatencyHub;

    /// An engine on `config` that publishes nothing, its router and metrics.
    fn engine(config: &str) -> (Engine, Router, Arc<Metrics>) {
        let plan = Arc::new(Plan::new(crate::config::parse(config).expect("config").config));
        let metrics = Arc::new(Metrics::new(&plan));
        let (engine, router) = Engine::start(plan, metrics.clone(), Arc::new(LatencyHub::default()), Sink::Discard);
        (engine, router, metrics)
    }

    fn event(id: &str, ts: i64) -> String {
        format!(r#"{{"id":"{id}","ts":{ts},"ids":{{"user_id":"u"}},"channel":"app","kind":"view"}}"#)
    }

    #[tokio::test]
    async fn the_idle_clock_waits_for_the_first_event() {
        let (engine, mut router, _) = engine("[time]\nidle_timeout = \"10s\"\nallowed_lateness = \"5s\"\n");
        let (wall, hour) = (1_800_000_000_000_i64, std::time::Duration::from_secs(3600));
        // An hour without traffic since the start: no watermark yet, so history is on time.
        router.on_idle(Instant::now() + hour, wall).await;
        assert_eq!(router.watermark(), i64::MIN);
        let old = wall - 86_400_000;
        assert!(matches!(router.ingest(event("e1", old).as_bytes(), None, Instant::now(), wall).await, Outcome::Accepted));
        // Once traffic has come and stopped, the watermark follows the clock.
        router.on_idle(Instant::now() + hour, wall).await;
        assert_eq!(router.watermark(), wall - 15_000);
        assert!(matches!(router.ingest(event("e2", old + 1).as_bytes(), None, Instant::now(), wall).await, Outcome::Late));
        engine.shutdown(router).await;
    }

    #[tokio::test]
    async fn a_message_delivered_again_is_not_counted_as_a_duplicate_again() {
        let (engine, mut router, metrics) = engine("");
        let wall = 1_800_000_000_000_i64;
        let e = event("e1", wall - 1000);
        assert!(matches!(router.ingest(e.as_bytes(), None, Instant::now(), wall).await, Outcome::Accepted));
        // JetStream sent it again: its first delivery's ack was lost.
        assert!(matches!(router.ingest_delivered(e.as_bytes(), None, Instant::now(), wall, true).await, Outcome::Duplicate));
        assert_eq!(metrics.duplicates.get(), 0);
        // Published twice by the producer: a duplicate.
        assert!(matches!(router.ingest(e.as_bytes(), None, Instant::now(), wall).await, Outcome::Duplicate));
        assert_eq!(metrics.duplicates.get(), 1);
        engine.shutdown(router).await;
    }
}
