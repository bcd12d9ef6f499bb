//! The task store behind `Executor(cache_directory=...)`: task outcomes that
//! outlive the process, one entry per task key, in a directory that may be on
//! a file system shared by many hosts. Entries hold pickles, i.e. code, so
//! each is signed with the store's key and none is returned, let alone
//! unpickled, before its signature has been checked.
//!
//! Layout of a store at `root`:
//!
//! - `root/format`: the layout's version (`FORMAT`), as decimal text;
//! - `root/key`: the HMAC key, 32 random bytes, mode 0600; whoever can read it
//!   can make the store's readers run code, so a key readable by others is
//!   refused;
//! - `root/entries/<key>`: one entry file per task key: a call's outcome;
//! - `root/inputs/<key>`: one input file per task key whose call waits for a
//!   batch job to run it (`Input`): written by the client before it submits
//!   the job, read by `pmp-worker` in job mode, which writes the entry. A
//!   store made before inputs existed has no `inputs/` until it is next
//!   opened, which creates it; nothing else about it changed, so `FORMAT`
//!   did not either;
//! - `root/locks/<key>`: a claim on running the task, holding its owner's
//!   text. Locks have a directory of their own because `<key>.lock` would
//!   itself be a valid task key;
//! - `root/jobs/<key>`: which batch job runs the key's call (`job_record`),
//!   signed like an entry; removed once a client saw that job end, so one
//!   left beside an entry is an end no client saw (a kernel restarted);
//! - `root/logs/<key>.out`: what that job printed, written by the job system;
//! - `.tmp-<random>` in each of these directories: files being written, which
//!   no valid key can name.
//!
//! The store is its user's alone (`private`): every one of these directories
//! is the current user's and writable by no one else, every file read is a
//! regular file of the current user's, opened without following links;
//! otherwise nothing of the store is read.
//!
//! Every file appears whole: written to a temp file, then renamed or linked
//! into place (`files`).
//!
//! An entry file, little-endian throughout:
//!
//! ```text
//! b"PMPENTRY"  FORMAT: u32  HMAC-SHA256: [u8; 32]
//! meta length: u32  meta: bincode of Meta
//! frame count: u32  then per frame: length: u64, bytes
//! ```
//!
//! The frames are the pickled result or exception. An input file is laid
//! out the same way, with `b"PMPINPUT"` for magic, the bincode of
//! `(function: String, submitted: f64, dependencies: Vec<String>)` for meta,
//! and for frames the function's pickle, then the call's frames.
//!
//! The HMAC (`auth::Key::sign`) covers a label of the file's kind ("pmp task
//! store entry" or "... input"), the format, the file's key, the meta bytes
//! and every frame, each length-prefixed: a file changed anywhere,
//! truncated, extended, copied under another key or moved between
//! `entries/` and `inputs/` fails the check.

mod entry;
mod error;
mod files;
mod input;
mod job_record;
mod lock_owner;
mod private;
mod signed;
#[cfg(test)]
mod tests;

pub use entry::{Entry, Meta, State};
pub use error::{NotPrivate, StoreError};
pub use input::Input;
pub use job_record::valid_job_id;
pub use lock_owner::LockOwner;

use crate::auth::{Key, KEY_LEN};
use crate::large_frames;
use bytes::Bytes;
use error::io;
use std::fs::{self, DirBuilder};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The version of the layout and of the entry and input files. A pmp reads stores of
/// this format and refuses newer ones.
pub const FORMAT: u32 = 1;

