//! `journeyd demo`: the whole product on one machine in one command. Starts a
//! local nats-server, runs journeyd on it, publishes simulated multi-channel
//! traffic (`sim`), and redraws a live view every second until Ctrl-C or
//! `--duration`; then says where the metrics and dashboards are.

mod server;
pub mod view;

pub use server::{find_binary, NatsServer};

use crate::config::Dur;
use crate::{ingest::nats::wall_ms, sim, Shared};
use anyhow::Context;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// journeyd config to run (its NATS url and HTTP address are replaced).
    #[arg(long, short, default_value = "examples/retail.toml")]
    pub config: PathBuf,
    /// Stop by itself after this long (e.g. `20s`); default: until Ctrl-C.
    #[arg(long, value_parser = |s: &str| Dur::parse(s))]
    pub duration: Option<Dur>,
    /// Simulated customers.
    #[arg(long, default_value_t = 20_000)]
    pub customers: usize,
    /// Events published per second.
    #[arg(long, default_value_t = 5_000.0)]
    pub rate: f64,
    /// HTTP address for /metrics and the API (a free port is used if it is taken).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: String,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// Binds `wanted`, or a free port on 127.0.0.1 when it is taken; journeyd
/// serves HTTP on the returned listener, so the printed address is the real one.
async fn bind_http(wanted: &str) -> anyhow::Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(wanted).await {
        Ok(l) => Ok(l),
        Err(e) => {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding a free HTTP port")?;
            println!("{wanted} is not available ({e}); using {}", l.local_addr()?);
            Ok(l)
        }
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mut config = crate::config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?.config;
    let server = NatsServer::start()?;
    config.nats.url = server.url();
    config.nats.subjects = vec!["touch.>".into()];
    let listener = bind_http(&args.listen).await?;
    let listen = listener.local_addr().context("the demo's HTTP address")?.to_string();
    config.http.listen = listen.clone();
    println!("nats-server on {}; journeyd HTTP on http://{listen}", server.url());

    let shared = Shared::new(config.clone());
    let token = CancellationToken::new();
    let journeyd = tokio::spawn(crate::run_on(shared.clone(), listener, token.clone()));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !shared.ready.load(Ordering::Acquire) {
        anyhow::ensure!(Instant::now() < deadline && !journeyd.is_finished(), "journeyd did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let generated = sim::generate(&config, args.customers, args.seed, wall_ms());
    println!("publishing {} simulated events for {} customers at {:.0} events/s", generated.events.len(), args.customers, args.rate);
    let client = async_nats::connect(server.url()).await.context("connecting the demo publisher")?;
    let stop_publishing = token.child_token();
    let publisher = {
        let (client, stop, rate) = (client.clone(), stop_publishing.clone(), args.rate);
        tokio::spawn(async move {
            tokio::select! {
                r = sim::publish_paced(&client, &generated.events, rate, None) => r,
                _ = stop.cancelled() => Ok(0),
            }
        })
    };

    let started = Instant::now();
    let until = args.duration.map(|d| started + d.as_std());
    let tty = std::io::stdout().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = (Instant::now(), 0.0);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        shared.latency.export(&shared.metrics);
        let seen = view::events_seen(&shared.metrics);
        let rate = (seen - last.1) / last.0.elapsed().as_secs_f64().max(1e-3);
        last = (Instant::now(), seen);
        let screen = view::render(&shared.plan, &shared.metrics, rate, started.elapsed().as_secs_f64());
        let mut out = std::io::stdout().lock();
        if tty {
            let _ = write!(out, "\x1b[2J\x1b[H{screen}\n(Ctrl-C to stop)\n");
        } else if started.elapsed().as_secs().is_multiple_of(5) {
            let _ = writeln!(out, "{screen}");
        }
        let _ = out.flush();
        if until.is_some_and(|u| Instant::now() >= u) {
            break;
        }
    }
    stop_publishing.cancel();
    match publisher.await {
        Ok(Ok(n)) if n > 0 => println!("the simulator published all {n} events"),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => println!("the simulator stopped: {e:#}"),
        Err(e) => println!("the simulator task failed: {e}"),
    }
    let _ = client.flush().await;
    token.cancel();
    journeyd.await.context("journeyd task")??;
    shared.latency.export(&shared.metrics);
    println!("\n{}", view::render(&shared.plan, &shared.metrics, 0.0, started.elapsed().as_secs_f64()));
    println!("demo finished: journeyd took {:.0} events.", view::events_seen(&shared.metrics));
    println!("journeyd has stopped with the demo. While a demo runs, its metrics are at http://{listen}/metrics, customers at http://{listen}/v1/customers/<id>, funnels at http://{listen}/v1/funnels.");
    println!("Dashboards: `docker compose -f deploy/docker-compose.yml up` and open Grafana on http://localhost:3000 (journeyd folder), or import grafana/dashboards/*.json.");
    drop(server);
    Ok(())
}
