//! `pkgchain-loadgen`: a worker-protocol load client, for the daemon's load test and for the
//! benchmark that compares our daemon with the real `nix-daemon` (it speaks to both the same
//! way: protocol 1.38 by default, or whatever older version the daemon offers).
//!
//! ```text
//! pkgchain-loadgen query-path-info --socket S --clients 16 --requests 5000 --paths FILE
//! pkgchain-loadgen mixed --socket S --clients 64 --seconds 60 --paths FILE [--added-out FILE]
//! ```
//!
//! `FILE` holds valid store paths, one per line. Both commands print one JSON object on
//! stdout and exit with status 1 if any request failed or any reply was wrong.
//!
//! * `query-path-info`: N connections are opened (handshakes done) before the clock starts;
//!   then each sends M `QueryPathInfo` requests one after the other, over the paths of FILE
//!   round-robin (each client starting at a different offset). Every reply must say the path
//!   is valid with a non-empty NAR. The rate is requests over the wall time of that phase.
//! * `mixed`: each connection loops until the time is up over `IsValidPath`, `QueryPathInfo`,
//!   `QueryReferrers`, `QueryValidPaths`, `AddTextToStore` and `AddToStore` (NAR of one file,
//!   1.25+). Added contents are unique (a per-run nonce, the client and a counter, random
//!   bytes) except one add in four, which repeats one of 16 fixed contents that every client
//!   adds. Every reply is checked: an added path must be the path computed here from the
//!   contents, then be valid and have the NAR hash, size, references and content address
//!   computed here; later queries of it (from any connection) are checked the same way, and a
//!   `QueryReferrers` of one of its references must list it. Queries of random never-added
//!   paths must find them invalid.

mod conn;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use pkgchain_protocol::ProtocolVersion;
use pkgchain_protocol::reply::Reply;
use pkgchain_protocol::request::{AddTextToStore, AddToStore, QueryValidPaths, Request};
use pkgchain_protocol::wire::ByteString;
use pkgchain_store_model::content_address::{ContentAddress, ContentAddressMethod};
use pkgchain_store_model::hash::{Hash, HashAlgo, sha256};
use pkgchain_store_model::nar::{NarEvent, NarWriter};
use pkgchain_store_model::path_info::PathInfo;
use pkgchain_store_model::store_path::{StoreDir, StorePath};
use pkgchain_tests_nixpkgs::Rng;
use serde_json::json;

use conn::{CallError, Conn};

#[derive(Parser)]
#[command(about = "Worker-protocol load client for pkgchain-daemon and nix-daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// The daemon's socket.
    #[arg(long, default_value = "/nix/var/nix/daemon-socket/socket")]
    socket: PathBuf,
    /// Concurrent connections.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// File of valid store paths, one per line.
    #[arg(long)]
    paths: PathBuf,
    /// Protocol version offered (the daemon may answer with an older one).
    #[arg(long, default_value = "1.38", value_parser = parse_version)]
    protocol: ProtocolVersion,
    /// A request not answered within this many seconds counts as an error and its connection
    /// is dropped (a liveness bound, so a stuck daemon is reported with the operation).
    #[arg(long, default_value_t = 300)]
    op_timeout: u64,
}

