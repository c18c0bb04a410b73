//! Output paths against the real Nix.
//!
//! `nix-instantiate` evaluates a set of derivations into a throwaway chroot store
//! (`--store local?root=<tmp>`; paths still print as `/nix/store/...`, nothing touches the real
//! `/nix`). For every derivation Nix wrote, the test parses the `.drv` file, prints it back (must
//! be byte-identical), recomputes the `.drv` path and every output path with this crate
//! (modulo hashes of input derivations computed from the parsed input `.drv` files) and compares
//! with what Nix printed.
//!
//! Two Nix versions are used when present: the host's `nix-instantiate` (Nix 2.8 here) and the
//! Nix 2.34 of the Debian sid chroot at `/var/cache/pkgchain/sid-chroot`, run under
//! `unshare --mount` with `/proc`, `/dev` and the temporary directory bound in and a tmpfs over
//! its `/tmp`, so the chroot is left as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::super::hash_modulo::{
    DownstreamPlaceholder, DrvHashes, check_invariants, derivation_path, output_paths,
};
use super::super::*;
use crate::content_address::{ContentAddress, ContentAddressMethod};
use crate::hash::{Hash, HashAlgo, HashEncoding};

const SID_CHROOT: &str = "/var/cache/pkgchain/sid-chroot";
const FEATURES: &str = "experimental-features = nix-command ca-derivations impure-derivations";

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "pkgchain-drv-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Nix makes store objects read-only; make them writable again so they can be removed.
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("u+w")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The expression set: every kind of derivation the brief asks for.
fn expression() -> String {
    let sha256 = Hash::digest(HashAlgo::Sha256, b"flat contents");
    let sha256r = Hash::digest(HashAlgo::Sha256, b"nar contents");
    let sha1 = Hash::digest(HashAlgo::Sha1, b"sha1 contents");
    let sha512 = Hash::digest(HashAlgo::Sha512, b"sha512 contents");
    let md5 = Hash::digest(HashAlgo::Md5, b"md5 contents");
    format!(
        r#"
let
  mk = args: derivation ({{ system = "x86_64-linux"; builder = "/bin/sh"; }} // args);
  script = builtins.toFile "builder.sh" "echo hello > $out\n";
  simple = mk {{ name = "simple"; args = [ "-c" "echo simple > $out" ]; }};
  fodFlat = mk {{ name = "fod-flat"; outputHashMode = "flat"; outputHashAlgo = "sha256";
                 outputHash = "{flat}"; }};
  fodRec = mk {{ name = "fod-rec"; outputHashMode = "recursive"; outputHashAlgo = "sha256";
                outputHash = "{rec}"; }};
  fodSha1 = mk {{ name = "fod-sha1"; outputHashAlgo = "sha1"; outputHash = "{sha1}"; }};
  fodSha1Rec = mk {{ name = "fod-sha1-rec"; outputHashMode = "recursive"; outputHash = "{sha1sri}"; }};
  fodSha512 = mk {{ name = "fod-sha512"; outputHashMode = "recursive"; outputHashAlgo = "sha512";
                   outputHash = "{sha512}"; }};
  fodMd5 = mk {{ name = "fod-md5"; outputHashAlgo = "md5"; outputHash = "{md5}"; inherit simple; }};
in {{
  inherit simple fodFlat fodRec fodSha1 fodSha1Rec fodSha512 fodMd5;
  withInputs = mk {{
    name = "with-inputs"; args = [ script ]; dep = simple;
    fods = [ fodFlat fodRec fodSha1 fodSha1Rec fodSha512 fodMd5 ];
  }};
  multi = mk {{
    name = "multi"; outputs = [ "out" "dev" "doc" ];
    args = [ "-c" "echo > $out; echo > $dev; echo > $doc" ]; s = simple;
  }};
  usesMulti = let m = mk {{ name = "multi2"; outputs = [ "lib" "bin" ]; }}; in
    mk {{ name = "uses-multi"; lib = m.lib; bin = "${{m.bin}}/bin/x"; }};
  structured = mk {{
    name = "structured"; __structuredAttrs = true; outputs = [ "out" "bin" ];
    list = [ 1 (-2) 1.5 0.001 1.0e20 true null "str" ]; nested = {{ a.b = "c\n\"d\"\t"; }};
    dep = simple; src = script; unicode = "h\u00e9llo \u2603";
  }};
  passAsFile = mk {{
    name = "pass-as-file"; passAsFile = [ "big" ]; big = "line1\nline2\t\"quoted\" \\ back $x";
  }};
  escapes = mk {{
    name = "escapes"; s = "tab\there\rcr\nnl \"q\" \\ $ \u00fc \u0001"; args = [ "a\"b" "c\\d" "" ];
  }};
  ca = mk {{
    name = "ca"; __contentAddressed = true; outputHashMode = "recursive"; outputHashAlgo = "sha256";
    outputs = [ "out" "dev" ];
  }};
  caFlat = mk {{ name = "ca-flat"; __contentAddressed = true; outputHashAlgo = "sha512"; }};
  dependsOnCa = let c = mk {{
      name = "ca2"; __contentAddressed = true; outputHashMode = "recursive";
      outputHashAlgo = "sha256"; outputs = [ "out" "dev" ];
    }}; in mk {{ name = "depends-on-ca"; x = c; y = "${{c.dev}}/include"; }};
  dependsOnDependsOnCa = let c = mk {{
      name = "ca3"; __contentAddressed = true; outputHashMode = "recursive";
      outputHashAlgo = "sha256";
    }}; d = mk {{ name = "mid"; x = c; }}; in mk {{ name = "top"; x = d; }};
  impure = mk {{ name = "impure"; __impure = true; }};
}}
"#,
        flat = sha256.encode(HashEncoding::Nix32),
        rec = sha256r.encode(HashEncoding::Base16),
        sha1 = sha1.encode(HashEncoding::Base16),
        sha1sri = Hash::digest(HashAlgo::Sha1, b"sha1 rec").to_sri(),
        sha512 = sha512.encode(HashEncoding::Base16),
        md5 = md5.encode(HashEncoding::Base16),
    )
}

/// Maps each attribute to its `.drv` path and output paths as Nix computes them.
const PATHS_EXPR: &str = r#"
builtins.mapAttrs (n: v: {
  drvPath = v.drvPath;
  outputs = builtins.listToAttrs (map (o: { name = o; value = v.${o}.outPath; }) (v.outputs or [ "out" ]));
}) (EXPR)
"#;

/// How to run `nix-instantiate` against the store rooted at `<tmp>/x`.
enum Runner {
    Host,
    SidChroot,
}

impl Runner {
    fn command(&self, tmp: &Path) -> Command {
        match self {
            Runner::Host => {
                let mut c = Command::new("nix-instantiate");
                c.arg("--store")
                    .arg(format!("local?root={}/x", tmp.display()));
                c.env("HOME", tmp).env("XDG_CACHE_HOME", tmp.join("cache"));
                c.env("NIX_CONFIG", FEATURES);
                c
            }
            Runner::SidChroot => {
                let script = tmp.join("run.sh");
                let text = format!(
                    "set -e\nC={SID_CHROOT}\nmount --rbind /proc $C/proc\nmount --rbind /dev $C/dev\n\
                     mount -t tmpfs tmpfs $C/tmp\nmkdir $C/tmp/w\nmount --bind '{}' $C/tmp/w\n\
                     exec chroot $C env HOME=/tmp/w XDG_CACHE_HOME=/tmp/w/cache \
                     NIX_CONFIG='{FEATURES}' nix-instantiate --store 'local?root=/tmp/w/x' \"$@\"\n",
                    tmp.display()
                );
                std::fs::write(&script, text).expect("write run.sh");
                let mut c = Command::new("unshare");
                c.arg("--mount").arg("--propagation").arg("private");
                c.arg("sh").arg(script);
                c
            }
        }
    }

    fn run(&self, tmp: &Path, args: &[&str]) -> Result<String, String> {
        let out = self
            .command(tmp)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Runs the whole comparison; returns the number of `.drv` files checked.
fn compare_with_nix(runner: &Runner, tag: &str) -> usize {
    let tmp = TempDir::new(tag);
    let expr = expression();
    runner
        .run(&tmp.0, &["-E", &expr])
        .unwrap_or_else(|e| panic!("{tag}: nix-instantiate failed: {e}"));
    let paths_expr = PATHS_EXPR.replace("EXPR", &expr);
    let json = runner
        .run(&tmp.0, &["--eval", "--strict", "--json", "-E", &paths_expr])
        .unwrap_or_else(|e| panic!("{tag}: nix-instantiate --eval failed: {e}"));
    let nix: Value = serde_json::from_str(&json).expect("eval json");

    let store_dir = StoreDir::default();
    let store = tmp.0.join("x/nix/store");
    let read = |p: &StorePath| std::fs::read(store.join(p.base_name())).ok();
    let load = |p: &StorePath| -> Option<Derivation> {
        let bytes = read(p)?;
        let name = Derivation::name_from_path(p)?;
        aterm::parse(&bytes, name, &store_dir).ok()
    };

    let mut hashes = DrvHashes::new();
    let mut checked = 0;
    let attrs = nix.as_object().expect("attr set");
    for (attr, info) in attrs {
        let drv_path_text = info["drvPath"].as_str().expect("drvPath");
        let drv_path = store_dir.parse(drv_path_text).expect("drv path");
        let bytes = read(&drv_path).unwrap_or_else(|| panic!("{tag} {attr}: .drv not written"));
        let name = Derivation::name_from_path(&drv_path).expect("name");

        // Byte-exact round trip, canonical form.
        let drv = aterm::parse_canonical(&bytes, name, &store_dir)
            .unwrap_or_else(|e| panic!("{tag} {attr}: {e}"));
        assert_eq!(
            aterm::print(&drv, &store_dir).expect("print"),
            bytes,
            "{tag} {attr}"
        );

        // The .drv path.
        assert_eq!(
            derivation_path(&drv, &store_dir).expect("drv path"),
            drv_path,
            "{tag} {attr}: .drv path"
        );

        // Modulo hashes of the closure, from the parsed .drv files.
        hashes
            .compute(&drv_path, &store_dir, load)
            .unwrap_or_else(|e| panic!("{tag} {attr}: {e}"));
        let ours = output_paths(&drv, &store_dir, hashes.lookup())
            .unwrap_or_else(|e| panic!("{tag} {attr}: {e}"));
        check_invariants(&drv, &store_dir, hashes.lookup())
            .unwrap_or_else(|e| panic!("{tag} {attr}: {e}"));

        let outputs = info["outputs"].as_object().expect("outputs");
        assert_eq!(outputs.len(), drv.outputs.len(), "{tag} {attr}");
        for (output, nix_path) in outputs {
            let nix_path = nix_path.as_str().expect("outPath");
            match ours.get(output).expect("output") {
                Some(p) => {
                    assert_eq!(store_dir.display(p), nix_path, "{tag} {attr}.{output}");
                    // The variable named after the output holds the path.
                    assert_eq!(drv.env_get(output), Some(nix_path.as_bytes()));
                }
                None => {
                    // Unknown in advance: Nix hands out the downstream placeholder.
                    let placeholder =
                        DownstreamPlaceholder::unknown_ca_output(&drv_path, output).render();
                    assert_eq!(placeholder, nix_path, "{tag} {attr}.{output} placeholder");
                    let env = drv.env_get(output).unwrap_or_default();
                    match drv.outputs.get(output) {
                        Some(
                            DerivationOutput::CaFloating { .. } | DerivationOutput::Impure { .. },
                        ) => {
                            assert_eq!(env, hash_placeholder(output).as_bytes(), "{tag} {attr}");
                        }
                        _ => assert_eq!(env, b"", "{tag} {attr}.{output} deferred env"),
                    }
                }
            }
        }

        // Placeholders of CA inputs appear verbatim in dependents' environments.
        for (input, node) in &drv.input_drvs {
            let Some(input_drv) = load(input) else {
                continue;
            };
            if !input_drv.drv_type().expect("type").is_ca()
                || input_drv.drv_type().expect("type").is_fixed()
            {
                continue;
            }
            for output in &node.outputs {
                let p = DownstreamPlaceholder::unknown_ca_output(input, output).render();
                let found = drv
                    .env
                    .values()
                    .any(|v| v.windows(p.len()).any(|w| w == p.as_bytes()));
                assert!(
                    found,
                    "{tag} {attr}: placeholder of {input}!{output} not in env"
                );
            }
        }

        // Input sources written by builtins.toFile are text paths of their contents.
        for src in &drv.input_srcs {
            if let Some(contents) = read(src) {
                let ca = ContentAddress::new(
                    ContentAddressMethod::Text,
                    Hash::digest(HashAlgo::Sha256, &contents),
                );
                assert_eq!(
                    &ca.store_path(&store_dir, src.name(), [], false)
                        .expect("text path"),
                    src,
                    "{tag} {attr}: toFile path"
                );
            }
        }

        // The JSON form carries the same derivation (structured attributes re-serialised to the
        // exact `__json` bytes Nix wrote).
        let value = json::to_json(&drv).unwrap_or_else(|e| panic!("{tag} {attr}: {e}"));
        assert_eq!(
            json::from_json(&value).expect("from json"),
            drv,
            "{tag} {attr} json"
        );
        checked += 1;
    }

    // Every other `.drv` Nix wrote (inner derivations of the set): byte-exact, right `.drv`
    // path, right output paths.
    let mut all = 0;
    for entry in std::fs::read_dir(&store).expect("store") {
        let base = entry.expect("entry").file_name();
        let Some(base) = base.to_str() else { continue };
        let Ok(path) = StorePath::from_base_name(base) else {
            continue;
        };
        let Some(name) = Derivation::name_from_path(&path) else {
            continue;
        };
        let bytes = read(&path).expect("read");
        let drv = aterm::parse_canonical(&bytes, name, &store_dir)
            .unwrap_or_else(|e| panic!("{tag} {base}: {e}"));
        assert_eq!(
            derivation_path(&drv, &store_dir).expect("path"),
            path,
            "{tag} {base}"
        );
        hashes
            .compute(&path, &store_dir, load)
            .unwrap_or_else(|e| panic!("{tag} {base}: {e}"));
        check_invariants(&drv, &store_dir, hashes.lookup())
            .unwrap_or_else(|e| panic!("{tag} {base}: {e}"));
        all += 1;
    }
    assert!(all > checked, "{tag}: only {all} .drv files");

    // What each kind must look like, so a silently different expression cannot pass.
    let kind = |attr: &str| -> BTreeMap<String, &'static str> {
        let p = store_dir
            .parse(nix[attr]["drvPath"].as_str().expect("drvPath"))
            .expect("path");
        let drv = load(&p).expect("load");
        drv.outputs
            .iter()
            .map(|(n, o)| {
                let k = match o {
                    DerivationOutput::InputAddressed(_) => "ia",
                    DerivationOutput::CaFixed(_) => "fixed",
                    DerivationOutput::CaFloating { .. } => "floating",
                    DerivationOutput::Deferred => "deferred",
                    DerivationOutput::Impure { .. } => "impure",
                };
                (n.clone(), k)
            })
            .collect()
    };
    let one = |k: &'static str| BTreeMap::from([("out".to_owned(), k)]);
    assert_eq!(kind("simple"), one("ia"));
    assert_eq!(kind("fodRec"), one("fixed"));
    assert_eq!(kind("withInputs"), one("ia"));
    assert_eq!(kind("multi").len(), 3);
    assert_eq!(kind("ca").get("dev"), Some(&"floating"));
    assert_eq!(kind("dependsOnCa"), one("deferred"));
    assert_eq!(kind("dependsOnDependsOnCa"), one("deferred"));
    assert_eq!(kind("impure"), one("impure"));
    all
}

fn have_host_nix() -> bool {
    Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn real_nix_host_instantiate_agrees() {
    if !have_host_nix() {
        eprintln!("skipped: nix-instantiate not found");
        return;
    }
    let version = Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let n = compare_with_nix(&Runner::Host, "host");
    eprintln!("{version}: {n} derivations agree");
    assert!(n >= 16);
}

#[test]
fn real_nix_sid_chroot_instantiate_agrees() {
    let nix = Path::new(SID_CHROOT).join("usr/bin/nix-instantiate");
    if !nix.exists() {
        eprintln!("skipped: no Nix in {SID_CHROOT}");
        return;
    }
    // Needs root for mount namespaces and chroot.
    let probe = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: cannot unshare a mount namespace");
        return;
    }
    let n = compare_with_nix(&Runner::SidChroot, "sid");
    eprintln!("sid chroot Nix: {n} derivations agree");
    assert!(n >= 16);
    // Nothing was left behind in the chroot.
    let left = std::fs::read_dir(Path::new(SID_CHROOT).join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "files left in {SID_CHROOT}/tmp");
}
