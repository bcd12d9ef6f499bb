//! Loading the IPython wiring (`kernel/python/_pmp_kernel/`), which is
//! compiled into the binary so the kernel never depends on files beside it.

use super::host::OutStream;
use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyModule};

/// One module: its name, its source, and its bytecode as build.rs compiled
/// it (empty when it could not: see `compiled_code`).
macro_rules! module {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("../../python/_pmp_kernel/", $name, ".py")),
            include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".pyc")).as_slice(),
        )
    };
}

/// Package modules in dependency order; the package body comes last. The
/// first ones (up to `info`) do not import IPython: they give the early
/// kernel_info reply.
const MODULES: &[(&str, &str, &[u8])] = &[
    module!("jsonutil"),
    module!("info"),
    module!("plaintext"),
    module!("transform"),
    module!("display"),
    module!("shell"),
    module!("comms"),
    module!("stdin"),
    module!("magics"),
    module!("kernel"),
];
/// How many of `MODULES` the early kernel_info needs.
const EARLY_MODULES: usize = 2;
const PACKAGE: &str = "_pmp_kernel";
const PACKAGE_INIT: (&str, &str, &[u8]) = module!("__init__");

/// Create (or reuse) module `name` in sys.modules as part of the package and
/// execute `source` in it (`compiled`, its bytecode, when it can be used).
pub(super) fn exec_module<'py>(
    py: Python<'py>,
    name: &str,
    source: &str,
    compiled: &[u8],
) -> PyResult<Bound<'py, PyModule>> {
    let modules = py.import("sys")?.getattr("modules")?;
    let module = match modules.get_item(name) {
        Ok(existing) => existing.cast_into::<PyModule>()?,
        Err(_) => {
            let module = PyModule::new(py, name)?;
            modules.set_item(name, &module)?;
            module
        }
    };
    let file = format!("<pmp-kernel>/{}.py", name.replace('.', "/"));
    module.setattr("__package__", PACKAGE)?;
    module.setattr("__file__", &file)?;
    let builtins = py.import("builtins")?;
    let code = match compiled_code(py, compiled) {
        Some(code) => code,
        None => builtins.call_method1("compile", (source, &file, "exec"))?,
    };
    builtins.call_method1("exec", (code, module.dict()))?;
    Ok(module)
}

/// The code object in `compiled` (magic number, then marshalled code), if it
/// was compiled by a Python with this one's bytecode (its magic number).
fn compiled_code<'py>(py: Python<'py>, compiled: &[u8]) -> Option<Bound<'py, PyAny>> {
    if compiled.len() <= 4 {
        return None;
    }
    // Always loaded: importlib's bootstrap is part of every start.
    let magic: Vec<u8> = py
        .import("importlib._bootstrap_external")
        .and_then(|m| m.getattr("MAGIC_NUMBER"))
        .and_then(|m| m.extract())
        .ok()?;
    if compiled[..4] != magic[..] {
        return None;
    }
    py.import("marshal")
        .and_then(|m| m.call_method1("loads", (PyBytes::new(py, &compiled[4..]),)))
        .ok()
}

/// Install the stream writers and load the part of the package that does
/// not need IPython; returns the kernel_info reply content if it can be
/// given before IPython is imported (see `info.py`).
pub fn load_early(py: Python<'_>, version: &str) -> PyResult<Option<Bytes>> {
    let sys = py.import("sys")?;
    sys.setattr("stdout", Bound::new(py, OutStream::new("stdout")?)?)?;
    sys.setattr("stderr", Bound::new(py, OutStream::new("stderr")?)?)?;

    let package = PyModule::new(py, PACKAGE)?;
    package.setattr("__path__", PyList::empty(py))?;
    sys.getattr("modules")?.set_item(PACKAGE, &package)?;
    let mut info = None;
    for (name, source, compiled) in &MODULES[..EARLY_MODULES] {
        let module = exec_module(py, &format!("{PACKAGE}.{name}"), source, compiled)?;
        package.setattr(*name, &module)?;
        info = Some(module);
    }
    let early: Option<String> = info
        .expect("EARLY_MODULES ends with info")
        .call_method1("early", (version,))?
        .extract()?;
    Ok(early.map(Bytes::from))
}

/// Load the rest of the package (IPython with it) and start the shell.
/// Returns the kernel object and the kernel_info reply content.
pub fn load(py: Python<'_>, version: &str) -> PyResult<(Py<PyAny>, Bytes)> {
    let package = py.import(PACKAGE)?;
    for (name, source, compiled) in &MODULES[EARLY_MODULES..] {
        let module = exec_module(py, &format!("{PACKAGE}.{name}"), source, compiled)?;
        package.setattr(*name, module)?;
    }
    let (_, source, compiled) = PACKAGE_INIT;
    let package = exec_module(py, PACKAGE, source, compiled)?;
    let (kernel, info): (Py<PyAny>, String) =
        package.call_method1("start", (version,))?.extract()?;
    Ok((kernel, Bytes::from(info)))
}

pub fn at_exit(py: Python<'_>) -> PyResult<()> {
    py.import(PACKAGE)?.call_method0("at_exit")?;
    Ok(())
}
