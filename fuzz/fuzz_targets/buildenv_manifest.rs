#![no_main]
//! Parses arbitrary UTF-8 as the `derivations` attribute of `builtin:buildenv`. Nothing may
//! panic; an error must say the attribute is malformed; whatever is accepted must be made of
//! words of the input, with priorities in the range of an `i32`, and must print (one group per
//! package) to text that parses back to the same packages.
use libfuzzer_sys::fuzz_target;
use pkgchain_store_model::buildenv::parse_derivations;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let packages = match parse_derivations(text) {
        Ok(packages) => packages,
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.starts_with("malformed 'derivations' attribute: "),
                "{message}"
            );
            return;
        }
    };
    let words: Vec<&str> = text.split_whitespace().collect();
    assert!(packages.len() <= words.len());
    let mut printed = String::new();
    for p in &packages {
        assert!(!p.path.is_empty(), "an empty path from {text:?}");
        assert!(
            !p.path.contains(char::is_whitespace),
            "a path with whitespace: {:?}",
            p.path
        );
        assert!(
            words.contains(&p.path.as_str()),
            "{:?} is not a word of the input",
            p.path
        );
        assert!(i32::try_from(p.priority).is_ok(), "priority {}", p.priority);
        let active = if p.active { "true" } else { "false" };
        printed.push_str(&format!("{active} {} 1 {}\n", p.priority, p.path));
    }
    let again = parse_derivations(&printed).expect("the printed form parses");
    assert_eq!(again, packages, "the printed form differs:\n{printed}");
});
