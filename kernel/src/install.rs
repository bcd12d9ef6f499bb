//! `pmp-kernel install`: write the kernelspec (share/kernels/pmp, compiled
//! in) with this binary's absolute path and the chosen interpreter.

use crate::cli::Destination;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const KERNEL_JSON: &str = include_str!("../../share/kernels/pmp/kernel.json");
const FILES: &[(&str, &[u8])] = &[
    (
        "logo-32x32.png",
        include_bytes!("../../share/kernels/pmp/logo-32x32.png"),
    ),
    (
        "logo-64x64.png",
        include_bytes!("../../share/kernels/pmp/logo-64x64.png"),
    ),
    (
        "logo-svg.svg",
        include_bytes!("../../share/kernels/pmp/logo-svg.svg"),
    ),
];

/// The interpreter when none is given: the environment this binary is
/// installed in (a `python` beside it), else the one it was built with.
pub fn default_python() -> PathBuf {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("python")));
    match beside {
        Some(python) if python.exists() => python,
        _ => PathBuf::from(env!("PMP_BUILD_PYTHON")),
    }
}

/// Jupyter's per-user data directory, as jupyter_core computes it.
fn user_data_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("JUPYTER_DATA_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("jupyter"));
    }
    let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
    let home = PathBuf::from(home);
    if cfg!(target_os = "macos") {
        Ok(home.join("Library/Jupyter"))
    } else {
        Ok(home.join(".local/share/jupyter"))
    }
}

fn kernels_dir(destination: &Destination, python: &Path) -> Result<PathBuf, String> {
    Ok(match destination {
        Destination::User => user_data_dir()?.join("kernels"),
        // The environment's prefix: bin/python's grandparent (not resolving
        // symlinks: a virtualenv's python links to the base interpreter).
        Destination::SysPrefix => python
            .parent()
            .and_then(Path::parent)
            .ok_or_else(|| format!("{} is not inside an environment", python.display()))?
            .join("share/jupyter/kernels"),
        Destination::Prefix(prefix) => prefix.join("share/jupyter/kernels"),
    })
}

fn absolute(path: &Path) -> Result<PathBuf, String> {
    std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The kernelspec for `exe` running cells in `python`. Edited as JSON so
/// that the template's fields pass through as they are.
pub fn kernelspec(exe: &Path, python: &Path, display_name: &str) -> Value {
    let mut spec: Value =
        serde_json::from_str(KERNEL_JSON).expect("share/kernels/pmp/kernel.json is valid");
    spec["argv"] = json!([
        exe.display().to_string(),
        "-f",
        "{connection_file}",
        "--python",
        python.display().to_string()
    ]);
    spec["display_name"] = json!(display_name);
    spec
}

/// Write the kernelspec; returns the directory written.
pub fn install(
    destination: &Destination,
    python: Option<&Path>,
    name: &str,
    display_name: &str,
) -> Result<PathBuf, String> {
    let python = absolute(&python.map_or_else(default_python, Path::to_path_buf))?;
    crate::python::check_environment(&python)?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find pmp-kernel itself: {e}"))?;
    let dir = kernels_dir(destination, &python)?.join(name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let spec = kernelspec(&exe, &python, display_name);
    let json = serde_json::to_string_pretty(&spec).expect("a kernelspec serializes");
    let write = |file: &str, bytes: &[u8]| {
        let path = dir.join(file);
        std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write("kernel.json", format!("{json}\n").as_bytes())?;
    for (file, bytes) in FILES {
        write(file, bytes)?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernelspec_runs_this_binary_with_the_interpreter() {
        let spec = kernelspec(
            Path::new("/opt/bin/pmp-kernel"),
            Path::new("/env/bin/python"),
            "P",
        );
        assert_eq!(
            spec["argv"],
            json!([
                "/opt/bin/pmp-kernel",
                "-f",
                "{connection_file}",
                "--python",
                "/env/bin/python"
            ])
        );
        assert_eq!(spec["language"], "python");
        assert_eq!(spec["interrupt_mode"], "message");
        assert_eq!(spec["display_name"], "P");
    }

    #[test]
    fn sys_prefix_is_the_environment_of_the_interpreter() {
        let dir = kernels_dir(&Destination::SysPrefix, Path::new("/env/bin/python")).unwrap();
        assert_eq!(dir, PathBuf::from("/env/share/jupyter/kernels"));
    }
}
