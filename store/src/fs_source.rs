//! A directory tree on disk as NAR events, read iteratively through directory file descriptors.
//!
//! What Nix puts in a NAR is what this reads: regular files (executable when the owner may
//! execute them), symlinks (targets as stored) and directories (entries sorted bytewise).
//! Anything else (sockets, devices, FIFOs) is an error, as in Nix. Files are opened relative to
//! their parent directory's descriptor with `O_NOFOLLOW`, so the tree cannot be redirected while
//! it is read, and a file whose size changes while it is read is an error.

use std::ffi::CStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};

use crate::ingest::{DATA_PIECE, IngestError, Producer};

/// Deepest nesting read (each level holds one open descriptor).
pub const MAX_DEPTH: usize = 512;

struct Frame {
    fd: OwnedFd,
    path: PathBuf,
    names: Vec<Vec<u8>>,
    next: usize,
}

fn io_err(op: &'static str, path: &Path, e: impl Into<std::io::Error>) -> IngestError {
    IngestError::Io {
        op,
        path: path.display().to_string(),
        source: e.into(),
    }
}

fn list_sorted(fd: &OwnedFd, path: &Path) -> Result<Vec<Vec<u8>>, IngestError> {
    let mut dir = Dir::read_from(fd).map_err(|e| io_err("reading directory", path, e))?;
    let mut names = Vec::new();
    while let Some(entry) = dir.read() {
        let entry = entry.map_err(|e| io_err("reading directory", path, e))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// Produces the NAR events of the tree at `root` (a file, symlink or directory).
pub fn produce_from_path(root: &Path, producer: &mut Producer) -> Result<(), IngestError> {
    let (parent, base) = match (root.parent(), root.file_name()) {
        (Some(p), Some(b)) => (
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            },
            b,
        ),
        _ => (root, std::ffi::OsStr::new(".")),
    };
    let parent_fd = rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("opening", parent, e))?;
    let mut stack: Vec<Frame> = Vec::new();
    if let Some(frame) = node(&parent_fd, base.as_bytes(), root, None, producer)? {
        stack.push(frame);
    }
    while let Some(mut top) = stack.pop() {
        if top.next == top.names.len() {
            producer.directory_end()?;
            continue;
        }
        let name = std::mem::take(&mut top.names[top.next]);
        top.next += 1;
        let path = top.path.join(std::ffi::OsStr::from_bytes(&name));
        let child = node(&top.fd, &name, &path, Some(&name), producer)?;
        stack.push(top);
        if let Some(frame) = child {
            if stack.len() >= MAX_DEPTH {
                return Err(IngestError::TooDeep {
                    path: path.display().to_string(),
                    limit: MAX_DEPTH,
                });
            }
            stack.push(frame);
        }
    }
    Ok(())
}

/// Emits one node found as `name` in directory `dir`; a directory is returned as a new frame
/// whose entries the caller walks.
fn node(
    dir: &OwnedFd,
    name: &[u8],
    path: &Path,
    entry_name: Option<&[u8]>,
    producer: &mut Producer,
) -> Result<Option<Frame>, IngestError> {
    let c_name = std::ffi::CString::new(name)
        .map_err(|e| io_err("naming", path, std::io::Error::other(e)))?;
    let c_name: &CStr = &c_name;
    let st = rustix::fs::statat(dir, c_name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| io_err("getting status of", path, e))?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => {
            let fd = rustix::fs::openat(
                dir,
                c_name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_err("opening", path, e))?;
            let executable = st.st_mode & 0o100 != 0;
            let size = st.st_size as u64;
            producer.file(entry_name, executable, size)?;
            let mut file = File::from(fd);
            let mut remaining = size;
            while remaining > 0 {
                let want = (DATA_PIECE as u64).min(remaining) as usize;
                producer.data_with(want, |slot| {
                    let mut filled = 0;
                    while filled < slot.len() {
                        match file.read(&mut slot[filled..]) {
                            Ok(0) => {
                                return Err(IngestError::Changed {
                                    path: path.display().to_string(),
                                });
                            }
                            Ok(n) => filled += n,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(io_err("reading", path, e)),
                        }
                    }
                    Ok(())
                })?;
                remaining -= want as u64;
            }
            // A file that grew is as wrong as one that shrank.
            let mut probe = [0u8; 1];
            if matches!(file.read(&mut probe), Ok(n) if n > 0) {
                return Err(IngestError::Changed {
                    path: path.display().to_string(),
                });
            }
            producer.file_end()?;
            Ok(None)
        }
        FileType::Symlink => {
            let target = rustix::fs::readlinkat(dir, c_name, Vec::new())
                .map_err(|e| io_err("reading link", path, e))?;
            producer.symlink(entry_name, target.as_bytes())?;
            Ok(None)
        }
        FileType::Directory => {
            let fd = rustix::fs::openat(
                dir,
                c_name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_err("opening directory", path, e))?;
            let names = list_sorted(&fd, path)?;
            producer.directory_start(entry_name)?;
            Ok(Some(Frame {
                fd,
                path: path.to_owned(),
                names,
                next: 0,
            }))
        }
        _ => Err(IngestError::UnsupportedType {
            path: path.display().to_string(),
        }),
    }
}
