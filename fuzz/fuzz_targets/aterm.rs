#![no_main]
//! Parses arbitrary bytes as a `.drv` file. Whatever the parser accepts must print, the printed
//! form must parse (also as canonical) to an equal derivation and print the same again, and the
//! JSON form and the hashes must not panic (the JSON form must reach a fixpoint).
use libfuzzer_sys::fuzz_target;
use pkgchain_store_model::derivation::{
    Derivation, ParseLimits, aterm, hash_modulo, json, resolve,
};
use pkgchain_store_model::store_path::StoreDir;

fuzz_target!(|data: &[u8]| {
    let dir = StoreDir::default();
    let limits = ParseLimits {
        max_string_len: 1 << 16,
        max_list_len: 1 << 12,
        max_depth: 16,
    };
    let Ok(drv) = aterm::parse_with_limits(data, "fuzz", &dir, &limits) else {
        return;
    };
    let printed = aterm::print(&drv, &dir).expect("an accepted derivation prints");
    let again = aterm::parse(&printed, "fuzz", &dir).expect("the printed form parses");
    assert_eq!(
        again, drv,
        "re-parsing the printed form gives the same derivation"
    );
    let canonical =
        aterm::parse_canonical(&printed, "fuzz", &dir).expect("the printed form is canonical");
    assert_eq!(canonical, drv);
    let printed2 = aterm::print(&again, &dir).expect("prints again");
    assert_eq!(printed, printed2, "printing is stable");

    // JSON: when the derivation can be shown as JSON, reading it back and showing it again
    // gives the same JSON (`__json` may be re-serialised, so compare JSON values).
    if let Ok(value) = json::to_json(&drv) {
        let back: Derivation = json::from_json(&value).expect("our JSON parses");
        assert_eq!(json::to_json(&back).expect("shows again"), value);
        let back_printed = aterm::print(&back, &dir).expect("JSON derivation prints");
        aterm::parse(&back_printed, "fuzz", &dir).expect("and parses");
    }

    // Hashing never panics; without input hashes only derivations without inputs succeed.
    let _ = hash_modulo::hash_derivation_modulo(&drv, &dir, true, |_| None);
    let _ = hash_modulo::hash_derivation_modulo(&drv, &dir, false, |_| None);
    let _ = hash_modulo::derivation_path(&drv, &dir);
    let _ = hash_modulo::output_paths(&drv, &dir, |_| None);
    let mut filled = drv.clone();
    let _ = hash_modulo::fill_in_output_paths(&mut filled, &dir, |_| None);
    // Resolution with every input output at one fixed path.
    let out = pkgchain_store_model::store_path::StorePath::from_base_name(
        "g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-out",
    )
    .expect("valid");
    if let Ok(Some(resolved)) = resolve::try_resolve(&drv, &dir, |_, _| Some(out.clone())) {
        assert!(resolved.input_drvs.is_empty());
        aterm::print(&resolved, &dir).expect("a resolved derivation prints");
    }
});
