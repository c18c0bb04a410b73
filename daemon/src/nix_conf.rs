//! Nix's configuration files, read the way nix-daemon reads them.
//!
//! Sources, later ones overriding earlier ones: `$NIX_CONF_DIR/nix.conf` (default
//! `/etc/nix/nix.conf`), the user files (`$NIX_USER_CONF_FILES`, colon-separated, or else
//! `nix/nix.conf` under `$XDG_CONFIG_DIRS` and `$XDG_CONFIG_HOME`), then the contents of
//! `$NIX_CONFIG`. Syntax as in Nix: one `name = value` per line, `#` starts a comment,
//! `include FILE` and `!include FILE` (missing file ignored) read another file relative to the
//! including one, and `extra-name = value` appends to `name` instead of replacing it. Values
//! stay text; typed accessors split lists on whitespace and read booleans as Nix does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Largest configuration file read (they are a few KiB in practice).
const MAX_FILE_BYTES: u64 = 1 << 20;
/// How deep `include` may nest.
const MAX_INCLUDE_DEPTH: usize = 16;

/// A configuration file that could not be used.
#[derive(Debug, Error)]
pub enum NixConfError {
    /// The file could not be read.
    #[error("cannot read configuration file '{path}': {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("configuration file '{path}' is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A line is neither a setting, a comment nor an include.
    #[error("syntax error in configuration line '{line}' in '{origin}'")]
    Syntax {
        /// The offending line.
        line: String,
        /// The file (or `NIX_CONFIG`).
        origin: String,
    },
    /// Includes nest deeper than [`MAX_INCLUDE_DEPTH`] (a cycle, most likely).
    #[error("configuration includes nest deeper than {MAX_INCLUDE_DEPTH} at '{path}'")]
    IncludeDepth {
        /// The file that would have been included.
        path: PathBuf,
    },
    /// A setting's value has the wrong form.
    #[error("setting '{name}' has invalid value '{value}': {why}")]
    Value {
        /// The setting.
        name: String,
        /// Its value.
        value: String,
        /// What was expected.
        why: &'static str,
    },
}

/// The settings of one Nix installation, as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NixConfig {
    values: BTreeMap<String, String>,
    /// Defaults that depend on the machine and the environment, found by [`NixConfig::load`]:
    /// `ssl-cert-file` and `netrc-file`.
    machine_defaults: BTreeMap<String, String>,
}

/// Where Nix looks for a CA bundle when `ssl-cert-file` is not set, in order.
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/nix/var/nix/profiles/default/etc/ssl/certs/ca-bundle.crt",
];

/// Nix's defaults for the settings this daemon reads whose default is not empty (what an
/// `extra-` line appends to).
const NIX_DEFAULTS: &[(&str, &str)] = &[
    ("trusted-users", "root"),
    ("allowed-users", "*"),
    ("substituters", "https://cache.nixos.org/"),
    (
        "trusted-public-keys",
        "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=",
    ),
    ("require-sigs", "true"),
];

fn nix_default(name: &str) -> Option<&'static str> {
    NIX_DEFAULTS
        .iter()
        .find_map(|(n, v)| (*n == name).then_some(*v))
}

