//! The worker-protocol server: accepts Nix clients on the daemon socket and serves each
//! connection on its own task.
//!
//! One process serves every connection (nix-daemon forks one per connection), so what Nix
//! keeps per process is kept per connection here: the peer's trust, its `SetOptions`
//! settings, its negotiated protocol version. A connection that sends garbage gets an error and
//! is closed; the others are not affected.

mod building;
mod connection;
mod gc;
mod ops;
mod records;
mod settings;
mod substitution;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pkgchain_gc_roots::RootsLayout;
use pkgchain_store::Store;
use tokio::net::UnixListener;
use tracing::{info, warn};

use crate::auth::AccessRules;
use crate::nix_conf::NixConfig;

pub use connection::{serve_connection, serve_stdio};
pub(crate) use records::write_log;

/// The Nix version this daemon reports in the handshake (1.33 and later) and `--version`:
/// the newest Nix whose protocol it speaks, marked as ours.
pub const REPORTED_NIX_VERSION: &str = concat!("2.35.0 (pkgchain ", env!("CARGO_PKG_VERSION"), ")");

/// What every connection shares.
pub struct DaemonState {
    /// The store.
    pub store: Store,
    /// Who may connect, and who is trusted.
    pub rules: AccessRules,
    /// The daemon's own `nix.conf` settings.
    pub config: NixConfig,
    /// The store directory is a materialised view: every added path is written out as files
    /// before the client hears it was added (clients read the store directory themselves).
    pub materialise: bool,
    /// Where GC roots, profiles and temp roots live (under the state directory).
    pub roots: RootsLayout,
    /// The CID view (`/ipfs/store`), which pin links point into.
    pub ipfs_store_dir: PathBuf,
    /// Where build logs live (`NIX_LOG_DIR`).
    pub log_dir: PathBuf,
    /// Numbers connections (names of their temp-roots files).
    pub connections: AtomicU64,
    /// Connections being served on the socket now.
    pub open_connections: AtomicU64,
    /// The build scheduler.
    pub builds: Arc<crate::build::Builds>,
    /// The binary caches in use, per set of settings.
    pub substituters: substitution::SubstituterPool,
}

impl DaemonState {
    /// State for `store` with the given settings; roots and logs where `locations` says.
    pub fn new(
        store: Store,
        rules: AccessRules,
        config: NixConfig,
        materialise: bool,
        locations: &crate::locations::Locations,
    ) -> DaemonState {
        let roots = RootsLayout::new(&locations.state_dir, store.store_dir().clone());
        let builds = Arc::new(crate::build::Builds::new(
            crate::build::BuildConfig::from_settings(&config, locations),
        ));
        let substituters = substitution::SubstituterPool::with_disk_cache(
            &locations
                .state_dir
                .join("pkgchain")
                .join("narinfo-cache.sqlite"),
            &config,
        );
        DaemonState {
            builds,
            store,
            rules,
            config,
            materialise,
            roots,
            ipfs_store_dir: locations.ipfs_store_dir(),
            log_dir: locations.log_dir.clone(),
            connections: AtomicU64::new(0),
            open_connections: AtomicU64::new(0),
            substituters,
        }
    }

    /// A fresh connection number.
    pub(crate) fn next_connection(&self) -> u64 {
        self.connections.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes a newly valid path visible in the store directory (materialised view only; the
    /// FUSE view shows it as soon as it is registered).
    pub(crate) async fn publish(&self, info: &pkgchain_store::PathInfo) -> Result<(), String> {
        if !self.materialise {
            return Ok(());
        }
        let store = self.store.clone();
        let base = info.path.base_name().to_owned();
        let root = info.root;
        tokio::task::spawn_blocking(move || {
            let dir = std::path::PathBuf::from(store.store_dir().as_str());
            pkgchain_store_view::materialise_path(&store, &dir, &base, &root)
        })
        .await
        .map_err(|e| e.to_string())?
        .map(|_| ())
        .map_err(|e| e.to_string())
    }
}

/// How long a stopping daemon waits for its connections to end (their adds to be registered,
/// so the last flush covers them).
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits until no connection is open, at most [`STOP_GRACE`].
async fn wait_for_connections(state: &DaemonState) {
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while state.open_connections.load(Ordering::Relaxed) > 0 {
        if tokio::time::Instant::now() >= deadline {
            info!(
                open = state.open_connections.load(Ordering::Relaxed),
                "stopping with connections still open"
            );
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Accepts connections until `shutdown` resolves (then waits a little for the open ones to
/// end); each is served on its own task.
pub async fn serve(
    listener: UnixListener,
    state: Arc<DaemonState>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => {
                info!("stopping: no new connections");
                wait_for_connections(&state).await;
                // The narinfo lookups still queued reach the disk (a few milliseconds).
                let flushed = state.substituters.flush();
                if tokio::time::timeout(std::time::Duration::from_secs(5), flushed).await.is_err() {
                    warn!("stopping without writing the last narinfo lookups");
                }
                return;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let state = Arc::clone(&state);
                    tokio::spawn(async move {
                        state.open_connections.fetch_add(1, Ordering::Relaxed);
                        serve_connection(Arc::clone(&state), stream).await;
                        if state.open_connections.fetch_sub(1, Ordering::Relaxed) == 1 {
                            // The last client left: give the memory its requests used back.
                            state.store.db().forget_cached();
                            let _ = tokio::task::spawn_blocking(crate::memory::release_free_memory)
                                .await;
                        }
                    });
                }
                Err(e) => {
                    // EMFILE and friends: wait a little instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}
