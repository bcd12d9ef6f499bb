//! A store is the current user's alone, or pmp does not use it: like ssh
//! with `~/.ssh`. Its files hold pickles, i.e. code that pmp runs, and a
//! signature only proves that whoever holds the key wrote a file: a store
//! another user made (say a shared `/tmp/cache` created first by them) comes
//! with their key, and everything in it verifies.
//!
//! So every directory pmp uses in a store must be a real directory (not a
//! symbolic link) owned by the current user and writable by no one else, and
//! every file it reads must be a regular file owned by the current user,
//! opened without following a symbolic link. Files are checked on the open
//! descriptor (`fstat`), so a file swapped in after a check is not read
//! either.

use super::error::{io, NotPrivate, StoreError};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The user this process acts as: the owner files must have.
fn me() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Fails unless `dir` is a directory (not a link to one) owned by the
/// current user and writable by nobody else.
pub(super) fn check_dir(dir: &Path) -> Result<(), StoreError> {
    let metadata = fs::symlink_metadata(dir).map_err(io(dir))?;
    let refuse = |why| {
        Err(StoreError::NotPrivate {
            path: dir.to_path_buf(),
            why,
        })
    };
    if metadata.file_type().is_symlink() {
        return refuse(NotPrivate::Symlink);
    }
    if !metadata.is_dir() {
        return refuse(NotPrivate::NotDirectory);
    }
    if metadata.uid() != me() {
        return refuse(NotPrivate::Owner {
            uid: metadata.uid(),
            me: me(),
        });
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return refuse(NotPrivate::Writable { mode });
    }
    Ok(())
}

/// Open `path` for reading if it is a regular file of the current user's,
/// without following a symbolic link; its metadata, from the open file.
/// `NotFound` stays an I/O error of that kind, for callers to whom a missing
/// file means "none".
pub(super) fn open(path: &Path) -> Result<(File, Metadata), OpenError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|error| match error.raw_os_error() {
            // O_NOFOLLOW's answer to a link in the last component.
            Some(libc::ELOOP) => OpenError::Refused(StoreError::NotPrivate {
                path: path.to_path_buf(),
                why: NotPrivate::Symlink,
            }),
            _ => OpenError::Io(error),
        })?;
    let metadata = file.metadata().map_err(OpenError::Io)?;
    let why = if !metadata.is_file() {
        // A FIFO or device planted under an entry's name would block or
        // stream forever (O_NONBLOCK above keeps the open from blocking).
        Some(NotPrivate::NotFile)
    } else if metadata.uid() != me() {
        Some(NotPrivate::Owner {
            uid: metadata.uid(),
            me: me(),
        })
    } else {
        None
    };
    match why {
        Some(why) => Err(OpenError::Refused(StoreError::NotPrivate {
            path: path.to_path_buf(),
            why,
        })),
        None => Ok((file, metadata)),
    }
}

/// Why `open` did not open a file.
#[derive(Debug)]
pub(super) enum OpenError {
    /// The file system's error (`NotFound` among them).
    Io(std::io::Error),
    /// The file is there but not the current user's alone.
    Refused(StoreError),
}

impl OpenError {
    pub(super) fn is_not_found(&self) -> bool {
        matches!(self, OpenError::Io(e) if e.kind() == ErrorKind::NotFound)
    }

    pub(super) fn into_store_error(self, path: &Path) -> StoreError {
        match self {
            OpenError::Io(error) => io(path)(error),
            OpenError::Refused(error) => error,
        }
    }
}
