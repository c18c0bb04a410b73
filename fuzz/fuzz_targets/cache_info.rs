#![no_main]
//! Parses arbitrary bytes as a binary cache's `nix-cache-info`: nothing may panic, and what is
//! accepted keeps to the file's bounds.
use libfuzzer_sys::fuzz_target;
use pkgchain_store_model::cache_info::{CacheInfo, MAX_CACHE_INFO_BYTES};

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = CacheInfo::parse(data) {
        assert!(data.len() <= MAX_CACHE_INFO_BYTES);
        if let Some(dir) = &info.store_dir {
            assert!(dir.len() <= data.len());
        }
    }
});
