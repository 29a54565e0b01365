//! Memory: resident bytes per customer and per alias, each measured in a fresh
//! child process as the growth of its resident set.
//!
//! - shards: customers pushed through two shards on two threads (as on this
//!   2-core machine), each with `events_per_customer` events so that every
//!   customer has a full 32-touch attribution history, two linked ids (a user
//!   id and a device id) and its timers queued; with examples/retail.toml,
//!   and again with examples/wealth.toml at the smaller size;
//! - resolver: the same customers' two ids through the identity index, which
//!   the router keeps beside the shards.
//!
//! The engine row of the report (events/s per core at 1M customers, the issue's
//! headline number) is measured here too, in a child of its own.

use crate::child::{self, Task};
use crate::machine::{peak_rss_bytes, rss_bytes};
use crate::report::{bytes, micros, rate, Report};
use crate::workload::available_bytes;
use crate::workload::Workload;
use crate::Example;
use journeyd::allocator::{THP_CONF, THP_ENV};
use journeyd::engine::customer::Customer;
use journeyd::engine::shard::Shard;
use journeyd::engine::timers::{Timer, TimerQueue};
use journeyd::identity::Resolver;
use journeyd::ingest::dedup::Dedup;
use journeyd::metrics::local::ShardMetrics;
use journeyd::metrics::Metrics;
use journeyd::model::Plan;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

const START_MS: i64 = 1_700_000_000_000;

#[derive(Serialize, Deserialize)]
pub struct ShardMemory {
    customers: u64,
    aliases: u64,
    events: u64,
    rss_growth: u64,
    peak_rss: u64,
    pending_timers: u64,
    seconds: f64,
    /// `size_of::<Customer>()`: what each customer takes inline in its shard's map.
    customer_struct: u64,
}

impl ShardMemory {
    /// Resident bytes per customer.
    fn per_customer(&self) -> f64 {
        self.rss_growth as f64 / self.customers.max(1) as f64
    }
}

#[derive(Serialize, Deserialize)]
pub struct ResolverMemory {
    customers: u64,
    aliases: u64,
    heap_bytes: u64,
    rss_growth: u64,
    /// The longest single `resolve` (its index growing as customers arrive).
    longest_resolve_ns: u64,
    /// The longest single dedup insert over `dedup_ids` new ids (its table
    /// growing to twice the default window, and a generation dropped).
    longest_dedup_ns: u64,
    dedup_ids: u64,
}

#[derive(Serialize, Deserialize)]
pub struct EngineRate {
    customers: u64,
    events: u64,
    seconds: f64,
}

pub fn plan() -> Arc<Plan> {
    Arc::new(Plan::new(crate::retail_config()))
}

/// Child: customers through two shards on two threads, with `example`'s
/// config and event mix.
pub fn shards(customers: u32, events_per_customer: u32, example: Example) -> ShardMemory {
    const SHARDS: u32 = 2;
    let plan = Arc::new(Plan::new(example.config()));
    let metrics = Arc::new(Metrics::new(&plan));
    let before = rss_bytes();
    let started = Instant::now();
    let workers: Vec<_> = (0..SHARDS)
        .map(|i| {
            let (plan, metrics) = (plan.clone(), metrics.clone());
            let mine = customers / SHARDS + u32::from(i < customers % SHARDS);
            std::thread::spawn(move || {
                let mut shard = Shard::new(i as usize, plan.clone(), ShardMetrics::new(metrics, plan.clone()));
                let mut w = Workload::with_mix(&plan, example.mix(), mine, 7 + i as u64, START_MS).with_keys(i, SHARDS);
                let mut op = w.template();
                for _ in 0..events_per_customer {
                    w.sweep(&mut shard, &mut op);
                }
                shard
            })
        })
        .collect();
    let shards: Vec<Shard> = workers.into_iter().map(|w| w.join().expect("shard thread")).collect();
    let seconds = started.elapsed().as_secs_f64();
    let rss_growth = rss_bytes().saturating_sub(before);
    let customers = shards.iter().map(|s| s.customers() as u64).sum();
    let result = ShardMemory {
        customers,
        aliases: customers * 2,
        events: customers * events_per_customer as u64,
        rss_growth,
        peak_rss: peak_rss_bytes(),
        pending_timers: shards.iter().map(|s| s.pending_timers() as u64).sum(),
        seconds,
        customer_struct: std::mem::size_of::<Customer>() as u64,
    };
    // The process exits next: freeing a million customers one by one would only take time.
    std::mem::forget(shards);
    result
}

