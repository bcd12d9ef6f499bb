//! `_pmp_kernel_host`: the native module through which the Python side
//! sends messages. It owns the notion of the current request (the parent of
//! everything published while it is handled) and the stream writers.
//!
//! Each subshell thread has its own current request; every other thread
//! (the main shell's, and threads that cells start) shares the main
//! shell's, as before subshells existed.

use super::streams::{stream_content, Name, Streams};
use crate::iopub::Iopub;
use crate::stdin::{InputError, Stdin};
use crate::wire::{Outgoing, Request};
use bytes::Bytes;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use std::cell::RefCell;
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
    /// The main shell's request.
    parent: Mutex<Parent>,
}

static HOST: OnceLock<Host> = OnceLock::new();

thread_local! {
    /// A subshell thread's request; `None` on every other thread.
    static SUBSHELL_PARENT: RefCell<Option<Parent>> = const { RefCell::new(None) };
}

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

    /// Make the calling thread a subshell's: from now on it has a request
    /// of its own.
    pub fn enter_subshell_thread(&self) {
        SUBSHELL_PARENT.with(|parent| *parent.borrow_mut() = Some(Parent::default()));
    }

    fn parent(&self) -> Parent {
        SUBSHELL_PARENT
            .with(|parent| parent.borrow().clone())
            .unwrap_or_else(|| {
                self.parent
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            })
    }

    /// The header of `parent()` alone (every write asks for it).
    fn parent_header(&self) -> Option<Bytes> {
        SUBSHELL_PARENT
            .with(|parent| parent.borrow().as_ref().map(|p| p.header.clone()))
            .unwrap_or_else(|| {
                self.parent
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .header
                    .clone()
            })
    }

    /// Make `request` the parent of what the calling shell (main or
    /// subshell) does next. Output still buffered is flushed to the requests
    /// it belongs to first.
    pub fn set_parent(&self, request: &Request) {
        self.flush_streams();
        let parent = Parent {
            header: Some(request.header.clone()),
            identities: request.identities.clone(),
        };
        let in_subshell = SUBSHELL_PARENT.with(|current| match &mut *current.borrow_mut() {
            Some(current) => {
                *current = parent.clone();
                true
            }
            None => false,
        });
        if !in_subshell {
            self.streams.set_pipe_parent(parent.header.clone());
            *self.parent.lock().unwrap_or_else(|e| e.into_inner()) = parent;
        }
    }

    pub fn flush_streams(&self) {
        self.streams.flush(|parent, name, text| {
            let content = stream_content(name, &text);
            self.iopub
                .publish(Outgoing::broadcast("stream", parent, content));
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
    let parent = host.parent_header();
    let mut message = Outgoing::broadcast(
        msg_type,
        parent.as_ref(),
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
    let header = Host::get()?.parent_header();
    Ok(header.map(|header| PyBytes::new(py, &header)))
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
        let parent = host.parent_header();
        host.streams
            .write(parent.as_ref(), self.name, &text.to_string_lossy());
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
