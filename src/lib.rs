//! journeyd: a streaming customer-journey processor.
//!
//! Backend services publish touchpoint events to NATS (`touch.<channel>.<kind>`).
//! journeyd decodes and validates each one (`event`), drops duplicates and
//! late events, resolves it to one customer across every channel's ids
//! (`identity`), and routes it by customer to one of N shard workers
//! (`engine`). A shard owns its customers' state outright and applies the
//! journey models of the config (`model`) in arrival order, firing
//! inactivity timers on a global event-time watermark. Transitions are
//! published back to NATS (`emit`) and counted in Prometheus (`metrics`),
//! served with health and customer queries over HTTP (`api`) and NATS
//! request-reply (`requests`).
//!
//! Every queue between stages is bounded; the hot path takes no global lock:
//! the router owns identity, dedup and the watermark, each shard owns its
//! customers, and metrics are counted locally and flushed per batch.

// Denied everywhere but the prefetch hint of `engine::table` and the
// allocator's realloc in `allocator`, whose speed-ups the engine bench measures.
#![deny(unsafe_code)]

pub mod allocator;
pub mod api;
pub mod catalog;
pub mod chunked;
pub mod config;
pub mod demo;
pub mod emit;
pub mod engine;
pub mod event;
pub mod identity;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod replay;
pub mod requests;
pub mod sim;
pub mod split;
pub mod stats;
#[cfg(test)]
mod test_rng;
pub mod trigger;

use anyhow::Context;
use engine::{Engine, ShardReport, Sink};
use metrics::latency::LatencyHub;
use metrics::Metrics;
use model::Plan;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Capacity of the control queue (API and request-reply to the router).
const CONTROL_QUEUE: usize = 1024;
/// How long a live event may wait in a partial batch for more events.
const MAX_HOLD: Duration = Duration::from_micros(50);
/// How long a stopping journeyd waits for its shards to apply and publish what they hold.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// What a live run reports when it stops.
#[derive(Debug)]
pub struct RunReport {
    pub shards: Vec<ShardReport>,
}

/// Runs journeyd live until `shutdown` is cancelled, then drains: stops
/// consuming, applies what was buffered, lets the shards publish, flushes.
pub async fn run(config: config::Config, shutdown: CancellationToken) -> anyhow::Result<RunReport> {
    run_with(Shared::new(config), shutdown).await
}

/// The compiled config and the telemetry of one journeyd instance, shared
/// with whoever wants to watch it in-process (the demo's live view).
#[derive(Clone)]
pub struct Shared {
    pub plan: Arc<Plan>,
    pub metrics: Arc<Metrics>,
    pub latency: Arc<LatencyHub>,
    /// True while subscribed and consuming (what `/readyz` reports).
    pub ready: Arc<AtomicBool>,
    /// True while customer state is rebuilt from JetStream on start.
    pub rebuilding: Arc<AtomicBool>,
}

impl Shared {
    pub fn new(config: config::Config) -> Shared {
        let plan = Arc::new(Plan::new(config));
        let metrics = Arc::new(Metrics::new(&plan));
        Shared { plan, metrics, latency: Arc::new(LatencyHub::default()), ready: Arc::default(), rebuilding: Arc::default() }
    }
}

/// [`run`] with telemetry the caller can watch.
pub async fn run_with(shared: Shared, shutdown: CancellationToken) -> anyhow::Result<RunReport> {
    let listen = &shared.plan.config.http.listen;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding HTTP on {listen}"))?;
    run_on(shared, listener, shutdown).await
}

