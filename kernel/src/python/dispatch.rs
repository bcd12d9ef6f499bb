//! A shell's request loop (the main shell's on the Python thread, or a
//! subshell's on its own): its requests one at a time, in arrival order,
//! each wrapped in busy/idle, its output flushed before its reply. After a
//! failed cell the execute requests already queued for that shell are
//! aborted (ipykernel's stop_on_error): a marker is queued behind them and
//! aborting stops when it comes out.

use super::host::Host;
use crate::control;
use crate::iopub::Iopub;
use crate::lifecycle::Lifecycle;
use crate::shell::{Queue, Replies, Work, WorkReceiver};
use crate::wire::{json, Request};
use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use serde::Serialize;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

/// What answers the requests Rust does not answer itself.
pub enum Engine {
    /// The `_pmp_kernel.kernel.Kernel` object.
    Python(Py<PyAny>),
    /// Python could not start: every request is told why.
    Unavailable(String),
}

/// How long the kernel must have been idle before IPython's history of the
/// cells since is written (see `serve`).
const HISTORY_IDLE: Duration = Duration::from_millis(20);

pub struct Dispatcher {
    pub engine: Engine,
    pub kernel_info: Bytes,
    pub host: &'static Host,
    pub iopub: Iopub,
    pub replies: Replies,
    pub queue: Queue,
    pub lifecycle: Arc<Lifecycle>,
    aborting: bool,
    /// A request ran since IPython's history was last written.
    history_due: bool,
    /// Serves a subshell's queue, not the main shell's: `lifecycle` counts
    /// and interrupts the main shell's requests only.
    subshell: bool,
}

#[derive(Serialize)]
struct ErrorContent<'a> {
    status: &'static str,
    ename: &'a str,
    evalue: &'a str,
    traceback: Vec<String>,
}

#[derive(Serialize)]
struct ErrorOutput<'a> {
    ename: &'a str,
    evalue: &'a str,
    traceback: [&'a str; 1],
}

impl Dispatcher {
    pub fn new(
        engine: Engine,
        kernel_info: Bytes,
        host: &'static Host,
        iopub: Iopub,
        replies: Replies,
        queue: Queue,
        lifecycle: Arc<Lifecycle>,
    ) -> Self {
        Dispatcher {
            engine,
            kernel_info,
            host,
            iopub,
            replies,
            queue,
            lifecycle,
            aborting: false,
            history_due: false,
            subshell: false,
        }
    }

    /// This dispatcher serves a subshell (see `crate::subshells`).
    pub fn in_subshell(mut self) -> Self {
        self.subshell = true;
        self
    }

    /// Serve until the kernel stops (or every sender is gone).
    ///
    /// IPython's history of the cells that ran is written by its saving
    /// thread once the kernel has been idle for `HISTORY_IDLE`: woken as a
    /// cell starts (IPython's way) that thread takes the GIL and the CPU
    /// from the cell and from the reply, and cells sent back to back are
    /// written in one go.
    pub fn serve(&mut self, work: &WorkReceiver) {
        while !self.lifecycle.is_stopping() {
            let next = if self.history_due {
                match work.recv_timeout(HISTORY_IDLE) {
                    Err(RecvTimeoutError::Timeout) => {
                        self.save_history();
                        continue;
                    }
                    next => next.ok(),
                }
            } else {
                work.recv().ok()
            };
            match next {
                Some(Work::Request(request)) => {
                    if !self.lifecycle.is_stopping() {
                        self.handle(request);
                    }
                    if !self.subshell {
                        self.lifecycle.answered();
                    }
                }
                Some(Work::StopAborting) => self.aborting = false,
                Some(Work::Wake) => {}
                Some(Work::Call(call)) => call(),
                Some(Work::Leave) | None => break,
            }
        }
    }

