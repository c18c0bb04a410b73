//! Temporary roots: what a connection is using right now (paths it added, asked to keep, or is
//! about to build from), kept alive until it disconnects.
//!
//! Nix's protocol, which this follows so a collector of either kind sees the other's roots:
//! each owner has a file in `temproots/` that it holds under an exclusive `flock` for its whole
//! life, and appends NUL-terminated store paths to it. Before appending it takes `gc.lock`
//! shared without waiting; if a collector holds it exclusively, the owner first sends the path
//! (a line) to the collector's `gc-socket/socket` and waits for the byte `1`. A collector treats
//! a file it can lock exclusively as stale: it writes `d` into it and deletes it.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pkgchain_store_model::store_path::StorePath;
use rustix::fs::{FlockOperation, flock};
use tracing::{debug, info};

use crate::{CENSORED, Roots, RootsError, RootsLayout, io_error, open_lock_file};

/// How often an owner retries reaching a collector that holds `gc.lock` but whose socket is
/// not (yet, or any more) accepting.
const COLLECTOR_RETRIES: u32 = 600;
/// The pause between those attempts.
const COLLECTOR_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// One owner's temp-roots file, locked while it lives and removed when it is dropped.
#[derive(Debug)]
pub struct TempRootsFile {
    layout: RootsLayout,
    path: PathBuf,
    file: File,
    /// `gc.lock`, opened once; locked shared around each append.
    gc_lock: File,
    /// The connection to a running collector, kept for the next root.
    collector: Option<UnixStream>,
}

