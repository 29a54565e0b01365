//! Allocations on the hot path, counted: a counting wrapper around the
//! allocator journeyd ships with tallies this thread's allocations while a
//! shard applies events of customers whose state is fully grown (a full
//! touch history, full count windows, timers queued). Steady-state events
//! allocate next to nothing (see [`STEADY_ALLOCATIONS`]) besides one block
//! per message they hand to NATS.

#[allow(dead_code)] // shared with the benches; only the shard side is used here
#[path = "../benches/workload/mod.rs"]
mod workload;

use journeyd::engine::ops::EventOp;
use journeyd::engine::shard::Shard;
use journeyd::metrics::local::ShardMetrics;
use journeyd::metrics::Metrics;
use journeyd::model::Plan;
use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::Arc;
use workload::Workload;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// journeyd's allocator, counting the calls that take a new block (or grow one) per thread.
struct Counting;

// SAFETY: every method forwards to journeyd's allocator with the caller's
// arguments; the count is a const-initialised thread-local that never allocates.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { journeyd::allocator::Allocator.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { journeyd::allocator::Allocator.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { journeyd::allocator::Allocator.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { journeyd::allocator::Allocator.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

const CUSTOMERS: u32 = 5_000;
/// Events per customer before counting: enough for every per-customer
/// structure to reach its steady size (a full 32-touch history, count
/// windows at their rule's count, a base for the touch times that has
/// moved).
const WARM_EVENTS: u32 = 100;
const EVENTS: u64 = 100_000;
/// Allocations per event that a steady state still makes (0.034 here): the
/// timer bucket of each new hour of event time, grown as its timers arrive,
/// and the count windows of the few customers still short of their rule's
/// count. Before journeyd kept the emptied slices of its timer buckets and
/// rebuilt touch histories in place, it made 0.5.
const STEADY_ALLOCATIONS: f64 = 0.05;

/// A shard over examples/retail.toml whose customers have had their events.
fn grown_shard(publish: bool) -> (Shard, Workload, EventOp) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/retail.toml");
    let config = journeyd::config::load(&path).expect("the example config").config;
    let plan = Arc::new(Plan::new(config));
    let mut shard = Shard::new(0, plan.clone(), ShardMetrics::new(Arc::new(Metrics::new(&plan)), plan.clone()));
    if !publish {
        shard.discard_output();
    }
    let mut w = Workload::new(&plan, CUSTOMERS, 5, 1_700_000_000_000);
    let mut op = w.template();
    for _ in 0..WARM_EVENTS {
        w.sweep(&mut shard, &mut op);
    }
    (shard, w, op)
}

#[test]
fn steady_state_events_allocate_almost_nothing_when_nothing_is_published() {
    let (mut shard, mut w, mut op) = grown_shard(false);
    let before = allocations();
    w.random_events(&mut shard, &mut op, EVENTS);
    let per_event = (allocations() - before) as f64 / EVENTS as f64;
    assert!(per_event < STEADY_ALLOCATIONS, "{per_event:.4} allocations per event");
}

#[test]
fn a_published_message_takes_one_allocation() {
    let (mut shard, mut w, mut op) = grown_shard(true);
    shard.out.messages.reserve(64);
    let (before, mut messages) = (allocations(), 0);
    for _ in 0..EVENTS {
        let d = w.random();
        w.fill(&d, &mut op);
        shard.apply_event(&op);
        messages += shard.out.messages.len() as u64;
        shard.out.messages.clear();
    }
    let n = allocations() - before;
    assert!(messages > EVENTS / 20, "the workload publishes: {messages} messages");
    let beyond = n as f64 - messages as f64;
    assert!(beyond / (EVENTS as f64) < STEADY_ALLOCATIONS, "{n} allocations for {messages} messages over {EVENTS} events");
}
