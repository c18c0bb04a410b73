//! Where the store, its state and its blocks live.
//!
//! Defaults are Nix's (`/nix/store`, `/nix/var/nix`, `/nix/var/log/nix`) plus `/ipfs` for the
//! block store, pins and the CID view. The variables nix-daemon honours move them:
//! `NIX_STORE_DIR`, `NIX_STATE_DIR`, `NIX_LOG_DIR`; `PKGCHAIN_IPFS_DIR` moves `/ipfs`.

use std::ffi::OsString;
use std::path::PathBuf;

use pkgchain_store::StoreConfig;
use pkgchain_store_model::store_path::{StoreDir, StorePathError};

/// The directories of one installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locations {
    /// The store directory (`NIX_STORE_DIR`, default `/nix/store`).
    pub store_dir: PathBuf,
    /// Nix state (`NIX_STATE_DIR`, default `/nix/var/nix`); our database is in `pkgchain/`.
    pub state_dir: PathBuf,
    /// Build logs (`NIX_LOG_DIR`, default `/nix/var/log/nix`).
    pub log_dir: PathBuf,
    /// Blocks, pins and the CID view (`PKGCHAIN_IPFS_DIR`, default `/ipfs`).
    pub ipfs_dir: PathBuf,
}

impl Locations {
    /// Locations from a variable lookup (the process environment in practice).
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Locations {
        let get = |name: &str, default: &str| {
            var(name)
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from(default), PathBuf::from)
        };
        Locations {
            store_dir: get("NIX_STORE_DIR", "/nix/store"),
            state_dir: get("NIX_STATE_DIR", "/nix/var/nix"),
            log_dir: get("NIX_LOG_DIR", "/nix/var/log/nix"),
            ipfs_dir: get("PKGCHAIN_IPFS_DIR", "/ipfs"),
        }
    }

    /// Locations from the process environment.
    pub fn from_env() -> Locations {
        Locations::from_vars(|n| std::env::var_os(n))
    }

    /// The store configuration these locations give.
    pub fn store_config(&self) -> Result<StoreConfig, StorePathError> {
        let dir = StoreDir::new(&self.store_dir.to_string_lossy())?;
        Ok(StoreConfig::from_locations(
            dir,
            &self.state_dir,
            &self.ipfs_dir,
        ))
    }

    /// Where the CID view is mounted.
    pub fn ipfs_store_dir(&self) -> PathBuf {
        self.ipfs_dir.join("store")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let none = Locations::from_vars(|_| None);
        assert_eq!(none.store_dir, PathBuf::from("/nix/store"));
        assert_eq!(none.state_dir, PathBuf::from("/nix/var/nix"));
        assert_eq!(none.log_dir, PathBuf::from("/nix/var/log/nix"));
        assert_eq!(none.ipfs_dir, PathBuf::from("/ipfs"));
        let moved = Locations::from_vars(|n| match n {
            "NIX_STORE_DIR" => Some("/tmp/s/store".into()),
            "NIX_STATE_DIR" => Some("/tmp/s/var".into()),
            "PKGCHAIN_IPFS_DIR" => Some("/tmp/s/ipfs".into()),
            "NIX_LOG_DIR" => Some("".into()),
            _ => None,
        });
        assert_eq!(moved.store_dir, PathBuf::from("/tmp/s/store"));
        assert_eq!(
            moved.log_dir,
            PathBuf::from("/nix/var/log/nix"),
            "empty means unset"
        );
        let config = moved.store_config().expect("config");
        assert_eq!(
            config.db_file,
            PathBuf::from("/tmp/s/var/pkgchain/store.sqlite")
        );
        assert_eq!(config.blocks_dir, PathBuf::from("/tmp/s/ipfs/blocks"));
        assert_eq!(config.store_dir.as_str(), "/tmp/s/store");
    }
}
