//! Job systems and keys as Python sees them: `JobSystem` (Slurm's or
//! Flux's: what it cannot honour, find, states, cancel; the scheduler's
//! `jobs` module) and `KeyFollower` (the thread that follows the keys other
//! runs hold, and hands Python what it learns, as events in batches). The
//! batch calls themselves are `batch_calls`.

use crate::events::{call_with_list, event_class};
use crate::store::{stored_entry, Store, StoredEntry};
use pmp_scheduler::jobs::follower::{Follower, JobEvent};
use pmp_scheduler::jobs::{self, flux::FluxJobs, slurm::SlurmJobs, JobRequest};
use pmp_scheduler::store::Entry;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[pyclass(module = "pmp._pmp", frozen)]
pub struct JobSystem {
    pub(crate) system: Arc<dyn jobs::JobSystem>,
}

/// `key` of the user's (checked) resource dict, None where absent or None.
fn get<'py, T: FromPyObjectOwned<'py>>(
    resources: &Bound<'py, PyDict>,
    key: &str,
) -> PyResult<Option<T>> {
    match resources.get_item(key)? {
        Some(value) if !value.is_none() => Ok(Some(value.extract().map_err(Into::into)?)),
        _ => Ok(None),
    }
}

/// The request of a job for a call with `resources` (checked by the client).
pub(crate) fn request_of(resources: &Bound<'_, PyDict>) -> PyResult<JobRequest> {
    Ok(JobRequest {
        cores: get(resources, "cores")?.unwrap_or(1),
        threads_per_core: get(resources, "threads_per_core")?.unwrap_or(1),
        gpus_per_core: get(resources, "gpus_per_core")?.unwrap_or(0),
        num_nodes: get(resources, "num_nodes")?,
        exclusive: get(resources, "exclusive")?.unwrap_or(false),
        run_time_max: get(resources, "run_time_max")?,
        memory_max: get(resources, "memory_max")?,
        partition: get(resources, "partition")?,
        priority: get(resources, "priority")?,
        extra_args: get(resources, "command_line_argument_lst")?.unwrap_or_default(),
        slurm_args: get(resources, "slurm_cmd_args")?.unwrap_or_default(),
        template: get(resources, "submission_template")?,
        ..JobRequest::default()
    })
}

#[pymethods]
impl JobSystem {
    /// `kind` "slurm" (`program` is sbatch, Slurm's other commands are
    /// beside it) or "flux" (`program` is flux); the MPI in `tool_dirs`
    /// decides srun's `--mpi` for ranks.
    #[new]
    #[pyo3(signature = (kind, program, tool_dirs=Vec::new()))]
    fn new(kind: &str, program: PathBuf, tool_dirs: Vec<PathBuf>) -> PyResult<JobSystem> {
        let system: Arc<dyn jobs::JobSystem> = match kind {
            "slurm" => Arc::new(SlurmJobs::new(program, &tool_dirs)),
            "flux" => Arc::new(FluxJobs::new(program)),
            other => {
                return Err(PyValueError::new_err(format!(
                    "a job system is 'slurm' or 'flux', got {other:?}"
                )))
            }
        };
        Ok(JobSystem { system })
    }

    #[getter]
    fn name(&self) -> &'static str {
        self.system.name()
    }

    /// Why this job system cannot honour `resources`, or None.
    fn refuse(&self, resources: &Bound<'_, PyDict>) -> PyResult<Option<String>> {
        Ok(self.system.refuse(&request_of(resources)?))
    }

    /// This user's queued or running job named `name`, or None;
    /// RuntimeError when the job system did not answer.
    fn find(&self, py: Python<'_>, name: &str) -> PyResult<Option<String>> {
        py.detach(|| self.system.find(name))
            .map_err(PyRuntimeError::new_err)
    }

    /// `{job: (state, reason, nodes, started)}` of the jobs the job system
    /// knows among `jobs`, in one call (Slurm's words; `started`: seconds
    /// since the epoch, for a running job); None when it did not answer.
    #[allow(clippy::type_complexity)]
    fn states(
        &self,
        py: Python<'_>,
        jobs: Vec<String>,
    ) -> Option<HashMap<String, (String, String, String, Option<f64>)>> {
        let states = py.detach(|| self.system.states(&jobs))?;
        Some(
            states
                .into_iter()
                .map(|(job, s)| (job, (s.state, s.reason, s.nodes, s.started)))
                .collect(),
        )
    }

    fn cancel(&self, py: Python<'_>, jobs: Vec<String>) {
        py.detach(|| self.system.cancel(&jobs));
    }
}

