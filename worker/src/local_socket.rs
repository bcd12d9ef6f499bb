//! Where a node agent's workers reach it: a ZeroMQ ipc socket in a
//! directory of the agent's alone (mode 0700, so no other user can even
//! connect), under `$XDG_RUNTIME_DIR` where that is set and writable (a
//! per-user tmpfs that the system empties at logout), else the temp dir.
//! The directory is removed when the agent exits in any way it can handle
//! (`Drop`, and `remove` before `std::process::exit`); a SIGKILLed agent
//! leaves it behind, empty of anything but the dead socket's name.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The file name of the socket in its directory.
const SOCKET: &str = "w";

/// A Unix socket's path must fit `sun_path` (108 bytes with its NUL on
/// Linux, 104 on macOS): a longer `$XDG_RUNTIME_DIR` falls back to the
/// temp dir.
const PATH_MAX: usize = 100;

/// The agent's private directory, removed when dropped.
pub struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    /// A new directory of this process's, or why none could be made.
    pub fn create() -> Result<PrivateDir, String> {
        let runtime = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|dir| dir.is_absolute() && writable(dir));
        let mut tried = Vec::new();
        for parent in runtime.into_iter().chain([std::env::temp_dir()]) {
            match make_in(&parent) {
                Ok(dir) => return Ok(dir),
                Err(e) => tried.push(format!("{}: {e}", parent.display())),
            }
        }
        Err(format!(
            "cannot make a private directory for its workers' socket ({}); set TMPDIR to a \
             writable directory with a short path",
            tried.join("; ")
        ))
    }

    /// The address its workers connect to.
    pub fn address(&self) -> String {
        format!("ipc://{}", self.path.join(SOCKET).display())
    }

    /// Remove it now: for exits that skip destructors.
    pub fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A fresh directory in `parent` whose socket path fits.
fn make_in(parent: &Path) -> Result<PrivateDir, String> {
    // Random: a directory left by a SIGKILLed agent of the same pid does
    // not stand in the way.
    let suffix = pmp_scheduler::auth::Key::generate().to_hex();
    let name = format!("pmp-agent-{}-{}", std::process::id(), &suffix[..12]);
    let path = parent.join(name);
    if path.join(SOCKET).as_os_str().len() > PATH_MAX {
        return Err(format!(
            "its socket's path would be longer than {PATH_MAX} bytes"
        ));
    }
    // create_new semantics: a directory someone planted is never reused.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&path)
        .map_err(|e| e.to_string())?;
    Ok(PrivateDir { path })
}

fn writable(dir: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access reads a NUL-terminated path.
    unsafe { libc::access(c_path.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_directory_is_the_users_alone_and_goes_when_dropped() {
        let dir = make_in(&std::env::temp_dir()).unwrap();
        let path = dir.path.clone();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(dir.address(), format!("ipc://{}/{SOCKET}", path.display()));
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn a_parent_too_deep_for_a_socket_path_is_refused() {
        let deep = std::env::temp_dir().join("d".repeat(PATH_MAX));
        let error = make_in(&deep).err().expect("refused");
        assert!(error.contains("longer than 100 bytes"), "{error}");
    }
}
