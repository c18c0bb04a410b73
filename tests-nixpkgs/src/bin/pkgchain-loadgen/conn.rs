//! One client connection: the handshake and request/reply calls, built from the protocol
//! crate's client-side steps.

use std::path::Path;

use anyhow::{Context, anyhow, bail};
use pkgchain_protocol::handshake::{
    self, ClientHandshakeInfo, ClientOptions, ServerHello, encode_client_magic,
    encode_client_version,
};
use pkgchain_protocol::reply::Reply;
use pkgchain_protocol::request::Request;
use pkgchain_protocol::stderr::StderrMessage;
use pkgchain_protocol::wire::{AsyncReader, WireWriter};
use pkgchain_protocol::{FeatureSet, ProtocolVersion, WireContext, framed};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// The daemon answered with `STDERR_ERROR`; the connection is still in step.
    Daemon(String),
    /// I/O failed or the answer did not decode; the connection must be dropped.
    Broken(anyhow::Error),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Daemon(m) => write!(f, "daemon error: {m}"),
            CallError::Broken(e) => write!(f, "connection broken: {e:#}"),
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for CallError {
    fn from(e: E) -> CallError {
        CallError::Broken(e.into())
    }
}

/// A connection after the handshake.
pub struct Conn {
    reader: AsyncReader<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
    /// The negotiated version and features.
    pub cx: WireContext,
    /// What the daemon said its Nix version is (1.33+).
    pub daemon_nix_version: Option<String>,
    buf: WireWriter,
}

impl Conn {
    /// Connects to `socket` and does the handshake, offering `version` and no features.
    pub async fn connect(socket: &Path, version: ProtocolVersion) -> anyhow::Result<Conn> {
        let stream = UnixStream::connect(socket)
            .await
            .with_context(|| format!("connecting to {}", socket.display()))?;
        let (read, writer) = stream.into_split();
        let mut conn = Conn {
            reader: AsyncReader::new(BufReader::with_capacity(64 * 1024, read)),
            writer,
            cx: WireContext::new(version),
            daemon_nix_version: None,
            buf: WireWriter::new(),
        };
        conn.handshake(version).await.context("handshake")?;
        Ok(conn)
    }

    async fn handshake(&mut self, ours: ProtocolVersion) -> anyhow::Result<()> {
        // Magic and version together, as Nix 2.23+ clients send them.
        self.buf.clear();
        encode_client_magic(&mut self.buf);
        encode_client_version(&mut self.buf, ours);
        self.flush_buf().await?;
        let hello = ServerHello::decode(&mut self.reader).await?;
        let negotiated = handshake::negotiate(ours, hello.version)?;
        self.cx.version = negotiated;
        if self.cx.at_least(38) {
            self.buf.clear();
            handshake::encode_features(&mut self.buf, &FeatureSet::new());
            self.flush_buf().await?;
            let theirs = handshake::read_features(&mut self.reader, &self.cx.limits).await?;
            self.cx.features = handshake::intersect_features(&FeatureSet::new(), &theirs);
        }
        self.buf.clear();
        ClientOptions::default().encode(&mut self.buf, negotiated);
        self.flush_buf().await?;
        let info: ClientHandshakeInfo = self.reader.decode(&self.cx, "handshake info").await?;
        self.daemon_nix_version = info.daemon_nix_version;
        match self.stderr_until_last().await {
            Ok(()) => Ok(()),
            Err(CallError::Daemon(m)) => bail!("the daemon refused the connection: {m}"),
            Err(CallError::Broken(e)) => Err(e),
        }
    }

    async fn flush_buf(&mut self) -> std::io::Result<()> {
        self.writer.write_all(self.buf.as_slice()).await?;
        self.writer.flush().await
    }

    /// Reads stderr messages up to `STDERR_LAST` (log lines and activities are skipped).
    async fn stderr_until_last(&mut self) -> Result<(), CallError> {
        loop {
            let msg: StderrMessage = self.reader.decode(&self.cx, "stderr message").await?;
            match msg {
                StderrMessage::Last => return Ok(()),
                StderrMessage::Error(e) => return Err(CallError::Daemon(e.message)),
                StderrMessage::Next(_)
                | StderrMessage::StartActivity { .. }
                | StderrMessage::StopActivity { .. }
                | StderrMessage::Result { .. } => {}
                StderrMessage::Read(_) | StderrMessage::Write(_) => {
                    return Err(CallError::Broken(anyhow!(
                        "unexpected {msg:?} for a request that sends no data on demand"
                    )));
                }
            }
        }
    }

    /// Sends `request` (followed by `framed` as a framed stream when given), reads the stderr
    /// messages and decodes the reply.
    pub async fn call(
        &mut self,
        request: &Request,
        framed: Option<&[u8]>,
    ) -> Result<Reply, CallError> {
        self.buf.clear();
        request.encode(&mut self.buf, &self.cx)?;
        if let Some(data) = framed {
            for chunk in data.chunks(32 * 1024) {
                framed::encode_frame(&mut self.buf, chunk);
            }
            framed::encode_terminator(&mut self.buf);
        }
        self.flush_buf().await?;
        self.stderr_until_last().await?;
        let op = request.opcode();
        let reply = Reply::decode(op, &mut self.reader, &self.cx).await?;
        Ok(reply)
    }
}
