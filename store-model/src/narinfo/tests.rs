use super::*;
use crate::content_address::ContentAddressMethod;
use crate::hash::HashAlgo;
use crate::signature::PublicKey;

mod interop;

fn store() -> StoreDir {
    StoreDir::default()
}

/// A narinfo as cache.nixos.org serves it (bash 5.2p37, signed by Hydra's key).
const CACHE_NIXOS_ORG: &str = "\
StorePath: /nix/store/00zrahbb32nzawrmv9sjxn36h7qk9vrs-bash-5.2p37
URL: nar/08lg95m879r3yarkg6ndjg3db9an3bzg5ha9iba2vd8hfrw06q93.nar.xz
Compression: xz
FileHash: sha256:08lg95m879r3yarkg6ndjg3db9an3bzg5ha9iba2vd8hfrw06q93
FileSize: 448312
NarHash: sha256:0hbgkq56i09xjh7jkm3z1lwgbrhwazkyab7mw108m0fp0f59dj48
NarSize: 1654112
References: 00zrahbb32nzawrmv9sjxn36h7qk9vrs-bash-5.2p37 q4wq65gl3r8fy746v9bbwgx4gzn0r2kl-glibc-2.40-66
Deriver: c8dsr967ap3j1l01l565w926bahlxpmc-bash-5.2p37.drv
Sig: cache.nixos.org-1:DCeO+o0Q4DlnCPr8TeBZE77GhRlm11H9x609XtU7rUS69am2qkhX4zTsK4URTHG/vEMX4avP8HVcIHwXHq3+CQ==
";

/// The public key of cache.nixos.org.
const CACHE_NIXOS_ORG_KEY: &str = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";

/// Written by Nix 2.8 (`nix copy --to file://DIR?compression=none`) for a file added with
/// `nix-store --add` and signed with `nix store sign` by the key below.
const NIX_2_8_NONE: &str = "\
StorePath: /nix/store/xp0dpr9yz5h0fk5c5lpj7zzqjbdh3w8c-f
URL: nar/04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw.nar
Compression: none
FileHash: sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw
FileSize: 120
NarHash: sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw
NarSize: 120
References: 
Sig: test-key-1:D52dL1JiHuyipPDNe9kFjbBzwts+DD+vgeLhGDWuXB1J4bDtZ8eqfQP0P1g4ozvwDMLWwT/BNoDarrSOvcnGDw==
CA: fixed:r:sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw
";

/// The same path copied with the default compression (xz).
const NIX_2_8_XZ: &str = "\
StorePath: /nix/store/xp0dpr9yz5h0fk5c5lpj7zzqjbdh3w8c-f
URL: nar/17gd6zzlkx90irc6qawagdkgh1d7qvlnq46yjf7xiqw9ycz7zq4a.nar.xz
Compression: xz
FileHash: sha256:17gd6zzlkx90irc6qawagdkgh1d7qvlnq46yjf7xiqw9ycz7zq4a
FileSize: 128
NarHash: sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw
NarSize: 120
References: 
Sig: test-key-1:D52dL1JiHuyipPDNe9kFjbBzwts+DD+vgeLhGDWuXB1J4bDtZ8eqfQP0P1g4ozvwDMLWwT/BNoDarrSOvcnGDw==
CA: fixed:r:sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw
";

/// `nix-store --generate-binary-cache-key test-key-1 sec pub` (Nix 2.8), the key of the above.
const NIX_2_8_SECRET: &str = "test-key-1:EQ025P8urRSAypnf5vmB46L26EReemEwXUP/7HBOp7K7REkLbiil6kdIPKQ8TtDkL8oCkbiW4Ok6K2A8qidiGw==";
const NIX_2_8_PUBLIC: &str = "test-key-1:u0RJC24opepHSDykPE7Q5C/KApG4luDpOitgPKonYhs=";

fn parse(text: &str) -> Result<NarInfo, NarInfoError> {
    NarInfo::parse(text, &store())
}

