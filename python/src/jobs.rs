//! Batch jobs as Python sees them: `JobSystem` (a job's options, submit,
//! find, cancel: the scheduler's `jobs` module) and `JobFollower` (the
//! thread that follows an executor's jobs and the keys other runs hold, and
//! hands Python what it learns, as events in batches).

use crate::events::{call_with_list, event_class};
use crate::store::{stored_entry, Store, StoredEntry};
use pmp_scheduler::jobs::follower::{Follower, JobEvent};
use pmp_scheduler::jobs::request::JobEnvironment;
use pmp_scheduler::jobs::{self, flux::FluxJobs, slurm::SlurmJobs, JobRequest, SubmitError};
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

create_exception!(
    _pmp,
    DependencyRefused,
    PyRuntimeError,
    "A job system refused a batch job because a job it depends on already failed or was \
     cancelled: its dependent fails as that upstream call did."
);

#[pyclass(module = "pmp._pmp", frozen)]
pub struct JobSystem {
    system: Arc<dyn jobs::JobSystem>,
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
fn request_of(resources: &Bound<'_, PyDict>) -> PyResult<JobRequest> {
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

    /// Submit the job of `key` (whose input is in the store at `store`);
    /// its id. `template`: the call's `submission_template`, rendered, with
    /// `COMMAND_MARK` for its command. `DependencyRefused` when a job in
    /// `dependencies` already failed, RuntimeError with the job system's
    /// words when it refused.
    #[pyo3(signature = (name, resources, cwd, log, store, key, python, sys_path, program, dependencies, pmi_mode=None, template=None))]
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        py: Python<'_>,
        name: String,
        resources: &Bound<'_, PyDict>,
        cwd: String,
        log: String,
        store: String,
        key: String,
        python: String,
        sys_path: Vec<String>,
        program: PathBuf,
        dependencies: Vec<String>,
        pmi_mode: Option<String>,
        template: Option<String>,
    ) -> PyResult<String> {
        let request = JobRequest {
            name,
            cwd,
            log,
            dependencies,
            pmi_mode,
            template,
            job: JobEnvironment {
                program,
                store,
                key,
                python,
                sys_path,
            },
            ..request_of(resources)?
        };
        py.detach(|| self.system.submit(&request))
            .map_err(|error| match error {
                SubmitError::DependencyRefused(message) => DependencyRefused::new_err(message),
                SubmitError::Refused(message) => PyRuntimeError::new_err(message),
                SubmitError::Invalid(message) => PyValueError::new_err(message),
            })
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
    /// The job of an attached key, as the store's record names it.
    JobKnown { task: u64, job: String }
}

event_class! {
    /// The job's state changed (Slurm's words, for every job system).
    JobState { task: u64, state: String, reason: String, nodes: String, started: Option<f64> }
}

event_class! {
    /// What the running job printed since the last read; `skipped`: more
    /// than the client keeps was printed.
    JobOutput { task: u64, text: String, skipped: bool }
}

event_class! {
    /// The key's entry is there, verified (`entry`), or it failed its
    /// check (`error`).
    JobStored { task: u64, entry: Option<Py<StoredEntry>>, error: Option<String> }
}

event_class! {
    /// The job ended without an entry (`state` None: the job system lost it).
    JobEnded {
        task: u64,
        job: String,
        state: Option<String>,
        exit_code: Option<i32>,
        ended_at: Option<f64>,
        log_tail: String,
    }
}

event_class! {
    /// The run that held the key let it go without an entry.
    KeyReleased { task: u64 }
}

fn event_to_python(py: Python<'_>, event: JobEvent) -> PyResult<Bound<'_, PyAny>> {
    Ok(match event {
        JobEvent::Known { task, job } => Bound::new(py, JobKnown { task, job })?.into_any(),
        JobEvent::State { task, status } => Bound::new(
            py,
            JobState {
                task,
                state: status.state,
                reason: status.reason,
                nodes: status.nodes,
                started: status.started,
            },
        )?
        .into_any(),
        JobEvent::Output {
            task,
            text,
            skipped,
        } => Bound::new(
            py,
            JobOutput {
                task,
                text,
                skipped,
            },
        )?
        .into_any(),
        JobEvent::Stored { task, key, entry } => {
            let (entry, error) = match entry {
                Ok(entry) => (Some(Py::new(py, stored_entry(py, &key, entry)?)?), None),
                Err(why) => (None, Some(why)),
            };
            Bound::new(py, JobStored { task, entry, error })?.into_any()
        }
        JobEvent::Ended {
            task,
            job,
            state,
            exit_code,
            ended_at,
            log_tail,
        } => Bound::new(
            py,
            JobEnded {
                task,
                job,
                state,
                exit_code,
                ended_at,
                log_tail,
            },
        )?
        .into_any(),
        JobEvent::Released { task } => Bound::new(py, KeyReleased { task })?.into_any(),
    })
}

#[pyclass(module = "pmp._pmp", frozen)]
pub struct JobFollower {
    /// None once closed.
    follower: Mutex<Option<Follower>>,
    /// Set by `close`: a look under way delivers nothing more (the client
    /// closes its followers before the interpreter goes).
    closed: Arc<AtomicBool>,
}

#[pymethods]
impl JobFollower {
    /// Start following; `callback(events)` gets each batch, on the
    /// follower's thread. `system` asks for job states (None: keys only).
    #[new]
    #[pyo3(signature = (callback, system=None, output_limit=65536))]
    fn new(callback: Py<PyAny>, system: Option<&JobSystem>, output_limit: u64) -> JobFollower {
        let closed = Arc::new(AtomicBool::new(false));
        let closing = closed.clone();
        let deliver = move |events: Vec<JobEvent>| {
            if closing.load(Ordering::Acquire) {
                return;
            }
            Python::attach(|py| call_with_list(py, &callback, events, event_to_python));
        };
        let system = system.map(|s| s.system.clone());
        JobFollower {
            follower: Mutex::new(Some(Follower::start(system, output_limit, deliver))),
            closed,
        }
    }

    /// Follow `key`'s batch job `job` (None: another client submits it)
    /// until its entry is there, as `task`.
    #[pyo3(signature = (task, store, key, job=None))]
    fn follow_job(&self, task: u64, store: &Store, key: String, job: Option<String>) {
        if let Some(follower) = self.lock().as_ref() {
            follower.follow_job(task, store.store.clone(), key, job);
        }
    }

    /// Follow `key`, which another run holds, until its entry is there or
    /// its lock goes away, as `task`.
    fn follow_key(&self, task: u64, store: &Store, key: String) {
        if let Some(follower) = self.lock().as_ref() {
            follower.follow_key(task, store.store.clone(), key);
        }
    }

    fn forget(&self, task: u64) {
        if let Some(follower) = self.lock().as_ref() {
            follower.forget(task);
        }
    }

    /// Stop the thread (at once if it is idle, else after its current look):
    /// what it followed goes on without this client.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.lock().take();
    }
}

impl JobFollower {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Follower>> {
        self.follower.lock().expect("never poisoned")
    }
}

pub fn add_classes(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<JobSystem>()?;
    m.add_class::<JobFollower>()?;
    m.add_class::<JobKnown>()?;
    m.add_class::<JobState>()?;
    m.add_class::<JobOutput>()?;
    m.add_class::<JobStored>()?;
    m.add_class::<JobEnded>()?;
    m.add_class::<KeyReleased>()?;
    m.add("DependencyRefused", m.py().get_type::<DependencyRefused>())?;
    m.add("COMMAND_MARK", jobs::request::COMMAND_MARK)?;
    Ok(())
}
