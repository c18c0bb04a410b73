//! `pkgchain`: the command-line tool over package chain's store.
//!
//! ```text
//! pkgchain store add PATH          add a file tree as a source path; prints the store path
//! pkgchain store dump STORE-PATH   the NAR on stdout
//! pkgchain store cat PATH          a file's contents (PATH may point inside a store path)
//! pkgchain store ls [-l] [-R] PATH list a directory inside a store path
//! pkgchain store blocks STORE-PATH the blocks a path consists of
//! pkgchain store verify            check every block and every NAR hash
//! pkgchain store mount             serve the store view until SIGINT/SIGTERM
//! pkgchain store stats             paths, blocks, bytes and dedup
//! pkgchain pin add TARGET [--link L] pin a store path's DAG (or a CID) for the current user
//! pkgchain pin rm TARGET           remove the current user's pins of it
//! pkgchain pin ls                  every pin, with the DAG it keeps
//! ```
//!
//! Locations follow `NIX_STORE_DIR`, `NIX_STATE_DIR` and `PKGCHAIN_IPFS_DIR` (see
//! `pkgchain_daemon::locations`), or the global flags.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use pkgchain_daemon::locations::Locations;
use pkgchain_daemon::process;
use pkgchain_store::Store;
use pkgchain_store::tree::{self, Entry};
use pkgchain_store_view::{ViewMode, materialise, resolve_mode};
use tracing::info;