fn err(text: &str) -> String {
    parse(text).expect_err(text).to_string()
}

fn trusted(keys: &[&str]) -> TrustedKeys {
    keys.iter()
        .map(|k| PublicKey::parse(k).expect("key"))
        .collect()
}

#[test]
fn cache_nixos_org_narinfo_round_trips() {
    let info = parse(CACHE_NIXOS_ORG).expect("parses");
    assert_eq!(
        info.store_path.base_name(),
        "00zrahbb32nzawrmv9sjxn36h7qk9vrs-bash-5.2p37"
    );
    assert_eq!(info.compression, "xz");
    assert_eq!(info.file_size, Some(448312));
    assert_eq!(info.nar_size, 1654112);
    assert_eq!(info.references.len(), 2);
    assert!(info.references.contains(&info.store_path), "self-reference");
    assert_eq!(
        info.deriver.as_ref().map(StorePath::name),
        Some("bash-5.2p37.drv")
    );
    assert_eq!(info.sigs.len(), 1);
    assert_eq!(info.ca, None);
    assert_eq!(info.to_text(), CACHE_NIXOS_ORG);
}

#[test]
fn cache_nixos_org_signature_verifies() {
    let info = parse(CACHE_NIXOS_ORG).expect("parses");
    assert_eq!(
        info.fingerprint().expect("fingerprint"),
        "1;/nix/store/00zrahbb32nzawrmv9sjxn36h7qk9vrs-bash-5.2p37;\
         sha256:0hbgkq56i09xjh7jkm3z1lwgbrhwazkyab7mw108m0fp0f59dj48;1654112;\
         /nix/store/00zrahbb32nzawrmv9sjxn36h7qk9vrs-bash-5.2p37,\
         /nix/store/q4wq65gl3r8fy746v9bbwgx4gzn0r2kl-glibc-2.40-66"
    );
    let keys = trusted(&[CACHE_NIXOS_ORG_KEY]);
    assert_eq!(info.count_valid_signatures(&keys), 1);
    assert!(info.is_trusted(&keys, 1));
    // Any change to what the fingerprint covers breaks the signature.
    let mut changed = info.clone();
    changed.nar_size += 1;
    assert_eq!(changed.count_valid_signatures(&keys), 0);
    let mut changed = info.clone();
    changed.references.pop_last();
    assert_eq!(changed.count_valid_signatures(&keys), 0);
    // Fields outside the fingerprint do not matter.
    let mut changed = info;
    changed.url = "nar/elsewhere.nar.zst".into();
    changed.compression = "zstd".into();
    changed.deriver = None;
    assert_eq!(changed.count_valid_signatures(&keys), 1);
}

#[test]
fn nix_2_8_file_cache_narinfos_round_trip_and_verify() {
    let keys = trusted(&[NIX_2_8_PUBLIC]);
    for text in [NIX_2_8_NONE, NIX_2_8_XZ] {
        let info = parse(text).expect("parses");
        assert_eq!(info.to_text(), text);
        assert!(info.references.is_empty());
        assert_eq!(info.count_valid_signatures(&keys), 1);
        assert!(info.is_content_addressed());
    }
    // Ed25519 is deterministic: our signature with Nix's key is Nix's signature.
    let sk = SecretKey::parse(NIX_2_8_SECRET).expect("Nix secret key");
    assert_eq!(sk.to_public_key().to_string(), NIX_2_8_PUBLIC);
    let mut ours = parse(NIX_2_8_NONE).expect("parses");
    let nix_sigs = std::mem::take(&mut ours.sigs);
    let sig = ours.sign(&sk).expect("sign");
    assert_eq!(ours.sigs, nix_sigs);
    assert_eq!(ours.to_text(), NIX_2_8_NONE);
    assert!(nix_sigs.contains(&sig));
}

