//! How the executor's key reaches a worker that Slurm or Flux starts: in a
//! file of its own, never in the job's environment or on a command line
//! (`scontrol show job`, `sacct --env-vars`, `flux job info` and `ps` show
//! those, some to other users), nor in a job script.
//!
//! The file is mode 0600 in a directory of the executor's, mode 0700, under
//! `~/.pmp/keys` (also 0700): the worker's node must see the user's home,
//! as it must see pmp-worker and the Python it runs. The worker finds it
//! through `PMP_KEY_FILE` (a path, no secret), reads it and removes it; the
//! directory goes with the executor, with the files of workers that never
//! started. An executor killed before it could remove its own is named by
//! host and pid, so the next executor of that host removes it.

use crate::auth::Key;
use crate::ids::WorkerId;
use crate::store::LockOwner;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The variable that names a worker's key file.
pub const VARIABLE: &str = "PMP_KEY_FILE";

/// The executor's directory of key files, made on first use (executors of
/// the local backend never make one) and removed when the last clone goes.
#[derive(Clone, Default)]
pub struct KeyFiles {
    dir: Arc<OnceLock<Result<PathBuf, String>>>,
    /// Where `.pmp/keys` is made: HOME unless a test says.
    home: Option<PathBuf>,
}

impl std::fmt::Debug for KeyFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyFiles({:?})", self.dir.get())
    }
}

impl KeyFiles {
    /// Write `key` for `worker` and return the file's path.
    pub fn write(&self, key: &Key, worker: WorkerId) -> Result<PathBuf, String> {
        self.write_for(key, &format!("worker-{}", worker.0))
    }

    /// Write `key` for whoever `label` names (`agents`: every node agent of
    /// the executor reads the same file) and return the file's path.
    pub fn write_for(&self, key: &Key, label: &str) -> Result<PathBuf, String> {
        let dir = self
            .dir
            .get_or_init(|| make_dir(self.home.as_deref()))
            .as_ref()
            .map_err(Clone::clone)?;
        let mut nonce = [0u8; 8];
        rand::fill(&mut nonce);
        let path = dir.join(format!("{label}-{}", hex::encode(nonce)));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot write the worker's key file {}: {e}", path.display()))?;
        file.write_all(key.to_hex().as_bytes())
            .map_err(|e| format!("cannot write the worker's key file {}: {e}", path.display()))?;
        Ok(path)
    }
}

impl Drop for KeyFiles {
    fn drop(&mut self) {
        if let Some(Ok(dir)) = Arc::get_mut(&mut self.dir).and_then(|cell| cell.get()) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `~/.pmp/keys/<host>-<pid>-<random>`, each level 0700 and ours; the
/// directories that executors of this host left when they were killed go.
fn make_dir(home: Option<&Path>) -> Result<PathBuf, String> {
    let home = match home {
        Some(home) => home.to_path_buf(),
        None => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .ok_or(
                "HOME is not set: workers that Slurm or Flux starts get the executor's key \
                 in a file under ~/.pmp/keys; set HOME to a directory the nodes share",
            )?,
    };
    let keys = home.join(".pmp").join("keys");
    private_dir(&keys, true)?;
    remove_left_behind(&keys);
    let mut name = [0u8; 16];
    rand::fill(&mut name);
    let owner = LockOwner::this_process(false);
    let dir = keys.join(format!(
        "{}-{}-{}",
        owner.host,
        owner.pid,
        hex::encode(name)
    ));
    private_dir(&dir, false)?;
    Ok(dir)
}

/// Remove the key directories of executors of this host that no longer
/// run (killed, so their own removal never ran). Whether a process is gone
/// is the store's rule for a lock's owner; another host's are left alone.
fn remove_left_behind(keys: &Path) {
    let Ok(entries) = std::fs::read_dir(keys) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name.to_str().and_then(owner_of) else {
            continue;
        };
        if owner.gone() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The executor a directory named `<host>-<pid>-<random>` belongs to.
fn owner_of(name: &str) -> Option<LockOwner> {
    let mut parts = name.rsplitn(3, '-');
    let (_random, pid, host) = (parts.next()?, parts.next()?, parts.next()?);
    Some(LockOwner {
        batch: false,
        host: host.to_string(),
        pid: pid.parse().ok()?,
    })
}

/// Make `dir` mode 0700; where it exists already (`shared`), it must be ours,
/// and is made 0700 if it was more open.
fn private_dir(dir: &Path, shared: bool) -> Result<(), String> {
    let made = std::fs::DirBuilder::new()
        .recursive(shared)
        .mode(0o700)
        .create(dir);
    if let Err(e) = made {
        return Err(format!("cannot make {}: {e}", dir.display()));
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // SAFETY: geteuid has no preconditions.
    if !meta.is_dir() || meta.uid() != unsafe { libc::geteuid() } {
        return Err(format!(
            "{} is not a directory of this user's: pmp keeps workers' keys there and \
             will not use it; remove it",
            dir.display()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make {} private: {e}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_the_users_alone_and_goes_with_the_executor() {
        let home = std::env::temp_dir().join(format!("pmp-keys-{}", std::process::id()));
        std::fs::create_dir_all(&home).unwrap();
        let files = KeyFiles {
            dir: Default::default(),
            home: Some(home.clone()),
        };
        let key = Key::generate();
        let path = files.write(&key, WorkerId(3)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), key.to_hex());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&home.join(".pmp/keys")), 0o700);
        let other = files.clone().write(&key, WorkerId(3)).unwrap();
        assert_ne!(other, path, "each start has a file of its own");
        drop(files);
        assert!(!path.parent().unwrap().exists());
        std::fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn a_killed_executors_directory_goes_when_the_next_one_of_its_host_starts() {
        let home = std::env::temp_dir().join(format!("pmp-keys-left-{}", std::process::id()));
        let keys = home.join(".pmp/keys");
        std::fs::create_dir_all(&keys).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let host = crate::host::name();
        let left = keys.join(format!("{host}-{dead}-00ff"));
        let alive = keys.join(format!("{host}-{}-00ff", std::process::id()));
        let elsewhere = keys.join(format!("another-host-{dead}-00ff"));
        for dir in [&left, &alive, &elsewhere] {
            std::fs::create_dir(dir).unwrap();
            std::fs::write(dir.join("worker-1-00"), "key").unwrap();
        }
        let files = KeyFiles {
            dir: Default::default(),
            home: Some(home.clone()),
        };
        let path = files.write(&Key::generate(), WorkerId(1)).unwrap();
        assert!(!left.exists(), "a dead executor's keys are removed");
        assert!(
            alive.exists() && elsewhere.exists(),
            "a live or unknown one's stay"
        );
        let name = path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        let owner = owner_of(name).unwrap();
        assert_eq!((owner.host, owner.pid), (host, std::process::id()));
        drop(files);
        std::fs::remove_dir_all(&home).unwrap();
    }
}
