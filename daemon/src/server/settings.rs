//! `SetOptions` with nix-daemon's rules: the fixed fields apply to everyone; of the overrides,
//! a trusted client may set anything, an untrusted one only a short list (and substituters the
//! daemon already trusts).

use pkgchain_protocol::request::ClientSettings;

use crate::auth::Trust;
use crate::nix_conf::NixConfig;

/// Settings any client may override (Nix 2.35's list).
const UNRESTRICTED: &[&str] = &[
    "timeout",
    "max-silent-time",
    "build-poll-interval",
    "connect-timeout",
];

/// The settings a connection ends up with, and the warnings to send the client.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The fixed fields and the accepted overrides.
    pub settings: ClientSettings,
    /// Lines for the client (`STDERR_NEXT`), as Nix words them.
    pub warnings: Vec<String>,
}

/// Applies a client's `SetOptions` for a peer of `trust`, against the daemon's `config`.
pub fn apply(requested: ClientSettings, trust: Trust, config: &NixConfig) -> Applied {
    let mut settings = requested.clone();
    settings.overrides.clear();
    let mut warnings = Vec::new();
    for (name, value) in requested.overrides {
        match name.as_str() {
            // Never taken from a client.
            "ssh-auth-sock" | "experimental-features" => continue,
            "plugin-files" => {
                warnings.push(
                    "warning: Ignoring the client-specified plugin-files setting, since the \
                     daemon does not load plugins from clients"
                        .to_owned(),
                );
                continue;
            }
            _ => {}
        }
        if trust == Trust::Trusted
            || UNRESTRICTED.contains(&name.as_str())
            || (name == "builders" && value.is_empty())
        {
            settings.overrides.insert(name, value);
            continue;
        }
        if name == "substituters" || name == "binary-caches" || name == "extra-substituters" {
            let trusted: Vec<String> = config
                .list("trusted-substituters", &[])
                .into_iter()
                .chain(config.list("substituters", &["https://cache.nixos.org/"]))
                .collect();
            let mut kept = Vec::new();
            for sub in value.split_whitespace() {
                let with_slash = format!("{sub}/");
                if trusted.iter().any(|t| t == sub || *t == with_slash) {
                    kept.push(sub.to_owned());
                } else {
                    warnings.push(format!(
                        "warning: ignoring untrusted substituter '{sub}', you are not a trusted user.\n\
                         Run `man nix.conf` for more information on the `substituters` configuration option."
                    ));
                }
            }
            settings.overrides.insert(name, kept.join(" "));
            continue;
        }
        warnings.push(format!(
            "warning: ignoring the client-specified setting '{name}', because it is a \
             restricted setting and you are not a trusted user"
        ));
    }
    Applied { settings, warnings }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pairs: &[(&str, &str)]) -> ClientSettings {
        ClientSettings {
            overrides: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..ClientSettings::default()
        }
    }

    #[test]
    fn untrusted_clients_set_only_unrestricted_settings() {
        let config = NixConfig::parse("trusted-substituters = http://ok\n").expect("config parses");
        let r = request(&[
            ("sandbox", "false"),
            ("timeout", "10"),
            ("substituters", "http://ok http://evil"),
            ("experimental-features", "nix-command"),
        ]);
        let applied = apply(r.clone(), Trust::Untrusted, &config);
        assert_eq!(
            applied
                .settings
                .overrides
                .get("timeout")
                .map(String::as_str),
            Some("10")
        );
        assert!(!applied.settings.overrides.contains_key("sandbox"));
        assert!(
            !applied
                .settings
                .overrides
                .contains_key("experimental-features")
        );
        assert_eq!(
            applied
                .settings
                .overrides
                .get("substituters")
                .map(String::as_str),
            Some("http://ok")
        );
        assert!(
            applied.warnings.iter().any(|w| w.contains("'sandbox'")),
            "{:?}",
            applied.warnings
        );
        assert!(applied.warnings.iter().any(|w| w.contains("http://evil")));

        let trusted = apply(r, Trust::Trusted, &config);
        assert_eq!(
            trusted
                .settings
                .overrides
                .get("sandbox")
                .map(String::as_str),
            Some("false")
        );
        assert!(trusted.warnings.is_empty());
    }
}
