//! End-to-end benchmarks of journeyd, with examples/retail.toml, on this
//! machine, in one run (`make bench` or `cargo bench --bench e2e`):
//!
//! - engine: events/s per core through one shard at 1M customers (the detailed
//!   per-size numbers are `cargo bench --bench engine`);
//! - replay: the simulator's NDJSON through decode + engine on every core;
//! - live: journeyd consuming from a local nats-server, against the ceiling a
//!   bare subscriber sets in the same run;
//! - latency: publish → transition at 10k, 50k and 100k events/s, against the
//!   bare NATS round trip in the same run;
//! - memory: resident bytes per customer (with each example config) and per alias;
//! - scaling: events/s and memory by customers and shards.
//!
//! Prints one table, each result next to its target from issue 6, and writes
//! it to `target/bench-report.md`. `JOURNEYD_BENCH_QUICK=1` shrinks everything
//! to a smoke run; `JOURNEYD_BENCH_HUGE=1` measures memory at 10M customers;
//! `JOURNEYD_BENCH_ONLY=replay,live` runs only the named sections.

mod child;
mod latency;
mod live;
mod machine;
mod memory;
mod nats_server;
mod replay;
mod report;
mod scaling;
#[path = "../workload/mod.rs"]
mod workload;

use anyhow::Context;
use journeyd::config::Config;
use report::Report;
use std::sync::Arc;
use std::time::Instant;

// The allocator the `journeyd` binary ships with.
journeyd::global_allocator!();

/// Sizes of one run.
struct Settings {
    mode: &'static str,
    only: Option<Vec<String>>,
    sim_inputs: usize,
    engine_customers: u32,
    engine_seconds: f64,
    latency: latency::Settings,
    memory_customers: u32,
    /// Also measured at this many customers (10M) when it fits in memory.
    memory_huge: Option<u32>,
    /// Enough for a full 32-touch attribution history.
    events_per_customer: u32,
    scaling_customers: Vec<u32>,
    scaling_events: u64,
}

impl Settings {
    fn from_env() -> Settings {
        let on = |var: &str| std::env::var(var).is_ok_and(|v| v == "1");
        let only = std::env::var("JOURNEYD_BENCH_ONLY").ok().map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
        let rates = vec![10_000.0, 50_000.0, 100_000.0];
        if on("JOURNEYD_BENCH_QUICK") {
            return Settings {
                mode: "quick (JOURNEYD_BENCH_QUICK=1)",
                only,
                sim_inputs: 100_000,
                engine_customers: 100_000,
                engine_seconds: 1.0,
                latency: latency::Settings { rates, seconds: 1.0, warmup_seconds: 0.3 },
                memory_customers: 100_000,
                memory_huge: None,
                events_per_customer: 33,
                scaling_customers: vec![10_000, 100_000],
                scaling_events: 200_000,
            };
        }
        let huge = on("JOURNEYD_BENCH_HUGE");
        Settings {
            mode: if huge { "full, huge (JOURNEYD_BENCH_HUGE=1)" } else { "full" },
            only,
            sim_inputs: 2_000_000,
            engine_customers: 1_000_000,
            engine_seconds: 3.0,
            latency: latency::Settings { rates, seconds: 5.0, warmup_seconds: 1.0 },
            memory_customers: 1_000_000,
            memory_huge: huge.then_some(10_000_000),
            events_per_customer: 33,
            scaling_customers: vec![10_000, 100_000, 1_000_000],
            scaling_events: 2_000_000,
        }
    }

    fn wants(&self, section: &str) -> bool {
        self.only.as_ref().is_none_or(|o| o.iter().any(|s| s == section))
    }
}

pub fn retail_config() -> Config {
    Example::Retail.config()
}

/// One of the example configs, with the event mix that exercises its rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Example {
    #[default]
    Retail,
    Wealth,
}

impl Example {
    pub fn file(self) -> &'static str {
        match self {
            Example::Retail => "examples/retail.toml",
            Example::Wealth => "examples/wealth.toml",
        }
    }

    pub fn config(self) -> Config {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(self.file());
        journeyd::config::load(&path).unwrap_or_else(|e| panic!("{e}")).config
    }

    pub fn mix(self) -> &'static workload::Mix {
        match self {
            Example::Retail => &workload::RETAIL,
            Example::Wealth => &workload::WEALTH,
        }
    }
}

fn main() {
    if let Some(task) = child::task() {
        run_task(task);
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench targets without `--bench`:
        // the full run takes minutes and is for `make bench` only.
        println!("e2e: not run (no --bench); use `make bench` or `cargo bench --bench e2e`");
        return;
    }
    if let Err(e) = run(&Settings::from_env()) {
        eprintln!("e2e bench failed: {e:#}");
        std::process::exit(1);
    }
}

fn run_task(task: child::Task) {
    use child::Task;
    match task {
        Task::ShardMemory { customers, events_per_customer, example } => child::reply(&memory::shards(customers, events_per_customer, example)),
        Task::ResolverMemory { customers } => child::reply(&memory::resolver(customers)),
        Task::Engine { customers, seconds } => child::reply(&memory::engine(customers, seconds)),
        Task::Replay { path, shards } => child::reply(&scaling::replay(path, shards)),
    }
}

fn run(s: &Settings) -> anyhow::Result<()> {
    let started = Instant::now();
    let bin = nats_server::binary()?;
    let machine = machine::Machine::probe(&bin);
    eprintln!("e2e: {} mode; {} cores, {}; load {}", s.mode, machine.cores, machine.cpu, machine.load_at_start);
    let config = retail_config();
    let mut report = Report::default();

    if s.wants("engine") {
        memory::run_engine(s.engine_customers, s.engine_seconds, &mut report)?;
    }
    if s.wants("replay") || s.wants("live") {
        let t = Instant::now();
        let traffic = replay::simulate(&config, s.sim_inputs);
        eprintln!("e2e: simulated {} inputs in {:.1} s", traffic.events.len(), t.elapsed().as_secs_f64());
        if s.wants("replay") {
            let file = tempfile::Builder::new().prefix("journeyd-bench-").suffix(".ndjson").tempfile()?;
            replay::write_ndjson(&traffic.events, file.path())?;
            replay::run(&config, &traffic, file.path(), &mut report)?;
        }
        if s.wants("live") {
            let messages: live::Messages =
                Arc::new(traffic.events.iter().map(|e| (e.subject.clone().into(), bytes::Bytes::copy_from_slice(&e.payload))).collect());
            drop(traffic);
            let server = nats_server::NatsServer::start(&bin)?;
            live::run(&server, &config, messages, &mut report)?;
        }
    }
    if s.wants("latency") {
        let server = nats_server::NatsServer::start(&bin)?;
        latency::run(&server, &config, &s.latency, &mut report)?;
    }
    if s.wants("memory") {
        memory::run(s.memory_customers, s.memory_huge, s.events_per_customer, &mut report)?;
    }
    if s.wants("scaling") {
        scaling::run(&s.scaling_customers, s.scaling_events, &mut report)?;
    }

    let elapsed = started.elapsed().as_secs_f64();
    println!("\n{}", report.table());
    let md = report.markdown(&machine, s.mode, elapsed);
    let dir = report::target_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("bench-report.md");
    let tmp = dir.join("bench-report.md.tmp");
    std::fs::write(&tmp, md).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    println!("e2e: report written to {} ({elapsed:.0} s)", path.display());
    Ok(())
}
