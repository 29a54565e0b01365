//! The engine: a router in front of N shard workers joined by bounded queues.
//! `Engine::start` spawns the shards and hands back the router; whoever owns
//! the input (the live NATS loop, replay, a bench) drives the router and
//! finally calls `Engine::shutdown` to drain the shards.

pub mod customer;
pub mod due;
pub mod ids;
pub mod ops;
pub mod router;
pub mod shard;
pub mod table;
pub mod timers;
pub mod watermark;
pub mod worker;

pub use customer::CustomerView;
pub use router::{Outcome, Router};
pub use worker::{ShardReport, Sink};

use crate::config::EngineConfig;
use crate::metrics::latency::LatencyHub;
use crate::metrics::local::ShardMetrics;
use crate::metrics::{Metrics, Stage};
use crate::model::Plan;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// Default events per batch: large enough to amortise a queue hand-off,
/// small enough that one batch is a few tens of microseconds of work.
pub const DEFAULT_BATCH: usize = 256;
/// Default batches a shard's queue holds before the router waits.
pub const DEFAULT_QUEUE_BATCHES: usize = 64;

/// Shard workers when the config leaves it to journeyd: one per core but
/// one, which the router (decode, dedup, identity: about as much CPU per
/// event as a shard) and the NATS client need. On two cores one shard
/// consumed live traffic 30% faster than two (459k vs 350k events/s, twice
/// each; replay 3–13% faster in two interleaved pairs), the second shard
/// only competing with the router for the same cores and adding merges
/// across shards.
pub fn default_shards(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

/// The shard workers `cfg` asks for (0: [`default_shards`] for this machine).
pub fn shard_count(cfg: &EngineConfig) -> usize {
    match cfg.shards {
        0 => default_shards(std::thread::available_parallelism().map_or(2, |n| n.get())),
        n => n,
    }
}

pub struct Engine {
    pub plan: Arc<Plan>,
    pub metrics: Arc<Metrics>,
    pub latency: Arc<LatencyHub>,
    workers: Vec<JoinHandle<ShardReport>>,
}

impl Engine {
    /// Spawns the shard workers on the current runtime; returns the engine and its router.
    pub fn start(plan: Arc<Plan>, metrics: Arc<Metrics>, latency: Arc<LatencyHub>, sink: Sink) -> (Engine, Router) {
        let cfg = &plan.config.engine;
        let shards = shard_count(cfg);
        let batch = cfg.batch_size.unwrap_or(DEFAULT_BATCH);
        let depth = cfg.queue_batches.unwrap_or(DEFAULT_QUEUE_BATCHES);
        // Nothing will be published (a replay): shards need not serialise
        // output, nor events carry their payloads for it.
        let discard = matches!(sink, Sink::Discard);
        let mut senders = Vec::with_capacity(shards);
        let mut workers = Vec::with_capacity(shards);
        for index in 0..shards {
            let (tx, rx) = tokio::sync::mpsc::channel(depth);
            let mut shard = shard::Shard::new(index, plan.clone(), ShardMetrics::new(metrics.clone(), plan.clone()));
            if discard {
                shard.discard_output();
            }
            let (engine_lat, e2e_lat) = (latency.recorder(Stage::Engine), latency.recorder(Stage::EndToEnd));
            workers.push(tokio::spawn(worker::run(shard, rx, sink.clone(), engine_lat, e2e_lat)));
            senders.push(tx);
        }
        let router = Router::new(plan.clone(), metrics.clone(), senders, batch, latency.recorder(Stage::Decode));
        (Engine { plan, metrics, latency, workers }, router)
    }

    /// Closes the shards' queues (by dropping the router) and waits for every
    /// shard to apply and publish what it had.
    pub async fn shutdown(self, mut router: Router) -> Vec<ShardReport> {
        router.flush().await;
        drop(router);
        let mut reports = Vec::new();
        for w in self.workers {
            match w.await {
                Ok(r) => reports.push(r),
                Err(e) => tracing::error!(error = %e, "shard worker failed"),
            }
        }
        reports
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_leaves_a_core_to_the_router_and_keeps_one_shard() {
        assert_eq!([1, 2, 3, 8].map(default_shards), [1, 1, 2, 7]);
        assert_eq!(shard_count(&EngineConfig { shards: 5, ..EngineConfig::default() }), 5);
    }
}
