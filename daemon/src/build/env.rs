//! The builder's environment, exactly as Nix makes it (`initEnv`, `initTmpDir` and the
//! structured-attributes files, `.attrs.sh` written by
//! [`pkgchain_store_model::structured_attrs`]): pure, from the derivation and its output paths.

use std::collections::BTreeMap;

use pkgchain_store_model::derivation::Derivation;
use pkgchain_store_model::derivation::hash_modulo::hash_placeholder;
use pkgchain_store_model::hash::{Hash, HashAlgo, HashEncoding};
use pkgchain_store_model::structured_attrs::attrs_shell;
use serde_json::Value;

/// What the builder gets: its environment and the files to put in its build directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuilderEnv {
    /// Variables, in Nix's order of precedence already applied.
    pub vars: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Files (name in the build directory, contents).
    pub files: Vec<(String, Vec<u8>)>,
    /// The builder, with output placeholders replaced.
    pub builder: Vec<u8>,
    /// Its arguments, with output placeholders replaced.
    pub args: Vec<Vec<u8>>,
}

/// Inputs of [`builder_env`].
pub struct EnvInputs<'a> {
    /// The derivation.
    pub drv: &'a Derivation,
    /// Its outputs' paths, absolute, by output name.
    pub outputs: &'a BTreeMap<String, String>,
    /// The store directory.
    pub store_dir: &'a str,
    /// The build directory inside the sandbox (`/build`).
    pub build_dir: &'a str,
    /// `NIX_BUILD_CORES`.
    pub cores: u32,
    /// Impure variables for a fixed-output derivation (from the daemon's environment).
    pub impure: &'a BTreeMap<String, String>,
}

