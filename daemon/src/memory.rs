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
