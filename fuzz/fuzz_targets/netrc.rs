#![no_main]
//! Parses arbitrary text as a `netrc-file`: nothing may panic, every field found is no longer
//! than the input, and a host's credentials are those of the first entry naming it.
use libfuzzer_sys::fuzz_target;
use pkgchain_substitute::netrc::Netrc;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(netrc) = Netrc::parse(text) else {
        return;
    };
    assert!(netrc.entries().len() <= text.split_whitespace().count());
    for (i, entry) in netrc.entries().iter().enumerate() {
        for field in [&entry.machine, &entry.login, &entry.password]
            .into_iter()
            .flatten()
        {
            assert!(field.len() <= text.len());
        }
        let Some(host) = &entry.machine else {
            continue;
        };
        let first = netrc.entries()[..i].iter().all(|e| {
            !e.machine
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case(host))
        });
        if first {
            let expected = entry
                .login
                .as_deref()
                .map(|l| (l, entry.password.as_deref()));
            assert_eq!(netrc.credentials(host), expected);
        }
    }
});
