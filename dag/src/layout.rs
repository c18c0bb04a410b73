//! The numbers that fix how a tree becomes blocks. Changing any of them changes CIDs, so they
//! are constants, not settings.

/// Files up to this size are one raw block (and served by FUSE passthrough).
pub const SINGLE_BLOCK_MAX: u64 = 256 * 1024;
/// FastCDC minimum chunk size for larger files.
pub const CDC_MIN: usize = 64 * 1024;
/// FastCDC average chunk size.
pub const CDC_AVG: usize = 256 * 1024;
/// FastCDC maximum chunk size: no raw block is larger.
pub const CDC_MAX: usize = 1024 * 1024;
/// Links per File node before another tree level is added (the go-ipfs balanced layout).
pub const MAX_LINKS_PER_NODE: usize = 174;
/// Longest directory entry name (Linux `NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;
/// Longest symlink target (Linux `PATH_MAX` - 1).
pub const MAX_SYMLINK_TARGET_LEN: usize = 4095;
/// Largest block accepted from disk or a peer. Directory nodes are the only blocks that grow
/// with their input; a directory whose node would exceed this (about 200,000 entries) is refused
/// at ingest until HAMT-sharded directories are implemented.
pub const MAX_BLOCK_SIZE: usize = 16 * 1024 * 1024;
