//! Brings up `lo` in a fresh network namespace, so a builder can talk to itself over
//! 127.0.0.1 and `::1` (test suites do) while it still has no route anywhere else.
//!
//! A new network namespace holds exactly one interface, the loopback (always index 1), and it
//! starts down: until it is up, even `connect` to 127.0.0.1 fails with `ENETUNREACH`. Setting
//! it up is one `RTM_NEWLINK` request on a `NETLINK_ROUTE` socket, the same message
//! `ip link set lo up` sends, built here by hand so no `unsafe` and no netlink crate is needed.
//! The caller needs `CAP_NET_ADMIN` over the namespace, which the owner of a fresh user
//! namespace has.

use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::sockopt::{Timeout, set_socket_timeout};
use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, recvfrom, sendto, socket_with,
};

/// The interface index of `lo`, the first interface every network namespace gets.
pub const LOOPBACK_INDEX: i32 = 1;

/// `sizeof(struct nlmsghdr)`: length, type, flags, sequence number, port id.
const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct ifinfomsg)`: family, pad, type, index, flags, change mask.
const IFINFOMSG_LEN: usize = 16;
/// The whole request: a header and one `ifinfomsg`, no attributes.
const REQUEST_LEN: usize = NLMSG_HDRLEN + IFINFOMSG_LEN;
/// `NLMSG_ERROR`: the kernel's reply to a request with `NLM_F_ACK`; error 0 is the ack.
const NLMSG_ERROR: u16 = 2;
/// `RTM_NEWLINK`: without `NLM_F_CREATE` it changes an existing link (as `ip link set` does).
const RTM_NEWLINK: u16 = 16;
/// `NLM_F_REQUEST`.
const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ACK`: ask for an `NLMSG_ERROR` reply even on success.
const NLM_F_ACK: u16 = 0x4;
/// `IFF_UP`.
const IFF_UP: u32 = 0x1;
/// `AF_UNSPEC`, the family of a link-level request.
const AF_UNSPEC: u8 = 0;
/// The sequence number of our one request, matched against the reply.
const REQUEST_SEQ: u32 = 1;
/// Receive buffer. The ack is 36 bytes plus a copy of our 32-byte request and, with extended
/// acks, a few attributes; anything longer than this is not the reply we are waiting for.
const RECV_BUFFER: usize = 8192;
/// How long one `recv` may block before we give up on the kernel's answer.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// How many datagrams we read while looking for our ack before giving up. The socket has no
/// multicast groups, so in practice the first one is the ack.
const MAX_REPLIES: usize = 16;

/// Why the loopback interface could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    /// A system call on the netlink socket failed.
    #[error("{op} on the NETLINK_ROUTE socket failed: {errno} (errno {})", errno.raw_os_error())]
    Socket {
        /// The operation: "socket", "sendto", "recvfrom", "setsockopt".
        op: &'static str,
        /// What the kernel returned.
        errno: Errno,
    },
    /// The kernel answered the request with an error (for instance `EPERM` without
    /// `CAP_NET_ADMIN` over the namespace, `ENODEV` if index 1 does not exist).
    #[error(
        "the kernel refused to bring up the loopback interface: {errno} (errno {})",
        errno.raw_os_error()
    )]
    Refused {
        /// The negated `error` field of the `NLMSG_ERROR` reply.
        errno: Errno,
    },
    /// The reply could not be parsed.
    #[error("malformed netlink reply: {0}")]
    Malformed(&'static str),
    /// Datagrams arrived, but none of them acknowledged our request.
    #[error("no acknowledgement among the first {0} netlink replies")]
    NoAck(usize),
}