#[derive(Subcommand)]
enum Command {
    /// N connections each sending M QueryPathInfo requests.
    QueryPathInfo {
        #[command(flatten)]
        common: Common,
        /// Requests per connection.
        #[arg(long, default_value_t = 5000)]
        requests: u64,
    },
    /// Connections mixing queries and adds for a given time, checking every reply.
    Mixed {
        #[command(flatten)]
        common: Common,
        /// How long each connection keeps going.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Writes the added paths (absolute, sorted, one per line) here instead of listing
        /// them in the JSON.
        #[arg(long)]
        added_out: Option<PathBuf>,
        /// Seeds the choice of operations (contents get a per-run nonce whatever the seed).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn parse_version(s: &str) -> Result<ProtocolVersion, String> {
    let (major, minor) = s.split_once('.').ok_or("expected MAJOR.MINOR, e.g. 1.38")?;
    let major: u8 = major.parse().map_err(|e| format!("major: {e}"))?;
    let minor: u8 = minor.parse().map_err(|e| format!("minor: {e}"))?;
    if major != 1 || minor < 21 {
        return Err("versions 1.21 to 1.38 are supported".to_owned());
    }
    Ok(ProtocolVersion::new(major, minor))
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::QueryPathInfo { common, requests } => query_path_info(common, requests).await,
        Command::Mixed {
            common,
            seconds,
            added_out,
            seed,
        } => mixed(common, seconds, added_out, seed).await,
    };
    match result {
        Ok(ok) => std::process::exit(if ok { 0 } else { 1 }),
        Err(e) => {
            eprintln!("pkgchain-loadgen: {e:#}");
            std::process::exit(2);
        }
    }
}

