//! The stderr channel: the messages the daemon sends while it works on a request, and the error
//! forms.
//!
//! Every request is: the request arguments, then messages from the daemon ending in
//! [`StderrMessage::Last`] (success; the reply follows) or [`StderrMessage::Error`] (failure;
//! no reply follows).

use crate::activity::{ActivityType, Field, ResultType};
use crate::context::WireContext;
use crate::wire::read::{read_bytes, read_enum, read_len, read_u64};
use crate::wire::{ByteString, Decode, Encode, WireError, WireErrorKind, WireRead, WireWriter};

/// A log line: `str` text.
pub const STDERR_NEXT: u64 = 0x6f6c_6d67;
/// The daemon wants up to `u64` bytes of data from the client (answered with a `str`).
pub const STDERR_READ: u64 = 0x6461_7461;
/// `str` data for the client's sink (obsolete `ExportPath`).
pub const STDERR_WRITE: u64 = 0x6461_7416;
/// Work finished; the reply follows.
pub const STDERR_LAST: u64 = 0x616c_7473;
/// Work failed; an error follows and no reply.
pub const STDERR_ERROR: u64 = 0x6378_7470;
/// An activity starts (1.20+).
pub const STDERR_START_ACTIVITY: u64 = 0x5354_5254;
/// An activity stops (1.20+).
pub const STDERR_STOP_ACTIVITY: u64 = 0x5354_4f50;
/// An activity reports a result (1.20+).
pub const STDERR_RESULT: u64 = 0x5253_4c54;

/// An error sent with `STDERR_ERROR`.
///
/// Below 1.26 the wire carries `str message, u64 exitStatus`. From 1.26: `str "Error"`,
/// u64 level, `str` name (ignored, written as `"Error"`), `str message`, u64 0 (no position),
/// u64 trace count, then per trace u64 0 (no position) and `str hint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorInfo {
    /// Verbosity level (1.26+; Nix sends 0, "error").
    pub level: u64,
    /// The message. Decoded lossily (invalid UTF-8 becomes U+FFFD): it is only shown.
    pub message: String,
    /// Exit status (below 1.26 only; Nix 2.3 clients exit with it). 1 is "generic".
    pub exit_status: u64,
    /// Trace lines, outermost last (1.26+).
    pub traces: Vec<String>,
}

impl ErrorInfo {
    /// An error with `message`, level 0, exit status 1 and no traces.
    pub fn new(message: impl Into<String>) -> ErrorInfo {
        ErrorInfo {
            level: 0,
            message: message.into(),
            exit_status: 1,
            traces: Vec::new(),
        }
    }
}

/// One message of the stderr channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StderrMessage {
    /// A log line (the daemon appends `\n`; the client strips it).
    Next(ByteString),
    /// The daemon asks for up to this many bytes of client data.
    Read(u64),
    /// Data for the client's sink.
    Write(ByteString),
    /// Work finished successfully.
    Last,
    /// Work failed.
    Error(ErrorInfo),
    /// An activity starts.
    StartActivity {
        /// Unique id (Nix uses `(pid << 32) + counter`).
        id: u64,
        /// Verbosity level.
        level: u64,
        /// Kind of activity.
        activity_type: ActivityType,
        /// Human-readable text.
        text: ByteString,
        /// Typed fields, see [`ActivityType`].
        fields: Vec<Field>,
        /// The enclosing activity, 0 for none.
        parent: u64,
    },
    /// An activity stops.
    StopActivity {
        /// Its id.
        id: u64,
    },
    /// An activity reports something.
    Result {
        /// The activity's id.
        id: u64,
        /// What is reported.
        result_type: ResultType,
        /// Typed fields, see [`ResultType`].
        fields: Vec<Field>,
    },
}

fn encode_fields(w: &mut WireWriter, fields: &[Field]) {
    w.put_u64(fields.len() as u64);
    for f in fields {
        match f {
            Field::Int(n) => {
                w.put_u64(0);
                w.put_u64(*n);
            }
            Field::String(s) => {
                w.put_u64(1);
                w.put_bytes(s.as_bytes());
            }
        }
    }
}

async fn read_fields<R: WireRead>(r: &mut R, cx: &WireContext) -> Result<Vec<Field>, WireError> {
    let what = "activity fields";
    let len = read_len(r, cx.limits.max_fields, what).await?;
    let mut fields = Vec::with_capacity(len);
    for _ in 0..len {
        let at = r.position();
        match read_u64(r, "activity field kind").await? {
            0 => fields.push(Field::Int(read_u64(r, what).await?)),
            1 => fields.push(Field::String(ByteString(
                read_bytes(r, cx.limits.max_bytes_len, what).await?,
            ))),
            value => {
                return Err(WireError::at(
                    "activity field kind",
                    at,
                    WireErrorKind::UnknownValue { value },
                ));
            }
        }
    }
    Ok(fields)
}

