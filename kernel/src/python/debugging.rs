//! Calls into `_pmp_kernel.debugger`, the Python half of the debugger. The
//! module is compiled into the binary like the rest of the package but
//! executed only on first use, so a kernel whose debugger is never enabled
//! never loads it.

use super::bootstrap;
use super::dispatch::describe;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

const MODULE: &str = "_pmp_kernel.debugger";
const SOURCE: &str = include_str!("../../python/_pmp_kernel/debugger.py");

fn module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let modules = py.import("sys")?.getattr("modules")?;
    if let Ok(loaded) = modules.get_item(MODULE) {
        return Ok(loaded.cast_into::<PyModule>()?);
    }
    bootstrap::exec_module(py, MODULE, SOURCE, &[])
}

/// Call `function` of the debugger module with string arguments and return
/// what it returns as a string; a Python error comes back as its traceback.
/// Takes the GIL: from the socket thread, call it where blocking is fine.
pub fn call(function: &str, args: &[&str]) -> Result<String, String> {
    Python::attach(|py| {
        let outcome = module(py)
            .and_then(|m| m.call_method1(function, PyTuple::new(py, args)?))
            .and_then(|result| match result.extract::<String>() {
                Ok(text) => Ok(text),
                Err(_) => Ok(result.str()?.to_string()),
            });
        outcome.map_err(|e| describe(py, &e).2.join(""))
    })
}
