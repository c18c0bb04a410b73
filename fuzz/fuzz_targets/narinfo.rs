#![no_main]
//! Parses arbitrary bytes as a narinfo. Whatever is accepted must print to text that parses
//! back to an equal value and prints identically again; nothing may panic.
use libfuzzer_sys::fuzz_target;
use pkgchain_store_model::narinfo::NarInfo;
use pkgchain_store_model::path_info::{PathInfoJsonFormat, ValidPathInfo};
use pkgchain_store_model::store_path::StoreDir;

fuzz_target!(|data: &[u8]| {
    let dir = StoreDir::default();
    let Ok(info) = NarInfo::parse_bytes(data, &dir) else {
        return;
    };
    let text = info.to_text();
    let again = match NarInfo::parse(&text, &dir) {
        Ok(again) => again,
        Err(e) => panic!("printed narinfo does not parse: {e}\n{text}"),
    };
    assert_eq!(again, info, "re-parse differs:\n{text}");
    assert_eq!(again.to_text(), text, "printing is not stable");

    // The derived path info survives every JSON version too.
    let vpi = ValidPathInfo::from(&info);
    for format in [
        PathInfoJsonFormat::V1,
        PathInfoJsonFormat::V2,
        PathInfoJsonFormat::V3,
    ] {
        let json = vpi.to_json(format, true);
        match ValidPathInfo::from_json(&json, &dir) {
            Ok(back) => assert_eq!(back, vpi, "JSON {format:?} round trip"),
            Err(e) => panic!("JSON {format:?} does not read back: {e}\n{json}"),
        }
    }
    // Fingerprints exist for every accepted narinfo (NarSize is never zero).
    assert!(info.fingerprint().is_ok());
});
