//! What can go wrong with a task store, each error naming the file it is about.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum StoreError {
    /// The file system refused an operation on `path`.
    Io { path: PathBuf, error: io::Error },
    /// `path` (an entry, an input, the key file or the format file) is
    /// malformed or, for an entry or an input, fails its signature check.
    /// Nothing of an invalid entry or input is returned, let alone unpickled.
    Invalid { path: PathBuf, why: String },
    /// The store was made by a newer pmp, whose layout this one cannot read.
    Format {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// The key file can be read by others, who could then sign entries of their
    /// own, i.e. run code in the processes that read them.
    Insecure { path: PathBuf, mode: u32 },
    /// A task key that cannot name an entry file (see `valid_key`).
    InvalidKey(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { path, error } => {
                write!(f, "task store: cannot use {}: {error}", path.display())
            }
            StoreError::Invalid { path, why } => write!(
                f,
                "task store file {} is invalid: {why}; it was not unpickled",
                path.display()
            ),
            StoreError::Format {
                path,
                found,
                supported,
            } => write!(
                f,
                "task store {} has format {found}, but this pmp reads format {supported} \
                 at most: use a newer pmp or another cache_directory",
                path.display()
            ),
            StoreError::Insecure { path, mode } => write!(
                f,
                "task store key {} has mode {mode:o}, so others can read it and forge \
                 entries: it must be readable by its owner only (chmod 600 {0}), and \
                 entries signed while it was exposed are best cleared",
                path.display()
            ),
            StoreError::InvalidKey(key) => write!(
                f,
                "task key {key:?} cannot name a store entry: use 1 to 200 of the \
                 characters A-Z a-z 0-9 . _ -, in parts joined by '/', none starting \
                 with '.'"
            ),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// For `map_err`: the I/O error, attributed to `path`.
pub(super) fn io(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |error| StoreError::Io {
        path: path.to_path_buf(),
        error,
    }
}
