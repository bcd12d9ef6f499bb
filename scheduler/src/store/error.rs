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
    /// A directory or file of the store is not the current user's alone
    /// (`private`): nothing in the store is read.
    NotPrivate { path: PathBuf, why: NotPrivate },
    /// A task key that cannot name an entry file (see `valid_key`).
    InvalidKey(String),
    /// What was given as a batch job's id is not one (see `valid_job_id`).
    InvalidJobId(String),
}

/// How a store's directory or file fails to be the current user's alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotPrivate {
    /// Owned by user `uid`, not by `me`.
    Owner {
        uid: u32,
        me: u32,
    },
    /// Writable by its group or by others.
    Writable {
        mode: u32,
    },
    /// A symbolic link, where pmp wants the directory or file itself.
    Symlink,
    NotDirectory,
    NotFile,
}

/// A user's name and id, as `ls -l` would show the owner.
fn user(uid: u32) -> String {
    let mut buffer = vec![0 as libc::c_char; 1024];
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to live memory of the given size; the
    // name getpwuid_r points `found` at lives in `buffer`.
    let name = unsafe {
        let rc = libc::getpwuid_r(
            uid,
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        );
        (rc == 0 && !found.is_null()).then(|| {
            std::ffi::CStr::from_ptr(entry.pw_name)
                .to_string_lossy()
                .into_owned()
        })
    };
    match name {
        Some(name) => format!("user {name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
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
            StoreError::NotPrivate { path, why } => {
                let path = path.display();
                let (problem, fix) = match why {
                    NotPrivate::Owner { uid, me } => (
                        format!("is owned by {}, not by you ({})", user(*uid), user(*me)),
                        "use a cache_directory of your own (for example one under your home \
                         directory); if this one should be yours, remove it or chown -R it to you"
                            .to_string(),
                    ),
                    NotPrivate::Writable { mode } => (
                        format!("can be written by its group or others (mode {mode:04o})"),
                        format!("chmod go-w {path}"),
                    ),
                    NotPrivate::Symlink => (
                        "is a symbolic link".to_string(),
                        "remove the link, or give the directory it points to as \
                         cache_directory"
                            .to_string(),
                    ),
                    NotPrivate::NotDirectory => (
                        "is not a directory".to_string(),
                        "remove it or use another cache_directory".to_string(),
                    ),
                    NotPrivate::NotFile => {
                        ("is not a regular file".to_string(), "remove it".to_string())
                    }
                };
                write!(
                    f,
                    "task store: {path} {problem}. A task store holds pickles, i.e. code \
                     that pmp runs, so pmp uses only a store whose directories and files \
                     are yours alone, and read nothing of this one: {fix}"
                )
            }
            StoreError::InvalidJobId(job) => write!(
                f,
                "{job:?} is not a batch job's id: a Slurm job id is decimal digits, a Flux \
                 job id f58 ('ƒ' or 'f' then base58 digits)"
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
