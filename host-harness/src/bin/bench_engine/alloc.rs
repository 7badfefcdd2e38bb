//! A counting global allocator: allocations and live bytes over a region
//! of code, with the simulated host's own work left out ([`host_side`]).

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

pub(crate) struct Counting;

pub(crate) static COUNTING: AtomicBool = AtomicBool::new(false);
pub(crate) static HOST_SIDE: AtomicBool = AtomicBool::new(false);
pub(crate) static ALLOCS: AtomicU64 = AtomicU64::new(0);
pub(crate) static LIVE: AtomicUsize = AtomicUsize::new(0);
pub(crate) static PEAK: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn counted() -> bool {
    COUNTING.load(Ordering::Relaxed) && !HOST_SIDE.load(Ordering::Relaxed)
}

pub(crate) fn grow(by: usize) {
    let live = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

pub(crate) fn shrink(by: usize) {
    // Memory allocated before counting started may be freed while counting:
    // never wrap below zero.
    let _ = LIVE.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
        Some(l.saturating_sub(by))
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters are plain atomics and allocate nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            grow(layout.size());
        }
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: AllocLayout) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            grow(layout.size());
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        if counted() {
            shrink(layout.size());
        }
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            if new_size >= layout.size() {
                grow(new_size - layout.size());
            } else {
                shrink(layout.size() - new_size);
            }
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
pub(crate) static GLOBAL: Counting = Counting;

/// Allocation counters over one region of code.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AllocStats {
    pub(crate) allocs: u64,
    /// Highest live bytes above the level at the start of the region.
    pub(crate) peak_bytes: usize,
    /// Live bytes at the end minus live bytes at the start.
    pub(crate) retained_bytes: isize,
}

/// Runs `f` with allocation counting on.
pub(crate) fn count_allocs<T>(f: impl FnOnce() -> T) -> (T, AllocStats) {
    let start_live = LIVE.load(Ordering::Relaxed);
    PEAK.store(start_live, Ordering::Relaxed);
    let start_allocs = ALLOCS.load(Ordering::Relaxed);
    COUNTING.store(true, Ordering::SeqCst);
    let out = f();
    COUNTING.store(false, Ordering::SeqCst);
    let end_live = LIVE.load(Ordering::Relaxed);
    let stats = AllocStats {
        allocs: ALLOCS.load(Ordering::Relaxed) - start_allocs,
        peak_bytes: PEAK.load(Ordering::Relaxed).saturating_sub(start_live),
        retained_bytes: end_live as isize - start_live as isize,
    };
    (out, stats)
}

/// While alive, allocations are the simulated host's own (not charged).
pub(crate) struct HostSide(bool);

pub(crate) fn host_side() -> HostSide {
    HostSide(HOST_SIDE.swap(true, Ordering::SeqCst))
}

impl Drop for HostSide {
    fn drop(&mut self) {
        HOST_SIDE.store(self.0, Ordering::SeqCst);
    }
}
