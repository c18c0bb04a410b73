//! One client connection: peer check, handshake, then requests until the client hangs up.
//!
//! Per request: the arguments are decoded (bounded by the protocol's limits and a per-request
//! byte budget), the operation runs (log lines may go out as `STDERR_NEXT`), and the answer is
//! `STDERR_LAST` plus the reply, or `STDERR_ERROR`. A request that cannot be decoded leaves the
//! stream at an unknown place: the client gets the error and the connection is closed, as Nix
//! does. Data that follows a request (a framed stream, a NAR) is always consumed to its end
//! before the answer, so an error never leaves the client writing into a closed stream.

use std::sync::Arc;

use pkgchain_protocol::context::WireContext;
use pkgchain_protocol::handshake::{
    self, ClientHandshakeInfo, ClientOptions, ServerHello, read_client_magic, read_client_version,
};
use pkgchain_protocol::request::Request;
use pkgchain_protocol::stderr::{ErrorInfo, StderrMessage};
use pkgchain_protocol::types::TrustedFlag;
use pkgchain_protocol::version::{FeatureSet, ProtocolVersion};
use pkgchain_protocol::wire::{AsyncReader, ByteString, Encode, WireError, WireWriter};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tracing::{Instrument, debug, info, info_span, warn};

use super::DaemonState;
use super::ops::{OpError, Outcome};
use super::settings;
use crate::auth::{Peer, Trust};

/// Most bytes the arguments of one request may take (the data that follows is bounded
/// separately); Nix's largest requests are path lists of a closure.
const REQUEST_BUDGET: u64 = 256 << 20;

/// The reading half of a connection.
pub(super) type ConnReader = AsyncReader<BufReader<OwnedReadHalf>>;

/// A connection being served.
pub(super) struct Conn {
    pub(super) reader: ConnReader,
    writer: BufWriter<OwnedWriteHalf>,
    pub(super) cx: WireContext,
    pub(super) trust: Trust,
    pub(super) settings: pkgchain_protocol::request::ClientSettings,
    pub(super) state: Arc<DaemonState>,
    scratch: WireWriter,
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
        let (rd, wr) = stream.into_split();
        let mut cx = WireContext::new(ProtocolVersion::LATEST);
        cx.store_dir = state.store.store_dir().clone();
        let mut conn = Conn {
            reader: AsyncReader::new(BufReader::new(rd)),
            writer: BufWriter::new(wr),
            cx,
            trust,
            settings: Default::default(),
            state,
            scratch: WireWriter::new(),
        };
        match conn.run().await {
            Ok(()) => debug!("client closed the connection"),
            Err(e) => info!(error = %e, "connection ended"),
        }
    }
    .instrument(span)
    .await
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
    pub(super) fn writer(&mut self) -> &mut BufWriter<OwnedWriteHalf> {
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
