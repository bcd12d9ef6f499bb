//! `_pmp_kernel_host`: the native module through which the Python side
//! sends messages. It owns the notion of the current request (the parent of
//! everything published while it is handled) and the stream writers.

use super::streams::{stream_content, Name, Streams};
use crate::iopub::Iopub;
use crate::stdin::{InputError, Stdin};
use crate::wire::{Outgoing, Request};
use bytes::Bytes;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The request being handled: where output goes and whom stdin asks.
#[derive(Clone, Default)]
struct Parent {
    header: Option<Bytes>,
    identities: Vec<Bytes>,
}

pub struct Host {
    iopub: Iopub,
    stdin: Stdin,
    streams: Arc<Streams>,
    parent: Mutex<Parent>,
}

static HOST: OnceLock<Host> = OnceLock::new();

impl Host {
    pub fn install(iopub: Iopub, stdin: Stdin, streams: Arc<Streams>) -> &'static Host {
        HOST.get_or_init(|| Host {
            iopub,
            stdin,
            streams,
            parent: Mutex::new(Parent::default()),
        })
    }

    pub fn installed() -> Option<&'static Host> {
        HOST.get()
    }

    fn get() -> PyResult<&'static Host> {
        HOST.get()
            .ok_or_else(|| PyRuntimeError::new_err("the pmp-kernel host is not running"))
    }

    fn parent(&self) -> Parent {
        self.parent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Make `request` the parent of what follows. Output still buffered
    /// belongs to the previous request and is flushed to it first.
    pub fn set_parent(&self, request: &Request) {
        self.flush_streams();
        *self.parent.lock().unwrap_or_else(|e| e.into_inner()) = Parent {
            header: Some(request.header.clone()),
            identities: request.identities.clone(),
        };
    }

    pub fn flush_streams(&self) {
        let parent = self.parent();
        self.streams.flush(|name, text| {
            let content = stream_content(name, &text);
            self.iopub.publish(Outgoing::broadcast(
                "stream",
                parent.header.as_ref(),
                content,
            ));
        });
    }

    pub fn streams(&self) -> &Arc<Streams> {
        &self.streams
    }

    fn publish(&self, message: Outgoing) {
        self.flush_streams();
        self.iopub.publish(message);
    }
}

/// Publish `msg_type` on IOPub with the current request as parent, after
/// any pending stream output. `content` and `metadata` are JSON text.
#[pyfunction]
#[pyo3(signature = (msg_type, content, metadata=None, buffers=None))]
fn publish(
    msg_type: &str,
    content: &Bound<'_, PyString>,
    metadata: Option<&Bound<'_, PyString>>,
    buffers: Option<Vec<Bound<'_, PyBytes>>>,
) -> PyResult<()> {
    let host = Host::get()?;
    let parent = host.parent();
    let mut message = Outgoing::broadcast(
        msg_type,
        parent.header.as_ref(),
        Bytes::copy_from_slice(content.to_str()?.as_bytes()),
    );
    if let Some(metadata) = metadata {
        message = message.with_metadata(Bytes::copy_from_slice(metadata.to_str()?.as_bytes()));
    }
    if let Some(buffers) = buffers {
        message = message.with_buffers(
            buffers
                .iter()
                .map(|b| Bytes::copy_from_slice(b.as_bytes()))
                .collect(),
        );
    }
    host.publish(message);
    Ok(())
}

