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
//! started.

use crate::auth::Key;
use crate::ids::WorkerId;
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
        let dir = self
            .dir
            .get_or_init(|| make_dir(self.home.as_deref()))
            .as_ref()
            .map_err(Clone::clone)?;
        let mut nonce = [0u8; 8];
        rand::fill(&mut nonce);
        let path = dir.join(format!("worker-{}-{}", worker.0, hex::encode(nonce)));
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

/// `~/.pmp/keys/<random>`, each level 0700 and ours.
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
    let mut name = [0u8; 16];
    rand::fill(&mut name);
    let dir = keys.join(hex::encode(name));
    private_dir(&dir, false)?;
    Ok(dir)
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
}
