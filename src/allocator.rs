//! The allocator every journeyd executable runs on: jemalloc, with small
//! blocks grown without `realloc` ([`Allocator`]; engine bench at 1M
//! customers +15%, replay +5%, in interleaved runs against plain jemalloc).
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
//! engine bench at 1M customers gains 17% events/s per core (30–60% before a
//! customer's fixed state moved into its slot), for ~4% more resident
//! memory. But faulting in (and compacting for) a 2 MiB page stalls the
//! faulting thread, and publish → transition p99 at 10k events/s went from
//! ~1.4–2.4 ms to ~6 ms. Engine-bound batch work may gain (replay, bound by
//! its router, does not); a live deployment keeps the default.

use std::alloc::{GlobalAlloc, Layout};
use tikv_jemallocator::Jemalloc;

/// Blocks up to this size are grown by allocate, copy and sized free
/// rather than by `realloc` (see [`Allocator`]).
const SMALL: usize = 4096;

/// jemalloc, with small blocks grown by allocate + copy + sized free.
///
/// Per-customer vectors (the touch ring, counts, segment times) grow from a
/// few entries as a customer gets its first events. `realloc` must first
/// find out how large the old block is, a lookup in jemalloc's page map
/// that misses the cache for customers spread over gigabytes; a sized free
/// (Rust always knows the size) skips it, and growing a small block moves
/// it to another size class anyway.
pub struct Allocator;

// SAFETY: every method forwards to jemalloc with the caller's layout; the
// grown block is a fresh jemalloc allocation of the requested size and
// alignment, filled with the old block's bytes, and the old block is freed
// with the layout it was allocated with.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { Jemalloc.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { Jemalloc.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { Jemalloc.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() && new_size <= SMALL {
            // SAFETY: `new_size` is non-zero (larger than the old size) and,
            // as `realloc`'s contract requires, does not overflow `isize`
            // when rounded up to the alignment.
            let grown = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            let p = unsafe { Jemalloc.alloc(grown) };
            if !p.is_null() {
                // SAFETY: both blocks are live, distinct and at least `layout.size()` long.
                unsafe {
                    std::ptr::copy_nonoverlapping(ptr, p, layout.size());
                    Jemalloc.dealloc(ptr, layout);
                }
            }
            return p;
        }
        unsafe { Jemalloc.realloc(ptr, layout, new_size) }
    }
}

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
        static ALLOCATOR: $crate::allocator::Allocator = $crate::allocator::Allocator;
    };
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    #[test]
    fn growing_keeps_the_bytes_whatever_the_path() {
        for (from, to, align) in [(8, 16, 8), (24, 40, 8), (100, 4096, 16), (4000, 5000, 8), (64, 32, 64), (3000, 9000, 4096)] {
            let layout = Layout::from_size_align(from, align).expect("valid layout");
            // SAFETY: the layout is non-zero; the block is written and read
            // within its size and freed once with its final layout.
            unsafe {
                let p = Allocator.alloc(layout);
                assert!(!p.is_null());
                for i in 0..from {
                    *p.add(i) = (i % 251) as u8;
                }
                let q = Allocator.realloc(p, layout, to);
                assert!(!q.is_null());
                assert_eq!(q as usize % align, 0, "{from} -> {to} keeps alignment {align}");
                for i in 0..from.min(to) {
                    assert_eq!(*q.add(i), (i % 251) as u8, "{from} -> {to}: byte {i}");
                }
                Allocator.dealloc(q, Layout::from_size_align(to, align).expect("valid layout"));
            }
        }
    }
}