    fn handle(&mut self, request: Request) {
        self.host.set_parent(&request);
        self.iopub.status("busy", Some(&request.header));
        if !self.subshell {
            self.lifecycle.set_busy(true);
        }
        let mut engine_handled = false;
        let reply = match request.msg_type.as_str() {
            "kernel_info_request" => Some(self.kernel_info.clone()),
            // Deprecated on shell (spec 5.4) but still sent by some clients.
            "shutdown_request" => {
                self.lifecycle.request_stop();
                Some(control::shutdown_reply(&request))
            }
            "execute_request" if self.aborting => Some(json(&serde_json::json!({
                "status": "aborted"
            }))),
            _ => {
                engine_handled = true;
                self.call_engine(&request)
            }
        };
        self.host.flush_streams();
        if !self.subshell {
            self.lifecycle.set_busy(false);
        }
        if let Some(content) = reply {
            self.replies.send(request.reply(content));
        }
        self.iopub.status("idle", Some(&request.header));
        self.history_due |= engine_handled;
    }

    /// Have IPython's saving thread write the history stored since the
    /// last time.
    fn save_history(&mut self) {
        self.history_due = false;
        if let Engine::Python(kernel) = &self.engine {
            Python::attach(|py| {
                if let Err(e) = kernel.bind(py).call_method0("save_history") {
                    log::warn!("saving the history: {}", describe(py, &e).2.join(""));
                }
            });
        }
    }

    fn start_aborting(&mut self) {
        self.aborting = true;
        let _ = self.queue.send(Work::StopAborting);
    }

    fn call_engine(&mut self, request: &Request) -> Option<Bytes> {
        let kernel = match &self.engine {
            Engine::Python(kernel) => kernel,
            Engine::Unavailable(why) => {
                let why = why.clone();
                return self.unavailable(request, &why);
            }
        };
        let outcome = Python::attach(|py| {
            let buffers = PyList::empty(py);
            for buffer in &request.buffers {
                buffers.append(PyBytes::new(py, buffer))?;
            }
            let result = kernel.bind(py).call_method1(
                "dispatch",
                (
                    request.msg_type.as_str(),
                    PyBytes::new(py, &request.header),
                    PyBytes::new(py, &request.content),
                    PyBytes::new(py, &request.metadata),
                    buffers,
                ),
            )?;
            result.extract::<(Option<String>, bool, bool)>()
        })
        .map_err(|e| Python::attach(|py| describe(py, &e)));
        match outcome {
            Ok((reply, abort, exit)) => {
                if abort {
                    self.start_aborting();
                }
                if exit {
                    self.lifecycle.request_stop();
                }
                reply.map(Bytes::from)
            }
            Err((ename, evalue, traceback)) => {
                log::error!(
                    "{} failed in the kernel itself: {}",
                    request.msg_type,
                    traceback.join("")
                );
                if request.msg_type == "execute_request" {
                    self.start_aborting();
                }
                request.msg_type.ends_with("_request").then(|| {
                    json(&ErrorContent {
                        status: "error",
                        ename: &ename,
                        evalue: &evalue,
                        traceback,
                    })
                })
            }
        }
    }

    fn unavailable(&mut self, request: &Request, why: &str) -> Option<Bytes> {
        const ENAME: &str = "PythonUnavailable";
        if request.msg_type == "execute_request" {
            let output = ErrorOutput {
                ename: ENAME,
                evalue: why,
                traceback: [why],
            };
            self.iopub.publish(crate::wire::Outgoing::broadcast(
                "error",
                Some(&request.header),
                json(&output),
            ));
        }
        request.msg_type.ends_with("_request").then(|| {
            json(&ErrorContent {
                status: "error",
                ename: ENAME,
                evalue: why,
                traceback: vec![why.to_string()],
            })
        })
    }
}

/// (type name, message, formatted traceback lines) of a Python error.
pub fn describe(py: Python<'_>, error: &PyErr) -> (String, String, Vec<String>) {
    let ename = error
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    let evalue = error.value(py).to_string();
    let traceback = py
        .import("traceback")
        .and_then(|tb| tb.call_method1("format_exception", (error.value(py),)))
        .and_then(|lines| lines.extract::<Vec<String>>())
        .unwrap_or_else(|_| vec![format!("{ename}: {evalue}")]);
    (ename, evalue, traceback)
}