impl TempRootsFile {
    /// Creates `temproots/<name>` and locks it. A stale file of that name is replaced.
    pub fn create(layout: &RootsLayout, name: &str) -> Result<TempRootsFile, RootsError> {
        let dir = layout.temproots_dir();
        fs::create_dir_all(&dir).map_err(|e| io_error("creating directory", &dir, e))?;
        let gc_lock = layout.open_gc_lock()?;
        let path = dir.join(name);
        loop {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("removing stale temp roots file", &path, e)),
            }
            let file = open_lock_file(&path, "creating temp roots file")?;
            flock(&file, FlockOperation::LockExclusive)
                .map_err(|e| io_error("locking", &path, e.into()))?;
            // A collector may have found the file unlocked, marked it and deleted it before we
            // got the lock: then it is not empty (or gone), and we start again.
            let len = file
                .metadata()
                .map_err(|e| io_error("looking at", &path, e))?
                .len();
            if len == 0 && path.exists() {
                debug!(file = %path.display(), "temp roots file created");
                return Ok(TempRootsFile {
                    layout: layout.clone(),
                    path,
                    file,
                    gc_lock,
                    collector: None,
                });
            }
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `path` as a temporary root; a collector running now is told first.
    pub fn add(&mut self, path: &StorePath) -> Result<(), RootsError> {
        let text = self.layout.store_dir.display(path);
        let mut attempts = 0;
        loop {
            match flock(&self.gc_lock, FlockOperation::NonBlockingLockShared) {
                Ok(()) => break,
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                    // A collector is running: it must hear of the root before we go on.
                    match self.tell_collector(&text) {
                        Ok(()) => break,
                        Err(e) if attempts < COLLECTOR_RETRIES => {
                            debug!(error = %e, "collector not reachable yet; retrying");
                            self.collector = None;
                            attempts += 1;
                            std::thread::sleep(COLLECTOR_RETRY_PAUSE);
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(io_error("locking", &self.layout.gc_lock(), e.into())),
            }
        }
        let mut record = text.into_bytes();
        record.push(0);
        let written = self.file.write_all(&record);
        // Unlocking cannot fail on a valid descriptor; a collector waits on it otherwise.
        let _ = flock(&self.gc_lock, FlockOperation::Unlock);
        written.map_err(|e| io_error("writing temp root to", &self.path, e))
    }

    fn tell_collector(&mut self, text: &str) -> Result<(), RootsError> {
        let socket = self.layout.gc_socket();
        let stream = match &mut self.collector {
            Some(s) => s,
            slot => slot.insert(
                UnixStream::connect(&socket).map_err(|e| io_error("connecting to", &socket, e))?,
            ),
        };
        stream
            .write_all(format!("{text}\n").as_bytes())
            .map_err(|e| io_error("writing to", &socket, e))?;
        let mut answer = [0u8; 1];
        stream
            .read_exact(&mut answer)
            .map_err(|e| io_error("reading from", &socket, e))?;
        if answer != *b"1" {
            return Err(RootsError::CollectorAnswer {
                socket,
                answer: answer.to_vec(),
            });
        }
        Ok(())
    }
}

impl Drop for TempRootsFile {
    fn drop(&mut self) {
        // Removed while still locked, so no collector mistakes a live file for a stale one.
        let _ = fs::remove_file(&self.path);
    }
}

/// Reads every live temp-roots file: `{temp:<file>}` per path, or [`CENSORED`]. Files nobody
/// holds are stale: they are marked and removed, as Nix's collector does.
pub fn read_temp_roots(layout: &RootsLayout, censor: bool) -> Result<Roots, RootsError> {
    let dir = layout.temproots_dir();
    let mut roots = Roots::new();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(roots),
        Err(e) => return Err(io_error("reading directory", &dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error("reading directory", &dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("opening", &path, e)),
        };
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok() {
            info!(file = %path.display(), "removing stale temporary roots file");
            let _ = fs::remove_file(&path);
            let _ = file.write_all(b"d");
            continue;
        }
        let mut contents = Vec::new();
        file.read_to_end(&mut contents)
            .map_err(|e| io_error("reading", &path, e))?;
        let label = if censor {
            CENSORED.to_owned()
        } else {
            format!("{{temp:{name}}}")
        };
        // The last record may be half-written by its owner right now: only NUL-terminated
        // records count.
        let complete = match contents.iter().rposition(|&b| b == 0) {
            Some(end) => &contents[..end],
            None => continue,
        };
        for record in complete.split(|&b| b == 0) {
            let text = std::str::from_utf8(record).map_err(|_| RootsError::MalformedTempRoots {
                path: path.clone(),
                reason: "a record is not UTF-8".to_owned(),
            })?;
            let store_path =
                layout
                    .store_dir
                    .parse(text)
                    .map_err(|e| RootsError::MalformedTempRoots {
                        path: path.clone(),
                        reason: format!("'{text}': {e}"),
                    })?;
            roots.entry(store_path).or_default().insert(label.clone());
        }
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pkgchain_store_model::store_path::StoreDir;
    use std::os::unix::net::UnixListener;

    const A: &str = "7rjj86a15146cq1d5dy6bl0p0gd2d1qg-a";
    const B: &str = "0bqj3w2yx5mhzb9zl6rb9fnjzn5n6bwv-b";

    fn layout(dir: &Path) -> RootsLayout {
        RootsLayout::new(
            dir.join("var"),
            StoreDir::new("/nix/store").expect("store dir"),
        )
    }

    fn sp(base: &str) -> StorePath {
        StorePath::from_base_name(base).expect("store path")
    }

    #[test]
    fn roots_live_while_the_file_is_held_and_go_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = layout(dir.path());
        let mut t = TempRootsFile::create(&l, "42-1").expect("create");
        t.add(&sp(A)).expect("add a");
        t.add(&sp(B)).expect("add b");
        let roots = read_temp_roots(&l, false).expect("read");
        assert_eq!(roots.len(), 2);
        assert_eq!(
            roots[&sp(A)].iter().collect::<Vec<_>>(),
            vec!["{temp:42-1}"]
        );
        let censored = read_temp_roots(&l, true).expect("read censored");
        assert_eq!(censored[&sp(B)].iter().collect::<Vec<_>>(), vec![CENSORED]);
        assert_eq!(
            fs::read(t.path()).expect("file"),
            format!("/nix/store/{A}\0/nix/store/{B}\0").into_bytes()
        );
        let file = t.path().to_owned();
        drop(t);
        assert!(!file.exists());
        assert!(read_temp_roots(&l, false).expect("read").is_empty());
    }

    #[test]
    fn unlocked_files_are_stale_and_removed_and_bad_records_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = layout(dir.path());
        fs::create_dir_all(l.temproots_dir()).expect("mkdir");
        let stale = l.temproots_dir().join("7");
        fs::write(&stale, format!("/nix/store/{A}\0")).expect("write");
        assert!(read_temp_roots(&l, false).expect("read").is_empty());
        assert!(!stale.exists(), "a file nobody locks is removed");

        let mut t = TempRootsFile::create(&l, "8").expect("create");
        t.add(&sp(A)).expect("add");
        // A half-written last record is not read.
        t.file.write_all(b"/nix/store/0bqj").expect("partial");
        assert_eq!(read_temp_roots(&l, false).expect("read").len(), 1);
        t.file.write_all(b"\0not-a-path\0").expect("garbage");
        let err = read_temp_roots(&l, false).expect_err("malformed");
        assert!(
            err.to_string().contains("malformed temporary roots file"),
            "{err}"
        );
    }

    #[test]
    fn a_running_collector_hears_of_new_roots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = layout(dir.path());
        fs::create_dir_all(l.gc_socket().parent().expect("parent")).expect("mkdir");
        // The collector: holds gc.lock exclusively and answers on its socket.
        let lock = File::create(l.gc_lock()).expect("lock file");
        flock(&lock, FlockOperation::LockExclusive).expect("gc lock");
        let listener = UnixListener::bind(l.gc_socket()).expect("bind");
        let collector = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut got = Vec::new();
            let mut byte = [0u8; 1];
            while s.read_exact(&mut byte).is_ok() {
                if byte[0] == b'\n' {
                    s.write_all(b"1").expect("answer");
                    return String::from_utf8(got).expect("utf8");
                }
                got.push(byte[0]);
            }
            String::new()
        });
        let mut t = TempRootsFile::create(&l, "9").expect("create");
        t.add(&sp(A)).expect("add while collecting");
        assert_eq!(collector.join().expect("join"), format!("/nix/store/{A}"));
        drop(lock);
        assert!(
            read_temp_roots(&l, false)
                .expect("read")
                .contains_key(&sp(A))
        );
    }
}
