//! Interoperability with the real Nix (tested with Nix 2.8.0 at /usr/bin).
//!
//! Nothing here touches the real `/nix`: every store is a chroot store
//! `local?root=<tempdir>/...` and every binary cache a `file://<tempdir>/...` directory; Nix's
//! own cache of narinfo look-ups goes to the temporary directory too (`XDG_CACHE_HOME`).
//!
//! What works with Nix 2.8, and is used here:
//!
//! * `nix-store --generate-binary-cache-key NAME sec pub` writes the two key files;
//! * `nix eval --store S --raw --expr 'builtins.toFile ...'` makes a text path with references
//!   (`nix-store --add` makes none), `nix store sign --store S --key-file sec P` signs it, and `nix path-info --json --store S P` prints its metadata and signatures (the
//!   version-1 JSON without `version`);
//! * `nix copy --store S --to file://DIR[?compression=none] P` writes a binary cache;
//! * a path with a valid `CA` needs no signature, so to make Nix check a signature the test
//!   rewrites the narinfo without `CA`; then `nix copy --from file://DIR` into a fresh store
//!   with `--option require-sigs true --option trusted-public-keys KEY` succeeds only when a
//!   `Sig` verifies ("lacks a valid signature" otherwise), and `nix store verify --store
//!   file://DIR --trusted-public-keys KEY P` exits 0 only then (2: "is untrusted").

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::*;
use crate::path_info::ValidPathInfo;

const XF: [&str; 2] = ["--extra-experimental-features", "nix-command"];

struct Nix {
    tmp: PathBuf,
}

