//! Starting CPython inside our own binaries, the kernel and the worker, as
//! the interpreter at a given path would start: its `sys.prefix`, its
//! site-packages, a virtualenv honoured, whatever is on PATH.

use pyo3::ffi;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Initialise CPython on the calling thread, which becomes Python's main
/// thread (signals and `threading.main_thread()` behave), then release the
/// GIL: every later use goes through `Python::attach`. The error says what
/// went wrong with `python`.
pub fn start_python(python: &Path) -> Result<(), String> {
    let executable = CString::new(python.as_os_str().as_bytes())
        .map_err(|_| format!("{} contains a NUL byte", python.display()))?;
    // SAFETY: the documented PyConfig sequence, before any other Python call.
    unsafe {
        let mut config: ffi::PyConfig = std::mem::zeroed();
        ffi::PyConfig_InitPythonConfig(&mut config);
        config.parse_argv = 0;
        config.install_signal_handlers = 1;
        let status =
            ffi::PyConfig_SetBytesString(&mut config, &mut config.executable, executable.as_ptr());
        if ffi::PyStatus_Exception(status) != 0 {
            ffi::PyConfig_Clear(&mut config);
            return Err(format!(
                "cannot use {} as the interpreter",
                python.display()
            ));
        }
        let status = ffi::Py_InitializeFromConfig(&config);
        ffi::PyConfig_Clear(&mut config);
        if ffi::PyStatus_Exception(status) != 0 {
            return Err(format!("starting Python as {} failed", python.display()));
        }
        ffi::PyEval_SaveThread();
    }
    Ok(())
}