/// Sets `lo` (interface index 1) of the calling thread's network namespace up, and waits for
/// the kernel to acknowledge it. Setting an interface that is already up is not an error.
///
/// Meant for a fresh network namespace, where index 1 is always `lo`: in any other namespace it
/// would act on whatever interface has index 1 (which is still `lo` on Linux).
pub fn bring_up_loopback() -> Result<(), LoopbackError> {
    let socket = socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        // `NETLINK_ROUTE` is protocol 0, which rustix spells `None`.
        None,
    )
    .map_err(|errno| LoopbackError::Socket {
        op: "socket",
        errno,
    })?;
    set_socket_timeout(&socket, Timeout::Recv, Some(RECV_TIMEOUT)).map_err(|errno| {
        LoopbackError::Socket {
            op: "setsockopt",
            errno,
        }
    })?;

    let request = link_up_request(REQUEST_SEQ, LOOPBACK_INDEX);
    let kernel = SocketAddrNetlink::new(0, 0);
    let sent = sendto(&socket, &request, SendFlags::empty(), &kernel).map_err(|errno| {
        LoopbackError::Socket {
            op: "sendto",
            errno,
        }
    })?;
    if sent != request.len() {
        return Err(LoopbackError::Malformed(
            "the request was sent only in part",
        ));
    }
    wait_for_ack(&socket, REQUEST_SEQ)
}

/// Reads datagrams until the ack of request `seq` (a bounded number of them, each read bounded
/// by [`RECV_TIMEOUT`]).
fn wait_for_ack(socket: &OwnedFd, seq: u32) -> Result<(), LoopbackError> {
    let mut buffer = vec![0u8; RECV_BUFFER];
    for _ in 0..MAX_REPLIES {
        let (read, full_len, from) = recvfrom(socket, &mut buffer[..], RecvFlags::empty())
            .map_err(|errno| LoopbackError::Socket {
                op: "recvfrom",
                errno,
            })?;
        // Only the kernel (port 0) speaks for the kernel; ignore anything else.
        let from_kernel = from
            .and_then(|addr| SocketAddrNetlink::try_from(addr).ok())
            .is_some_and(|addr| addr.pid() == 0);
        if !from_kernel {
            continue;
        }
        if full_len > read {
            return Err(LoopbackError::Malformed(
                "reply larger than the receive buffer",
            ));
        }
        let datagram = buffer
            .get(..read)
            .ok_or(LoopbackError::Malformed("reply length out of range"))?;
        if let Some(result) = find_ack(datagram, seq)? {
            return result;
        }
    }
    Err(LoopbackError::NoAck(MAX_REPLIES))
}

/// The `RTM_NEWLINK` request setting `IFF_UP` on interface `index`, in native byte order as
/// netlink wants it.
fn link_up_request(seq: u32, index: i32) -> [u8; REQUEST_LEN] {
    let mut message = [0u8; REQUEST_LEN];
    // struct nlmsghdr
    put(&mut message, 0, &(REQUEST_LEN as u32).to_ne_bytes());
    put(&mut message, 4, &RTM_NEWLINK.to_ne_bytes());
    put(&mut message, 6, &(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    put(&mut message, 8, &seq.to_ne_bytes());
    // nlmsg_pid 0: let the kernel fill in our port.
    // struct ifinfomsg: family, pad, type (0: unchanged), index, flags, change.
    put(&mut message, NLMSG_HDRLEN, &[AF_UNSPEC]);
    put(&mut message, NLMSG_HDRLEN + 4, &index.to_ne_bytes());
    put(&mut message, NLMSG_HDRLEN + 8, &IFF_UP.to_ne_bytes());
    put(&mut message, NLMSG_HDRLEN + 12, &IFF_UP.to_ne_bytes());
    message
}

/// Copies `bytes` into `message` at `at` (the layout above always fits).
fn put(message: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(slot) = message.get_mut(at..at + bytes.len()) {
        slot.copy_from_slice(bytes);
    }
}

/// Looks through one datagram (several netlink messages may share it) for the `NLMSG_ERROR`
/// answering `seq`: `Some(Ok)` for an ack, `Some(Err)` for a refusal, `None` if it is not there.
fn find_ack(datagram: &[u8], seq: u32) -> Result<Option<Result<(), LoopbackError>>, LoopbackError> {
    let mut offset = 0usize;
    while offset < datagram.len() {
        let rest = datagram.get(offset..).unwrap_or_default();
        let len = read_u32(rest, 0).ok_or(LoopbackError::Malformed("truncated message header"))?;
        let len = usize::try_from(len).map_err(|_| LoopbackError::Malformed("message length"))?;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(LoopbackError::Malformed("message length out of range"));
        }
        let kind = read_u16(rest, 4).ok_or(LoopbackError::Malformed("truncated message header"))?;
        let message_seq =
            read_u32(rest, 8).ok_or(LoopbackError::Malformed("truncated message header"))?;
        if kind == NLMSG_ERROR && message_seq == seq {
            let error = read_u32(rest.get(..len).unwrap_or_default(), NLMSG_HDRLEN).ok_or(
                LoopbackError::Malformed("NLMSG_ERROR without an error code"),
            )?;
            // The field is a negative errno stored as a signed 32-bit integer.
            let error = i32::from_ne_bytes(error.to_ne_bytes());
            return Ok(Some(match error {
                0 => Ok(()),
                e => Err(LoopbackError::Refused {
                    errno: Errno::from_raw_os_error(e.saturating_neg()),
                }),
            }));
        }
        // Messages are padded to 4 bytes (NLMSG_ALIGN).
        offset = offset.saturating_add(len.saturating_add(3) & !3);
    }
    Ok(None)
}

/// A native-endian `u32` at `at`, if the bytes are there.
fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_ne_bytes(raw))
}