/// Child: every customer's user id and device id linked in the identity index.
pub fn resolver(customers: u32) -> ResolverMemory {
    let plan = plan();
    let w = Workload::new(&plan, customers, 1, START_MS);
    let before = rss_bytes();
    let mut r = Resolver::new(&plan.config.identity, plan.catalog.id_types.clone());
    let mut longest_resolve = Duration::ZERO;
    for c in 0..customers {
        let ids = [(Cow::Borrowed("user_id"), Cow::Owned(w.user_id(c))), (Cow::Borrowed("anonymous_id"), Cow::Owned(w.device_id(c)))];
        let start = Instant::now();
        if let Err(e) = r.resolve(&ids) {
            panic!("resolving customer {c}: {}", e.detail);
        }
        longest_resolve = longest_resolve.max(start.elapsed());
    }
    let rss_growth = rss_bytes().saturating_sub(before);
    let window = journeyd::config::LimitsConfig::default().dedup_window;
    let dedup_ids = 2 * window + window / 10;
    let mut dedup = Dedup::new(window);
    let mut longest_dedup = Duration::ZERO;
    for i in 0..dedup_ids {
        let key = Dedup::key(&format!("evt-{i}"));
        let start = Instant::now();
        if !dedup.contains(key) {
            dedup.insert(key);
        }
        longest_dedup = longest_dedup.max(start.elapsed());
    }
    ResolverMemory {
        customers: r.customers(),
        aliases: r.aliases() as u64,
        heap_bytes: r.heap_bytes() as u64,
        rss_growth,
        longest_resolve_ns: longest_resolve.as_nanos() as u64,
        longest_dedup_ns: longest_dedup.as_nanos() as u64,
        dedup_ids: dedup_ids as u64,
    }
}

/// Child: one shard on one thread, warmed with a sweep and one more event per
/// customer, then timed on random events for `seconds`.
pub fn engine(customers: u32, seconds: f64) -> EngineRate {
    let plan = plan();
    let mut shard = Shard::new(0, plan.clone(), ShardMetrics::new(Arc::new(Metrics::new(&plan)), plan.clone()));
    let mut w = Workload::new(&plan, customers, 3, START_MS);
    let mut op = w.template();
    w.sweep(&mut shard, &mut op);
    w.random_events(&mut shard, &mut op, customers as u64);
    let chunk = 64 * crate::workload::BATCH as u64;
    let (start, mut events) = (Instant::now(), 0);
    while start.elapsed().as_secs_f64() < seconds {
        w.random_events(&mut shard, &mut op, chunk);
        events += chunk;
    }
    let result = EngineRate { customers: shard.customers() as u64, events, seconds: start.elapsed().as_secs_f64() };
    // The process exits next: freeing every customer one by one would only take time.
    std::mem::forget(shard);
    result
}

pub fn run_engine(customers: u32, seconds: f64, report: &mut Report) -> anyhow::Result<()> {
    let e: EngineRate = child::run(&Task::Engine { customers, seconds })?;
    let per_s = e.events as f64 / e.seconds;
    eprintln!("engine: {} customers, {} events in {:.2} s: {}", e.customers, e.events, e.seconds, rate(per_s));
    report.at_least(
        "engine",
        format!("one shard, one core, {} customers, pre-decoded events", e.customers),
        format!("{} per core", rate(per_s)),
        (per_s, 3e6),
        "≥ 3M events/s per core at 1M customers",
    );
    let thp: EngineRate = child::run_with_env(&Task::Engine { customers, seconds }, &[(THP_ENV, THP_CONF)])?;
    let thp_per_s = thp.events as f64 / thp.seconds;
    eprintln!("engine with {THP_ENV}={THP_CONF}: {}", rate(thp_per_s));
    report.info("engine", format!("the same, {THP_ENV}={THP_CONF} (transparent huge pages)"), format!("{} per core", rate(thp_per_s)));
    Ok(())
}

