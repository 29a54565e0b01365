//! The allocator every journeyd executable runs on: jemalloc, with its heap
//! on transparent huge pages.
//!
//! A shard's customers are a few hundred bytes each, scattered over
//! gigabytes and visited at random, so with 4 KiB pages nearly every event
//! also misses the TLB. Backing jemalloc's arenas with 2 MiB pages
//! (`thp:always`, which asks the kernel through `madvise` and so works
//! where THP is set to `madvise`) cut that cost: the engine bench at 1M
//! customers went from 0.5M to 0.75M events/s per core, for 4% more
//! resident memory. jemalloc also handles the cross-thread traffic of events
//! allocated on the NATS reader's thread and freed on a shard's better than
//! glibc's malloc, and without the millisecond stalls mimalloc showed in the
//! latency bench. `_RJEM_MALLOC_CONF` in the environment still overrides
//! these settings.

pub use tikv_jemallocator::Jemalloc;

/// jemalloc's compiled-in options (a C string).
pub const MALLOC_CONF: &[u8; 29] = b"thp:always,metadata_thp:auto\0";

/// Installs jemalloc with [`MALLOC_CONF`] as the global allocator of the
/// executable it is invoked in (the `journeyd` binary and the benches).
#[macro_export]
macro_rules! global_allocator {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::allocator::Jemalloc = $crate::allocator::Jemalloc;

        /// Read by jemalloc at start-up (`malloc_conf`, prefixed as this build names it).
        #[allow(unsafe_code, non_upper_case_globals)]
        #[unsafe(export_name = "_rjem_malloc_conf")]
        pub static malloc_conf: &[u8; 29] = $crate::allocator::MALLOC_CONF;
    };
}