fn read_paths(file: &Path) -> anyhow::Result<Vec<StorePath>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let dir = StoreDir::default();
    let paths = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            dir.parse(l)
                .with_context(|| format!("{}: bad store path {l:?}", file.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if paths.is_empty() {
        bail!("{} holds no store paths", file.display());
    }
    Ok(paths)
}

/// Errors seen, with the first few messages.
#[derive(Default)]
struct Errors {
    count: u64,
    first: Vec<String>,
}

impl Errors {
    const KEEP: usize = 20;

    fn push(&mut self, message: String) {
        self.count += 1;
        if self.first.len() < Errors::KEEP {
            self.first.push(message);
        }
    }

    fn merge(&mut self, other: Errors) {
        self.count += other.count;
        for m in other.first {
            if self.first.len() < Errors::KEEP {
                self.first.push(m);
            }
        }
    }
}

/// A call bounded by the liveness timeout; a timeout is a broken connection.
async fn call(
    conn: &mut Conn,
    request: &Request,
    framed: Option<&[u8]>,
    timeout: Duration,
) -> Result<Reply, CallError> {
    match tokio::time::timeout(timeout, conn.call(request, framed)).await {
        Ok(r) => r,
        Err(_) => Err(CallError::Broken(anyhow::anyhow!(
            "no answer within {} s",
            timeout.as_secs()
        ))),
    }
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// ---- query-path-info ------------------------------------------------------------------------

async fn query_path_info(common: Common, requests: u64) -> anyhow::Result<bool> {
    let paths = Arc::new(read_paths(&common.paths)?);
    let timeout = Duration::from_secs(common.op_timeout);
    let connect_start = Instant::now();
    let mut conns = Vec::with_capacity(common.clients);
    for _ in 0..common.clients {
        conns.push(Conn::connect(&common.socket, common.protocol).await?);
    }
    let connect_seconds = connect_start.elapsed().as_secs_f64();
    let negotiated = conns.first().map(|c| c.cx.version.to_string());
    let daemon_version = conns.first().and_then(|c| c.daemon_nix_version.clone());
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (id, mut conn) in conns.into_iter().enumerate() {
        let paths = Arc::clone(&paths);
        tasks.spawn(async move {
            let mut errors = Errors::default();
            let mut latencies = Vec::with_capacity(requests as usize);
            let offset = id * paths.len() / common.clients.max(1);
            for i in 0..requests {
                let path = &paths[(offset + i as usize) % paths.len()];
                let t = Instant::now();
                let reply = call(
                    &mut conn,
                    &Request::QueryPathInfo(path.clone()),
                    None,
                    timeout,
                )
                .await;
                latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                match reply {
                    Ok(Reply::QueryPathInfo(Some(info))) if info.nar_size > 0 => {}
                    Ok(other) => errors.push(format!(
                        "client {id}: QueryPathInfo {path}: unexpected reply {other:?}"
                    )),
                    Err(e @ CallError::Daemon(_)) => {
                        errors.push(format!("client {id}: QueryPathInfo {path}: {e}"));
                    }
                    Err(e @ CallError::Broken(_)) => {
                        // The rest of this client's requests are lost with the connection.
                        errors.push(format!("client {id}: QueryPathInfo {path}: {e}"));
                        errors.count += requests - i - 1;
                        break;
                    }
                }
            }
            (errors, latencies)
        });
    }
    let mut errors = Errors::default();
    let mut latencies = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (e, l) = joined.context("a client task panicked")?;
        errors.merge(e);
        latencies.extend(l);
    }
    let wall = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let total = common.clients as u64 * requests;
    let out = json!({
        "command": "query-path-info",
        "protocol": negotiated,
        "daemon_nix_version": daemon_version,
        "clients": common.clients,
        "requests_per_client": requests,
        "requests": total,
        "errors": errors.count,
        "first_errors": errors.first,
        "connect_seconds": connect_seconds,
        "wall_seconds": wall,
        "requests_per_second": total as f64 / wall.max(1e-9),
        "latency_us": {
            "p50": percentile(&latencies, 0.50),
            "p99": percentile(&latencies, 0.99),
            "max": latencies.last().copied().unwrap_or(0),
        },
    });
    println!("{out}");
    Ok(errors.count == 0)
}

// ---- mixed ----------------------------------------------------------------------------------

/// What the client knows a path must look like.
#[derive(Clone)]
struct Expected {
    path: StorePath,
    nar_hash: Hash,
    nar_size: u64,
    references: BTreeSet<StorePath>,
    ca: ContentAddress,
}

/// Paths every connection may query: the seeded ones and what any connection has added.
struct Shared {
    seeded: Vec<StorePath>,
    added: Mutex<Vec<Expected>>,
}

impl Shared {
    fn added_len(&self) -> usize {
        self.added.lock().map(|a| a.len()).unwrap_or(0)
    }

    fn added_at(&self, i: usize) -> Option<Expected> {
        self.added.lock().ok().and_then(|a| a.get(i).cloned())
    }

    fn push(&self, e: Expected) {
        if let Ok(mut a) = self.added.lock() {
            a.push(e);
        }
    }
}

/// A known-valid path, with what it must look like if this run added it.
enum Known {
    Seeded(StorePath),
    Added(Expected),
}

impl Known {
    fn path(&self) -> &StorePath {
        match self {
            Known::Seeded(p) => p,
            Known::Added(e) => &e.path,
        }
    }
}

fn pick_known(shared: &Shared, rng: &mut Rng) -> Known {
    let added = shared.added_len();
    if added > 0
        && rng.below(2) == 0
        && let Some(e) = shared.added_at(rng.below(added as u64) as usize)
    {
        return Known::Added(e);
    }
    Known::Seeded(shared.seeded[rng.below(shared.seeded.len() as u64) as usize].clone())
}

/// A path that is not valid anywhere: a random digest (a collision with a real path is as
/// unlikely as a SHA-256 collision) and a name saying what it is.
fn missing_path(rng: &mut Rng) -> Option<StorePath> {
    let mut digest = [0u8; 20];
    rng.fill(&mut digest);
    StorePath::from_parts(&digest, "loadgen-never-added").ok()
}

/// The NAR of one regular file.
fn file_nar(contents: &[u8], executable: bool) -> anyhow::Result<Vec<u8>> {
    let mut w = NarWriter::new(Vec::with_capacity(contents.len() + 128));
    w.write_event(&NarEvent::File {
        name: None,
        executable,
        size: contents.len() as u64,
    })?;
    w.write_event(&NarEvent::FileChunk(contents))?;
    w.write_event(&NarEvent::FileEnd)?;
    Ok(w.finish()?)
}

/// Counts and errors of one connection.
#[derive(Default)]
struct Tally {
    ops: BTreeMap<&'static str, u64>,
    errors: Errors,
    added: BTreeSet<StorePath>,
    reconnects: u64,
}

struct Client {
    id: usize,
    conn: Conn,
    rng: Rng,
    nonce: u64,
    counter: u64,
    shared: Arc<Shared>,
    tally: Tally,
    timeout: Duration,
}

/// Fixed contents every client adds now and then (repeated adds of the same path).
const SHARED_CONTENTS: u64 = 16;

impl Client {
    fn error(&mut self, op: &str, what: impl std::fmt::Display) {
        self.tally
            .errors
            .push(format!("client {} {op}: {what}", self.id));
    }

    /// One call, counted; `None` after an error (recorded). A broken connection is replaced.
    async fn call(
        &mut self,
        op: &'static str,
        request: &Request,
        framed: Option<&[u8]>,
        common: &Common,
    ) -> Option<Reply> {
        *self.tally.ops.entry(op).or_default() += 1;
        match call(&mut self.conn, request, framed, self.timeout).await {
            Ok(r) => Some(r),
            Err(e) => {
                let broken = matches!(e, CallError::Broken(_));
                self.error(op, format_args!("{}: {e}", describe(request)));
                if broken {
                    self.reconnect(common).await;
                }
                None
            }
        }
    }

    async fn reconnect(&mut self, common: &Common) {
        for attempt in 0..10u64 {
            self.tally.reconnects += 1;
            match Conn::connect(&common.socket, common.protocol).await {
                Ok(c) => {
                    self.conn = c;
                    return;
                }
                Err(e) => {
                    self.error("reconnect", format_args!("attempt {attempt}: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Checks a path's info against what it must be.
    fn check_info(&mut self, op: &str, known: &Known, info: &PathInfo) {
        match known {
            Known::Seeded(p) => {
                if info.nar_size == 0 || info.nar_hash.algo() != HashAlgo::Sha256 {
                    self.error(
                        op,
                        format_args!(
                            "{p}: implausible info: narSize {}, narHash {}",
                            info.nar_size, info.nar_hash
                        ),
                    );
                }
            }
            Known::Added(e) => {
                let mut wrong = Vec::new();
                if info.nar_hash != e.nar_hash {
                    wrong.push(format!(
                        "narHash {} (expected {})",
                        info.nar_hash, e.nar_hash
                    ));
                }
                if info.nar_size != e.nar_size {
                    wrong.push(format!(
                        "narSize {} (expected {})",
                        info.nar_size, e.nar_size
                    ));
                }
                if info.references != e.references {
                    wrong.push(format!(
                        "references {:?} (expected {:?})",
                        info.references, e.references
                    ));
                }
                if info.ca.as_ref() != Some(&e.ca) {
                    wrong.push(format!(
                        "ca {:?} (expected {})",
                        info.ca.as_ref().map(ContentAddress::render),
                        e.ca.render()
                    ));
                }
                if !wrong.is_empty() {
                    self.error(op, format_args!("{}: {}", e.path, wrong.join(", ")));
                }
            }
        }
    }

    async fn is_valid(&mut self, common: &Common) {
        let missing = if self.rng.below(8) == 0 {
            missing_path(&mut self.rng)
        } else {
            None
        };
        let (path, expect) = match missing {
            Some(p) => (p, false),
            None => (pick_known(&self.shared, &mut self.rng).path().clone(), true),
        };
        let request = Request::IsValidPath(path.clone());
        match self.call("IsValidPath", &request, None, common).await {
            Some(Reply::IsValidPath(v)) if v == expect => {}
            Some(r) => self.error(
                "IsValidPath",
                format_args!("{path}: got {r:?}, expected {expect}"),
            ),
            None => {}
        }
    }

    async fn query_path_info(&mut self, common: &Common) {
        if self.rng.below(8) == 0
            && let Some(path) = missing_path(&mut self.rng)
        {
            let request = Request::QueryPathInfo(path.clone());
            match self.call("QueryPathInfo", &request, None, common).await {
                Some(Reply::QueryPathInfo(None)) | None => {}
                Some(r) => self.error(
                    "QueryPathInfo",
                    format_args!("{path} (never added): got {r:?}"),
                ),
            }
            return;
        }
        let known = pick_known(&self.shared, &mut self.rng);
        self.query_known(&known, common).await;
    }

    async fn query_known(&mut self, known: &Known, common: &Common) {
        let request = Request::QueryPathInfo(known.path().clone());
        match self.call("QueryPathInfo", &request, None, common).await {
            Some(Reply::QueryPathInfo(Some(info))) => {
                self.check_info("QueryPathInfo", known, &info)
            }
            Some(r) => self.error(
                "QueryPathInfo",
                format_args!(
                    "{}: got {r:?}, expected the info of a valid path",
                    known.path()
                ),
            ),
            None => {}
        }
    }

    async fn query_referrers(&mut self, common: &Common) {
        // An added path with references: each reference must list it among its referrers.
        let known = pick_known(&self.shared, &mut self.rng);
        let (path, must_contain) = match &known {
            Known::Added(e) if !e.references.is_empty() => {
                let r = e.references.iter().next().cloned();
                match r {
                    Some(r) => (r, Some(e.path.clone())),
                    None => (e.path.clone(), None),
                }
            }
            k => (k.path().clone(), None),
        };
        let request = Request::QueryReferrers(path.clone());
        match self.call("QueryReferrers", &request, None, common).await {
            Some(Reply::QueryReferrers(set)) => {
                if let Some(m) = must_contain
                    && !set.contains(&m)
                {
                    self.error(
                        "QueryReferrers",
                        format_args!(
                            "{path}: {m} refers to it but is not among its {} referrers",
                            set.len()
                        ),
                    );
                }
            }
            Some(r) => self.error("QueryReferrers", format_args!("{path}: got {r:?}")),
            None => {}
        }
    }

    async fn query_valid_paths(&mut self, common: &Common) {
        let mut valid = BTreeSet::new();
        for _ in 0..1 + self.rng.below(8) {
            valid.insert(pick_known(&self.shared, &mut self.rng).path().clone());
        }
        let mut all = valid.clone();
        for _ in 0..self.rng.below(3) {
            all.extend(missing_path(&mut self.rng));
        }
        let request = Request::QueryValidPaths(QueryValidPaths {
            paths: all,
            substitute: false,
        });
        match self.call("QueryValidPaths", &request, None, common).await {
            Some(Reply::QueryValidPaths(got)) if got == valid => {}
            Some(r) => self.error(
                "QueryValidPaths",
                format_args!("got {r:?}, expected {valid:?}"),
            ),
            None => {}
        }
    }

    /// Name and contents for an add: unique, or (one in four) one of the shared ones, which
    /// are added without references so that they really repeat.
    fn contents(&mut self, max_random: u64) -> (String, Vec<u8>, bool) {
        if self.rng.below(4) == 0 {
            let k = self.rng.below(SHARED_CONTENTS);
            return (
                format!("loadgen-shared-{k}"),
                format!("loadgen shared contents {k}\n").into_bytes(),
                true,
            );
        }
        self.counter += 1;
        let mut data = format!(
            "loadgen run {:016x} client {} add {}\n",
            self.nonce, self.id, self.counter
        )
        .into_bytes();
        let extra = self.rng.below(max_random + 1) as usize;
        let at = data.len();
        data.resize(at + extra, 0);
        self.rng.fill(&mut data[at..]);
        (format!("loadgen-{}-{}", self.id, self.counter), data, false)
    }

    /// Up to one earlier added path as a reference (never a seeded one: those may have
    /// references the adder cannot vouch for, and it does not matter here).
    fn some_references(&mut self) -> BTreeSet<StorePath> {
        let mut refs = BTreeSet::new();
        let n = self.shared.added_len();
        if n > 0
            && self.rng.below(2) == 0
            && let Some(e) = self.shared.added_at(self.rng.below(n as u64) as usize)
        {
            refs.insert(e.path);
        }
        refs
    }

    /// After an add: the path must be valid and its info as computed.
    async fn check_added(&mut self, op: &'static str, expected: Expected, common: &Common) {
        self.tally.added.insert(expected.path.clone());
        let request = Request::IsValidPath(expected.path.clone());
        match self.call("IsValidPath", &request, None, common).await {
            Some(Reply::IsValidPath(true)) => {}
            Some(r) => {
                self.error(
                    op,
                    format_args!("{} was added but IsValidPath says {r:?}", expected.path),
                );
                return;
            }
            None => return,
        }
        let known = Known::Added(expected);
        self.query_known(&known, common).await;
        if let Known::Added(e) = known {
            self.shared.push(e);
        }
    }

    async fn add_text(&mut self, common: &Common) {
        let (name, mut text, repeated) = self.contents(2048);
        let references = if repeated {
            BTreeSet::new()
        } else {
            self.some_references()
        };
        for r in &references {
            // Mention the reference, as a real text file with references would.
            text.extend_from_slice(format!("\n{}\n", StoreDir::default().display(r)).as_bytes());
        }
        let dir = StoreDir::default();
        let hash = Hash::sha256(sha256(&text));
        let expected_path = match dir.make_text_path(&name, &hash, &references) {
            Ok(p) => p,
            Err(e) => return self.error("AddTextToStore", format_args!("computing the path: {e}")),
        };
        let nar = match file_nar(&text, false) {
            Ok(n) => n,
            Err(e) => return self.error("AddTextToStore", format_args!("making the NAR: {e:#}")),
        };
        let request = Request::AddTextToStore(AddTextToStore {
            name,
            text: ByteString(text),
            references: references.clone(),
        });
        let path = match self.call("AddTextToStore", &request, None, common).await {
            Some(Reply::AddTextToStore(p)) => p,
            Some(r) => return self.error("AddTextToStore", format_args!("got {r:?}")),
            None => return,
        };
        if path != expected_path {
            return self.error(
                "AddTextToStore",
                format_args!("daemon made {path}, expected {expected_path}"),
            );
        }
        let expected = Expected {
            path,
            nar_hash: Hash::sha256(sha256(&nar)),
            nar_size: nar.len() as u64,
            references,
            ca: ContentAddress::new(ContentAddressMethod::Text, hash),
        };
        self.check_added("AddTextToStore", expected, common).await;
    }

    async fn add_nar(&mut self, common: &Common) {
        // Mostly small files; one in ten up to 512 KiB (several blocks in our store).
        let max = if self.rng.below(10) == 0 {
            512 << 10
        } else {
            4096
        };
        let (name, data, repeated) = self.contents(max);
        let executable = !repeated && self.rng.below(4) == 0;
        let references = if repeated {
            BTreeSet::new()
        } else {
            self.some_references()
        };
        let nar = match file_nar(&data, executable) {
            Ok(n) => n,
            Err(e) => return self.error("AddToStore", format_args!("making the NAR: {e:#}")),
        };
        let nar_hash = Hash::sha256(sha256(&nar));
        let expected_path = match StoreDir::default().make_fixed_output_path(
            &name,
            true,
            &nar_hash,
            &references,
            false,
        ) {
            Ok(p) => p,
            Err(e) => return self.error("AddToStore", format_args!("computing the path: {e}")),
        };
        let request = Request::AddToStore(AddToStore {
            name,
            method: ContentAddressMethod::NixArchive,
            hash_algo: HashAlgo::Sha256,
            references: references.clone(),
            repair: false,
        });
        let info = match self.call("AddToStore", &request, Some(&nar), common).await {
            Some(Reply::AddToStore(info)) => info,
            Some(r) => return self.error("AddToStore", format_args!("got {r:?}")),
            None => return,
        };
        let expected = Expected {
            path: expected_path,
            nar_hash: nar_hash.clone(),
            nar_size: nar.len() as u64,
            references,
            ca: ContentAddress::new(ContentAddressMethod::NixArchive, nar_hash),
        };
        if info.path != expected.path {
            return self.error(
                "AddToStore",
                format_args!("daemon made {}, expected {}", info.path, expected.path),
            );
        }
        self.check_info("AddToStore", &Known::Added(expected.clone()), &info.info);
        self.check_added("AddToStore", expected, common).await;
    }

    async fn run(mut self, deadline: Instant, common: Common) -> Tally {
        let can_add_nar = self.conn.cx.at_least(25);
        while Instant::now() < deadline {
            match self.rng.below(100) {
                0..30 => self.is_valid(&common).await,
                30..60 => self.query_path_info(&common).await,
                60..70 => self.query_referrers(&common).await,
                70..80 => self.query_valid_paths(&common).await,
                80..90 => self.add_text(&common).await,
                _ if can_add_nar => self.add_nar(&common).await,
                _ => self.add_text(&common).await,
            }
        }
        self.tally
    }
}

/// A short description of a request for error messages.
fn describe(request: &Request) -> String {
    match request {
        Request::IsValidPath(p) | Request::QueryPathInfo(p) | Request::QueryReferrers(p) => {
            p.to_string()
        }
        Request::QueryValidPaths(q) => format!("{} paths", q.paths.len()),
        Request::AddTextToStore(a) => format!("name {} ({} bytes)", a.name, a.text.0.len()),
        Request::AddToStore(a) => format!("name {}", a.name),
        other => format!("{}", other.opcode()),
    }
}

async fn mixed(
    common: Common,
    seconds: u64,
    added_out: Option<PathBuf>,
    seed: u64,
) -> anyhow::Result<bool> {
    let shared = Arc::new(Shared {
        seeded: read_paths(&common.paths)?,
        added: Mutex::new(Vec::new()),
    });
    // Unique per run, so "unique" contents are new paths even in a store used before.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(std::process::id()) << 40);
    let timeout = Duration::from_secs(common.op_timeout);
    let mut clients = Vec::with_capacity(common.clients);
    for id in 0..common.clients {
        let conn = Conn::connect(&common.socket, common.protocol)
            .await
            .with_context(|| format!("client {id}"))?;
        clients.push(Client {
            id,
            conn,
            rng: Rng::new(seed.wrapping_mul(1000).wrapping_add(id as u64)),
            nonce,
            counter: 0,
            shared: Arc::clone(&shared),
            tally: Tally::default(),
            timeout,
        });
    }
    let negotiated = clients.first().map(|c| c.conn.cx.version.to_string());
    let daemon_version = clients
        .first()
        .and_then(|c| c.conn.daemon_nix_version.clone());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients {
        tasks.spawn(client.run(deadline, common.clone()));
    }
    let mut total = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        let t = joined.context("a client task panicked")?;
        for (op, n) in t.ops {
            *total.ops.entry(op).or_default() += n;
        }
        total.errors.merge(t.errors);
        total.added.extend(t.added);
        total.reconnects += t.reconnects;
    }
    let wall = start.elapsed().as_secs_f64();
    let dir = StoreDir::default();
    let added: Vec<String> = total.added.iter().map(|p| dir.display(p)).collect();
    let mut out = json!({
        "command": "mixed",
        "protocol": negotiated,
        "daemon_nix_version": daemon_version,
        "clients": common.clients,
        "seconds": seconds,
        "wall_seconds": wall,
        "ops": total.ops,
        "requests": total.ops.values().sum::<u64>(),
        "errors": total.errors.count,
        "first_errors": total.errors.first,
        "reconnects": total.reconnects,
        "added_paths_count": added.len(),
    });
    match added_out {
        Some(file) => {
            let mut text = added.join("\n");
            text.push('\n');
            std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
            out["added_paths_file"] = json!(file.display().to_string());
        }
        None => out["added_paths"] = json!(added),
    }
    println!("{out}");
    Ok(total.errors.count == 0)
}