fn require_activities(cx: &WireContext) -> Result<(), WireError> {
    if cx.at_least(20) {
        Ok(())
    } else {
        Err(WireError::not_representable(
            "activity message",
            "activities need protocol 1.20 (send the text as STDERR_NEXT instead)",
        ))
    }
}

impl Encode for ErrorInfo {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        if cx.at_least(26) {
            w.put_str("Error");
            w.put_u64(self.level);
            w.put_str("Error");
            w.put_str(&self.message);
            w.put_u64(0);
            w.put_u64(self.traces.len() as u64);
            for t in &self.traces {
                w.put_u64(0);
                w.put_str(t);
            }
        } else {
            w.put_str(&self.message);
            w.put_u64(self.exit_status);
        }
        Ok(())
    }
}

async fn read_text<R: WireRead>(
    r: &mut R,
    cx: &WireContext,
    what: &'static str,
) -> Result<String, WireError> {
    let bytes = read_bytes(r, cx.limits.max_string_len, what).await?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

async fn expect_no_position<R: WireRead>(r: &mut R) -> Result<(), WireError> {
    let at = r.position();
    let have_pos = read_u64(r, "error position flag").await?;
    if have_pos != 0 {
        return Err(WireError::invalid(
            "error position flag",
            Some(at),
            format!("positions are not sent over the protocol, but the flag is {have_pos}"),
        ));
    }
    Ok(())
}

impl Decode for ErrorInfo {
    async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        _what: &'static str,
    ) -> Result<Self, WireError> {
        if !cx.at_least(26) {
            let message = read_text(r, cx, "error message").await?;
            let exit_status = read_u64(r, "error exit status").await?;
            return Ok(ErrorInfo {
                level: 0,
                message,
                exit_status,
                traces: Vec::new(),
            });
        }
        let at = r.position();
        let kind = read_text(r, cx, "error type").await?;
        if kind != "Error" {
            return Err(WireError::invalid(
                "error type",
                Some(at),
                format!("expected 'Error', got '{}'", kind.escape_debug()),
            ));
        }
        let level = read_u64(r, "error level").await?;
        read_text(r, cx, "error name").await?;
        let message = read_text(r, cx, "error message").await?;
        expect_no_position(r).await?;
        let len = read_len(r, cx.limits.max_fields, "error traces").await?;
        let mut traces = Vec::with_capacity(len);
        for _ in 0..len {
            expect_no_position(r).await?;
            traces.push(read_text(r, cx, "error trace").await?);
        }
        Ok(ErrorInfo {
            level,
            message,
            exit_status: 1,
            traces,
        })
    }
}

impl Encode for StderrMessage {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        match self {
            StderrMessage::Next(text) => {
                w.put_u64(STDERR_NEXT);
                w.put_bytes(text.as_bytes());
            }
            StderrMessage::Read(n) => {
                w.put_u64(STDERR_READ);
                w.put_u64(*n);
            }
            StderrMessage::Write(data) => {
                w.put_u64(STDERR_WRITE);
                w.put_bytes(data.as_bytes());
            }
            StderrMessage::Last => w.put_u64(STDERR_LAST),
            StderrMessage::Error(e) => {
                w.put_u64(STDERR_ERROR);
                e.encode(w, cx)?;
            }
            StderrMessage::StartActivity {
                id,
                level,
                activity_type,
                text,
                fields,
                parent,
            } => {
                require_activities(cx)?;
                w.put_u64(STDERR_START_ACTIVITY);
                w.put_u64(*id);
                w.put_u64(*level);
                w.put_u64(activity_type.to_wire());
                w.put_bytes(text.as_bytes());
                encode_fields(w, fields);
                w.put_u64(*parent);
            }
            StderrMessage::StopActivity { id } => {
                require_activities(cx)?;
                w.put_u64(STDERR_STOP_ACTIVITY);
                w.put_u64(*id);
            }
            StderrMessage::Result {
                id,
                result_type,
                fields,
            } => {
                require_activities(cx)?;
                w.put_u64(STDERR_RESULT);
                w.put_u64(*id);
                w.put_u64(result_type.to_wire());
                encode_fields(w, fields);
            }
        }
        Ok(())
    }
}