#[test]
fn content_addressed_paths_need_no_signature() {
    let mut info = parse(NIX_2_8_NONE).expect("parses");
    info.sigs.clear();
    assert!(info.is_content_addressed());
    assert!(info.is_trusted(&TrustedKeys::new(), 1));
    // A CA field that does not produce the path does not count.
    info.ca = Some(
        ContentAddress::parse("fixed:sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw")
            .expect("flat"),
    );
    assert!(!info.is_content_addressed());
    assert!(!info.is_trusted(&TrustedKeys::new(), 1));
    info.ca = None;
    assert!(!info.is_content_addressed());
    // Paths computed by Nix 2.8 (see store_path::tests::paths_agree_with_nix).
    let flat = format!(
        "StorePath: /nix/store/62iir8mnhn874ykvq16v9l3kvx1010qs-x\nURL: u\nNarHash: sha256:{0}\nNarSize: 1\nReferences: \nCA: fixed:sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic\n",
        "094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic"
    );
    assert!(parse(&flat).expect("flat").is_content_addressed());
    let text = "StorePath: /nix/store/gmzdrk8k0jbnbvvdf0517iyixgkvqnil-t\nURL: u\nNarHash: sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic\nNarSize: 1\nCA: text:sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73\n";
    // The CA hash here is not that of "text", so the path does not match.
    assert!(!parse(text).expect("text").is_content_addressed());
    let good_text = format!(
        "StorePath: /nix/store/gmzdrk8k0jbnbvvdf0517iyixgkvqnil-t\nURL: u\nNarHash: sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic\nNarSize: 1\nCA: text:{}\n",
        Hash::digest(HashAlgo::Sha256, b"text").to_nix32_prefixed()
    );
    assert!(parse(&good_text).expect("text").is_content_addressed());
}

#[test]
fn fingerprint_rules() {
    let dir = store();
    let p = StorePath::from_base_name("xp0dpr9yz5h0fk5c5lpj7zzqjbdh3w8c-f").expect("p");
    let a = StorePath::from_base_name("n5wkd9frr45pa74if5gpz9j7mifg27fh-foo").expect("a");
    let b = StorePath::from_base_name("g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar").expect("b");
    let h = Hash::parse_prefixed("sha256-HDfQGvQL4ugGkd48w99EN3ppmvuxfGjwgJZLL9Bx/BM=").expect("h");
    assert_eq!(
        fingerprint(&dir, &p, &h, 120, []).expect("no refs"),
        "1;/nix/store/xp0dpr9yz5h0fk5c5lpj7zzqjbdh3w8c-f;sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw;120;"
    );
    // References are sorted and absolute, whatever order they come in.
    assert_eq!(
        fingerprint(&dir, &p, &h, 120, [&a, &b, &a]).expect("refs"),
        "1;/nix/store/xp0dpr9yz5h0fk5c5lpj7zzqjbdh3w8c-f;sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw;120;\
         /nix/store/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar,/nix/store/n5wkd9frr45pa74if5gpz9j7mifg27fh-foo"
    );
    // Another store directory changes every path in it.
    let other = StoreDir::new("/gnu/store/").expect("dir");
    assert!(
        fingerprint(&other, &p, &h, 1, [&a])
            .expect("other dir")
            .starts_with("1;/gnu/store/xp0")
    );
    assert_eq!(
        fingerprint(&dir, &p, &h, 0, []),
        Err(FingerprintError::UnknownNarSize(
            "/nix/store/xp0dpr9yz5h0fk5c5lpj7zzqjbdh3w8c-f".into()
        ))
    );
}

#[test]
fn sign_and_verify_helpers() {
    let mut info = parse(CACHE_NIXOS_ORG).expect("parses");
    info.sigs.clear();
    let ours = SecretKey::from_seed_bytes("pkgchain-test-1", [3; 32]).expect("key");
    let other = SecretKey::from_seed_bytes("other-1", [4; 32]).expect("key");
    info.sign(&ours).expect("sign");
    info.sign(&other).expect("sign");
    info.sign(&ours).expect("signing twice adds nothing");
    assert_eq!(info.sigs.len(), 2);
    let keys: TrustedKeys = [ours.to_public_key()].into_iter().collect();
    assert_eq!(info.count_valid_signatures(&keys), 1);
    assert!(info.is_trusted(&keys, 1));
    assert!(!info.is_trusted(&keys, 2));
    assert!(!info.is_trusted(&TrustedKeys::new(), 1));
    // Signatures print sorted by key name.
    let text = info.to_text();
    let other_at = text.find("Sig: other-1:").expect("other sig");
    let ours_at = text.find("Sig: pkgchain-test-1:").expect("our sig");
    assert!(other_at < ours_at);
    assert_eq!(parse(&text).expect("reparse"), info);
}

