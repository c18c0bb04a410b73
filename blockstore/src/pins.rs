//! Temporary pins and the collector's side of them: how blocks that an add in progress relies
//! on survive a garbage collection running at the same time, without the add ever waiting.
//!
//! Between the moment an add finds a block already on disk (or writes it) and the moment the
//! path that uses it is registered, nothing in the database says the block is needed. So every
//! [`WriteBatch`](crate::WriteBatch) pins each block *before* it looks for it on disk: it
//! appends the CID (a line of text) to a temp-pins file, `<pins>/temp/<pid>-<n>`, which its
//! process holds under an exclusive `flock` while it lives. The pin lasts as long as a
//! [`PinLease`]: the caller keeps the lease until the path is registered.
//!
//! A collector (one at a time: it holds `<pins>/lock`) never deletes a block file outright. It
//! lists its candidates in `<pins>/trashing`, moves each aside (`<shard>/<cid>.trash`, beside
//! it), then reads the temp pins and the database again, moves back what became pinned or used
//! meanwhile, and only then deletes the rest. An add that pinned a block before the collector
//! read the pins is seen; one that pinned it later looked for it after it was moved, found it
//! missing and wrote it again. Reads find a block moved aside. A collector killed in between
//! leaves blocks in the trash, which the next one moves back (from its list) before it starts.
//!
//! Each process has two temp-pins files and writes to one at a time; a file is emptied when no
//! lease on it is left, and writing moves to the other once the current one is large, so a
//! busy daemon's files stay small.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pkgchain_dag::Cid;
use rustix::fs::{FlockOperation, flock};
use tracing::{debug, warn};

use crate::BlockError;

/// Size after which new leases write to the other temp-pins file (once it is free).
const ROTATE_BYTES: u64 = 1024 * 1024;
/// Longest line a temp-pins file may hold (a CID's text is about 60 bytes).
const MAX_PIN_LINE: usize = 512;
/// Largest temp-pins file a collector reads.
const MAX_PINS_FILE: u64 = 256 * 1024 * 1024;

/// `<pins>/temp`, where processes keep their temp pins.
pub fn temp_dir(pins_dir: &Path) -> PathBuf {
    pins_dir.join("temp")
}

/// `<pins>/lock`, held exclusively by the collector while it runs.
pub fn lock_path(pins_dir: &Path) -> PathBuf {
    pins_dir.join("lock")
}

/// One process's temp pins: two files, written one at a time.
#[derive(Debug)]
pub struct TempPins {
    dir: PathBuf,
    state: Mutex<PinFiles>,
}

#[derive(Debug, Default)]
struct PinFiles {
    files: [Option<PinFile>; 2],
    current: usize,
    leases: [u64; 2],
    /// The line being written, kept to save an allocation per pinned block.
    line: String,
}

#[derive(Debug)]
struct PinFile {
    path: PathBuf,
    file: File,
    len: u64,
}

impl TempPins {
    /// Temp pins kept under `<pins_dir>/temp` (files are made on the first pin).
    pub fn new(pins_dir: &Path) -> TempPins {
        TempPins {
            dir: temp_dir(pins_dir),
            state: Mutex::new(PinFiles::default()),
        }
    }

    /// A new lease on the current file.
    pub fn lease(self: &Arc<TempPins>) -> PinLease {
        let mut state = self.lock();
        let other = 1 - state.current;
        let current_len = state.files[state.current].as_ref().map_or(0, |f| f.len);
        if current_len >= ROTATE_BYTES && state.leases[other] == 0 {
            state.current = other;
        }
        let slot = state.current;
        state.leases[slot] += 1;
        PinLease {
            pins: Arc::clone(self),
            slot,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PinFiles> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pin(&self, slot: usize, cid: &Cid) -> Result<(), BlockError> {
        use std::fmt::Write as _;
        let mut state = self.lock();
        if state.files[slot].is_none() {
            state.files[slot] = Some(self.create()?);
        }
        let PinFiles { files, line, .. } = &mut *state;
        let Some(file) = files[slot].as_mut() else {
            return Err(BlockError::io(
                "creating",
                &self.dir,
                std::io::ErrorKind::Other,
            ));
        };
        line.clear();
        let _ = writeln!(line, "{cid}");
        // One write of a short line to a file opened for appending: a reader sees it whole or
        // (while it is being written) as an unfinished last line, which it ignores.
        file.file
            .write_all(line.as_bytes())
            .map_err(|e| BlockError::io("writing", &file.path, e))?;
        file.len += line.len() as u64;
        Ok(())
    }

    /// Makes and locks a new `<temp>/<pid>-<n>`, `n` counting up in this process, so that
    /// stores opened twice on one directory (two `BlockStore`s in one process) never share a
    /// file. A file of that name left by a dead process with the same pid is emptied; one held
    /// locked (a live process of another pid namespace with the same pid) is passed over.
    fn create(&self) -> Result<PinFile, BlockError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(&self.dir).map_err(|e| BlockError::io("creating", &self.dir, e))?;
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = self.dir.join(format!("{}-{n}", std::process::id()));
            let file = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| BlockError::io("creating", &path, e))?;
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => continue,
                Err(e) => return Err(BlockError::io("locking", &path, e)),
            }
            file.set_len(0)
                .map_err(|e| BlockError::io("emptying", &path, e))?;
            debug!(file = %path.display(), "temp pins file created");
            return Ok(PinFile { path, file, len: 0 });
        }
    }

    fn release(&self, slot: usize) {
        let mut state = self.lock();
        state.leases[slot] = state.leases[slot].saturating_sub(1);
        if state.leases[slot] > 0 {
            return;
        }
        if let Some(file) = state.files[slot].as_mut()
            && file.len > 0
        {
            // No add relies on these pins any more: their paths are registered (or abandoned).
            match file.file.set_len(0) {
                Ok(()) => file.len = 0,
                Err(e) => warn!(file = %file.path.display(), error = %e, "cannot empty temp pins"),
            }
        }
    }
}