/// Is `key` usable as a task key: 1..=200 bytes of parts joined by '/'
/// (executorlib's keys name sub-folders, "run/a"), each part one or more
/// of [A-Za-z0-9._-] not starting with '.' (which keeps temp files and
/// `.`/`..` out of the key space).
pub fn valid_key(key: &str) -> bool {
    (1..=200).contains(&key.len())
        && key.split('/').all(|part| {
            !part.is_empty()
                && !part.starts_with('.')
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

/// The file name of `key` in each of the store's directories: flat, with
/// '/' written as '%', which no key holds, so names and keys map one to one.
pub fn file_name(key: &str) -> String {
    key.replace('/', "%")
}

/// The key a file in the store's directories is named for, if any.
fn key_of(name: &str) -> Option<String> {
    let key = name.replace('%', "/");
    valid_key(&key).then_some(key)
}

/// The keys the files in `dir` are named for, sorted (temp files and other
/// names that no key maps to are left out).
fn keys_in(dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut keys: Vec<String> = files::names(dir)?
        .iter()
        .filter_map(|name| key_of(name))
        .collect();
    keys.sort_unstable();
    Ok(keys)
}

/// Whether a lock's `owner` text names a process of this host that no
/// longer runs.
fn owner_gone(owner: &str) -> bool {
    LockOwner::parse(owner).is_some_and(|owner| owner.gone())
}

/// `key`'s file name, if it is a valid key.
fn checked(key: &str) -> Result<String, StoreError> {
    if valid_key(key) {
        Ok(file_name(key))
    } else {
        Err(StoreError::InvalidKey(key.to_string()))
    }
}

/// An open task store. Every method is synchronous and safe to call from
/// several threads and processes at once.
#[derive(Clone)]
pub struct Store {
    root: PathBuf,
    entries: PathBuf,
    inputs: PathBuf,
    locks: PathBuf,
    jobs: PathBuf,
    logs: PathBuf,
    signer: Key,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Store").field("root", &self.root).finish()
    }
}

/// Create `dir` (and its parents) readable by its owner only, if missing.
fn private_dir(dir: &Path) -> Result<(), StoreError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))
}

/// The content of `root/name`, created from `initial` if there is none. Of
/// several processes creating it at once, all read the one that was made.
fn read_or_create(
    root: &Path,
    name: &str,
    initial: impl FnOnce() -> Vec<u8>,
) -> Result<(Vec<u8>, fs::Metadata), StoreError> {
    let path = root.join(name);
    // Key and format files are tiny; reading one more byte than either may
    // hold is enough to tell a wrong one.
    const LIMIT: u64 = 64;
    match read_small(&path, LIMIT) {
        Err(e) if e.is_not_found() => {}
        read => return read.map_err(|e| e.into_store_error(&path)),
    }
    files::create_whole(root, name, &initial(), true)?;
    read_small(&path, LIMIT).map_err(|e| e.into_store_error(&path))
}

/// The content of a small file of the store (at most `limit` bytes are
/// read) and its metadata, both from one open, checked to be the user's own
/// (`private::open`).
fn read_small(path: &Path, limit: u64) -> Result<(Vec<u8>, fs::Metadata), private::OpenError> {
    let (file, metadata) = private::open(path)?;
    let mut content = Vec::new();
    file.take(limit)
        .read_to_end(&mut content)
        .map_err(private::OpenError::Io)?;
    Ok((content, metadata))
}

fn check_format(root: &Path) -> Result<(), StoreError> {
    let path = root.join("format");
    let (text, _) = read_or_create(root, "format", || format!("{FORMAT}\n").into_bytes())?;
    let found = std::str::from_utf8(&text)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| StoreError::Invalid {
            path: path.clone(),
            why: format!(
                "it holds {:?}, not a store format number",
                String::from_utf8_lossy(&text)
            ),
        })?;
    if found > FORMAT {
        return Err(StoreError::Format {
            path,
            found,
            supported: FORMAT,
        });
    }
    Ok(())
}

fn load_key(root: &Path) -> Result<Key, StoreError> {
    let path = root.join("key");
    let (bytes, metadata) = read_or_create(root, "key", || {
        let mut bytes = vec![0u8; KEY_LEN];
        rand::fill(bytes.as_mut_slice());
        bytes
    })?;
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(StoreError::Insecure { path, mode });
    }
    let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|b: Vec<u8>| StoreError::Invalid {
        path: path.clone(),
        why: format!(
            "it holds {}{} bytes, a store key is {KEY_LEN}",
            b.len(),
            if metadata.len() > b.len() as u64 {
                "+"
            } else {
                ""
            }
        ),
    })?;
    Ok(Key::from_bytes(bytes))
}

