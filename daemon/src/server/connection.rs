//! One client connection: peer check, handshake, then requests until the client hangs up.
//!
//! Per request: the arguments are decoded (bounded by the protocol's limits and a per-request
//! byte budget), the operation runs (log lines may go out as `STDERR_NEXT`), and the answer is
//! `STDERR_LAST` plus the reply, or `STDERR_ERROR`. A request that cannot be decoded leaves the
//! stream at an unknown place: the client gets the error and the connection is closed, as Nix
//! does. Data that follows a request (a framed stream, a NAR) is always consumed to its end
//! before the answer, so an error never leaves the client writing into a closed stream.

use std::sync::Arc;

use pkgchain_gc_roots::TempRootsFile;
use pkgchain_protocol::context::WireContext;
use pkgchain_protocol::handshake::{
    self, ClientHandshakeInfo, ClientOptions, ServerHello, read_client_magic, read_client_version,
};
use pkgchain_protocol::request::Request;
use pkgchain_protocol::stderr::{ErrorInfo, StderrMessage};
use pkgchain_protocol::types::TrustedFlag;
use pkgchain_protocol::version::{FeatureSet, ProtocolVersion};
use pkgchain_protocol::wire::{AsyncReader, ByteString, Encode, WireError, WireWriter};
use pkgchain_store_model::store_path::StorePath;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::UnixStream;
use tracing::{Instrument, debug, info, info_span, warn};

use super::DaemonState;
use super::ops::{OpError, Outcome};
use super::settings;
use crate::auth::{Peer, Trust};

/// Most bytes the arguments of one request may take (the data that follows is bounded
/// separately); Nix's largest requests are path lists of a closure.
const REQUEST_BUDGET: u64 = 256 << 20;
/// Most bytes a client's side of the handshake may take (its feature names are the only
/// variable part; Nix sends a handful of short ones).
const HANDSHAKE_BUDGET: u64 = 64 << 10;

/// What a connection reads from: a socket's reading half, or standard input.
pub(super) type ClientInput = Box<dyn AsyncRead + Unpin + Send + Sync>;
/// What a connection writes to: a socket's writing half, or standard output.
pub(super) type ClientOutput = Box<dyn AsyncWrite + Unpin + Send + Sync>;

/// The reading half of a connection.
pub(super) type ConnReader = AsyncReader<BufReader<ClientInput>>;

/// A connection being served.
pub(super) struct Conn {
    pub(super) reader: ConnReader,
    writer: BufWriter<ClientOutput>,
    pub(super) cx: WireContext,
    pub(super) trust: Trust,
    pub(super) settings: pkgchain_protocol::request::ClientSettings,
    pub(super) state: Arc<DaemonState>,
    scratch: WireWriter,
    /// This connection's number (names its temp-roots file).
    id: u64,
    /// This connection's temp roots, created with its first one; removed when it ends.
    /// Shared with the store's blocking work, which roots a path before adding it.
    temp_roots: Arc<std::sync::Mutex<Option<TempRootsFile>>>,
}

/// Serves one accepted connection to its end. Never panics on what the client sends; errors
/// end this connection only.
pub async fn serve_connection(state: Arc<DaemonState>, stream: UnixStream) {
    let peer = match Peer::of_socket(&stream) {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "dropping connection");
            return;
        }
    };
    let span = info_span!("connection", pid = peer.pid, user = %peer.user);
    async move {
        let trust = match state.rules.decide(&peer) {
            Ok(t) => t,
            Err(refusal) => {
                // Nix closes the connection without a word of protocol.
                warn!("{refusal}");
                return;
            }
        };
        info!(?trust, "accepted connection");
        // Where clients from Nix 2.3 to 2.13 keep their profiles, as nix-daemon made them.
        let roots = state.roots.clone();
        let (user, uid) = (peer.user.clone(), peer.uid);
        let made = tokio::task::spawn_blocking(move || {
            pkgchain_gc_roots::create_user_dirs(&roots, &user, uid)
        })
        .await;
        if let Ok(Err(e)) = made {
            warn!(error = %e, "cannot create the per-user profile directories");
        }
        let (rd, wr) = stream.into_split();
        serve_streams(state, trust, Box::new(rd), Box::new(wr)).await;
    }
    .instrument(span)
    .await
}

