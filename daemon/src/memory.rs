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

/// Allocations at least this large are mapped on their own (and unmapped when freed).
const MMAP_THRESHOLD: i32 = 4 * 1024 * 1024;

/// Fixes glibc's threshold for mapping large allocations on their own. By default it rises to
/// the size of the largest such block freed, up to 32 MiB; after that, FUSE's 16 MiB request
/// buffer came from the main heap, which `calloc` zeroes page by page: 17 of an idle daemon's
/// 27 MiB resident (measured; 10 MiB with the threshold fixed). Call once, at start.
#[allow(unsafe_code)]
pub fn fix_allocator_thresholds() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's own tunables, under its own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