#[test]
fn hash_fields_accept_what_nix_accepts() {
    let forms = [
        "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw",
        "sha256:1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13",
        "sha256:HDfQGvQL4ugGkd48w99EN3ppmvuxfGjwgJZLL9Bx/BM=",
        "sha256-HDfQGvQL4ugGkd48w99EN3ppmvuxfGjwgJZLL9Bx/BM=",
    ];
    for form in forms {
        let text = NIX_2_8_NONE.replace(
            "NarHash: sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw",
            &format!("NarHash: {form}"),
        );
        let info = parse(&text).expect(form);
        // Printed back in Nix's form, which is the original file.
        assert_eq!(info.to_text(), NIX_2_8_NONE, "{form}");
    }
    // Without an algorithm Nix rejects the hash (parseAnyPrefixed).
    let bare = NIX_2_8_NONE.replace("NarHash: sha256:", "NarHash: ");
    let e = err(&bare);
    assert!(e.contains("line 6, field 'NarHash': bad hash"), "{e}");
    // Other algorithms parse and print with their prefix.
    let sha512 = NIX_2_8_NONE.replace(
        "FileHash: sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw",
        &format!(
            "FileHash: {}",
            Hash::digest(HashAlgo::Sha512, b"x").to_sri()
        ),
    );
    let info = parse(&sha512).expect("sha512");
    assert_eq!(
        info.file_hash.as_ref().map(Hash::algo),
        Some(HashAlgo::Sha512)
    );
    assert_eq!(parse(&info.to_text()).expect("reparse"), info);
}

#[test]
fn optional_fields_and_unknown_keys() {
    let minimal = "StorePath: /nix/store/xp0dpr9yz5h0fk5c5lpj7zzqjbdh3w8c-f\n\
                   URL: nar/x.nar\n\
                   NarHash: sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw\n\
                   NarSize: 120\n";
    let info = parse(minimal).expect("minimal");
    assert_eq!(info.compression, "bzip2", "absent Compression means bzip2");
    assert!(info.references.is_empty());
    assert_eq!(info.file_hash, None);
    assert_eq!(info.file_size, None);
    assert_eq!(
        info.to_text(),
        "StorePath: /nix/store/xp0dpr9yz5h0fk5c5lpj7zzqjbdh3w8c-f\n\
         URL: nar/x.nar\n\
         Compression: bzip2\n\
         NarHash: sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw\n\
         NarSize: 120\n\
         References: \n"
    );
    let extra = format!(
        "{minimal}Compression: \nDeriver: unknown-deriver\nCA: \nSystem: x86_64-linux\n\
         Provenance: {{\"whatever\": 1}}\nSig-PQC: k:abc\nX-Unknown: : :\n\
         References: n5wkd9frr45pa74if5gpz9j7mifg27fh-foo  g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar n5wkd9frr45pa74if5gpz9j7mifg27fh-foo\n"
    );
    let info = parse(&extra).expect("extras");
    assert_eq!(info.compression, "bzip2", "empty Compression means bzip2");
    assert_eq!(info.deriver, None);
    assert_eq!(info.ca, None);
    assert_eq!(info.system.as_deref(), Some("x86_64-linux"));
    assert_eq!(
        info.references.len(),
        2,
        "runs of spaces and repeats are fine"
    );
    let printed = info.to_text();
    assert!(printed.ends_with(
        "References: g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar n5wkd9frr45pa74if5gpz9j7mifg27fh-foo\n\
         System: x86_64-linux\n"
    ));
    assert!(
        !printed.contains("Provenance"),
        "unknown keys are dropped, as Nix drops them"
    );
    assert_eq!(parse(&printed).expect("reparse"), info);
}