/// [`run_with`] serving HTTP on a listener the caller bound.
pub async fn run_on(shared: Shared, listener: tokio::net::TcpListener, shutdown: CancellationToken) -> anyhow::Result<RunReport> {
    let Shared { plan, metrics, latency, ready, rebuilding } = shared;
    let cfg = &plan.config;
    // Until state is rebuilt, counters are not what the last run left: no
    // scrape may see them (not even while NATS is still out of reach).
    let rebuild = cfg.nats.jetstream.as_ref().is_some_and(|js| js.rebuild);
    rebuilding.store(rebuild, Ordering::Release);
    let (control_tx, control_rx) = tokio::sync::mpsc::channel(CONTROL_QUEUE);
    let client_cell = Arc::new(std::sync::OnceLock::new());
    let listener_addr = listener.local_addr().map_or_else(|_| cfg.http.listen.clone(), |a| a.to_string());
    let state = api::AppState {
        plan: plan.clone(),
        metrics: metrics.clone(),
        latency: latency.clone(),
        ready: ready.clone(),
        rebuilding: rebuilding.clone(),
        control: control_tx.clone(),
        client: client_cell.clone(),
    };
    let http_stop = CancellationToken::new();
    let http = {
        let stop = http_stop.clone();
        tokio::spawn(async move {
            let serve = axum::serve(listener, api::app(state)).with_graceful_shutdown(async move { stop.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        })
    };
    tracing::info!(listen = %listener_addr, "HTTP listening");

    let client = tokio::select! {
        client = ingest::nats::connect(&cfg.nats, metrics.clone()) => client?,
        // Nothing was taken in yet: nothing to drain.
        _ = shutdown.cancelled() => {
            tracing::info!("stopped before NATS was reachable");
            http_stop.cancel();
            let _ = http.await;
            return Ok(RunReport { shards: Vec::new() });
        }
    };
    let _ = client_cell.set(client.clone());
    let (engine, mut router) = Engine::start(plan.clone(), metrics.clone(), latency.clone(), Sink::Nats(client.clone()));
    let burst = plan.config.engine.batch_size.unwrap_or(engine::DEFAULT_BATCH) * 4;
    let input = match &cfg.nats.jetstream {
        Some(js) => {
            let mut applied_through = 0;
            if rebuild {
                let rebuilt = ingest::rebuild::rebuild(&client, &cfg.nats, js, &mut router, &shutdown, burst).await;
                rebuilding.store(false, Ordering::Release);
                applied_through = rebuilt.context("rebuilding customer state from JetStream")?.applied_through;
            }
            ingest::input::consume(&client, &cfg.nats, js, applied_through).await?
        }
        None => ingest::input::subscribe(&client, &cfg.nats.subjects).await?,
    };
    let request_subs = requests::subscribe(&client).await.context("subscribing to the request subjects")?;
    // Subscribed means the server has the subscriptions, not just the socket.
    ingest::nats::round_trip(&client, Duration::from_secs(10)).await.context("confirming the subscriptions")?;
    // A shutdown that came during the rebuild: drain at once, never ready.
    if !shutdown.is_cancelled() {
        ready.store(true, Ordering::Release);
        tracing::info!(subjects = ?cfg.nats.subjects, url = %cfg.nats.url, "subscribed; journeyd is ready");
    }

    let background = CancellationToken::new();
    let lag = metrics.consumer_lag.clone().and_then(|gauge| input.lag_poller(gauge, background.clone())).map(tokio::spawn);
    let requests = tokio::spawn(requests::serve(request_subs, client.clone(), control_tx.clone(), background.clone()));
    let exporter = {
        let (latency, metrics, stop) = (latency.clone(), metrics.clone(), background.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = every.tick() => { latency.export(&metrics); }
                }
            }
        })
    };

    router.set_max_hold(MAX_HOLD);
    // Not ready from the moment the drain begins, however long it takes.
    let unready = {
        let (ready, shutdown) = (ready.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            ready.store(false, Ordering::Release);
        })
    };
    ingest::nats::run(&client, &mut router, input, control_rx, shutdown, burst).await;
    unready.abort();
    ready.store(false, Ordering::Release);
    background.cancel();
    // Publishing waits for room in the client's buffer, which never comes if
    // the server went away with the buffer full: bound the whole hand-over.
    let shards = match tokio::time::timeout(SHUTDOWN_GRACE, engine.shutdown(router)).await {
        Ok(shards) => shards,
        Err(_) => anyhow::bail!("shards did not finish publishing within {SHUTDOWN_GRACE:?} (is NATS reachable?); their last output is lost"),
    };
    // The shards flushed their output; this covers what was published since
    // (dead letters of the last burst, request replies).
    engine::worker::final_flush(&client).await;
    let _ = requests.await;
    if let Some(lag) = lag {
        let _ = lag.await;
    }
    let _ = exporter.await;
    http_stop.cancel();
    let _ = http.await;
    tracing::info!(customers = shards.iter().map(|s| s.customers).sum::<usize>(), "journeyd stopped");
    Ok(RunReport { shards })
}
