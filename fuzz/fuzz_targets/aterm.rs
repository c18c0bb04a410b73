#![no_main]
//! Placeholder: filled in with the aterm parser.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|_data: &[u8]| {});