impl NixConfig {
    /// Reads the configuration from the files and variables nix-daemon reads, taking variables
    /// from `var` (the process environment in practice).
    pub fn load(var: impl Fn(&str) -> Option<String>) -> Result<NixConfig, NixConfError> {
        let mut config = NixConfig::default();
        let conf_dir = var("NIX_CONF_DIR")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "/etc/nix".to_owned());
        // Nix's defaults: the netrc beside nix.conf; the CA bundle of `NIX_SSL_CERT_FILE`,
        // else `SSL_CERT_FILE`, else the first bundle of the machine's (none: empty).
        let netrc = Path::new(&conf_dir).join("netrc");
        let ca_file = ["NIX_SSL_CERT_FILE", "SSL_CERT_FILE"]
            .iter()
            .find_map(|v| var(v).filter(|v| !v.is_empty()))
            .or_else(|| {
                CA_BUNDLES
                    .iter()
                    .find(|f| Path::new(f).exists())
                    .map(|f| (*f).to_owned())
            })
            .unwrap_or_default();
        config.machine_defaults = BTreeMap::from([
            (
                "netrc-file".to_owned(),
                netrc.to_string_lossy().into_owned(),
            ),
            ("ssl-cert-file".to_owned(), ca_file),
        ]);
        config.read_file(&Path::new(&conf_dir).join("nix.conf"), true, 0)?;
        for file in user_files(&var) {
            config.read_file(&file, true, 0)?;
        }
        if let Some(text) = var("NIX_CONFIG") {
            config.apply_text(&text, Path::new("."), "NIX_CONFIG", 0)?;
        }
        Ok(config)
    }

    /// A configuration from the text of one file (no includes resolved relative to a file).
    pub fn parse(text: &str) -> Result<NixConfig, NixConfError> {
        let mut config = NixConfig::default();
        config.apply_text(text, Path::new("."), "(text)", 0)?;
        Ok(config)
    }

    /// Sets `name` to `value` (as a later line would), `extra-` names appending (to Nix's
    /// default when the setting was not given: `extra-trusted-users = alice` keeps root).
    pub fn set(&mut self, name: &str, value: &str) {
        if let Some(base) = name.strip_prefix("extra-") {
            let entry = self
                .values
                .entry(base.to_owned())
                .or_insert_with(|| nix_default(base).unwrap_or("").to_owned());
            if !entry.is_empty() && !value.is_empty() {
                entry.push(' ');
            }
            entry.push_str(value);
        } else {
            self.values.insert(name.to_owned(), value.to_owned());
        }
    }

    /// The raw value of `name`, if set anywhere.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The value of `name`, or Nix's default for the settings this daemon reads.
    pub fn get_or_default(&self, name: &str) -> Option<&str> {
        self.get(name)
            .or_else(|| self.machine_defaults.get(name).map(String::as_str))
            .or_else(|| nix_default(name))
    }

    /// Every setting that was given, by name.
    pub fn values(&self) -> &BTreeMap<String, String> {
        &self.values
    }

    /// A list setting (whitespace-separated), or `default` when unset.
    pub fn list(&self, name: &str, default: &[&str]) -> Vec<String> {
        match self.get(name) {
            Some(v) => v.split_whitespace().map(str::to_owned).collect(),
            None => default.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// A boolean setting (`true`/`false`, as Nix spells them), or `default` when unset.
    pub fn bool(&self, name: &str, default: bool) -> Result<bool, NixConfError> {
        match self.get(name).map(str::trim) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(NixConfError::Value {
                name: name.to_owned(),
                value: other.to_owned(),
                why: "expected 'true' or 'false'",
            }),
        }
    }

    fn read_file(
        &mut self,
        path: &Path,
        ignore_missing: bool,
        depth: usize,
    ) -> Result<(), NixConfError> {
        if depth > MAX_INCLUDE_DEPTH {
            return Err(NixConfError::IncludeDepth {
                path: path.to_owned(),
            });
        }
        let read_err = |source| NixConfError::Read {
            path: path.to_owned(),
            source,
        };
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if ignore_missing && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(read_err(e)),
        };
        if meta.len() > MAX_FILE_BYTES {
            return Err(NixConfError::TooLarge {
                path: path.to_owned(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        let dir = path.parent().unwrap_or(Path::new("/"));
        self.apply_text(&text, dir, &path.display().to_string(), depth)
    }

    /// Applies the lines of one file. Includes recurse, bounded by [`MAX_INCLUDE_DEPTH`]: this
    /// is the administrator's configuration, not input from clients.
    fn apply_text(
        &mut self,
        text: &str,
        dir: &Path,
        origin: &str,
        depth: usize,
    ) -> Result<(), NixConfError> {
        for raw in text.lines() {
            let line = raw.split('#').next().unwrap_or("");
            let tokens: Vec<&str> = line.split_whitespace().collect();
            let Some(first) = tokens.first() else {
                continue;
            };
            if *first == "include" || *first == "!include" {
                let [_, file] = tokens[..] else {
                    return Err(NixConfError::Syntax {
                        line: raw.to_owned(),
                        origin: origin.to_owned(),
                    });
                };
                self.read_file(&dir.join(file), *first == "!include", depth + 1)?;
                continue;
            }
            if tokens.len() < 2 || tokens[1] != "=" {
                return Err(NixConfError::Syntax {
                    line: raw.to_owned(),
                    origin: origin.to_owned(),
                });
            }
            self.set(first, &tokens[2..].join(" "));
        }
        Ok(())
    }
}

/// The user configuration files, in the order Nix reads them.
fn user_files(var: &impl Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    if let Some(files) = var("NIX_USER_CONF_FILES") {
        return files
            .split(':')
            .filter(|f| !f.is_empty())
            .map(PathBuf::from)
            .collect();
    }
    let mut files: Vec<PathBuf> = var("XDG_CONFIG_DIRS")
        .unwrap_or_else(|| "/etc/xdg".to_owned())
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join("nix/nix.conf"))
        .collect();
    // Nix reads the most important directory last.
    files.reverse();
    let home = var("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .or_else(|| var("HOME").map(|h| format!("{h}/.config")));
    if let Some(home) = home {
        files.push(Path::new(&home).join("nix/nix.conf"));
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_comments_and_extra() {
        let c = NixConfig::parse(
            "# a comment\ntrusted-users = root alice # trailing\n\nsandbox = false\n\
             substituters = http://a\nextra-substituters = http://b\nempty =\n",
        )
        .expect("parses");
        assert_eq!(c.list("trusted-users", &["root"]), ["root", "alice"]);
        assert!(!c.bool("sandbox", true).expect("bool"));
        assert_eq!(c.list("substituters", &[]), ["http://a", "http://b"]);
        assert_eq!(c.get("empty"), Some(""));
        assert_eq!(c.list("allowed-users", &["*"]), ["*"]);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = NixConfig::parse("sandbox false\n").expect_err("no '='");
        assert!(err.to_string().contains("'sandbox false'"), "{err}");
        let err = NixConfig::parse("sandbox = maybe\n")
            .expect("parses")
            .bool("sandbox", true)
            .expect_err("not a bool");
        assert!(err.to_string().contains("'maybe'"), "{err}");
    }

    #[test]
    fn files_includes_and_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("nix.conf"),
            "trusted-users = root\ninclude more.conf\n!include missing.conf\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("more.conf"), "extra-trusted-users = bob\n").expect("write");
        let conf_dir = dir.path().to_string_lossy().into_owned();
        let c = NixConfig::load(|n| match n {
            "NIX_CONF_DIR" => Some(conf_dir.clone()),
            "NIX_USER_CONF_FILES" => Some(String::new()),
            "NIX_CONFIG" => Some("allowed-users = @wheel".to_owned()),
            _ => None,
        })
        .expect("loads");
        assert_eq!(c.list("trusted-users", &[]), ["root", "bob"]);
        assert_eq!(c.list("allowed-users", &["*"]), ["@wheel"]);
        // Defaults of the machine: the netrc beside nix.conf, the CA bundle of the variables.
        assert_eq!(
            c.get_or_default("netrc-file"),
            Some(format!("{conf_dir}/netrc").as_str())
        );
        let with_ca = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            let dir = conf_dir.clone();
            NixConfig::load(move |n| match n {
                "NIX_CONF_DIR" => Some(dir.clone()),
                "NIX_USER_CONF_FILES" => Some(String::new()),
                _ => vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()),
            })
            .expect("loads")
            .get_or_default("ssl-cert-file")
            .map(str::to_owned)
        };
        let both = [("NIX_SSL_CERT_FILE", "/a.pem"), ("SSL_CERT_FILE", "/b.pem")];
        assert_eq!(with_ca(&both).as_deref(), Some("/a.pem"));
        assert_eq!(with_ca(&both[1..]).as_deref(), Some("/b.pem"));
        let probed = CA_BUNDLES
            .iter()
            .find(|f| Path::new(f).exists())
            .copied()
            .unwrap_or("");
        assert_eq!(with_ca(&[]).as_deref(), Some(probed));
        // An `extra-` line for a setting not given appends to Nix's default.
        let c =
            NixConfig::parse("extra-trusted-users = alice\nextra-trusted-public-keys = k:AAAA\n")
                .expect("parse");
        assert_eq!(c.list("trusted-users", &["root"]), ["root", "alice"]);
        assert_eq!(
            c.get_or_default("trusted-public-keys"),
            Some("cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY= k:AAAA")
        );
        assert_eq!(
            NixConfig::parse("")
                .expect("parse")
                .get_or_default("trusted-public-keys"),
            Some("cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=")
        );

        std::fs::write(dir.path().join("nix.conf"), "include nix.conf\n").expect("write");
        let err = NixConfig::load(|n| match n {
            "NIX_CONF_DIR" => Some(conf_dir.clone()),
            "NIX_USER_CONF_FILES" => Some(String::new()),
            _ => None,
        })
        .expect_err("include cycle");
        assert!(err.to_string().contains("nest deeper"), "{err}");
    }
}
