//! The allocator every journeyd executable runs on: jemalloc.
//!
//! jemalloc handles the cross-thread traffic of events allocated on the NATS
//! reader's thread and freed on a shard's better than glibc's malloc, and
//! without the millisecond stalls mimalloc showed in the latency bench.
//!
//! Transparent huge pages are a throughput/latency trade-off, so they are
//! left to the operator. A shard's customers are a few hundred bytes each,
//! scattered over gigabytes and visited at random; with 4 KiB pages nearly
//! every event also misses the TLB. Starting journeyd with
//! [`THP_ENV`]`=`[`THP_CONF`] backs jemalloc's arenas with 2 MiB pages: the
//! engine bench at 1M customers went from ~0.5M to ~0.75–0.95M events/s per
//! core, for ~4% more resident memory. But faulting in (and compacting for)
//! a 2 MiB page stalls the faulting thread, and publish → transition p99 at
//! 10k events/s went from ~1.4–2.4 ms to ~6 ms. Replays and backfills gain;
//! a live deployment keeps the default.

pub use tikv_jemallocator::Jemalloc;

/// The environment variable jemalloc (as this build names it) reads its options from.
pub const THP_ENV: &str = "_RJEM_MALLOC_CONF";
/// jemalloc options that put its heap on transparent huge pages.
pub const THP_CONF: &str = "thp:always,metadata_thp:auto";

/// Installs jemalloc as the global allocator of the executable it is
/// invoked in (the `journeyd` binary and the benches).
#[macro_export]
macro_rules! global_allocator {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::allocator::Jemalloc = $crate::allocator::Jemalloc;
    };
}