/// The header of the request being handled, for `publish_stream_to` later
/// (output of a task reaching the cell that submitted it); None when idle.
#[pyfunction]
fn current_parent(py: Python<'_>) -> PyResult<Option<Bound<'_, PyBytes>>> {
    let parent = Host::get()?.parent();
    Ok(parent.header.map(|header| PyBytes::new(py, &header)))
}

/// Publish `text` as a `stream` message whose parent is `parent` (a header
/// from `current_parent`), whichever request is being handled now.
#[pyfunction]
fn publish_stream_to(parent: &[u8], name: &str, text: &str) -> PyResult<()> {
    let name = match name {
        "stdout" => "stdout",
        "stderr" => "stderr",
        other => return Err(PyValueError::new_err(format!("no stream named {other:?}"))),
    };
    let header = Bytes::copy_from_slice(parent);
    Host::get()?.iopub.publish(Outgoing::broadcast(
        "stream",
        Some(&header),
        stream_content(name, text),
    ));
    Ok(())
}

/// Send buffered stream output now.
#[pyfunction]
fn flush() -> PyResult<()> {
    Host::get()?.flush_streams();
    Ok(())
}

fn stdin_not_implemented(py: Python<'_>, message: &str) -> PyErr {
    match py
        .import("IPython.core.error")
        .and_then(|m| m.getattr("StdinNotImplementedError"))
        .and_then(|cls| cls.call1((message,)))
    {
        Ok(error) => PyErr::from_value(error),
        Err(e) => e,
    }
}

/// Ask the frontend that sent the current request for a line of input.
/// Waits with the GIL released, in short slices so an interrupt raises
/// KeyboardInterrupt here.
#[pyfunction]
fn input(py: Python<'_>, prompt: &str, password: bool) -> PyResult<String> {
    let host = Host::get()?;
    host.flush_streams();
    let parent = host.parent();
    let Some(header) = parent.header else {
        return Err(stdin_not_implemented(py, "input() outside of a request"));
    };
    let mut answer = host
        .stdin
        .request(parent.identities, header, prompt, password);
    loop {
        let answer = &mut answer;
        match py.detach(move || answer.recv_timeout(Duration::from_millis(10))) {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(InputError::NoFrontend)) | Err(RecvTimeoutError::Disconnected) => {
                return Err(stdin_not_implemented(
                    py,
                    "input was called, but the frontend has no stdin channel connected",
                ))
            }
            Err(RecvTimeoutError::Timeout) => py.check_signals()?,
        }
    }
}

/// `sys.stdout` / `sys.stderr`. `dict` because IPython patches `write` on
/// the instance around every cell.
#[pyclass(dict, module = "_pmp_kernel_host")]
pub struct OutStream {
    name: Name,
}

#[pymethods]
impl OutStream {
    #[new]
    pub fn new(name: &str) -> PyResult<Self> {
        let name = match name {
            "stdout" => Name::Stdout,
            "stderr" => Name::Stderr,
            other => return Err(PyValueError::new_err(format!("no stream named {other:?}"))),
        };
        Ok(OutStream { name })
    }

    fn write(&self, text: &Bound<'_, PyString>) -> PyResult<usize> {
        let host = Host::get()?;
        host.streams.write(self.name, &text.to_string_lossy());
        text.len()
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(line?.cast::<PyString>()?)?;
        }
        Ok(())
    }

    fn flush(&self) -> PyResult<()> {
        Host::get()?.flush_streams();
        Ok(())
    }

    /// The descriptor behind it (captured too), so `subprocess.run(...,
    /// stdout=sys.stdout)` and faulthandler end up in the cell output.
    fn fileno(&self) -> i32 {
        self.name.fd()
    }

    fn isatty(&self) -> bool {
        false
    }

    fn readable(&self) -> bool {
        false
    }

    fn writable(&self) -> bool {
        true
    }

    fn seekable(&self) -> bool {
        false
    }

    fn close(&self) {}

    #[getter]
    fn closed(&self) -> bool {
        false
    }

    #[getter]
    fn encoding(&self) -> &'static str {
        "utf-8"
    }

    #[getter]
    fn errors(&self) -> &'static str {
        "strict"
    }

    #[getter]
    fn name(&self) -> &'static str {
        match self.name {
            Name::Stdout => "<stdout>",
            Name::Stderr => "<stderr>",
        }
    }

    #[getter]
    fn mode(&self) -> &'static str {
        "w"
    }

    fn __repr__(&self) -> String {
        format!("<pmp-kernel {}>", self.name())
    }
}

#[pymodule]
pub fn _pmp_kernel_host(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(publish, m)?)?;
    m.add_function(wrap_pyfunction!(flush, m)?)?;
    m.add_function(wrap_pyfunction!(current_parent, m)?)?;
    m.add_function(wrap_pyfunction!(publish_stream_to, m)?)?;
    m.add_function(wrap_pyfunction!(input, m)?)?;
    m.add_class::<OutStream>()?;
    Ok(())
}
