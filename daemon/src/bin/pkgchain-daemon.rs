//! `pkgchain-daemon`: the worker-protocol daemon that replaces `nix-daemon`.
//!
//! It takes nix-daemon's flags (`--daemon`, `--stdio`, `--force-trusted`, `--force-untrusted`,
//! `--default-trust`) and may be installed or invoked under that name. It opens the block
//! store, serves the store directory as a view of it (FUSE, or materialised files where FUSE
//! is unavailable), listens on the daemon socket (or the one systemd passes) and serves
//! clients until SIGTERM or SIGINT, then unmounts the view.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use pkgchain_daemon::auth::{AccessRules, Trust};
use pkgchain_daemon::listener;
use pkgchain_daemon::locations::Locations;
use pkgchain_daemon::nix_conf::NixConfig;
use pkgchain_daemon::process;
use pkgchain_daemon::server::{self, DaemonState, REPORTED_NIX_VERSION};
use pkgchain_store::{Durability, Store};
use pkgchain_store_view::{OpenMode, ViewMode, resolve_mode};
use tracing::{info, warn};

#[derive(Parser)]
#[command(
    name = "nix-daemon",
    about = "Package chain's Nix daemon: serves Nix clients from a content-addressed block store",
    disable_version_flag = true
)]
struct Cli {
    /// Run as the daemon (the default; accepted for nix-daemon compatibility).
    #[arg(long)]
    daemon: bool,
    /// Serve one connection on standard input and output (what ssh-ng:// stores start).
    #[arg(long)]
    stdio: bool,
    /// Treat every client as trusted.
    #[arg(long, conflicts_with_all = ["force_untrusted", "default_trust"])]
    force_trusted: bool,
    /// Treat every client as untrusted.
    #[arg(long, conflicts_with = "default_trust")]
    force_untrusted: bool,
    /// Decide trust from `trusted-users` (the default).
    #[arg(long)]
    default_trust: bool,
    /// Print the version and exit.
    #[arg(long)]
    version: bool,
    /// The store view: auto (FUSE when possible), fuse, materialised [env: PKGCHAIN_STORE_VIEW].
    #[arg(long, env = "PKGCHAIN_STORE_VIEW", default_value = "auto")]
    view: ViewMode,
    /// Do not serve a view of the store directory (something else provides it).
    #[arg(long)]
    no_view: bool,
    /// More logging (repeat for more); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    // The sandbox's helper stages are this program re-executed: before anything else (they
    // must start single-threaded).
    if let Some(code) = pkgchain_sandbox::stages::run_stage_if_requested() {
        return code;
    }
    // So is the FUSE views' unmount watcher.
    if let Some(code) = pkgchain_store_view::orphan_unmount::run_if_requested() {
        return code;
    }
    pkgchain_daemon::memory::fix_allocator_thresholds();
    let cli = Cli::parse();
    if cli.version {
        println!("nix-daemon (Nix) {REPORTED_NIX_VERSION}");
        return ExitCode::SUCCESS;
    }
    // With --stdio, standard error goes to the remote client's terminal: warnings only.
    process::init_logging(cli.verbose, if cli.stdio { "warn" } else { "info" });
    process::run_main(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let env = |name: &str| std::env::var(name).ok();
    let config = NixConfig::load(env)?;
    let loc = Locations::from_env();
    let forced = if cli.force_trusted {
        Some(Trust::Trusted)
    } else if cli.force_untrusted {
        Some(Trust::Untrusted)
    } else {
        None
    };
    let rules = AccessRules {
        trusted_users: config.list("trusted-users", &["root"]),
        allowed_users: config.list("allowed-users", &["*"]),
        build_users_group: config
            .get("build-users-group")
            .unwrap_or("")
            .trim()
            .to_owned(),
        forced,
    };
    if let Some(store) = config.get("store")
        && !matches!(store.trim(), "" | "auto" | "local" | "daemon")
    {
        anyhow::bail!(
            "setting 'store = {store}' is not supported: this daemon serves its own local store"
        );
    }
    let socket = listener::socket_path(&loc.state_dir, |n| std::env::var(n).ok());
    if cli.stdio {
        return stdio(&loc, &socket, config, rules).await;
    }
    let mut store_config = loc.store_config()?;
    // Nix leaves store files to writeback unless told otherwise; so do we, safely (see
    // pkgchain_store::durability), and flush every few seconds.
    if !config
        .bool("fsync-store-paths", false)
        .context("setting 'fsync-store-paths'")?
    {
        store_config.durability = Durability::Deferred;
    }
    let store = Store::open(store_config)
        .await
        .context("cannot open the store")?;
    let mode = if cli.no_view {
        None
    } else {
        Some(resolve_mode(cli.view)?)
    };
    let state = Arc::new(DaemonState::new(
        store.clone(),
        rules,
        config,
        mode == Some(ViewMode::Materialised),
        &loc,
    ));
    let mut mounts = None;
    match mode {
        Some(ViewMode::Fuse) => {
            mounts = Some(pkgchain_store_view::mount_fuse(
                &store,
                tokio::runtime::Handle::current(),
                &loc.store_dir,
                Some(loc.ipfs_store_dir().as_path()),
                OpenMode::default(),
            )?);
        }
        Some(_) => {
            let report = pkgchain_store_view::sync_store_dir(&store, &loc.store_dir).await?;
            info!(?report, "store directory materialised");
        }
        None => {}
    }
    let std_listener = match listener::from_activation()? {
        Some(l) => l,
        None => listener::bind(&socket)?,
    };
    std_listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(std_listener)?;
    info!(
        store = %loc.store_dir.display(),
        view = ?mode,
        "serving Nix clients until SIGTERM/SIGINT"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let flusher = tokio::spawn(flush_periodically(store.clone()));
    server::serve(listener, state, shutdown).await;
    flusher.abort();
    if let Err(e) = store.flush_unsynced().await {
        warn!(error = %e, "cannot flush the store's last writes");
    }
    if let Some(m) = mounts {
        tokio::task::spawn_blocking(move || m.unmount()).await?;
    }
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// How long an added path may wait for its blocks to be synced (deferred durability). Linux
/// writes dirty pages back after 30 s by default; Nix, with `fsync-store-paths = false`, leaves
/// its store files to that.
const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Syncs what was added since the last time, every [`FLUSH_INTERVAL`].
async fn flush_periodically(store: Store) {
    let mut ticks = tokio::time::interval(FLUSH_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(e) = store.flush_unsynced().await {
            warn!(error = %e, "cannot flush the store's recent writes; trying again later");
        }
    }
}

/// `--stdio`: one client on standard input and output. When a daemon serves the socket, the
/// bytes are relayed to it (it then decides trust from this process's user, as nix-daemon
/// does); otherwise this process opens the store and serves the client itself, trusted unless
/// `--force-untrusted`. It mounts no view: paths it adds appear in the store directory when a
/// daemon next serves it.
async fn stdio(
    loc: &Locations,
    socket: &std::path::Path,
    config: NixConfig,
    rules: AccessRules,
) -> anyhow::Result<ExitCode> {
    if let Ok(stream) = tokio::net::UnixStream::connect(socket).await {
        info!(socket = %socket.display(), "relaying standard input and output to the daemon");
        let (mut from_daemon, mut to_daemon) = stream.into_split();
        let upstream = async {
            tokio::io::copy(&mut tokio::io::stdin(), &mut to_daemon).await?;
            // The client is done sending: let the daemon see the end of its input.
            tokio::io::AsyncWriteExt::shutdown(&mut to_daemon).await
        };
        let downstream = async {
            let mut out = tokio::io::stdout();
            tokio::io::copy(&mut from_daemon, &mut out).await?;
            tokio::io::AsyncWriteExt::flush(&mut out).await
        };
        // Either end closing ends the relay, as in nix-daemon. The daemon's end decides the
        // answer; when the client closes first, the daemon's remaining output is not wanted.
        tokio::select! {
            down = downstream => down.context("relaying the daemon's answers")?,
            up = upstream => {
                up.context("relaying the client's requests")?;
            }
        }
        // Reading standard input cannot be cancelled (tokio reads it on a blocking thread): end
        // the process here instead of waiting for a client that may never close it.
        std::process::exit(0);
    }
    let trust = rules.forced.unwrap_or(Trust::Trusted);
    let store = Store::open(loc.store_config()?)
        .await
        .context("cannot open the store")?;
    let state = Arc::new(DaemonState::new(store, rules, config, false, loc));
    server::serve_stdio(state, trust).await;
    Ok(ExitCode::SUCCESS)
}
