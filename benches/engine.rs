//! Engine throughput per core: pre-decoded events straight into one shard
//! (no NATS, no decode, no queue), with examples/retail.toml, at 10k, 100k
//! and 1M customers (10M with `JOURNEYD_BENCH_HUGE=1`).
//!
//! Before measuring, every customer gets a first event (linking a user id and
//! a device id) and on average one more, so state is warm; measured events
//! go to customers drawn uniformly at random, about one per customer per day
//! of event time, so timers fall due as they would live. One iteration is one
//! batch of `BATCH` events followed by the metric flush a worker does.
//!
//! Target (issue 6): ≥ 3M events/s per core at 1M customers.

#[allow(dead_code)] // shared with the e2e bench; this one uses only the shard side
mod workload;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use journeyd::engine::shard::Shard;
use journeyd::metrics::local::ShardMetrics;
use journeyd::metrics::Metrics;
use journeyd::model::Plan;
use std::sync::Arc;
use std::time::{Duration, Instant};
use workload::{Workload, BATCH};

// The allocator the `journeyd` binary ships with.
journeyd::global_allocator!();

/// Events per customer before measuring: one sweep, then this many more on average.
const WARM_EVENTS_PER_CUSTOMER: u64 = 1;

/// Resident bytes a warmed customer takes here, with room to spare (measured ~1.2 KB).
const BYTES_PER_WARM_CUSTOMER: u64 = 2048;

fn sizes() -> Vec<u32> {
    if !std::env::args().any(|a| a == "--bench") {
        // Test mode (`cargo test --all-targets`): one small size, run once.
        return vec![10_000];
    }
    let mut sizes = vec![10_000, 100_000, 1_000_000];
    if std::env::var("JOURNEYD_BENCH_HUGE").is_ok_and(|v| v == "1") {
        let huge = 10_000_000;
        if huge as u64 * BYTES_PER_WARM_CUSTOMER < workload::available_bytes() {
            sizes.push(huge);
        } else {
            eprintln!("engine/shard/{huge}: skipped, {} GiB available is too little", workload::available_bytes() >> 30);
        }
    }
    sizes
}

fn retail_plan() -> Arc<Plan> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/retail.toml");
    let config = journeyd::config::load(&path).unwrap_or_else(|e| panic!("{e}")).config;
    Arc::new(Plan::new(config))
}

fn shard_throughput(c: &mut Criterion) {
    let plan = retail_plan();
    let mut group = c.benchmark_group("engine/shard");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    for customers in sizes() {
        let mut shard = Shard::new(0, plan.clone(), ShardMetrics::new(Arc::new(Metrics::new(&plan)), plan.clone()));
        let mut w = Workload::new(&plan, customers, 42, 1_700_000_000_000);
        let mut op = w.template();
        let warm = Instant::now();
        w.sweep(&mut shard, &mut op);
        w.random_events(&mut shard, &mut op, customers as u64 * WARM_EVENTS_PER_CUSTOMER);
        eprintln!("engine/shard/{customers}: {} customers warmed in {:.1} s", shard.customers(), warm.elapsed().as_secs_f64());
        group.bench_function(BenchmarkId::new("customers", customers), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                w.random_events(&mut shard, &mut op, iters * BATCH as u64);
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, shard_throughput);
criterion_main!(benches);