/// Serves one client on standard input and output (`--stdio`, what `ssh-ng://` stores start
/// on the remote side), with the given trust.
pub async fn serve_stdio(state: Arc<DaemonState>, trust: Trust) {
    let span = info_span!("connection", stdio = true);
    serve_streams(
        state,
        trust,
        Box::new(tokio::io::stdin()),
        Box::new(tokio::io::stdout()),
    )
    .instrument(span)
    .await
}

async fn serve_streams(
    state: Arc<DaemonState>,
    trust: Trust,
    input: ClientInput,
    output: ClientOutput,
) {
    let mut cx = WireContext::new(ProtocolVersion::LATEST);
    cx.store_dir = state.store.store_dir().clone();
    let id = state.next_connection();
    let mut conn = Conn {
        reader: AsyncReader::new(BufReader::new(input)),
        writer: BufWriter::new(output),
        cx,
        trust,
        settings: Default::default(),
        state,
        scratch: WireWriter::new(),
        id,
        temp_roots: Arc::default(),
    };
    match conn.run().await {
        Ok(()) => debug!("client closed the connection"),
        Err(e) => info!(error = %e, "connection ended"),
    }
    // The temp roots go with the connection (the file is removed while still locked).
    let file = conn
        .temp_roots
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(file) = file {
        let _ = tokio::task::spawn_blocking(move || drop(file)).await;
    }
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnError {
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("writing to the client: {0}")]
    Write(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(String),
}

impl Conn {
    async fn run(&mut self) -> Result<(), ConnError> {
        self.handshake().await?;
        loop {
            self.reader.state_mut().set_budget(None);
            // A hang-up between requests is the normal end of a connection.
            if self.reader.get_mut().fill_buf().await?.is_empty() {
                return Ok(());
            }
            let op = pkgchain_protocol::wire::read::read_u64(&mut self.reader, "operation").await?;
            self.reader.state_mut().set_budget(Some(REQUEST_BUDGET));
            let request = match Request::decode(op, &mut self.reader, &self.cx).await {
                Ok(r) => r,
                Err(e) => {
                    // The stream is at an unknown position: report and hang up.
                    let message = e.to_string();
                    self.send_error(&message).await?;
                    return Err(ConnError::Protocol(message));
                }
            };
            self.reader.state_mut().set_budget(None);
            let name = request.opcode().name();
            let span = info_span!("op", op = name);
            let outcome = self.handle(request).instrument(span).await;
            match outcome {
                Ok(Outcome::Reply(reply)) => {
                    self.send(&StderrMessage::Last).await?;
                    self.scratch.clear();
                    reply
                        .encode(&mut self.scratch, &self.cx)
                        .map_err(ConnError::Wire)?;
                    self.writer.write_all(self.scratch.as_slice()).await?;
                    self.writer.flush().await?;
                }
                Ok(Outcome::Done) => {
                    // The operation wrote its own answer (NarFromPath).
                    self.writer.flush().await?;
                }
                Err(OpError::Abort(message)) => {
                    warn!(op = name, error = %message, "closing the connection mid-answer");
                    return Err(ConnError::Protocol(message));
                }
                Err(OpError::Fatal(message)) => {
                    self.send_error(&message).await?;
                    return Err(ConnError::Protocol(message));
                }
                Err(OpError::Failed(message)) => {
                    debug!(op = name, error = %message, "operation failed");
                    self.send_error(&message).await?;
                }
            }
        }
    }

    async fn handshake(&mut self) -> Result<(), ConnError> {
        self.reader.state_mut().set_budget(Some(HANDSHAKE_BUDGET));
        read_client_magic(&mut self.reader).await?;
        self.scratch.clear();
        ServerHello {
            version: ProtocolVersion::LATEST,
        }
        .encode(&mut self.scratch);
        self.writer.write_all(self.scratch.as_slice()).await?;
        self.writer.flush().await?;
        let client = read_client_version(&mut self.reader).await?;
        let negotiated = handshake::negotiate(client, ProtocolVersion::LATEST)
            .map_err(|e| ConnError::Protocol(e.to_string()))?;
        self.cx.version = negotiated;
        if self.cx.at_least(38) {
            let theirs = handshake::read_features(&mut self.reader, &self.cx.limits).await?;
            let ours = FeatureSet::new();
            self.scratch.clear();
            handshake::encode_features(&mut self.scratch, &ours);
            self.writer.write_all(self.scratch.as_slice()).await?;
            self.writer.flush().await?;
            self.cx.features = handshake::intersect_features(&ours, &theirs);
        }
        let _options = ClientOptions::decode(&mut self.reader, negotiated).await?;
        let info = ClientHandshakeInfo {
            daemon_nix_version: Some(super::REPORTED_NIX_VERSION.to_owned()),
            remote_trusts_us: Some(match self.trust {
                Trust::Trusted => TrustedFlag::Trusted,
                Trust::Untrusted => TrustedFlag::NotTrusted,
            }),
        };
        self.scratch.clear();
        info.encode(&mut self.scratch, &self.cx)?;
        self.writer.write_all(self.scratch.as_slice()).await?;
        self.send(&StderrMessage::Last).await?;
        self.writer.flush().await?;
        debug!(client = %client, negotiated = %negotiated, "handshake done");
        Ok(())
    }

    /// Sends one stderr-channel message (not flushed).
    pub(super) async fn send(&mut self, message: &StderrMessage) -> Result<(), ConnError> {
        self.scratch.clear();
        message.encode(&mut self.scratch, &self.cx)?;
        self.writer.write_all(self.scratch.as_slice()).await?;
        Ok(())
    }

    /// Sends a log line to the client (`STDERR_NEXT`).
    pub(super) async fn log_line(&mut self, line: &str) -> Result<(), ConnError> {
        let mut text = line.as_bytes().to_vec();
        text.push(b'\n');
        self.send(&StderrMessage::Next(ByteString(text))).await
    }

    async fn send_error(&mut self, message: &str) -> Result<(), ConnError> {
        self.send(&StderrMessage::Error(ErrorInfo::new(message)))
            .await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// The raw writer, for operations that stream their answer after `STDERR_LAST`.
    pub(super) fn writer(&mut self) -> &mut BufWriter<ClientOutput> {
        &mut self.writer
    }

    /// Applies `SetOptions`.
    pub(super) async fn set_options(
        &mut self,
        requested: pkgchain_protocol::request::ClientSettings,
    ) -> Result<(), ConnError> {
        let applied = settings::apply(requested, self.trust, &self.state.config);
        for w in &applied.warnings {
            self.log_line(w).await?;
        }
        self.settings = applied.settings;
        Ok(())
    }
}

impl Conn {
    /// Keeps `path` alive for as long as this connection lasts (Nix's temp roots: a file under
    /// `temproots/` that this connection holds locked).
    pub(super) async fn add_temp_root(&mut self, path: &StorePath) -> Result<(), String> {
        let keep = self.keeper();
        let path = path.clone();
        tokio::task::spawn_blocking(move || (keep.0)(&path))
            .await
            .map_err(|e| format!("recording a temporary root: {e}"))?
    }

    /// Records a temp root of this connection, blocking (for the store's blocking work: see
    /// [`pkgchain_store::add::CaAddRequest::keep`]).
    pub(super) fn keeper(&self) -> pkgchain_store::add::KeepPath {
        let file = self.temp_roots.clone();
        let layout = self.state.roots.clone();
        let name = format!("{}-{}", std::process::id(), self.id);
        pkgchain_store::add::KeepPath(Arc::new(move |path: &StorePath| {
            let mut slot = file.lock().unwrap_or_else(|e| e.into_inner());
            let f = match &mut *slot {
                Some(f) => f,
                slot => {
                    slot.insert(TempRootsFile::create(&layout, &name).map_err(|e| e.to_string())?)
                }
            };
            f.add(path).map_err(|e| e.to_string())
        }))
    }
}