impl Nix {
    fn new(tmp: &Path) -> Nix {
        Nix {
            tmp: tmp.to_owned(),
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let out = Command::new(program)
            .args(args)
            .env("XDG_CACHE_HOME", self.tmp.join("xdg-cache"))
            .env("NIX_REMOTE", "")
            .output()
            .expect("run nix");
        eprintln!(
            "$ {program} {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.run(program, args);
        assert!(out.status.success(), "{program} {args:?} failed");
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    fn store(&self, name: &str) -> String {
        format!("local?root={}", self.tmp.join(name).display())
    }

    fn cache(&self, name: &str) -> String {
        format!("file://{}", self.tmp.join(name).display())
    }
}

fn nix_available() -> bool {
    Command::new("nix-store")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The `.narinfo` file of `path` in a cache directory.
fn narinfo_file(dir: &Path, path: &StorePath) -> PathBuf {
    dir.join(format!("{}.narinfo", path.hash_part()))
}

/// Copies a `file://` cache directory (nix-cache-info, narinfo, nar/).
fn copy_cache(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("nar")).expect("mkdir");
    for entry in std::fs::read_dir(from)
        .expect("read cache")
        .filter_map(Result::ok)
    {
        let p = entry.path();
        if p.is_file() {
            std::fs::copy(&p, to.join(entry.file_name())).expect("copy file");
        }
    }
    for entry in std::fs::read_dir(from.join("nar"))
        .expect("read nar")
        .filter_map(Result::ok)
    {
        std::fs::copy(entry.path(), to.join("nar").join(entry.file_name())).expect("copy nar");
    }
}

#[test]
fn real_nix_interop() {
    if !nix_available() {
        eprintln!("skipped: nix not found");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    let nix = Nix::new(t);
    let s = nix.store("s");

    // 1. Nix makes a key pair; we load both halves.
    let sec_file = t.join("sec");
    let pub_file = t.join("pub");
    nix.ok(
        "nix-store",
        &[
            "--generate-binary-cache-key",
            "nix-made-key-1",
            sec_file.to_str().expect("path"),
            pub_file.to_str().expect("path"),
        ],
    );
    let nix_sk = SecretKey::parse(&std::fs::read_to_string(&sec_file).expect("sec"))
        .expect("our parser reads Nix's secret key");
    let nix_pk = PublicKey::parse(&std::fs::read_to_string(&pub_file).expect("pub"))
        .expect("our parser reads Nix's public key");
    assert_eq!(nix_sk.to_public_key(), nix_pk);
    assert_eq!(
        nix_sk.to_string(),
        std::fs::read_to_string(&sec_file).expect("sec")
    );
    assert_eq!(
        nix_pk.to_string(),
        std::fs::read_to_string(&pub_file).expect("pub")
    );

    // 2. A path with two references in a chroot store (text paths made by the evaluator),
    //    signed by Nix.
    let expr = format!(
        "builtins.toFile \"t\" \"uses ${{builtins.toFile \"a\" \"{}\"}} and ${{builtins.toFile \"b\" \"y\"}}\"",
        t.display()
    );
    let mut args = XF.to_vec();
    args.extend(["eval", "--store", &s, "--raw", "--expr", &expr]);
    let path = nix.ok("nix", &args).trim().to_owned();
    let mut args = XF.to_vec();
    args.extend(["store", "sign", "--store", &s, "--key-file"]);
    args.extend([sec_file.to_str().expect("path"), path.as_str()]);
    nix.ok("nix", &args);

    // 3. Real Nix signs, we verify: the fingerprint comes from `nix path-info --json`.
    let mut args = XF.to_vec();
    args.extend(["path-info", "--json", "--store", &s, path.as_str()]);
    let json: serde_json::Value =
        serde_json::from_str(&nix.ok("nix", &args)).expect("path-info JSON");
    let vpi = ValidPathInfo::from_json(&json[0], &store()).expect("our reader takes Nix 2.8 JSON");
    assert_eq!(store().display(&vpi.path), path);
    assert_eq!(vpi.info.sigs.len(), 1, "Nix's signature");
    assert_eq!(vpi.info.references.len(), 2, "t refers to a and b");
    let keys: TrustedKeys = [nix_pk.clone()].into_iter().collect();
    assert_eq!(
        vpi.count_valid_signatures(&keys),
        1,
        "Nix's signature verifies"
    );
    let stranger = SecretKey::from_seed_bytes("nix-made-key-1", [9; 32]).expect("key");
    let wrong_keys: TrustedKeys = [stranger.to_public_key()].into_iter().collect();
    assert_eq!(vpi.count_valid_signatures(&wrong_keys), 0);

    // 4. We sign with Nix's secret key: Ed25519 is deterministic, so this must be Nix's signature.
    let fp = vpi.fingerprint().expect("fingerprint");
    let ours = nix_sk.sign(fp.as_bytes());
    assert!(vpi.info.sigs.contains(&ours), "our signature equals Nix's");

    // 5. Nix writes binary caches; we read and reprint their narinfos byte for byte.
    let mut infos = Vec::new();
    for (dir, url, compression) in [
        ("cache-xz", nix.cache("cache-xz"), "xz"),
        (
            "cache-none",
            format!("{}?compression=none", nix.cache("cache-none")),
            "none",
        ),
    ] {
        let mut args = XF.to_vec();
        args.extend(["copy", "--store", &s, "--to", &url, path.as_str()]);
        nix.ok("nix", &args);
        let text = std::fs::read_to_string(narinfo_file(&t.join(dir), &vpi.path)).expect("narinfo");
        let info = NarInfo::parse(&text, &store()).expect("our parser reads Nix's narinfo");
        assert_eq!(info.to_text(), text, "{dir}: printed identically");
        assert_eq!(info.compression, compression);
        assert_eq!(info.nar_hash, vpi.info.nar_hash);
        assert_eq!(info.nar_size, vpi.info.nar_size);
        assert_eq!(info.sigs, vpi.info.sigs);
        assert_eq!(info.count_valid_signatures(&keys), 1);
        assert!(
            info.is_content_addressed(),
            "builtins.toFile makes a text CA path"
        );
        // The closure came along, each with a narinfo we read and print back.
        for r in &info.references {
            let text = std::fs::read_to_string(narinfo_file(&t.join(dir), r)).expect("ref narinfo");
            let ref_info = NarInfo::parse(&text, &store()).expect("reference narinfo");
            assert_eq!(ref_info.to_text(), text);
            assert!(ref_info.is_content_addressed());
        }
        infos.push(info);
    }

    // 5b. Our reference scanner finds in the NAR exactly the references Nix recorded.
    let nar = std::fs::read(t.join("cache-none").join(&infos[1].url)).expect("uncompressed NAR");
    assert_eq!(nar.len() as u64, infos[1].nar_size);
    let mut candidates: Vec<StorePath> = infos[1].references.iter().cloned().collect();
    candidates.push(vpi.path.clone());
    candidates.push(StorePath::from_base_name("00000000000000000000000000000000-x").expect("p"));
    let mut scanner = crate::references::StorePathScanner::new(candidates);
    for chunk in nar.chunks(7) {
        scanner.update(chunk);
    }
    assert_eq!(scanner.found(), infos[1].references);

    // 6. We sign, real Nix verifies. Our own key pair this time, made by our code.
    let our_sk = SecretKey::generate("pkgchain-test-1", &mut rand_core::OsRng).expect("key");
    let our_pk = our_sk.to_public_key().to_string();
    // Without CA the path is not self-validating, so Nix must check the signature.
    let mut unsigned = infos[1].clone();
    unsigned.ca = None;
    unsigned.sigs.clear();

    let mut good = unsigned.clone();
    good.sign(&our_sk).expect("sign");
    let mut bad = unsigned.clone();
    let mut other = unsigned.clone();
    other.nar_size += 1; // a signature over another fingerprint
    bad.sigs
        .insert(our_sk.sign(other.fingerprint().expect("fp").as_bytes()));

    for (name, info, accepted) in [
        ("good", &good, true),
        ("bad", &bad, false),
        ("none", &unsigned, false),
    ] {
        let dir = t.join(format!("ours-{name}"));
        copy_cache(&t.join("cache-none"), &dir);
        std::fs::write(narinfo_file(&dir, &vpi.path), info.to_text()).expect("write narinfo");
        let cache = nix.cache(&format!("ours-{name}"));

        let mut args = XF.to_vec();
        args.extend([
            "store",
            "verify",
            "--store",
            &cache,
            "--trusted-public-keys",
            &our_pk,
        ]);
        args.push(path.as_str());
        let verify = nix.run("nix", &args);
        assert_eq!(
            verify.status.success(),
            accepted,
            "nix store verify, {name} signature"
        );

        let target = nix.store(&format!("target-{name}"));
        let mut args = XF.to_vec();
        args.extend(["copy", "--from", &cache, "--store", &target]);
        args.extend(["--option", "require-sigs", "true"]);
        args.extend(["--option", "trusted-public-keys", &our_pk]);
        args.push(path.as_str());
        let copy = nix.run("nix", &args);
        assert_eq!(
            copy.status.success(),
            accepted,
            "nix copy --from, {name} signature"
        );
        if !accepted {
            let stderr = String::from_utf8_lossy(&copy.stderr);
            assert!(stderr.contains("lacks a valid signature"), "{stderr}");
        }
    }

    // 7. And Nix's JSON of the copied path carries our signature, which we verify again.
    let target = nix.store("target-good");
    let mut args = XF.to_vec();
    args.extend(["path-info", "--json", "--store", &target, path.as_str()]);
    let json: serde_json::Value = serde_json::from_str(&nix.ok("nix", &args)).expect("JSON");
    let copied = ValidPathInfo::from_json(&json[0], &store()).expect("read");
    let our_keys: TrustedKeys = [our_sk.to_public_key()].into_iter().collect();
    assert_eq!(copied.count_valid_signatures(&our_keys), 1);
}