#[test]
fn missing_required_fields() {
    let full = NIX_2_8_NONE;
    let without = |key: &str| {
        full.lines()
            .filter(|l| !l.starts_with(&format!("{key}:")))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    for key in ["StorePath", "NarHash", "URL", "NarSize"] {
        let e = err(&without(key));
        assert_eq!(
            e,
            format!("narinfo is missing the required field '{key}'"),
            "{key}"
        );
    }
    assert_eq!(
        err(&full.replace("NarSize: 120", "NarSize: 0")),
        "narinfo field 'NarSize' is zero"
    );
    assert_eq!(
        err(&full.replace(
            "URL: nar/04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw.nar",
            "URL: "
        )),
        "narinfo field 'URL' is empty"
    );
    assert_eq!(err(""), "narinfo is missing the required field 'StorePath'");
}

#[test]
fn malformed_narinfos_give_clear_errors() {
    let full = NIX_2_8_NONE;
    let sub = |from: &str, to: &str| {
        assert!(full.contains(from), "{from}");
        full.replacen(from, to, 1)
    };
    let cases: Vec<(String, &str)> = vec![
        (
            sub("NarHash: sha256:04zw", "NarHash: sha256:e4zw"),
            "line 6, field 'NarHash': bad hash: invalid nix32 hash",
        ),
        (
            sub("NarHash: sha256:", "NarHash: sha257:"),
            "line 6, field 'NarHash': bad hash: unknown hash algorithm 'sha257'",
        ),
        (
            sub("FileHash: sha256:04zw", "FileHash: sha256:4zw"),
            "line 4, field 'FileHash': bad hash: hash '4zw",
        ),
        (
            sub(
                "References: ",
                "References: n5wkd9frr45pa74if5gpz9j7mifg27fh-foo /nix/store/x",
            ),
            "line 8, field 'References': bad store path",
        ),
        (
            sub(
                "References: ",
                "References: e5wkd9frr45pa74if5gpz9j7mifg27fh-foo",
            ),
            "line 8, field 'References': bad store path",
        ),
        (
            format!("{full}Deriver: foo.drv\n"),
            "line 11, field 'Deriver': bad store path",
        ),
        (
            sub("StorePath: /nix/store/", "StorePath: /gnu/store/"),
            "line 1, field 'StorePath': bad store path: path '/gnu/store/xp0dpr9yz5h0fk5c5lpj7zzqjbdh3w8c-f' is not in the Nix store",
        ),
        (
            sub("NarSize: 120", "NarSize: -1"),
            "line 7, field 'NarSize': invalid number '-1'",
        ),
        (
            sub("NarSize: 120", "NarSize: +120"),
            "line 7, field 'NarSize': invalid number '+120'",
        ),
        (
            sub("FileSize: 120", "FileSize: 18446744073709551616"),
            "line 5, field 'FileSize': invalid number '18446744073709551616'",
        ),
        (
            sub("Sig: test-key-1:", "Sig: test-key-1"),
            "line 9, field 'Sig': signature is not of the form '<name>:<base64>'",
        ),
        (
            sub("Sig: test-key-1:D52d", "Sig: test-key-1:D5"),
            "line 9, field 'Sig': signature named 'test-key-1' is not valid base64",
        ),
        (
            sub("CA: fixed:r:", "CA: fixd:r:"),
            "line 10, field 'CA': content address prefix 'fixd' is unrecognized",
        ),
        (
            sub("CA: fixed:r:sha256", "CA: text:sha1"),
            "line 10, field 'CA': text hashing requires a SHA-256 hash, not sha1",
        ),
        (
            format!(
                "{full}CA: fixed:r:sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw\n"
            ),
            "line 11: duplicate field 'CA'",
        ),
        (
            format!("{full}StorePath: /nix/store/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar\n"),
            "line 11: duplicate field 'StorePath'",
        ),
        (
            format!("{full}References: \n"),
            "line 11: duplicate field 'References'",
        ),
        (
            sub("Compression: none\n", "Compression none\n"),
            "line 3 is not of the form '<Key>: <value>': expecting ':'",
        ),
        (
            sub("Compression: none\n", "Compression:none\n"),
            "line 3 is not of the form '<Key>: <value>': expecting a space after ':'",
        ),
        (
            sub("Compression: none\n", "\n"),
            "line 3 is not of the form",
        ),
        (
            full.trim_end_matches('\n').to_owned(),
            "line 10 does not end with '\\n'",
        ),
        (
            format!("{full}X-Long: {}\n", "a".repeat(1 << 20)),
            "line 11 is longer than the limit of 1048576 bytes",
        ),
        (
            format!("{full}X-Long: {}", "a".repeat(1 << 20)),
            "line 11 is longer than the limit of 1048576 bytes",
        ),
        (
            "X: y\n".repeat(1 << 20),
            "narinfo is 5242880 bytes, more than the limit of 4194304",
        ),
    ];
    for (text, why) in &cases {
        let e = err(text);
        assert!(e.contains(why), "expected '{why}', got '{e}'");
    }
    // Non-UTF-8 bytes.
    let mut bytes = full.as_bytes().to_vec();
    let at = full.find("URL: ").expect("URL") + 6;
    bytes[at] = 0xff;
    let e = NarInfo::parse_bytes(&bytes, &store()).expect_err("not utf-8");
    assert_eq!(e, NarInfoError::NotUtf8 { line: 2 });
}

#[test]
fn limits_on_references_and_signatures() {
    let limits = NarInfoLimits {
        max_references: 1,
        max_signatures: 1,
        ..NarInfoLimits::default()
    };
    let two_refs = NIX_2_8_NONE.replace(
        "References: ",
        "References: n5wkd9frr45pa74if5gpz9j7mifg27fh-foo g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar",
    );
    let e = NarInfo::parse_with_limits(two_refs.as_bytes(), &store(), &limits)
        .expect_err("two refs")
        .to_string();
    assert!(
        e.contains("line 8, field 'References': more than 1 references"),
        "{e}"
    );
    let sig = "Sig: test-key-1:D52dL1JiHuyipPDNe9kFjbBzwts+DD+vgeLhGDWuXB1J4bDtZ8eqfQP0P1g4ozvwDMLWwT/BNoDarrSOvcnGDw==\n";
    let two_sigs = format!("{NIX_2_8_NONE}{sig}");
    let e = NarInfo::parse_with_limits(two_sigs.as_bytes(), &store(), &limits)
        .expect_err("two sigs")
        .to_string();
    assert!(
        e.contains("line 11, field 'Sig': more than 1 signatures"),
        "{e}"
    );
    // With the default limits the repeated signature is merged.
    let info = parse(&two_sigs).expect("default limits");
    assert_eq!(info.sigs.len(), 1);
    assert_eq!(info.to_text(), NIX_2_8_NONE);
}

/// The `CA` field through the parser and printer. The forms of [`ContentAddress`] on their own
/// (rendering, base16 digests, malformed text) are tested in `content_address::tests`; here: every
/// method, digests in base16, nix32 and base64 printed back as nix32, and errors that name the
/// line and the field and carry the content-address error as their source.
#[test]
fn content_address_field_forms() {
    let h = "04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw";
    let hex = "1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13";
    let b64 = "HDfQGvQL4ugGkd48w99EN3ppmvuxfGjwgJZLL9Bx/BM=";
    let with_ca =
        |ca: &str| NIX_2_8_NONE.replace(&format!("CA: fixed:r:sha256:{h}"), &format!("CA: {ca}"));
    for (ca, method, printed) in [
        (
            format!("fixed:r:sha256:{h}"),
            ContentAddressMethod::NixArchive,
            format!("fixed:r:sha256:{h}"),
        ),
        (
            format!("fixed:r:sha256:{b64}"),
            ContentAddressMethod::NixArchive,
            format!("fixed:r:sha256:{h}"),
        ),
        (
            format!("fixed:sha256:{hex}"),
            ContentAddressMethod::Flat,
            format!("fixed:sha256:{h}"),
        ),
        (
            format!("text:sha256:{hex}"),
            ContentAddressMethod::Text,
            format!("text:sha256:{h}"),
        ),
        (
            format!("fixed:git:sha256:{h}"),
            ContentAddressMethod::Git,
            format!("fixed:git:sha256:{h}"),
        ),
        (
            "fixed:r:sha1:x5zjnshbjrrhpg88n2da87884cmn2i2i".to_owned(),
            ContentAddressMethod::NixArchive,
            "fixed:r:sha1:x5zjnshbjrrhpg88n2da87884cmn2i2i".to_owned(),
        ),
    ] {
        let info = parse(&with_ca(&ca)).expect(&ca);
        let parsed = info.ca.as_ref().expect("CA");
        assert_eq!(parsed.method, method, "{ca}");
        assert_eq!(parsed.to_string(), printed);
        assert_eq!(info.to_text(), with_ca(&printed), "{ca}");
        assert_eq!(parse(&info.to_text()).expect("reparse"), info);
    }
    for (bad, why) in [
        (
            "sha256:abc",
            "content address prefix 'sha256' is unrecognized",
        ),
        ("nothing", "not a content address"),
        ("fixed:r:", "must be in form '<algo>:<hash>'"),
        ("fixed:sha257:abc", "unknown hash algorithm 'sha257'"),
        (
            "text:sha1:x5zjnshbjrrhpg88n2da87884cmn2i2i",
            "text hashing requires a SHA-256 hash, not sha1",
        ),
        ("fixed:r:sha256:abc", "wrong length"),
        (
            "fixed:r:sha256-HDfQGvQL4ugGkd48w99EN3ppmvuxfGjwgJZLL9Bx/BM=",
            "must be in form '<algo>:<hash>'",
        ),
    ] {
        let e = parse(&with_ca(bad)).expect_err(bad);
        let expected = ContentAddress::parse_validated(bad).expect_err(bad);
        let message = e.to_string();
        assert_eq!(
            message,
            format!("narinfo line 10, field 'CA': {expected}"),
            "{bad}"
        );
        assert!(message.contains(why), "{bad}: {message}");
        assert_eq!(
            std::error::Error::source(&e).map(ToString::to_string),
            Some(expected.to_string()),
            "{bad}"
        );
        assert_eq!(
            e,
            NarInfoError::BadContentAddress {
                line: 10,
                source: expected
            }
        );
    }
}

/// [`is_content_addressed`] follows [`ContentAddress::store_path`]: self-references only where Nix
/// allows them, no references where Nix forbids them, Git paths only where Nix can make them.
#[test]
fn content_addressed_references_and_methods() {
    let dir = store();
    let r = StorePath::from_base_name("g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar").expect("ref");
    let with_path = |ca: ContentAddress, refs: &[&StorePath], self_ref: bool| {
        let path = ca
            .store_path(&dir, "x", refs.iter().copied(), self_ref)
            .expect("Nix makes this path");
        let mut info = parse(NIX_2_8_NONE).expect("parses");
        info.store_path = path.clone();
        info.references = refs.iter().map(|p| (*p).clone()).collect();
        if self_ref {
            info.references.insert(path);
        }
        info.ca = Some(ca);
        info
    };

    // NAR-hashed SHA-256 paths may refer to other paths and to themselves.
    let nar = ContentAddress::new(
        ContentAddressMethod::NixArchive,
        Hash::digest(HashAlgo::Sha256, b"nar"),
    );
    let info = with_path(nar.clone(), &[&r], true);
    assert!(info.is_content_addressed());
    let mut without_self = info.clone();
    without_self.references.remove(&info.store_path);
    assert!(
        !without_self.is_content_addressed(),
        "the self-reference is part of the path"
    );
    let mut other_refs = info.clone();
    other_refs.references.remove(&r);
    assert!(!other_refs.is_content_addressed());

    // Text paths may refer to others, never to themselves.
    let text = ContentAddress::new(
        ContentAddressMethod::Text,
        Hash::digest(HashAlgo::Sha256, b"text"),
    );
    let mut info = with_path(text, &[&r], false);
    assert!(info.is_content_addressed());
    info.references.insert(info.store_path.clone());
    assert!(!info.is_content_addressed(), "text self-reference");

    // Flat, non-SHA-256 NAR and Git addresses may have no references at all.
    for ca in [
        ContentAddress::new(
            ContentAddressMethod::Flat,
            Hash::digest(HashAlgo::Sha256, b"flat"),
        ),
        ContentAddress::new(
            ContentAddressMethod::NixArchive,
            Hash::digest(HashAlgo::Sha512, b"nar"),
        ),
        ContentAddress::new(
            ContentAddressMethod::Git,
            Hash::digest(HashAlgo::Sha1, b"git"),
        ),
        ContentAddress::new(
            ContentAddressMethod::Git,
            Hash::digest(HashAlgo::Sha256, b"git"),
        ),
    ] {
        let info = with_path(ca.clone(), &[], false);
        assert!(info.is_content_addressed(), "{ca}");
        let mut with_ref = info.clone();
        with_ref.references.insert(r.clone());
        assert!(!with_ref.is_content_addressed(), "{ca} with a reference");
        let mut with_self = info.clone();
        with_self.references.insert(info.store_path.clone());
        assert!(!with_self.is_content_addressed(), "{ca} self-reference");
    }

    // Git hashing with another algorithm has no path in Nix, so it never vouches for one: not
    // even for the path the same hash would give with flat hashing.
    let md5 = Hash::digest(HashAlgo::Md5, b"git");
    let mut info = with_path(
        ContentAddress::new(ContentAddressMethod::Flat, md5.clone()),
        &[],
        false,
    );
    assert!(info.is_content_addressed());
    info.ca = Some(ContentAddress::new(ContentAddressMethod::Git, md5));
    assert!(!info.is_content_addressed());
    // The free function says the same as the method.
    let ca = info.ca.clone().expect("ca");
    assert!(!is_content_addressed(
        &dir,
        &info.store_path,
        &ca,
        &info.references
    ));
}

#[test]
fn narinfo_to_path_info_json() {
    use crate::path_info::{PathInfoJsonFormat, ValidPathInfo};
    let info = parse(NIX_2_8_NONE).expect("parses");
    let vpi = ValidPathInfo::from(&info);
    assert_eq!(vpi.fingerprint(), info.fingerprint());
    let json = vpi.to_json(PathInfoJsonFormat::V1, true);
    assert_eq!(
        json["narHash"],
        "sha256-HDfQGvQL4ugGkd48w99EN3ppmvuxfGjwgJZLL9Bx/BM="
    );
    assert_eq!(
        ValidPathInfo::from_json(&json, &store()).expect("reread"),
        vpi
    );
    assert_eq!(vpi.count_valid_signatures(&trusted(&[NIX_2_8_PUBLIC])), 1);
}

#[test]
fn a_narinfo_describing_path_info_carries_it_back() {
    use crate::path_info::ValidPathInfo;
    let original = ValidPathInfo::from(&parse(CACHE_NIXOS_ORG).expect("parses"));
    let described = NarInfo::describing(&original, "nar/x.nar.zst".to_owned(), "zstd");
    assert_eq!(described.url, "nar/x.nar.zst");
    assert_eq!(described.compression, "zstd");
    assert_eq!(
        (described.file_hash.as_ref(), described.file_size),
        (None, None)
    );
    assert_eq!(ValidPathInfo::from(&described), original);
    assert_eq!(described.fingerprint(), original.fingerprint());
}
