//! The running collector's side of Nix's temp-roots protocol: while it holds `gc.lock`, a
//! process that wants a new temp root cannot take the lock shared, so it sends the path (one
//! line) to `gc-socket/socket` and waits for the byte `1`. The collector keeps those paths
//! (their hash parts) and will not delete them; a path it is deleting right now makes the
//! sender wait until that deletion is over, so the sender never sees it half gone.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use pkgchain_gc_roots::RootsLayout;
use pkgchain_store_model::store_path::StorePath;
use tracing::{debug, warn};

/// Longest line a client may send (a store path is far shorter).
const MAX_LINE: usize = 4096;

/// What the collector and the socket's clients share.
#[derive(Debug, Default)]
pub struct GcShared {
    /// Hash parts of the paths clients asked to keep since the collector started.
    pub temp_roots: HashSet<String>,
    /// Hash parts of the paths being deleted right now.
    pub pending: HashSet<String>,
}

/// The socket server; stopped (and its socket removed) when dropped.
pub struct GcSocket {
    shared: Arc<(Mutex<GcShared>, Condvar)>,
    stop: Arc<AtomicBool>,
    path: PathBuf,
    server: Option<std::thread::JoinHandle<()>>,
}

impl GcSocket {
    /// Listens on `gc-socket/socket` (mode 0666, as Nix makes it). The caller holds `gc.lock`
    /// exclusively.
    pub fn start(layout: &RootsLayout) -> std::io::Result<GcSocket> {
        let path = layout.gc_socket();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        listener.set_nonblocking(true)?;
        let shared: Arc<(Mutex<GcShared>, Condvar)> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let store_dir = layout.store_dir.clone();
        let (shared2, stop2) = (shared.clone(), stop.clone());
        let server = std::thread::Builder::new()
            .name("pkgchain-gc-socket".into())
            .spawn(move || serve(&listener, &shared2, &stop2, &store_dir))?;
        Ok(GcSocket {
            shared,
            stop,
            path,
            server: Some(server),
        })
    }

    /// The shared state, locked.
    pub fn lock(&self) -> MutexGuard<'_, GcShared> {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends a deletion: clients waiting on its paths go on.
    pub fn done_pending(&self) {
        self.lock().pending.clear();
        self.shared.1.notify_all();
    }
}

impl Drop for GcSocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.done_pending();
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(
    listener: &UnixListener,
    shared: &Arc<(Mutex<GcShared>, Condvar)>,
    stop: &Arc<AtomicBool>,
    store_dir: &pkgchain_store_model::store_path::StoreDir,
) {
    let mut clients: Vec<(UnixStream, std::thread::JoinHandle<()>)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let Ok(copy) = stream.try_clone() else {
                    continue;
                };
                let (shared, stop, dir) = (shared.clone(), stop.clone(), store_dir.clone());
                match std::thread::Builder::new()
                    .name("pkgchain-gc-client".into())
                    .spawn(move || serve_client(stream, &shared, &stop, &dir))
                {
                    Ok(handle) => clients.push((copy, handle)),
                    Err(e) => warn!(error = %e, "no thread for a GC socket client"),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                warn!(error = %e, "accepting on the GC socket");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        clients.retain(|(_, h)| !h.is_finished());
    }
    for (stream, handle) in clients {
        let _ = stream.shutdown(std::net::Shutdown::Both);
        let _ = handle.join();
    }
}

fn serve_client(
    stream: UnixStream,
    shared: &(Mutex<GcShared>, Condvar),
    stop: &AtomicBool,
    store_dir: &pkgchain_store_model::store_path::StoreDir,
) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.last() != Some(&b'\n') {
            warn!("a GC socket client sent an over-long or unfinished line; dropped");
            return;
        }
        line.pop();
        match root_of_line(&line, store_dir) {
            Ok(path) => {
                debug!(path = %path, "new temp root during collection");
                let hash = path.hash_part().to_owned();
                let mut state = shared.0.lock().unwrap_or_else(|e| e.into_inner());
                state.temp_roots.insert(hash.clone());
                while state.pending.contains(&hash) && !stop.load(Ordering::Relaxed) {
                    state = shared.1.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            }
            Err(text) => warn!(line = %text, "received garbage instead of a root from a GC client"),
        }
        if writer.write_all(b"1").is_err() {
            return;
        }
    }
}

/// The store path a GC client's line (without its newline) names, or the line as text when
/// it names none.
pub(crate) fn root_of_line(
    line: &[u8],
    store_dir: &pkgchain_store_model::store_path::StoreDir,
) -> Result<StorePath, String> {
    let text = String::from_utf8_lossy(line);
    match store_dir.parse_with_subpath(&text) {
        Ok((path, _)) => Ok(path),
        Err(_) => Err(text.into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use pkgchain_store_model::store_path::StoreDir;

    use super::*;

    fn answer(stream: &mut UnixStream) -> Vec<u8> {
        let mut buf = [0u8; 1];
        match stream.read(&mut buf) {
            Ok(n) => buf[..n].to_vec(),
            Err(_) => Vec::new(),
        }
    }

    /// A store path becomes a temp root; garbage is answered (and logged) without one; an
    /// over-long line ends that client's connection; the server keeps serving others.
    #[test]
    fn roots_garbage_and_over_long_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = RootsLayout::new(dir.path(), StoreDir::default());
        let socket = GcSocket::start(&layout).expect("start");
        let mut client = UnixStream::connect(layout.gc_socket()).expect("connect");
        let root = "/nix/store/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo";
        client
            .write_all(format!("{root}\n").as_bytes())
            .expect("write");
        assert_eq!(answer(&mut client), b"1");
        client.write_all(b"not a store path\n").expect("write");
        assert_eq!(answer(&mut client), b"1");
        assert_eq!(
            socket.lock().temp_roots,
            HashSet::from(["g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q".to_owned()])
        );
        let mut long = UnixStream::connect(layout.gc_socket()).expect("connect");
        let _ = long.write_all(&vec![b'a'; MAX_LINE + 10]);
        assert_eq!(answer(&mut long), b"", "an over-long line gets no answer");
        let mut after = UnixStream::connect(layout.gc_socket()).expect("connect");
        after
            .write_all(format!("{root}\n").as_bytes())
            .expect("write");
        assert_eq!(answer(&mut after), b"1");
        drop(socket);
        assert!(
            !layout.gc_socket().exists(),
            "the socket goes with the server"
        );
    }

    /// A client naming a path being deleted waits until that deletion is over.
    #[test]
    fn a_pending_path_makes_its_sender_wait() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = RootsLayout::new(dir.path(), StoreDir::default());
        let socket = GcSocket::start(&layout).expect("start");
        let hash = "g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q";
        socket.lock().pending.insert(hash.to_owned());
        let mut client = UnixStream::connect(layout.gc_socket()).expect("connect");
        client
            .write_all(format!("/nix/store/{hash}-foo\n").as_bytes())
            .expect("write");
        client
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        assert_eq!(answer(&mut client), b"", "answered while pending");
        socket.done_pending();
        client.set_read_timeout(None).expect("timeout");
        assert_eq!(answer(&mut client), b"1");
    }
}