impl Store {
    /// Open the store at `root`, creating it if needed: the directory 0700
    /// (parents as needed), the format file, and the key file, made once
    /// and atomically so that processes opening a new store at once all end
    /// up with the same key. A store that is not the user's alone
    /// (`private`), a store of a newer format, a key file of the wrong size
    /// and a key file with group or other permissions are errors saying so.
    ///
    /// `root` may be a symbolic link (a cache directory on a scratch file
    /// system often is): the store is the directory it resolves to now, and
    /// that directory is what is checked and used from then on.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        private_dir(root)?;
        let root = &fs::canonicalize(root).map_err(io(root))?;
        // Before anything in it is read or made: whose it is.
        private::check_dir(root)?;
        // The format first: a newer store may keep its key elsewhere.
        check_format(root)?;
        let signer = load_key(root)?;
        let [entries, inputs, locks, jobs, logs] =
            ["entries", "inputs", "locks", "jobs", "logs"].map(|name| root.join(name));
        for dir in [&entries, &inputs, &locks, &jobs, &logs] {
            private_dir(dir)?;
            private::check_dir(dir)?;
        }
        Ok(Store {
            root: root.to_path_buf(),
            entries,
            inputs,
            locks,
            jobs,
            logs,
            signer,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `key`'s entry is (or would be), for a user to look at.
    pub fn entry_path(&self, key: &str) -> Result<PathBuf, StoreError> {
        Ok(self.entries.join(checked(key)?))
    }

    /// Whether the store is still there (not removed since it was opened,
    /// e.g. by an `rm -rf` of the cache directory).
    pub fn present(&self) -> bool {
        self.entries.is_dir()
    }

    /// The entry stored under `key`: Ok(None) when there is none;
    /// `StoreError::Invalid` when its file fails the signature check or is
    /// malformed (nothing of it is returned). One open and one read: this is
    /// on the path of every submission to a store, so it scans no directory.
    pub fn read(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let path = self.entries.join(checked(key)?);
        let Some(content) = read_whole(&path, &signed::ENTRY)? else {
            return Ok(None);
        };
        entry::decode(&self.signer, key, content)
            .map(Some)
            .map_err(|why| StoreError::Invalid { path, why })
    }

    /// Whether a file exists for `key` (one stat), without verifying it;
    /// false for an invalid key.
    pub fn contains(&self, key: &str) -> bool {
        valid_key(key) && self.entries.join(file_name(key)).exists()
    }

    /// Write `entry` under `key` atomically: to a temp file in the entries
    /// directory, then renamed over the entry (see `files::replace`). A writer killed at
    /// any moment leaves the old entry or the new one, never a torn file; of
    /// writers racing on one key, the last rename wins.
    pub fn write(&self, key: &str, entry: &Entry) -> Result<(), StoreError> {
        let path = self.entries.join(checked(key)?);
        files::replace(&self.entries, &path, |out| {
            entry::encode(&self.signer, key, entry, out)
        })
    }

    /// The input stored under `key`, checked like an entry (`read`): Ok(None)
    /// when there is none, `StoreError::Invalid` when it fails the check.
    pub fn read_input(&self, key: &str) -> Result<Option<Input>, StoreError> {
        let path = self.inputs.join(checked(key)?);
        let Some(content) = read_whole(&path, &signed::INPUT)? else {
            return Ok(None);
        };
        input::decode(&self.signer, key, content)
            .map(Some)
            .map_err(|why| StoreError::Invalid { path, why })
    }

    /// Whether an input file exists for `key` (one stat), without verifying
    /// it; false for an invalid key.
    pub fn has_input(&self, key: &str) -> bool {
        valid_key(key) && self.inputs.join(file_name(key)).exists()
    }

    /// Write `input` under `key`, atomically like an entry (`write`).
    pub fn write_input(&self, key: &str, input: &Input) -> Result<(), StoreError> {
        let path = self.inputs.join(checked(key)?);
        files::replace(&self.inputs, &path, |out| {
            input::encode(&self.signer, key, input, out)
        })
    }

    /// All keys with an entry file, sorted (temp files are not listed).
    pub fn keys(&self) -> Result<Vec<String>, StoreError> {
        keys_in(&self.entries)
    }

    /// Remove one entry and its input; Ok(false) if there was no entry
    /// (whether or not there was an input). Its lock is untouched; a batch
    /// job still to run it finds no input and runs nothing.
    pub fn remove(&self, key: &str) -> Result<bool, StoreError> {
        let name = checked(key)?;
        files::remove(&self.inputs.join(&name))?;
        files::remove(&self.entries.join(&name))
    }

    /// Remove every entry and input, and the temp files of killed writers;
    /// returns how many entries. The key and format files stay, and so do
    /// locks: a lock belongs to a task running now, which removing it would
    /// let run twice. Temp files still being written (touched within the
    /// last hour) stay too, so that a concurrent writer's rename does not
    /// fail.
    pub fn clear(&self) -> Result<usize, StoreError> {
        for name in files::names(&self.inputs)? {
            if key_of(&name).is_some() {
                files::remove(&self.inputs.join(&name))?;
            }
        }
        let mut removed = 0;
        for name in files::names(&self.entries)? {
            if key_of(&name).is_some() {
                removed += usize::from(files::remove(&self.entries.join(&name))?);
            }
        }
        for dir in [
            &self.entries,
            &self.inputs,
            &self.locks,
            &self.jobs,
            &self.root,
        ] {
            for name in files::names(dir)? {
                if files::is_stray_temp(dir, &name) {
                    files::remove(&dir.join(&name))?;
                }
            }
        }
        Ok(removed)
    }

    /// Try to claim `key` for running it, so that the same key submitted
    /// twice at once, from two processes or hosts, runs once: create its lock
    /// file holding `owner` (e.g. "host pid") if no one has. Ok(true) when
    /// claimed, Ok(false) when someone holds it. A lock outlives a killed
    /// owner: `lock_owner` tells who to check on.
    pub fn claim(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        if self.try_lock(key, owner)? {
            return Ok(true);
        }
        if self.lock_is_stale(key) {
            self.unlock(key)?;
            return self.try_lock(key, owner);
        }
        Ok(false)
    }

    /// Whether the lock on `key` was left by a process of this host that no
    /// longer runs (owner text "host pid", as the client and the worker write
    /// it). A lock from another host, or one taken for a submitted batch job
    /// (`batch host pid` with a `jobs/<key>` file), is taken as live: the
    /// job's follower releases it.
    pub fn lock_is_stale(&self, key: &str) -> bool {
        let Some(owner) = self.lock_owner(key) else {
            return false;
        };
        if owner.starts_with("batch ") && self.jobs.join(file_name(key)).exists() {
            return false;
        }
        owner_gone(&owner)
    }

    /// Whether the lock on `key` was taken by a process of this host that
    /// no longer runs, batch or not: what a client says of the run it
    /// attached to or takes over (a batch job submitted before a kernel
    /// restart goes on without its client). False if there is no lock, or
    /// its owner is of another host.
    pub fn lock_owner_gone(&self, key: &str) -> bool {
        self.lock_owner(key).is_some_and(|owner| owner_gone(&owner))
    }

    /// All keys with a lock file, sorted: the calls running now, and those
    /// whose runs died holding their key (`lock_is_stale`).
    pub fn lock_keys(&self) -> Result<Vec<String>, StoreError> {
        keys_in(&self.locks)
    }

    /// Try to take the lock on `key`; see `claim`, which also takes over a
    /// stale one.
    pub fn try_lock(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        // Not fsynced: after a crash, the owner is gone anyway.
        files::create_whole(&self.locks, &checked(key)?, owner.as_bytes(), false)
    }

    /// Who holds the lock on `key` (its owner text), if anyone; None for an
    /// invalid key.
    pub fn lock_owner(&self, key: &str) -> Option<String> {
        if !valid_key(key) {
            return None;
        }
        // An owner text is a host name and a pid.
        const LIMIT: u64 = 4096;
        let (text, _) = read_small(&self.locks.join(file_name(key)), LIMIT).ok()?;
        String::from_utf8(text).ok()
    }

    /// Release the lock on `key`; nothing to do if it is not held.
    pub fn unlock(&self, key: &str) -> Result<(), StoreError> {
        files::remove(&self.locks.join(checked(key)?)).map(|_| ())
    }

    /// The failure that stopped a chain of batch jobs: the first of `keys`
    /// (the keys a call depends on), or of what their inputs depend on in
    /// turn, whose entry holds a failure, with that entry. A dependent whose
    /// upstream failed never runs and so stores nothing; its own dependents
    /// find the original failure here, however far up the chain it is.
    /// Entries that are done end the walk along their branch; invalid ones
    /// count as absent.
    pub fn failed_upstream(&self, keys: &[String]) -> Result<Option<(String, Entry)>, StoreError> {
        // A chain longer than this is read no further (each step reads a file).
        const MOST: usize = 100_000;
        let mut seen = std::collections::HashSet::new();
        let mut queue: std::collections::VecDeque<String> = keys.iter().cloned().collect();
        while let Some(key) = queue.pop_front() {
            if seen.len() >= MOST || !seen.insert(key.clone()) {
                continue;
            }
            match self.read(&key) {
                Ok(Some(entry)) if entry.meta.state == State::Failed => {
                    return Ok(Some((key, entry)));
                }
                Ok(Some(_)) => continue,
                Ok(None) | Err(StoreError::Invalid { .. }) => {}
                Err(e) => return Err(e),
            }
            match self.read_input(&key) {
                Ok(Some(input)) => queue.extend(input.dependencies),
                Ok(None) | Err(StoreError::Invalid { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Record that batch job `job` runs `key`'s call (signed, atomically
    /// like an entry); `StoreError::InvalidJobId` if `job` is not a job id.
    pub fn write_job(&self, key: &str, job: &str) -> Result<(), StoreError> {
        let path = self.jobs.join(checked(key)?);
        if !valid_job_id(job) {
            return Err(StoreError::InvalidJobId(job.to_string()));
        }
        files::replace(&self.jobs, &path, |out| {
            job_record::encode(&self.signer, key, job, out)
        })
    }

    /// The batch job recorded for `key`, verified: Ok(None) when there is
    /// no record, `StoreError::Invalid` when it fails the check.
    pub fn read_job(&self, key: &str) -> Result<Option<String>, StoreError> {
        let path = self.jobs.join(checked(key)?);
        let Some(content) = read_whole(&path, &signed::JOB)? else {
            return Ok(None);
        };
        job_record::decode(&self.signer, key, content)
            .map(Some)
            .map_err(|why| StoreError::Invalid { path, why })
    }

    /// Remove the job record of `key` once a client has seen its job end:
    /// a record left with an entry then means that no client followed the
    /// job to its end. Ok(false) if there was none.
    pub fn remove_job(&self, key: &str) -> Result<bool, StoreError> {
        files::remove(&self.jobs.join(checked(key)?))
    }

    /// All keys with a job record, sorted (not verified: `read_job` does).
    pub fn job_keys(&self) -> Result<Vec<String>, StoreError> {
        keys_in(&self.jobs)
    }

    /// Where the batch job of `key` writes what it prints: in the store's
    /// own `logs/`, which no one else can write to, so that no one can put a
    /// link there for the job system to follow.
    pub fn log_path(&self, key: &str) -> Result<PathBuf, StoreError> {
        Ok(self.logs.join(format!("{}.out", checked(key)?)))
    }

    /// The last `limit` bytes (at most) of the log of `key`'s batch job,
    /// read as `private::open` allows; Ok(None) when there is none.
    pub fn log_tail(&self, key: &str, limit: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.log_from(key, 0, limit)?.map(|(_, tail)| tail))
    }

    /// What the log of `key`'s batch job holds from byte `offset` on, for a
    /// reader that follows it as it grows: `(start, bytes)`, where `start`
    /// is past `offset` when more than `limit` bytes were written since
    /// (only the last `limit` are read: a reader's memory stays bounded),
    /// and below it when the log is shorter than `offset` (a new job of
    /// the key started it again). Read as `private::open` allows; Ok(None)
    /// when there is no log.
    pub fn log_from(
        &self,
        key: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let path = self.log_path(key)?;
        let (mut file, metadata) = match private::open(&path) {
            Ok(opened) => opened,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into_store_error(&path)),
        };
        let len = metadata.len();
        let from = if offset > len { 0 } else { offset };
        let start = from.max(len.saturating_sub(limit));
        file.seek(SeekFrom::Start(start)).map_err(io(&path))?;
        let mut read = Vec::new();
        // Up to the length seen: what the job writes meanwhile is the next read's.
        file.take(len - start)
            .read_to_end(&mut read)
            .map_err(io(&path))?;
        Ok(Some((start, read)))
    }
}

/// The whole content of the file of `kind` at `path`, or None if there is
/// none: one open, and one read into one buffer, which the frames decoded
/// from it are slices of; a large one on huge pages, recycled like sent
/// frames. The file must be the user's own (`private::open`), and its magic
/// and format are read and checked first, so that a file of another kind is
/// rejected without reading the rest of it, whatever its size.
fn read_whole(path: &Path, kind: &signed::Kind) -> Result<Option<Bytes>, StoreError> {
    let (mut file, metadata) = match private::open(path) {
        Ok(opened) => opened,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into_store_error(path)),
    };
    let invalid = |why: String| StoreError::Invalid {
        path: path.to_path_buf(),
        why,
    };
    let mut head = Vec::with_capacity(signed::HEAD);
    (&mut file)
        .take(signed::HEAD as u64)
        .read_to_end(&mut head)
        .map_err(io(path))?;
    signed::check_head(kind, &head).map_err(invalid)?;
    let len = usize::try_from(metadata.len())
        .map_err(|_| invalid("it is larger than this machine's address space".into()))?;
    let mut content = large_frames::storage(len);
    content.extend_from_slice(&head);
    file.read_to_end(&mut content).map_err(io(path))?;
    Ok(Some(large_frames::into_frame(content)))
}