#[derive(Parser)]
#[command(
    name = "pkgchain",
    version,
    about = "Package chain: a content-addressed store for Nix"
)]
struct Cli {
    #[command(flatten)]
    dirs: DirFlags,
    /// More logging (repeat for more); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct DirFlags {
    /// Store directory [env: NIX_STORE_DIR, default /nix/store].
    #[arg(long, global = true)]
    store_dir: Option<PathBuf>,
    /// State directory [env: NIX_STATE_DIR, default /nix/var/nix].
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    /// Blocks, pins and the CID view [env: PKGCHAIN_IPFS_DIR, default /ipfs].
    #[arg(long, global = true)]
    ipfs_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// The block store and its views.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Pins: DAGs (and so their blocks) the garbage collector keeps whatever store paths use
    /// them.
    #[command(subcommand)]
    Pin(PinCommand),
    /// Serves the store as a Nix HTTP binary cache (`nix-cache-info`, narinfo files signed
    /// with the keys of `secret-key-files` and `--secret-key-file`, zstd NARs) until stopped.
    ServeCache {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:5000")]
        listen: std::net::SocketAddr,
        /// A secret key file (`nix-store --generate-binary-cache-key`); may be repeated.
        #[arg(long = "secret-key-file")]
        secret_key_files: Vec<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum PinCommand {
    /// Pin a DAG for the current user: a store path's, a file's or directory's inside one, or
    /// a CID's. Prints the pin.
    Add {
        /// A store path (or a path inside one), or a CID.
        target: String,
        /// The program the pin belongs to (its directory under the user's pins).
        #[arg(long, default_value = "pkgchain")]
        program: String,
        /// Pin through this link instead, which is made to point at the DAG; removing the link
        /// unpins (an auto pin, as `nix-build -o` makes an indirect root).
        #[arg(long)]
        link: Option<PathBuf>,
    },
    /// Remove the current user's pins of a DAG (a store path, a path inside one, or a CID).
    Rm {
        /// What was pinned.
        target: String,
        /// The program the pins belong to.
        #[arg(long, default_value = "pkgchain")]
        program: String,
    },
    /// List every pin of every user, with the DAG it keeps ("dangling" if none).
    Ls,
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Add a file, symlink or directory as a source path (like `nix-store --add`).
    Add {
        /// The tree to add.
        path: PathBuf,
        /// Store path name (default: the last component of PATH).
        #[arg(long)]
        name: Option<String>,
    },
    /// Write the NAR of a store path to stdout.
    Dump {
        /// A store path.
        path: String,
    },
    /// Write a file's contents to stdout.
    Cat {
        /// A store path or a file inside one.
        path: String,
    },
    /// List a directory inside a store path.
    Ls {
        /// A store path or a directory inside one.
        path: String,
        /// Show type, mode and size.
        #[arg(short, long)]
        long: bool,
        /// List subdirectories too.
        #[arg(short = 'R', long)]
        recursive: bool,
    },
    /// List the blocks (CID, size) a store path consists of.
    Blocks {
        /// A store path.
        path: String,
    },
    /// Check every block of every valid path and every NAR hash; exit 1 on problems.
    Verify,
    /// Serve the store view (FUSE, or materialised files) until SIGINT or SIGTERM.
    Mount {
        /// auto, fuse or materialised.
        #[arg(long, default_value = "auto", env = "PKGCHAIN_STORE_VIEW")]
        view: ViewMode,
        /// Do not mount the CID view at `<ipfs dir>/store`.
        #[arg(long)]
        no_ipfs: bool,
        /// FUSE opens: kernel-cache (no request per open; warm reads at page-cache speed) or
        /// passthrough (single-block files read by the kernel straight from their block).
        #[arg(long, default_value = "kernel-cache", env = "PKGCHAIN_FUSE_OPEN")]
        fuse_open: pkgchain_store_view::OpenMode,
    },
    /// Paths, blocks, bytes and deduplication.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn locations(flags: &DirFlags) -> Locations {
    let mut l = Locations::from_env();
    if let Some(d) = &flags.store_dir {
        l.store_dir = d.clone();
    }
    if let Some(d) = &flags.state_dir {
        l.state_dir = d.clone();
    }
    if let Some(d) = &flags.ipfs_dir {
        l.ipfs_dir = d.clone();
    }
    l
}

fn main() -> ExitCode {
    // `store mount` re-executes this program as its FUSE views' unmount watcher.
    if let Some(code) = pkgchain_store_view::orphan_unmount::run_if_requested() {
        return code;
    }
    let cli = Cli::parse();
    process::init_logging(cli.verbose, "warn");
    process::run_main(run(cli))
}

/// Splits `/nix/store/<hash>-<name>/sub/path` into the store path and the rest.
fn split(
    store: &Store,
    path: &str,
) -> anyhow::Result<(pkgchain_store_model::store_path::StorePath, String)> {
    let (p, sub) = store
        .store_dir()
        .parse_with_subpath(path)
        .with_context(|| format!("'{path}' is not in the store"))?;
    Ok((p, sub.to_owned()))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let loc = locations(&cli.dirs);
    let config = loc.store_config().context("store directory")?;
    let store = Store::open(config).await.context("opening the store")?;
    match cli.command {
        Command::Store(command) => run_store(&store, &loc, command).await,
        Command::Pin(command) => run_pin(&store, &loc, command).await,
        Command::ServeCache {
            listen,
            secret_key_files,
        } => serve_cache(store, listen, secret_key_files).await,
    }
}

/// `serve-cache`: the keys of `secret-key-files` (nix.conf) and the command line, then serving
/// until the process is stopped.
async fn serve_cache(
    store: Store,
    listen: std::net::SocketAddr,
    mut key_files: Vec<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    let config = pkgchain_daemon::nix_conf::NixConfig::load(|v| std::env::var(v).ok())
        .context("reading nix.conf")?;
    key_files.extend(
        config
            .list("secret-key-files", &[])
            .into_iter()
            .map(std::path::PathBuf::from),
    );
    let mut keys = Vec::new();
    for file in &key_files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the secret key file '{}'", file.display()))?;
        let key = pkgchain_store_model::signature::SecretKey::parse(text.trim())
            .with_context(|| format!("the secret key in '{}'", file.display()))?;
        keys.push(key);
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    eprintln!(
        "serving {} as a binary cache on http://{} ({} signing keys)",
        store.store_dir().as_str(),
        listener.local_addr()?,
        keys.len()
    );
    pkgchain_daemon::cache_server::serve(store, listener, keys)
        .await
        .context("serving the cache")?;
    Ok(ExitCode::SUCCESS)
}

async fn run_pin(store: &Store, loc: &Locations, command: PinCommand) -> anyhow::Result<ExitCode> {
    use pkgchain_gc_roots::pins;
    let pins_dir = store.blocks().pins_dir().to_owned();
    let ipfs_store = loc.ipfs_store_dir();
    match command {
        PinCommand::Add {
            target,
            program,
            link,
        } => {
            let cid = pinned_target(store, &target).await?;
            let user = current_user();
            let made = match link {
                Some(link) => {
                    let link = std::path::absolute(&link)
                        .with_context(|| format!("'{}'", link.display()))?;
                    pins::pin_through(&pins_dir, &ipfs_store, &user, &program, &cid, &link)?
                }
                None => pins::pin(&pins_dir, &ipfs_store, &user, &program, &cid)?,
            };
            println!("{}", made.display());
        }
        PinCommand::Rm { target, program } => {
            let cid = pinned_target(store, &target).await?;
            let removed = pins::unpin(&pins_dir, &ipfs_store, &current_user(), &program, &cid)?;
            if removed.is_empty() {
                anyhow::bail!("no pin of {cid} for this user's '{program}'");
            }
            for link in removed {
                println!("{}", link.display());
            }
        }
        PinCommand::Ls => {
            let mut out = std::io::BufWriter::new(std::io::stdout());
            for pin in pins::list_pins(&pins_dir, &ipfs_store)? {
                let cid = pin.cid.map_or("dangling".to_owned(), |c| c.to_string());
                writeln!(
                    out,
                    "{} {cid} -> {}",
                    pin.link.display(),
                    pin.target.display()
                )?;
            }
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The DAG a pin command names: a CID (whose root block is here), or a store path, or a path
/// inside one.
async fn pinned_target(store: &Store, target: &str) -> anyhow::Result<pkgchain_dag::Cid> {
    if let Ok(cid) = target.parse::<pkgchain_dag::Cid>() {
        if !store.blocks().contains(&cid)? {
            anyhow::bail!("block {cid} is not in this store");
        }
        return Ok(cid);
    }
    let (p, sub) = split(store, target)?;
    let root = store
        .root_of(&p)
        .await
        .with_context(|| format!("'{target}'"))?;
    if sub.is_empty() {
        return Ok(root);
    }
    let s = store.clone();
    Ok(tokio::task::spawn_blocking(move || tree::resolve(s.blocks(), &root, &sub)).await??)
}

/// The name of the user running this, for their pin directory (the uid if it has no name).
fn current_user() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

async fn run_store(
    store: &Store,
    loc: &Locations,
    command: StoreCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        StoreCommand::Add { path, name } => {
            let p = store
                .add_path(&path, name.as_deref())
                .await
                .with_context(|| format!("adding '{}'", path.display()))?;
            println!("{}", store.store_dir().display(&p));
        }
        StoreCommand::Dump { path } => {
            let p = store.parse_path(&path)?;
            let stdout = std::io::stdout();
            store
                .dump(&p, std::io::BufWriter::with_capacity(1 << 20, stdout))
                .await?;
        }
        StoreCommand::Cat { path } => {
            let (p, sub) = split(store, &path)?;
            let root = store.root_of(&p).await?;
            let s = store.clone();
            tokio::task::spawn_blocking(move || {
                let cid = tree::resolve(s.blocks(), &root, &sub)?;
                let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
                tree::cat(s.blocks(), &cid, &path, out)
            })
            .await??;
        }
        StoreCommand::Ls {
            path,
            long,
            recursive,
        } => {
            let (p, sub) = split(store, &path)?;
            let root = store.root_of(&p).await?;
            let s = store.clone();
            tokio::task::spawn_blocking(move || ls(&s, &root, &sub, long, recursive)).await??;
        }
        StoreCommand::Blocks { path } => {
            let p = store.parse_path(&path)?;
            if !store.db().is_valid(&p).await? {
                anyhow::bail!("path '{path}' is not valid");
            }
            let mut out = std::io::BufWriter::new(std::io::stdout());
            for (cid, size) in store.db().path_blocks(&p).await? {
                writeln!(
                    out,
                    "{cid} {size} {}",
                    store.blocks().path_of(&cid).display()
                )?;
            }
            out.flush()?;
        }
        StoreCommand::Verify => {
            let report = store.verify().await?;
            for problem in &report.problems {
                eprintln!("{problem}");
            }
            if report.problems.is_empty() {
                eprintln!(
                    "checked {} paths ({} NAR bytes rebuilt from verified blocks): no problems",
                    report.paths, report.nar_bytes
                );
            } else {
                eprintln!(
                    "checked {} paths: {} problems",
                    report.paths,
                    report.problems.len()
                );
                return Ok(ExitCode::FAILURE);
            }
        }
        StoreCommand::Stats { json } => {
            let s = store.stats().await?;
            let saved = s.db.nar_bytes.saturating_sub(s.db.block_bytes);
            let ratio = if s.db.block_bytes == 0 {
                1.0
            } else {
                s.db.nar_bytes as f64 / s.db.block_bytes as f64
            };
            if json {
                let v = serde_json::json!({
                    "paths": s.db.paths,
                    "narBytes": s.db.nar_bytes,
                    "blocks": s.db.blocks,
                    "blockBytes": s.db.block_bytes,
                    "blockUses": s.db.block_uses,
                    "diskBlocks": s.disk_blocks,
                    "diskBytes": s.disk_bytes,
                    "unreferencedBlocks": s.disk_blocks.saturating_sub(s.db.blocks),
                    "dedupRatio": ratio,
                });
                println!("{v}");
            } else {
                println!("paths:                {}", s.db.paths);
                println!("NAR bytes:            {}", s.db.nar_bytes);
                println!(
                    "blocks:               {} ({} uses)",
                    s.db.blocks, s.db.block_uses
                );
                println!("block bytes:          {}", s.db.block_bytes);
                println!("dedup:                {ratio:.3}x ({saved} bytes saved)");
                println!(
                    "on disk:              {} blocks, {} bytes ({} blocks unreferenced)",
                    s.disk_blocks,
                    s.disk_bytes,
                    s.disk_blocks.saturating_sub(s.db.blocks)
                );
            }
        }
        StoreCommand::Mount {
            view,
            no_ipfs,
            fuse_open,
        } => return mount(store, loc, view, no_ipfs, fuse_open).await,
    }
    Ok(ExitCode::SUCCESS)
}

fn ls(
    store: &Store,
    root: &pkgchain_dag::Cid,
    sub: &str,
    long: bool,
    recursive: bool,
) -> anyhow::Result<()> {
    let start = tree::resolve(store.blocks(), root, sub)?;
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let mut pending = vec![(sub.trim_end_matches('/').to_owned(), start)];
    while let Some((dir, cid)) = pending.pop() {
        let shown = if dir.is_empty() { "." } else { dir.as_str() };
        let entries = match tree::stat(store.blocks(), &cid)? {
            Entry::Directory => tree::list(store.blocks(), &cid, shown)?,
            other => {
                // A file or symlink lists as itself.
                print_entry(&mut out, shown, &other, long)?;
                continue;
            }
        };
        let mut subdirs = Vec::new();
        for (name, child) in entries {
            let name = String::from_utf8_lossy(&name).into_owned();
            let entry = tree::stat(store.blocks(), &child)?;
            let rel = format!("{dir}/{name}");
            print_entry(&mut out, if recursive { &rel } else { &name }, &entry, long)?;
            if recursive && entry == Entry::Directory {
                subdirs.push((rel, child));
            }
        }
        pending.extend(subdirs.into_iter().rev());
    }
    out.flush()?;
    Ok(())
}

fn print_entry(out: &mut impl Write, name: &str, entry: &Entry, long: bool) -> std::io::Result<()> {
    if !long {
        return writeln!(out, "{name}");
    }
    match entry {
        Entry::File { size, executable } => writeln!(
            out,
            "{} {size:>12} {name}",
            if *executable {
                "-r-xr-xr-x"
            } else {
                "-r--r--r--"
            }
        ),
        Entry::Directory => writeln!(out, "dr-xr-xr-x {:>12} {name}", 0),
        Entry::Symlink { target } => writeln!(
            out,
            "lrwxrwxrwx {:>12} {name} -> {}",
            target.len(),
            String::from_utf8_lossy(target)
        ),
    }
}

async fn mount(
    store: &Store,
    loc: &Locations,
    view: ViewMode,
    no_ipfs: bool,
    fuse_open: pkgchain_store_view::OpenMode,
) -> anyhow::Result<ExitCode> {
    let mode = resolve_mode(view)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    match mode {
        ViewMode::Fuse => {
            let ipfs = loc.ipfs_store_dir();
            let mounts = pkgchain_store_view::mount_fuse(
                store,
                tokio::runtime::Handle::current(),
                &loc.store_dir,
                (!no_ipfs).then_some(ipfs.as_path()),
                fuse_open,
            )?;
            for m in mounts.mount_points() {
                eprintln!("serving {} (FUSE) until SIGINT/SIGTERM", m.display());
            }
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            info!("stopping");
            tokio::task::spawn_blocking(move || mounts.unmount()).await?;
        }
        ViewMode::Materialised | ViewMode::Auto => {
            eprintln!(
                "serving {} (materialised files) until SIGINT/SIGTERM",
                loc.store_dir.display()
            );
            loop {
                let report = materialise::sync_store_dir(store, &loc.store_dir).await?;
                if report.failed > 0 {
                    eprintln!(
                        "warning: {} paths could not be materialised (see log)",
                        report.failed
                    );
                }
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    _ = term.recv() => break,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
