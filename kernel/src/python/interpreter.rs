//! Starting CPython as the environment's own interpreter would start: its
//! `sys.prefix`, its site-packages, its virtualenv — whatever is on PATH.
//! The kernel is linked against one libpython, so the environment must have
//! that Python version; this is checked before and after start-up and
//! reported in plain words.

use pyo3::prelude::*;
use std::path::Path;

/// The Python version pmp-kernel was built against, e.g. "3.11".
pub const BUILT_FOR: &str = env!("PMP_PYTHON_VERSION");

fn rebuild_hint() -> String {
    format!(
        "pmp-kernel was built for Python {BUILT_FOR}; pass --python with a Python {BUILT_FOR} \
         interpreter, or rebuild pmp (./install.sh) in the environment you want"
    )
}

/// Major.minor of the environment `python` belongs to, read from its files
/// (pyvenv.cfg of a virtualenv, else the lib/pythonX.Y of its prefix), or
/// `None` when the layout says nothing.
fn environment_version(python: &Path) -> Option<String> {
    let prefix = python.parent()?.parent()?;
    if let Ok(cfg) = std::fs::read_to_string(prefix.join("pyvenv.cfg")) {
        for line in cfg.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            if matches!(key.trim(), "version" | "version_info") {
                let mut parts = value.trim().split('.');
                if let (Some(major), Some(minor)) = (parts.next(), parts.next()) {
                    return Some(format!("{major}.{minor}"));
                }
            }
        }
    }
    if prefix.join(format!("lib/python{BUILT_FOR}")).is_dir() {
        return Some(BUILT_FOR.to_string());
    }
    let entries = std::fs::read_dir(prefix.join("lib")).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix("python")?.to_string();
            let ok = version.split('.').count() == 2 && e.path().join("os.py").exists();
            ok.then_some(version)
        })
        .next()
}

/// Refuse an interpreter that cannot work with our libpython, before
/// touching it (initialising with a foreign standard library can abort the
/// process).
pub fn check_environment(python: &Path) -> Result<(), String> {
    if !python.exists() {
        return Err(format!(
            "the Python interpreter {} does not exist; {}",
            python.display(),
            rebuild_hint()
        ));
    }
    match environment_version(python) {
        Some(version) if version != BUILT_FOR => Err(format!(
            "{} is Python {version}, but {}",
            python.display(),
            rebuild_hint()
        )),
        _ => Ok(()),
    }
}

/// Initialise CPython on the calling thread, which becomes Python's main
/// thread, then release the GIL (later work goes through `Python::attach`).
pub fn initialize(python: &Path) -> Result<(), String> {
    pmp_embed::start_python(python).map_err(|e| format!("{e}; {}", rebuild_hint()))?;
    Python::attach(|py| {
        let running: (u8, u8) = py
            .import("sys")
            .and_then(|sys| sys.getattr("version_info"))
            .and_then(|v| v.get_item(0)?.extract::<u8>().map(|m| (m, v)))
            .and_then(|(major, v)| Ok((major, v.get_item(1)?.extract::<u8>()?)))
            .map_err(|e| format!("cannot read sys.version_info: {e}"))?;
        let running = format!("{}.{}", running.0, running.1);
        if running != BUILT_FOR {
            return Err(format!(
                "{} runs Python {running}, but {}",
                python.display(),
                rebuild_hint()
            ));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_version_of_a_virtualenv() {
        let dir = std::env::temp_dir().join(format!("pmp-kernel-venv-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("pyvenv.cfg"), "home = /x/bin\nversion = 3.99.1\n").unwrap();
        let python = dir.join("bin/python");
        assert_eq!(environment_version(&python).as_deref(), Some("3.99"));
        std::fs::write(&python, "").unwrap();
        let error = check_environment(&python).unwrap_err();
        assert!(error.contains("is Python 3.99"), "{error}");
        assert!(error.contains(BUILT_FOR), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_interpreter_is_reported() {
        let error = check_environment(Path::new("/nonexistent/bin/python")).unwrap_err();
        assert!(error.contains("does not exist"), "{error}");
    }
}
