//! The Python side of the kernel, on CPython's main thread, which starts the
//! interpreter, installs the output capture, loads the IPython wiring and
//! then serves the main shell's requests until shutdown; each subshell's
//! requests are served on a thread of its own (`subshell`).

mod bootstrap;
pub mod debugging;
mod dispatch;
mod host;
mod interpreter;
pub mod streams;
mod subshell;

use crate::iopub::Iopub;
use crate::lifecycle::Lifecycle;
use crate::shell::{Queue, Replies, WorkReceiver};
use crate::stdin::Stdin;
use crate::subshells::Subshells;
use bytes::Bytes;
use dispatch::{Dispatcher, Engine};
use host::{_pmp_kernel_host, Host};
use pyo3::prelude::*;
use std::path::Path;
use std::sync::Arc;
use streams::{Name, Streams};

pub use interpreter::{check_environment, BUILT_FOR};

/// Send buffered stream output now (from any thread).
pub fn flush_streams() {
    if let Some(host) = Host::installed() {
        host.flush_streams();
    }
}

/// Everything the Python thread talks to.
pub struct Links {
    pub iopub: Iopub,
    pub stdin: Stdin,
    pub replies: Replies,
    pub queue: Queue,
    pub work: WorkReceiver,
    pub lifecycle: Arc<Lifecycle>,
    pub streams: Arc<Streams>,
    pub subshells: Arc<Subshells>,
}

/// Run the Python side on the calling thread until the kernel stops.
pub fn run(python: &Path, links: Links) {
    crate::interrupt::become_python_thread();
    let host = Host::install(
        links.iopub.clone(),
        links.stdin.clone(),
        Arc::clone(&links.streams),
    );
    let (engine, kernel_info) = match start(python, host, &links.lifecycle) {
        Ok((kernel, info)) => (Engine::Python(kernel), info),
        Err(why) => {
            log::error!("{why}");
            (Engine::Unavailable(why), fallback_kernel_info())
        }
    };
    let started_python = matches!(engine, Engine::Python(_));
    if started_python {
        crate::interrupt::accept_interrupts();
    }
    links.lifecycle.set_kernel_info(kernel_info.clone());
    let mut dispatcher = Dispatcher::new(
        engine,
        kernel_info,
        host,
        links.iopub,
        links.replies,
        links.queue,
        Arc::clone(&links.lifecycle),
    );
    let launcher = subshell::Launcher::new(&dispatcher);
    links.subshells.set_launcher(Arc::new(launcher));
    dispatcher.serve(&links.work);
    if started_python {
        // Run atexit handlers now: the process ends with exit(), which never
        // finalizes Python.
        Python::attach(|py| {
            if let Err(e) = bootstrap::at_exit(py) {
                log::warn!("at exit: {}", dispatch::describe(py, &e).2.join(""));
            }
        });
    }
    host.flush_streams();
    links.lifecycle.python_stopped();
}

/// Start Python and IPython; returns the kernel object and its kernel_info
/// reply content. That content is published in `lifecycle` as soon as it
/// is known, before IPython is imported where it can be (see `info.py`).
fn start(
    python: &Path,
    host: &'static Host,
    lifecycle: &Lifecycle,
) -> Result<(Py<PyAny>, Bytes), String> {
    interpreter::check_environment(python)?;
    pyo3::append_to_inittab!(_pmp_kernel_host);
    interpreter::initialize(python)?;
    // After the interpreter is up, so its own start-up errors reach the
    // terminal; before any user code.
    for name in [Name::Stdout, Name::Stderr] {
        if let Err(e) = host.streams().capture_fd(name) {
            log::warn!("cannot capture fd {}: {e}", name.fd());
        }
    }
    let version = env!("CARGO_PKG_VERSION");
    let loaded = Python::attach(|py| {
        let early = bootstrap::load_early(py, version)?;
        if let Some(info) = &early {
            lifecycle.set_kernel_info(info.clone());
        }
        let (kernel, info) = bootstrap::load(py, version)?;
        // Once given, the early reply stays the kernel's answer.
        Ok((kernel, early.unwrap_or(info)))
    });
    loaded.map_err(|e: PyErr| {
        Python::attach(|py| {
            let (ename, evalue, traceback) = dispatch::describe(py, &e);
            if ename == "ModuleNotFoundError" {
                format!(
                    "{evalue} in the environment of {}: install IPython there \
                     (pip install ipython comm)",
                    python.display()
                )
            } else {
                format!("loading IPython failed: {}", traceback.join(""))
            }
        })
    })
}

fn fallback_kernel_info() -> Bytes {
    crate::wire::json(&serde_json::json!({
        "status": "ok",
        "protocol_version": crate::wire::PROTOCOL_VERSION,
        "implementation": "pmp",
        "implementation_version": env!("CARGO_PKG_VERSION"),
        "language_info": {
            "name": "python",
            "version": BUILT_FOR,
            "mimetype": "text/x-python",
            "codemirror_mode": {"name": "ipython", "version": 3},
            "pygments_lexer": "ipython3",
            "nbconvert_exporter": "python",
            "file_extension": ".py",
        },
        "banner": "pmp-kernel: Python could not start (see the kernel log)",
        "help_links": [],
        "debugger": false,
    }))
}