impl Decode for StderrMessage {
    async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        _what: &'static str,
    ) -> Result<Self, WireError> {
        let at = r.position();
        let code = read_u64(r, "stderr message code").await?;
        Ok(match code {
            STDERR_NEXT => StderrMessage::Next(ByteString::decode(r, cx, "log line").await?),
            STDERR_READ => StderrMessage::Read(read_u64(r, "read request size").await?),
            STDERR_WRITE => StderrMessage::Write(ByteString::decode(r, cx, "write data").await?),
            STDERR_LAST => StderrMessage::Last,
            STDERR_ERROR => StderrMessage::Error(ErrorInfo::decode(r, cx, "error").await?),
            STDERR_START_ACTIVITY => {
                let id = read_u64(r, "activity id").await?;
                let level = read_u64(r, "activity level").await?;
                let activity_type = read_enum(r, "activity type", ActivityType::from_wire).await?;
                let text = ByteString::decode(r, cx, "activity text").await?;
                let fields = read_fields(r, cx).await?;
                let parent = read_u64(r, "activity parent").await?;
                StderrMessage::StartActivity {
                    id,
                    level,
                    activity_type,
                    text,
                    fields,
                    parent,
                }
            }
            STDERR_STOP_ACTIVITY => StderrMessage::StopActivity {
                id: read_u64(r, "activity id").await?,
            },
            STDERR_RESULT => {
                let id = read_u64(r, "activity id").await?;
                let result_type = read_enum(r, "result type", ResultType::from_wire).await?;
                let fields = read_fields(r, cx).await?;
                StderrMessage::Result {
                    id,
                    result_type,
                    fields,
                }
            }
            value => {
                return Err(WireError::at(
                    "stderr message code",
                    at,
                    WireErrorKind::UnknownValue { value },
                ));
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::version::ProtocolVersion;
    use crate::wire::{SyncReader, encode_to_vec};

    fn round_trip(msg: &StderrMessage, version: ProtocolVersion) -> Vec<u8> {
        let cx = WireContext::new(version);
        let bytes = encode_to_vec(msg, &cx).unwrap();
        let mut r = SyncReader::new(&bytes[..]);
        let back: StderrMessage = r.decode(&cx, "message").unwrap();
        assert_eq!(&back, msg);
        assert_eq!(r.position(), bytes.len() as u64);
        bytes
    }

    #[test]
    fn messages_round_trip() {
        let v = ProtocolVersion::LATEST;
        assert_eq!(
            round_trip(&StderrMessage::Last, v),
            STDERR_LAST.to_le_bytes()
        );
        round_trip(&StderrMessage::Next("hello\n".into()), v);
        round_trip(&StderrMessage::Read(4096), v);
        round_trip(&StderrMessage::Write(ByteString(vec![0, 159, 146, 150])), v);
        round_trip(
            &StderrMessage::StartActivity {
                id: 7 << 32,
                level: 3,
                activity_type: ActivityType::Build,
                text: "building '/nix/store/x.drv'".into(),
                fields: vec!["/nix/store/x.drv".into(), "".into(), 1.into(), 1.into()],
                parent: 0,
            },
            v,
        );
        round_trip(&StderrMessage::StopActivity { id: 9 }, v);
        round_trip(
            &StderrMessage::Result {
                id: 9,
                result_type: ResultType::Progress,
                fields: vec![1.into(), 2.into(), 0.into(), 0.into()],
            },
            v,
        );
    }

    #[test]
    fn error_forms() {
        let mut e = ErrorInfo::new("boom");
        e.traces.push("while doing it".to_owned());
        let new = round_trip(
            &StderrMessage::Error(e.clone()),
            ProtocolVersion::new(1, 26),
        );
        let mut expected = WireWriter::new();
        expected.put_u64(STDERR_ERROR);
        expected.put_str("Error");
        expected.put_u64(0);
        expected.put_str("Error");
        expected.put_str("boom");
        expected.put_u64(0);
        expected.put_u64(1);
        expected.put_u64(0);
        expected.put_str("while doing it");
        assert_eq!(new, expected.into_inner());

        e.traces.clear();
        e.exit_status = 100;
        let old = round_trip(&StderrMessage::Error(e), ProtocolVersion::new(1, 25));
        let mut expected = WireWriter::new();
        expected.put_u64(STDERR_ERROR);
        expected.put_str("boom");
        expected.put_u64(100);
        assert_eq!(old, expected.into_inner());
    }

    #[test]
    fn activities_need_1_20() {
        let cx = WireContext::new(ProtocolVersion::new(1, 19));
        let err = encode_to_vec(&StderrMessage::StopActivity { id: 1 }, &cx).unwrap_err();
        assert!(
            err.to_string().contains("activities need protocol 1.20"),
            "{err}"
        );
    }

    #[test]
    fn unknown_code_and_position_are_named() {
        let cx = WireContext::new(ProtocolVersion::LATEST);
        let bytes = 0xdeadu64.to_le_bytes();
        let err = SyncReader::new(&bytes[..])
            .decode::<StderrMessage>(&cx, "m")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "stderr message code (at byte 0): unknown value 57005"
        );

        let mut w = WireWriter::new();
        w.put_u64(STDERR_ERROR);
        w.put_str("Error");
        w.put_u64(0);
        w.put_str("Error");
        w.put_str("msg");
        w.put_u64(1);
        let bytes = w.into_inner();
        let err = SyncReader::new(&bytes[..])
            .decode::<StderrMessage>(&cx, "m")
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("error position flag (at byte 64)"),
            "{err}"
        );
    }
}
