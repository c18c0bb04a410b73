#![no_main]
//! Placeholder: filled in with the nar_reader parser.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|_data: &[u8]| {});
