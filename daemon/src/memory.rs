//! Giving memory back to the system when the daemon goes idle.
//!
//! glibc's allocator keeps memory freed by a thread in that thread's arena; a burst of many
//! concurrent clients (64 connections, each with its buffers, served across tokio's worker and
//! blocking threads) leaves the daemon's resident size at its peak long after they have gone.
//! Nix's daemon frees it by ending the process forked for each connection; this one process
//! asks the allocator to return its free pages when the last client leaves.

/// Returns free heap memory to the system (glibc's `malloc_trim`). Blocking; takes a few
/// milliseconds for a heap of a few hundred MiB.
#[allow(unsafe_code)]
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists, under its own locks; it
    // takes no pointers from us and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Allocations at least this large are mapped on their own (and unmapped when freed). Above
/// the ingest's largest buffers (a file's 8 MiB chunking buffer, 5 MiB block batches), below
/// FUSE's 16 MiB request buffer.
const MMAP_THRESHOLD: i32 = 12 * 1024 * 1024;

/// Free memory at the top of a heap beyond this is given back to the system at once.
const TRIM_THRESHOLD: i32 = 64 * 1024 * 1024;

/// Fixes glibc's thresholds. Call once, at start.
///
/// - Mapping large allocations on their own: by default the threshold rises to the size of
///   the largest such block freed, up to 32 MiB; after that, FUSE's 16 MiB request buffer came
///   from the main heap, which `calloc` zeroes page by page: 17 of an idle daemon's 27 MiB
///   resident (measured; 10 MiB with the threshold fixed).
/// - Trimming: with the default (128 KiB once the mapping threshold is fixed), every ingest's
///   buffers, freed at its end, went back to the system and the next ingest faulted them in
///   again: a third of the CPU time of substituting 300 paths went to page faults (measured
///   with `perf`; `bench/substitute.sh`: 2.4 s, 4.6 CPU-seconds; 1.9 s, 3.6 with 64 MiB). Free
///   memory kept this way goes back when the daemon goes idle ([`release_free_memory`]).
#[allow(unsafe_code)]
pub fn fix_allocator_thresholds() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's own tunables, under its own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