/// A native-endian `u16` at `at`, if the bytes are there.
fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let raw: [u8; 2] = bytes.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(u16::from_ne_bytes(raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{ErrorKind, Read, Write};
    use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
    use std::process::Command;

    /// Set in the re-executed test binary: "you are inside the new namespaces, do the work".
    const CHILD_ENV: &str = "PKGCHAIN_LOOPBACK_TEST_CHILD";
    /// Printed by the child once it runs, so the parent can tell "unshare could not create the
    /// namespaces" (skip) from "our code failed inside them" (fail).
    const CHILD_STARTED: &str = "loopback-child: started";

    /// An `NLMSG_ERROR` message answering `seq` with `error`, as the kernel sends it (followed
    /// by a copy of the request header).
    fn error_message(seq: u32, error: i32) -> Vec<u8> {
        let mut message = Vec::new();
        message.extend_from_slice(&36u32.to_ne_bytes());
        message.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        message.extend_from_slice(&0u16.to_ne_bytes());
        message.extend_from_slice(&seq.to_ne_bytes());
        message.extend_from_slice(&1234u32.to_ne_bytes());
        message.extend_from_slice(&error.to_ne_bytes());
        message.extend_from_slice(&link_up_request(seq, 1)[..NLMSG_HDRLEN]);
        message
    }

    #[test]
    fn request_has_the_layout_of_rtm_newlink_set_up() {
        let request = link_up_request(7, 1);
        assert_eq!(read_u32(&request, 0), Some(32), "nlmsg_len");
        assert_eq!(read_u16(&request, 4), Some(16), "RTM_NEWLINK");
        assert_eq!(
            read_u16(&request, 6),
            Some(0x5),
            "NLM_F_REQUEST | NLM_F_ACK"
        );
        assert_eq!(read_u32(&request, 8), Some(7), "nlmsg_seq");
        assert_eq!(read_u32(&request, 12), Some(0), "nlmsg_pid");
        assert_eq!(request[16], 0, "ifi_family AF_UNSPEC");
        assert_eq!(read_u16(&request, 18), Some(0), "ifi_type");
        assert_eq!(read_u32(&request, 20), Some(1), "ifi_index");
        assert_eq!(read_u32(&request, 24), Some(1), "ifi_flags IFF_UP");
        assert_eq!(read_u32(&request, 28), Some(1), "ifi_change IFF_UP");
    }

    #[test]
    fn ack_parsing_accepts_zero_and_names_errors() {
        assert!(matches!(
            find_ack(&error_message(1, 0), 1),
            Ok(Some(Ok(())))
        ));
        match find_ack(&error_message(1, -libc::EPERM), 1) {
            Ok(Some(Err(LoopbackError::Refused { errno }))) => {
                assert_eq!(errno, Errno::PERM);
                let text = LoopbackError::Refused { errno }.to_string();
                assert!(text.contains("errno 1"), "{text}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // An ack for another request is not ours.
        assert!(matches!(find_ack(&error_message(2, 0), 1), Ok(None)));
        // Two messages in one datagram: the second one answers us.
        let mut both = error_message(2, -libc::EINVAL);
        both.extend_from_slice(&error_message(1, 0));
        assert!(matches!(find_ack(&both, 1), Ok(Some(Ok(())))));
    }

    #[test]
    fn ack_parsing_rejects_garbage_without_panicking() {
        let good = error_message(1, 0);
        // Every truncation of a valid reply either finds nothing or is malformed; none panics.
        for cut in 0..good.len() {
            let result = find_ack(&good[..cut], 1);
            assert!(
                matches!(result, Ok(None) | Err(LoopbackError::Malformed(_))),
                "cut at {cut}: {result:?}"
            );
        }
        // A length field shorter than a header, or pointing past the end.
        let mut short = good.clone();
        short[..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(matches!(
            find_ack(&short, 1),
            Err(LoopbackError::Malformed(_))
        ));
        let mut long = good;
        long[..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(matches!(
            find_ack(&long, 1),
            Err(LoopbackError::Malformed(_))
        ));
        // An NLMSG_ERROR too short to hold the error code.
        let mut headless = error_message(1, 0);
        headless.truncate(NLMSG_HDRLEN);
        headless[..4].copy_from_slice(&16u32.to_ne_bytes());
        assert!(matches!(
            find_ack(&headless, 1),
            Err(LoopbackError::Malformed(_))
        ));
    }

    /// The work done inside `unshare --user --map-root-user --net`.
    fn child_brings_lo_up_and_connects() {
        println!("{CHILD_STARTED}");
        let unreachable = TcpStream::connect((Ipv4Addr::LOCALHOST, 9));
        match unreachable {
            Err(e) if e.raw_os_error() == Some(libc::ENETUNREACH) => {
                println!("loopback-child: before: connect failed with ENETUNREACH");
            }
            other => panic!("before bringing lo up, connect should be ENETUNREACH: {other:?}"),
        }

        bring_up_loopback().expect("bringing lo up");
        // Setting an interface that is already up again is fine.
        bring_up_loopback().expect("bringing lo up a second time");

        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let address: SocketAddr = listener.local_addr().expect("local_addr");
        let mut client = TcpStream::connect(address).expect("connect to 127.0.0.1");
        let (mut server, _) = listener.accept().expect("accept");
        client.write_all(b"ping").expect("write");
        let mut got = [0u8; 4];
        server.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"ping");
        println!("loopback-child: after: connected to {address} and exchanged bytes");
    }

    #[test]
    fn brings_up_loopback_in_a_fresh_network_namespace() {
        if std::env::var_os(CHILD_ENV).is_some() {
            child_brings_lo_up_and_connects();
            return;
        }
        let exe = std::env::current_exe().expect("current_exe");
        let name = concat!(
            module_path!(),
            "::brings_up_loopback_in_a_fresh_network_namespace"
        );
        // libtest names tests without the crate name.
        let name = name.split_once("::").map_or(name, |(_, rest)| rest);
        let output = Command::new("unshare")
            .args(["--user", "--map-root-user", "--net", "--"])
            .arg(exe)
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .output();
        let output = match output {
            Ok(output) => output,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                eprintln!("skipping: util-linux `unshare` is not installed");
                return;
            }
            Err(e) => panic!("running unshare: {e}"),
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !stdout.contains(CHILD_STARTED) {
            // The test binary never ran: unshare itself failed, which on hosts without
            // (unprivileged) user namespaces is expected.
            assert!(
                !output.status.success(),
                "child did not run: {stdout}\n{stderr}"
            );
            eprintln!("skipping: unshare could not create user+net namespaces: {stderr}");
            return;
        }
        assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains("before: connect failed with ENETUNREACH"),
            "{stdout}"
        );
        assert!(
            stdout.contains("after: connected to 127.0.0.1:"),
            "{stdout}"
        );
    }
}