impl Drop for TempPins {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        for file in state.files.iter().flatten() {
            let _ = std::fs::remove_file(&file.path);
        }
    }
}

/// Keeps the blocks pinned through it from the collector while it lives. Clones share the
/// pins.
#[derive(Debug)]
pub struct PinLease {
    pins: Arc<TempPins>,
    slot: usize,
}

impl PinLease {
    /// Pins `cid` for as long as this lease (or a clone) lives.
    pub fn pin(&self, cid: &Cid) -> Result<(), BlockError> {
        self.pins.pin(self.slot, cid)
    }
}

impl Clone for PinLease {
    fn clone(&self) -> PinLease {
        self.pins.lock().leases[self.slot] += 1;
        PinLease {
            pins: Arc::clone(&self.pins),
            slot: self.slot,
        }
    }
}

impl Drop for PinLease {
    fn drop(&mut self) {
        self.pins.release(self.slot);
    }
}

/// The collector's lock, `<pins>/lock`, held (exclusively) until dropped.
#[derive(Debug)]
pub struct CollectorLock {
    _file: File,
}

impl CollectorLock {
    /// Takes the lock, waiting for another collector to finish.
    pub fn acquire(pins_dir: &Path) -> Result<CollectorLock, BlockError> {
        std::fs::create_dir_all(pins_dir).map_err(|e| BlockError::io("creating", pins_dir, e))?;
        let path = lock_path(pins_dir);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| BlockError::io("opening", &path, e))?;
        flock(&file, FlockOperation::LockExclusive)
            .map_err(|e| BlockError::io("locking", &path, e))?;
        Ok(CollectorLock { _file: file })
    }
}

/// Every block pinned in a temp-pins file of a live process. Files of processes that are
/// gone (a file nobody holds locked) are removed. A complete line that is not a CID is an
/// error naming the file: a pin cannot be guessed.
pub fn read_temp_pins(pins_dir: &Path) -> Result<HashSet<Cid>, BlockError> {
    let dir = temp_dir(pins_dir);
    let mut pins = HashSet::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(pins),
        Err(e) => return Err(BlockError::io("listing", &dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| BlockError::io("listing", &dir, e))?;
        let path = entry.path();
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(BlockError::io("opening", &path, e)),
        };
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                debug!(file = %path.display(), "removing stale temp pins");
                if let Err(e) = std::fs::remove_file(&path) {
                    warn!(file = %path.display(), error = %e, "cannot remove stale temp pins");
                }
                continue;
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {}
            Err(e) => return Err(BlockError::io("locking", &path, e)),
        }
        let mut text = Vec::new();
        (&mut file)
            .take(MAX_PINS_FILE + 1)
            .read_to_end(&mut text)
            .map_err(|e| BlockError::io("reading", &path, e))?;
        if text.len() as u64 > MAX_PINS_FILE {
            return Err(BlockError::BadPins {
                path,
                reason: format!("larger than {MAX_PINS_FILE} bytes"),
            });
        }
        parse_pins(&text, &mut pins).map_err(|reason| BlockError::BadPins {
            path: path.clone(),
            reason,
        })?;
    }
    Ok(pins)
}