event_class! {
    /// The key's entry is there, verified (`entry`), or it failed its
    /// check (`error`).
    JobStored { task: u64, entry: Option<Py<StoredEntry>>, error: Option<String> }
}

impl JobStored {
    pub(crate) fn of(
        py: Python<'_>,
        task: u64,
        key: &str,
        entry: Result<Entry, String>,
    ) -> PyResult<JobStored> {
        let (entry, error) = match entry {
            Ok(entry) => (Some(Py::new(py, stored_entry(py, key, entry)?)?), None),
            Err(why) => (None, Some(why)),
        };
        Ok(JobStored { task, entry, error })
    }
}

event_class! {
    /// The run that held the key let it go without an entry.
    KeyReleased { task: u64 }
}

/// A key's event; None for the job events a key follower never sees.
fn key_event(py: Python<'_>, event: JobEvent) -> PyResult<Option<Bound<'_, PyAny>>> {
    Ok(match event {
        JobEvent::Stored { task, key, entry } => {
            Some(Bound::new(py, JobStored::of(py, task, &key, entry)?)?.into_any())
        }
        JobEvent::Released { task } => Some(Bound::new(py, KeyReleased { task })?.into_any()),
        _ => None,
    })
}

/// The follower of the keys that other runs hold (the batch calls' own
/// follower is `BatchCalls`'s): each one until its entry is there or its
/// lock goes away.
#[pyclass(module = "pmp._pmp", frozen)]
pub struct KeyFollower {
    /// None once closed.
    follower: Mutex<Option<Follower>>,
    /// Set by `close`: a look under way delivers nothing more (the client
    /// closes its followers before the interpreter goes).
    closed: Arc<AtomicBool>,
}

#[pymethods]
impl KeyFollower {
    /// Start following; `callback(events)` gets each batch, on the
    /// follower's thread.
    #[new]
    fn new(callback: Py<PyAny>) -> KeyFollower {
        let closed = Arc::new(AtomicBool::new(false));
        let closing = closed.clone();
        let deliver = move |events: Vec<JobEvent>| {
            if closing.load(Ordering::Acquire) {
                return;
            }
            Python::attach(|py| {
                let converted: Vec<Bound<'_, PyAny>> = events
                    .into_iter()
                    .filter_map(|e| key_event(py, e).transpose())
                    .collect::<PyResult<_>>()
                    .unwrap_or_else(|e| {
                        e.print(py);
                        Vec::new()
                    });
                call_with_list(py, &callback, converted, |_, e| Ok(e));
            });
        };
        KeyFollower {
            follower: Mutex::new(Some(Follower::start(None, 0, deliver))),
            closed,
        }
    }

    /// Follow `key`, which another run holds, as `task`.
    fn follow(&self, task: u64, store: &Store, key: String) {
        if let Some(follower) = self.lock().as_ref() {
            follower.follow_key(task, store.store.clone(), key);
        }
    }

    fn forget(&self, task: u64) {
        if let Some(follower) = self.lock().as_ref() {
            follower.forget(task);
        }
    }

    /// Stop the thread (at once if it is idle, else after its current look).
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.lock().take();
    }
}

impl KeyFollower {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Follower>> {
        self.follower.lock().expect("never poisoned")
    }
}

pub fn add_classes(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<JobSystem>()?;
    m.add_class::<KeyFollower>()?;
    m.add_class::<JobStored>()?;
    m.add_class::<KeyReleased>()?;
    m.add("COMMAND_MARK", jobs::request::COMMAND_MARK)?;
    Ok(())
}
