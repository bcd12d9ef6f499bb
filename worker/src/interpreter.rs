//! The embedded CPython and pmp's worker runtime (`pmp.worker.runtime`) inside it.

use crate::output::OutputSink;
use crate::settings::PythonSettings;
use pmp_scheduler::protocol::{FunctionRef, Outcome};
use pmp_scheduler::python_frames::{frames_to_python, sharable_frames_from_python};
use pmp_scheduler::Bytes;
use pyo3::prelude::*;
use pyo3::types::PyList;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct Runtime {
    runtime: Py<PyAny>,
}

impl Runtime {
    /// Start Python and pmp's runtime in it. With a `sink`, what a task
    /// prints goes there; with none, it stays on this process's stdout and
    /// stderr.
    pub fn start(settings: &PythonSettings, sink: Option<OutputSink>) -> Result<Runtime, String> {
        if !PREPARED.load(Ordering::SeqCst) {
            prepare(settings)?;
        }
        Python::attach(|py| {
            let runtime = py
                .import("pmp.worker.runtime")?
                .getattr("Runtime")?
                .call1((settings.ranks, sink.map(|s| Bound::new(py, s)).transpose()?))?;
            Ok(Runtime {
                runtime: runtime.unbind(),
            })
        })
        .map_err(|e: PyErr| Python::attach(|py| describe(py, &e)))
    }

    /// The init function's outcome; Err when pmp itself failed in Python.
    pub fn init(&self, frames: Vec<Bytes>) -> Result<(Outcome, Vec<Bytes>), String> {
        Python::attach(|py| {
            let run = || -> PyResult<(Outcome, Vec<Bytes>)> {
                let frames = frames_to_python(py, &frames, false)?;
                let result = self.runtime.bind(py).call_method1("init", (frames,))?;
                outcome(&result)
            };
            run().map_err(|e| describe(py, &e))
        })
    }

    /// The task's outcome, from frames laid out as a `ToWorker::Run`'s; Err
    /// when pmp itself failed in Python.
    pub fn run(
        &self,
        function: FunctionRef,
        call_frames: u32,
        dependency_frames: &[u32],
        frames: Vec<Bytes>,
    ) -> Result<(Outcome, Vec<Bytes>), String> {
        Python::attach(|py| {
            let run = || -> PyResult<(Outcome, Vec<Bytes>)> {
                let mut rest = frames.as_slice();
                let (slot, inline) = match function {
                    FunctionRef::Inline { slot } => {
                        let (function, tail) =
                            rest.split_first().expect("an inline function frame");
                        rest = tail;
                        (slot, Some(pyo3::types::PyBytes::new(py, function)))
                    }
                    FunctionRef::Cached { slot } => (slot, None),
                };
                let (call, mut rest) = rest.split_at(call_frames as usize);
                let call = frames_to_python(py, call, false)?;
                let dependencies = PyList::empty(py);
                for &n in dependency_frames {
                    let (dep, tail) = rest.split_at(n as usize);
                    rest = tail;
                    dependencies.append(frames_to_python(py, dep, false)?)?;
                }
                let result = self
                    .runtime
                    .bind(py)
                    .call_method1("run", (slot, inline, call, dependencies))?;
                outcome(&result)
            };
            run().map_err(|e| describe(py, &e))
        })
    }

    /// Release the other ranks (if any) and flush output before exiting.
    pub fn close(&self) {
        Python::attach(|py| {
            if let Err(e) = self.runtime.bind(py).call_method0("close") {
                say!("pmp-worker: {}", describe(py, &e));
            }
        });
    }
}

/// Set once `prepare` ran: in a zygote's child, Python is already up.
static PREPARED: AtomicBool = AtomicBool::new(false);

/// Start Python, put the client's sys.path first (so functions pickled by
/// reference import the same modules the client saw) and import pmp's
/// runtime: what every worker does before it can run a task, and what a
/// zygote does once for all the workers it forks.
pub fn prepare(settings: &PythonSettings) -> Result<(), String> {
    pmp_embed::start_python(std::path::Path::new(&settings.executable))?;
    Python::attach(|py| {
        let sys = py.import("sys")?;
        let path = sys.getattr("path")?.cast_into::<PyList>()?;
        for (i, entry) in settings.sys_path.iter().enumerate() {
            path.insert(i, entry)?;
        }
        py.import("pmp.worker.runtime")?;
        Ok(())
    })
    .map_err(|e: PyErr| Python::attach(|py| describe(py, &e)))?;
    PREPARED.store(true, Ordering::SeqCst);
    Ok(())
}

/// A rank above 0: run `pmp.worker.runtime.follow`, which executes what rank 0
/// broadcasts until it says stop. Returns the exit code.
pub fn follow(settings: &PythonSettings) -> i32 {
    if let Err(e) = pmp_embed::start_python(std::path::Path::new(&settings.executable)) {
        say!("pmp-worker: Python did not start: {e}");
        return 3;
    }
    Python::attach(|py| {
        let run = || -> PyResult<()> {
            let sys = py.import("sys")?;
            let path = sys.getattr("path")?.cast_into::<PyList>()?;
            for (i, entry) in settings.sys_path.iter().enumerate() {
                path.insert(i, entry)?;
            }
            py.import("pmp.worker.runtime")?.call_method0("follow")?;
            Ok(())
        };
        match run() {
            Ok(()) => 0,
            Err(e) => {
                say!("pmp-worker rank {}: {}", settings.rank, describe(py, &e));
                5
            }
        }
    })
}

/// `(ok, frames)` from pmp.worker.runtime into an outcome and frames.
fn outcome(result: &Bound<'_, PyAny>) -> PyResult<(Outcome, Vec<Bytes>)> {
    let (ok, frames): (bool, Bound<'_, PyAny>) = result.extract()?;
    let outcome = if ok {
        Outcome::Returned
    } else {
        Outcome::Raised
    };
    Ok((outcome, sharable_frames_from_python(&frames)?))
}

fn describe(py: Python<'_>, error: &PyErr) -> String {
    let traceback = error
        .traceback(py)
        .and_then(|tb| tb.format().ok())
        .unwrap_or_default();
    format!("{traceback}{error}")
}