/// Measures at `customers`; then at `huge` customers (10M) when asked and
/// when the footprint just measured says it fits in the memory available.
pub fn run(customers: u32, huge: Option<u32>, events_per_customer: u32, report: &mut Report) -> anyhow::Result<()> {
    let (mut s, mut r) = measure(customers, events_per_customer)?;
    if let Some(big) = huge {
        let need = per_customer(&s, &r) * big as f64;
        let available = available_bytes() as f64;
        if need < 0.8 * available {
            (s, r) = measure(big, events_per_customer)?;
        } else {
            report.note(format!(
                "memory: {big} customers not measured: at {:.0} B per customer they need {}, and {} is available",
                per_customer(&s, &r),
                bytes(need),
                bytes(available)
            ));
        }
    }
    let shard_per_customer = s.per_customer();
    let n = s.customers;
    report.at_most(
        "memory",
        format!("shards: resident bytes per customer ({n} customers, {events_per_customer} events each, 2 ids, 32-touch history, {})", Example::Retail.file()),
        format!("{shard_per_customer:.0} B ({} in all, {:.0} B per alias)", bytes(s.rss_growth as f64), s.rss_growth as f64 / s.aliases.max(1) as f64),
        (shard_per_customer, 512.0),
        "≤ 512 B per customer",
        |b| format!("{b:.0} B"),
    );
    let w: ShardMemory = child::run(&Task::ShardMemory { customers, events_per_customer, example: Example::Wealth })?;
    let wealth_per_customer = w.per_customer();
    eprintln!("memory: shards {} for {} customers ({wealth_per_customer:.0} B each) with {}", bytes(w.rss_growth as f64), w.customers, Example::Wealth.file());
    report.at_most(
        "memory",
        format!("the same with {} ({} customers)", Example::Wealth.file(), w.customers),
        format!("{wealth_per_customer:.0} B ({} in all)", bytes(w.rss_growth as f64)),
        (wealth_per_customer, 512.0),
        "≤ 512 B per customer",
        |b| format!("{b:.0} B"),
    );
    report.info(
        "memory",
        format!("identity resolver: per alias ({} aliases)", r.aliases),
        format!(
            "{:.0} B resident, {:.0} B by heap_bytes() ({} in all)",
            r.rss_growth as f64 / r.aliases.max(1) as f64,
            r.heap_bytes as f64 / r.aliases.max(1) as f64,
            bytes(r.rss_growth as f64)
        ),
    );
    report.info("memory", "shards + resolver per customer", format!("{:.0} B", per_customer(&s, &r)));
    report.info(
        "latency",
        format!("router: longest single id resolve as {} customers arrive / dedup insert over {} event ids", r.customers, r.dedup_ids),
        format!("{} / {} (growing tables, dropping a dedup generation)", micros(r.longest_resolve_ns as f64), micros(r.longest_dedup_ns as f64)),
    );
    let (longest_step, sort_all) = timer_steps(n as u32);
    report.info(
        "latency",
        format!("shard: longest watermark step (100 ms of event time) while {n} timers due within one hour fire"),
        format!("{} (one sort of them all: {})", micros(longest_step.as_nanos() as f64), micros(sort_all.as_nanos() as f64)),
    );
    let ten_million = per_customer(&s, &r) * 1e7;
    let what = if n >= 10_000_000 { "10M customers: resident (measured)".to_string() } else { format!("10M customers: resident (projected from {n})") };
    report.at_most("memory", what, bytes(ten_million), (ten_million, 8.0 * (1u64 << 30) as f64), "≤ 8 GiB", bytes);
    report.info(
        "memory",
        "shard child: peak resident, Customer inline size, timers queued, push rate",
        format!("{}, {} B, {} timers, {} on 2 threads", bytes(s.peak_rss as f64), s.customer_struct, s.pending_timers, rate(s.events as f64 / s.seconds)),
    );
    Ok(())
}

fn measure(customers: u32, events_per_customer: u32) -> anyhow::Result<(ShardMemory, ResolverMemory)> {
    let s: ShardMemory = child::run(&Task::ShardMemory { customers, events_per_customer, example: Example::Retail })?;
    let r: ResolverMemory = child::run(&Task::ResolverMemory { customers })?;
    eprintln!(
        "memory: shards {} for {} customers ({:.0} B each); resolver {} ({} B/alias by heap_bytes)",
        bytes(s.rss_growth as f64),
        s.customers,
        s.per_customer(),
        bytes(r.rss_growth as f64),
        r.heap_bytes / r.aliases.max(1)
    );
    Ok((s, r))
}

/// The longest step of a shard's timer queue while `n` timers due within one
/// hour are reached and popped, the watermark moving 100 ms per step; and
/// the time one sort of all of them takes, for comparison.
fn timer_steps(n: u32) -> (Duration, Duration) {
    const HOUR: i64 = 3_600_000;
    let base = START_MS.div_euclid(HOUR) * HOUR;
    let mut timers: Vec<Timer> = (0..n).map(|k| Timer { due: base + HOUR + (i64::from(k) * 2_654_435_761).rem_euclid(HOUR), key: k }).collect();
    let mut q = TimerQueue::default();
    q.push(Timer { due: base, key: n });
    timers.iter().for_each(|t| q.push(*t));
    let mut longest = Duration::ZERO;
    let mut popped = 0;
    for watermark in (base..=base + 2 * HOUR).step_by(100) {
        let start = Instant::now();
        while q.pop_due(watermark).is_some() {
            popped += 1;
        }
        longest = longest.max(start.elapsed());
    }
    assert_eq!(popped, n + 1, "every timer fires");
    let start = Instant::now();
    timers.sort_unstable();
    (longest, start.elapsed())
}

/// Resident bytes per customer: shard state plus the identity index.
fn per_customer(s: &ShardMemory, r: &ResolverMemory) -> f64 {
    s.per_customer() + r.rss_growth as f64 / r.customers.max(1) as f64
}
