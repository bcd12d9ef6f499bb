//! The scheduler's events as Python objects, one frozen class per kind, and
//! the thread that hands them to Python in batches.
//!
//! This is on the hot path (two events per task, 15-20k tasks/s): an event
//! becomes one object and nothing else. Strings the scheduler already owns
//! (a host, a message) move into the object and become Python strings only
//! when read; fixed words are interned.

use pmp_scheduler::core::{Event, SubmitError};
use pmp_scheduler::protocol::Stream;
use pmp_scheduler::python_frames::frames_to_python;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};
use std::sync::mpsc;

/// Events delivered to Python in one call at most.
const MAX_BATCH: usize = 4096;

/// A frozen event class: attributes named by its fields, a constructor taking
/// them (so Python tests can make events), `__match_args__` (so a `match`
/// can take them apart by position) and a `__repr__`.
macro_rules! event_class {
    ($(#[$doc:meta])* $name:ident { $($field:ident: $type:ty),* $(,)? }) => {
        $(#[$doc])*
        #[pyclass(module = "pmp._pmp", frozen, get_all)]
        pub struct $name {
            $($field: $type),*
        }

        #[pymethods]
        impl $name {
            #[new]
            fn new($($field: $type),*) -> $name {
                $name { $($field),* }
            }

            #[classattr]
            fn __match_args__(py: Python<'_>) -> PyResult<Py<::pyo3::types::PyTuple>> {
                Ok(::pyo3::types::PyTuple::new(py, [$(stringify!($field)),*])?.unbind())
            }

            fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
                let fields = [$(
                    format!("{}={}", stringify!($field), slf.getattr(stringify!($field))?.repr()?)
                ),*];
                Ok(format!("{}({})", stringify!($name), fields.join(", ")))
            }
        }
    };
}
pub(crate) use event_class;

event_class! {
    /// The task was sent to `worker`, process `pid` on `host`.
    Running { task: u64, worker: u32, pid: u32, host: String }
}

event_class! {
    /// The task returned; `frames` are its pickled result.
    Finished { task: u64, frames: Py<PyList> }
}

event_class! {
    /// The task raised; `frames` are its pickled exception.
    Raised { task: u64, frames: Py<PyList> }
}

event_class! {
    /// The task's worker died or stopped answering.
    Lost {
        task: u64,
        message: String,
        exit_code: Option<i32>,
        signal: Option<i32>,
        stderr_tail: String,
        // The job whose end took the worker (an allocation's), and its state.
        job: Option<String>,
        state: Option<String>,
    }
}

event_class! {
    /// The task was cancelled: by the client (`upstream` None) or because the
    /// task `upstream` it depends on was.
    Cancelled { task: u64, upstream: Option<u64> }
}

event_class! {
    /// The scheduler refused the task; `error_type` is the exception to raise
    /// ("ValueError" for a request that can never fit, else "RuntimeError").
    Rejected { task: u64, error_type: Py<PyString>, message: String }
}

event_class! {
    /// Another live process runs the task's store key: resolve the task
    /// (`resolve_external`) when that run's entry appears.
    Elsewhere { task: u64 }
}

event_class! {
    /// The running task wrote `text` to `stream` ("stdout" or "stderr").
    Output { task: u64, stream: Py<PyString>, text: Py<PyString> }
}

event_class! {
    /// The task's worker could not store its outcome in the task store, for
    /// the reason `why`; comes before the task's `Finished` or `Raised`.
    Unstored { task: u64, why: String }
}

pub fn add_classes(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Running>()?;
    m.add_class::<Finished>()?;
    m.add_class::<Raised>()?;
    m.add_class::<Lost>()?;
    m.add_class::<Cancelled>()?;
    m.add_class::<Rejected>()?;
    m.add_class::<Output>()?;
    m.add_class::<Elsewhere>()?;
    m.add_class::<Unstored>()?;
    Ok(())
}

fn event_to_python(py: Python<'_>, event: Event) -> PyResult<Bound<'_, PyAny>> {
    let object = match event {
        Event::Running { task, place } => Bound::new(
            py,
            Running {
                task: task.0,
                worker: place.worker.0,
                pid: place.pid,
                host: place.host,
            },
        )?
        .into_any(),
        Event::Finished { task, result } => Bound::new(
            py,
            Finished {
                task: task.0,
                frames: frames_to_python(py, &result.frames, true)?.unbind(),
            },
        )?
        .into_any(),
        Event::Raised { task, error } => Bound::new(
            py,
            Raised {
                task: task.0,
                frames: frames_to_python(py, &error.frames, true)?.unbind(),
            },
        )?
        .into_any(),
        Event::Lost { task, reason } => Bound::new(
            py,
            Lost {
                task: task.0,
                message: reason.message,
                exit_code: reason.exit_code,
                signal: reason.signal,
                stderr_tail: reason.stderr_tail,
                job: reason.job.as_ref().map(|j| j.id.clone()),
                state: reason.job.map(|j| j.state),
            },
        )?
        .into_any(),
        Event::Cancelled { task, upstream } => Bound::new(
            py,
            Cancelled {
                task: task.0,
                upstream: upstream.map(|t| t.0),
            },
        )?
        .into_any(),
        Event::Rejected { task, error } => {
            // The client's check at submit() catches these first; if one gets
            // through, its exception type still says what was wrong.
            let error_type = match error {
                SubmitError::NeverFits(_) | SubmitError::NotThePools(_) => {
                    intern!(py, "ValueError")
                }
                _ => intern!(py, "RuntimeError"),
            };
            Bound::new(
                py,
                Rejected {
                    task: task.0,
                    error_type: error_type.clone().unbind(),
                    message: error.to_string(),
                },
            )?
            .into_any()
        }
        Event::Elsewhere { task } => Bound::new(py, Elsewhere { task: task.0 })?.into_any(),
        Event::Unstored { task, why } => Bound::new(py, Unstored { task: task.0, why })?.into_any(),
        Event::Output { task, stream, text } => {
            let stream = match stream {
                Stream::Stdout => intern!(py, "stdout"),
                Stream::Stderr => intern!(py, "stderr"),
            };
            Bound::new(
                py,
                Output {
                    task: task.0,
                    stream: stream.clone().unbind(),
                    text: PyString::new(py, &String::from_utf8_lossy(&text)).unbind(),
                },
            )?
            .into_any()
        }
    };
    Ok(object)
}

/// Deliver events to `callback` in batches: one GIL acquisition for all
/// events that are already waiting.
pub fn deliver_events(events: mpsc::Receiver<Event>, callback: Py<PyAny>) {
    // This thread keeps one Python thread state for its whole life (the outer
    // attach), and holds the GIL only while it delivers (the inner ones).
    // Without it each delivery created and destroyed a thread state, with
    // an mmap and munmap of its frame stack: a tenth of a round trip.
    Python::attach(|py| py.detach(move || deliver_batches(events, callback)));
}

fn deliver_batches(events: mpsc::Receiver<Event>, callback: Py<PyAny>) {
    while let Ok(first) = events.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match events.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        Python::attach(|py| call_with_list(py, &callback, batch, event_to_python));
    }
}

/// Call `callback` with `events` as one list of Python objects (`convert`
/// makes each). On a thread of ours there is no caller to raise to: a
/// failure is printed.
pub fn call_with_list<'py, E>(
    py: Python<'py>,
    callback: &Py<PyAny>,
    events: Vec<E>,
    convert: impl Fn(Python<'py>, E) -> PyResult<Bound<'py, PyAny>>,
) {
    let delivered = events
        .into_iter()
        .map(|e| convert(py, e))
        .collect::<PyResult<Vec<_>>>()
        .and_then(|items| callback.call1(py, (PyList::new(py, items)?,)));
    if let Err(e) = delivered {
        e.print(py);
    }
}