/// Parses the complete lines of a temp-pins file (an unfinished last line is being written
/// and is left out).
/// Parses a temp-pins file's text into `into`: one CID per line; an unfinished last line (a
/// write in progress) is ignored; anything else is an error naming the line. Public for the
/// fuzz target.
pub fn parse_pins(text: &[u8], into: &mut HashSet<Cid>) -> Result<(), String> {
    let complete = match text.iter().rposition(|&b| b == b'\n') {
        Some(end) => &text[..end],
        None => return Ok(()),
    };
    for (n, line) in complete.split(|&b| b == b'\n').enumerate() {
        if line.len() > MAX_PIN_LINE {
            return Err(format!(
                "line {} is longer than {MAX_PIN_LINE} bytes",
                n + 1
            ));
        }
        let cid = std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.parse::<Cid>().ok())
            .ok_or_else(|| {
                format!(
                    "line {} is not a CID: {:?}",
                    n + 1,
                    String::from_utf8_lossy(line)
                )
            })?;
        into.insert(cid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(data: &[u8]) -> Cid {
        Cid::of(pkgchain_dag::Codec::Raw, data)
    }

    /// Two sets of temp pins on one directory in one process (a store opened twice) take
    /// files of their own: neither waits for the other's lock (they once shared
    /// `<pid>-<slot>`, and the second `flock` waited forever), and a reader sees both.
    #[test]
    fn two_stores_of_one_process_on_one_directory_do_not_wait_for_each_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_owned();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let first = Arc::new(TempPins::new(&root));
            let second = Arc::new(TempPins::new(&root));
            let (a, b) = (first.lease(), second.lease());
            a.pin(&cid(b"first")).expect("pin");
            b.pin(&cid(b"second")).expect("pin");
            let seen = read_temp_pins(&root).expect("read");
            let files = std::fs::read_dir(temp_dir(&root)).expect("ls").count();
            let _ = done.send((seen, files));
            drop((a, b, first, second));
        });
        let (seen, files) = finished
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the second pin waited for the first one's lock");
        assert_eq!(seen, HashSet::from([cid(b"first"), cid(b"second")]));
        assert_eq!(files, 2);
    }

    #[test]
    fn pins_live_with_their_lease_and_a_reader_sees_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pins = Arc::new(TempPins::new(dir.path()));
        let lease = pins.lease();
        lease.pin(&cid(b"one")).expect("pin");
        let copy = lease.clone();
        copy.pin(&cid(b"two")).expect("pin");
        let seen = read_temp_pins(dir.path()).expect("read");
        assert_eq!(seen, HashSet::from([cid(b"one"), cid(b"two")]));
        drop(lease);
        assert_eq!(read_temp_pins(dir.path()).expect("read").len(), 2);
        drop(copy);
        assert!(read_temp_pins(dir.path()).expect("read").is_empty());
        // The files are this process's and stay while it holds them.
        assert_eq!(
            std::fs::read_dir(temp_dir(dir.path())).expect("ls").count(),
            1
        );
        drop(pins);
        assert_eq!(
            std::fs::read_dir(temp_dir(dir.path())).expect("ls").count(),
            0
        );
    }

    #[test]
    fn writing_moves_to_the_other_file_when_the_current_one_is_large() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pins = Arc::new(TempPins::new(dir.path()));
        let long = pins.lease();
        let mut n = 0u64;
        while pins.lock().files[0].as_ref().map_or(0, |f| f.len) < ROTATE_BYTES {
            long.pin(&cid(&n.to_le_bytes())).expect("pin");
            n += 1;
        }
        let next = pins.lease();
        next.pin(&cid(b"next")).expect("pin");
        assert_eq!(next.slot, 1);
        // Both files are read while both have leases.
        let seen = read_temp_pins(dir.path()).expect("read");
        assert!(seen.contains(&cid(b"next")) && seen.contains(&cid(&0u64.to_le_bytes())));
        // The long lease ends: its file is emptied while the other keeps its pin.
        drop(long);
        assert_eq!(
            read_temp_pins(dir.path()).expect("read"),
            HashSet::from([cid(b"next")])
        );
    }

    #[test]
    fn stale_files_are_removed_and_bad_lines_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let temp = temp_dir(dir.path());
        std::fs::create_dir_all(&temp).expect("mkdir");
        // Nobody holds this one: a dead process's, removed unread.
        std::fs::write(temp.join("999999-0"), b"not even a cid\n").expect("write");
        assert!(read_temp_pins(dir.path()).expect("read").is_empty());
        assert!(!temp.join("999999-0").exists());
        // A held file with a bad complete line is an error naming it and the line.
        let held = temp.join("held");
        std::fs::write(&held, format!("{}\nnonsense\n", cid(b"x"))).expect("write");
        let lock = File::open(&held).expect("open");
        flock(&lock, FlockOperation::LockExclusive).expect("lock");
        let err = read_temp_pins(dir.path()).expect_err("bad line");
        let text = err.to_string();
        assert!(text.contains("held") && text.contains("line 2"), "{text}");
        // An unfinished last line is being written: left out, not an error.
        std::fs::write(&held, format!("{}\nbafk", cid(b"x"))).expect("write");
        assert_eq!(
            read_temp_pins(dir.path()).expect("read"),
            HashSet::from([cid(b"x")])
        );
    }

    #[test]
    fn one_collector_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = CollectorLock::acquire(dir.path()).expect("lock");
        let file = File::open(lock_path(dir.path())).expect("open");
        assert_eq!(
            flock(&file, FlockOperation::NonBlockingLockExclusive),
            Err(rustix::io::Errno::WOULDBLOCK)
        );
        drop(first);
        flock(&file, FlockOperation::NonBlockingLockExclusive).expect("free again");
    }
}