/// Builds the environment. Errors name what is malformed (structured attributes).
pub fn builder_env(input: &EnvInputs<'_>) -> Result<BuilderEnv, String> {
    let drv = input.drv;
    let rewrites: Vec<(Vec<u8>, Vec<u8>)> = input
        .outputs
        .iter()
        .map(|(name, path)| {
            (
                hash_placeholder(name).into_bytes(),
                path.as_bytes().to_vec(),
            )
        })
        .collect();
    let rewrite = |v: &[u8]| rewrite_all(v, &rewrites);
    let mut vars: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        vars.insert(k.as_bytes().to_vec(), v.as_bytes().to_vec());
    };
    set("PATH", "/path-not-set");
    set("HOME", "/homeless-shelter");
    set("NIX_STORE", input.store_dir);
    set("NIX_BUILD_CORES", &input.cores.to_string());
    let mut files = Vec::new();
    if let Some(attrs) = drv
        .structured_attrs()
        .map_err(|e| format!("structured attributes: {e}"))?
    {
        let attrs = rewrite_json(attrs, &rewrites);
        let json = structured_json(attrs, input.outputs);
        let sh = attrs_shell(&json).map_err(|e| e.to_string())?;
        let text = serde_json::to_vec(&json).map_err(|e| e.to_string())?;
        files.push((".attrs.json".to_owned(), text));
        files.push((".attrs.sh".to_owned(), sh.into_bytes()));
        let json_file = format!("{}/.attrs.json", input.build_dir);
        let sh_file = format!("{}/.attrs.sh", input.build_dir);
        vars.insert(b"NIX_ATTRS_JSON_FILE".to_vec(), json_file.into_bytes());
        vars.insert(b"NIX_ATTRS_SH_FILE".to_vec(), sh_file.into_bytes());
    } else {
        let pass_as_file: Vec<&[u8]> = drv
            .env_get("passAsFile")
            .map(|v| {
                v.split(|b| b.is_ascii_whitespace())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        for (k, v) in &drv.env {
            if pass_as_file.contains(&k.as_slice()) {
                let name = format!(
                    ".attr-{}",
                    Hash::digest(HashAlgo::Sha256, k).encode(HashEncoding::Nix32)
                );
                let mut var = k.clone();
                var.extend_from_slice(b"Path");
                vars.insert(var, format!("{}/{name}", input.build_dir).into_bytes());
                files.push((name, rewrite(v)));
            } else {
                vars.insert(k.clone(), rewrite(v));
            }
        }
    }
    for k in ["NIX_BUILD_TOP", "TMPDIR", "TEMPDIR", "TMP", "TEMP", "PWD"] {
        vars.insert(k.as_bytes().to_vec(), input.build_dir.as_bytes().to_vec());
    }
    if drv.drv_type().is_ok_and(|t| t.is_fixed()) {
        // Nix passes these through from its own environment for fixed-output builds only.
        let names: Vec<String> = drv
            .env_get("impureEnvVars")
            .map(|v| {
                String::from_utf8_lossy(v)
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        for name in names {
            if let Some(value) = input.impure.get(&name) {
                vars.insert(name.into_bytes(), value.clone().into_bytes());
            }
        }
    }
    vars.insert(b"NIX_LOG_FD".to_vec(), b"2".to_vec());
    vars.insert(b"TERM".to_vec(), b"xterm-256color".to_vec());
    Ok(BuilderEnv {
        vars,
        files,
        builder: rewrite(&drv.builder),
        args: drv.args.iter().map(|a| rewrite(a)).collect(),
    })
}

fn rewrite_all(value: &[u8], rewrites: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = value.to_vec();
    for (from, to) in rewrites {
        if from.is_empty() || !contains(&out, from) {
            continue;
        }
        let mut next = Vec::with_capacity(out.len());
        let mut i = 0;
        while i < out.len() {
            if out[i..].starts_with(from) {
                next.extend_from_slice(to);
                i += from.len();
            } else {
                next.push(out[i]);
                i += 1;
            }
        }
        out = next;
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Replaces placeholders in every string of a JSON value, iteratively.
fn rewrite_json(value: Value, rewrites: &[(Vec<u8>, Vec<u8>)]) -> Value {
    let text = match serde_json::to_string(&value) {
        Ok(t) => t,
        Err(_) => return value,
    };
    // Placeholders and store paths contain no characters JSON escapes, so rewriting the
    // serialised text is the same as rewriting each string.
    let rewritten = rewrite_all(text.as_bytes(), rewrites);
    serde_json::from_slice(&rewritten).unwrap_or(value)
}

/// `.attrs.json`: the attributes with `outputs` mapped to their paths (Nix's
/// `writeStructuredAttrs`).
fn structured_json(mut attrs: Value, outputs: &BTreeMap<String, String>) -> Value {
    if let Value::Object(map) = &mut attrs {
        let outs: serde_json::Map<String, Value> = outputs
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        map.insert("outputs".to_owned(), Value::Object(outs));
    }
    attrs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drv(env: &[(&str, &str)]) -> Derivation {
        let mut d = Derivation {
            name: "x".into(),
            builder: b"/bin/sh".to_vec(),
            ..Derivation::default()
        };
        for (k, v) in env {
            d.env_set(k, v.as_bytes());
        }
        d
    }

    fn outputs() -> BTreeMap<String, String> {
        BTreeMap::from([("out".to_owned(), "/nix/store/aaaa-x".to_owned())])
    }

    fn env_of(d: &Derivation) -> BuilderEnv {
        let outs = outputs();
        builder_env(&EnvInputs {
            drv: d,
            outputs: &outs,
            store_dir: "/nix/store",
            build_dir: "/build",
            cores: 4,
            impure: &BTreeMap::new(),
        })
        .expect("env")
    }

    fn var(e: &BuilderEnv, k: &str) -> String {
        String::from_utf8_lossy(e.vars.get(k.as_bytes()).expect(k)).into_owned()
    }

    #[test]
    fn nix_fixed_variables_override_the_derivation() {
        let e = env_of(&drv(&[("TMPDIR", "/elsewhere"), ("foo", "bar")]));
        assert_eq!(var(&e, "TMPDIR"), "/build");
        assert_eq!(var(&e, "NIX_BUILD_TOP"), "/build");
        assert_eq!(var(&e, "HOME"), "/homeless-shelter");
        assert_eq!(var(&e, "PATH"), "/path-not-set");
        assert_eq!(var(&e, "NIX_STORE"), "/nix/store");
        assert_eq!(var(&e, "NIX_BUILD_CORES"), "4");
        assert_eq!(var(&e, "NIX_LOG_FD"), "2");
        assert_eq!(var(&e, "TERM"), "xterm-256color");
        assert_eq!(var(&e, "foo"), "bar");
    }

    #[test]
    fn pass_as_file_writes_the_value_to_a_named_file() {
        let e = env_of(&drv(&[("passAsFile", "big"), ("big", "contents")]));
        assert!(!e.vars.contains_key(&b"big"[..]));
        let path = var(&e, "bigPath");
        let name = path.strip_prefix("/build/").expect("in build dir");
        assert!(name.starts_with(".attr-"), "{name}");
        assert_eq!(name.len(), ".attr-".len() + 52);
        assert_eq!(e.files, vec![(name.to_owned(), b"contents".to_vec())]);
    }

    #[test]
    fn output_placeholders_are_replaced() {
        let p = hash_placeholder("out");
        let mut d = drv(&[("script", &format!("echo {p}/bin"))]);
        d.args = vec![format!("{p}/x").into_bytes()];
        let e = env_of(&d);
        assert_eq!(var(&e, "script"), "echo /nix/store/aaaa-x/bin");
        assert_eq!(e.args, vec![b"/nix/store/aaaa-x/x".to_vec()]);
    }

    #[test]
    fn structured_attrs_become_json_and_shell_files() {
        let json = r#"{"name":"x","n":3,"flag":true,"off":false,"list":["a","b'c"],"set":{"k":"v"},"nested":[[1]],"bad-name":"y"}"#;
        let e = env_of(&drv(&[("__json", json)]));
        assert_eq!(var(&e, "NIX_ATTRS_JSON_FILE"), "/build/.attrs.json");
        assert_eq!(var(&e, "NIX_ATTRS_SH_FILE"), "/build/.attrs.sh");
        assert!(!e.vars.contains_key(&b"__json"[..]));
        let (_, written) = &e.files[0];
        let parsed: Value = serde_json::from_slice(written).expect("json");
        assert_eq!(parsed["outputs"]["out"], "/nix/store/aaaa-x");
        let sh = String::from_utf8_lossy(&e.files[1].1).into_owned();
        assert!(sh.contains("declare name='x'\n"), "{sh}");
        assert!(sh.contains("declare n=3\n"), "{sh}");
        assert!(sh.contains("declare flag=1\n"), "{sh}");
        assert!(sh.contains("declare off=\n"), "{sh}");
        assert!(sh.contains("declare -a list=('a' 'b'\\''c' )\n"), "{sh}");
        assert!(sh.contains("declare -A set=(['k']='v' )\n"), "{sh}");
        assert!(
            sh.contains("declare -A outputs=(['out']='/nix/store/aaaa-x' )\n"),
            "{sh}"
        );
        assert!(!sh.contains("nested"), "{sh}");
        assert!(!sh.contains("bad-name"), "{sh}");
    }
}
