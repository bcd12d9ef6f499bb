//! The batch calls as Python sees them: `BatchCalls` (the scheduler's
//! `jobs::calls`: when each call may go, its job, how it ended) and the
//! events its follower thread hands the client, in batches.

use crate::events::{call_with_list, event_class};
use crate::jobs::{request_of, JobStored, JobSystem};
use crate::store::{stored_entry, Store, StoredEntry};
use pmp_scheduler::jobs::calls::{self, CallEvent, CallSpec, Outcome, Source, Taken, Upstream};
use pmp_scheduler::jobs::request::JobEnvironment;
use pmp_scheduler::jobs::{JobRequest, SubmitError};
use pmp_scheduler::python_frames::frames_from_python;
use pmp_scheduler::store::Input;
use pmp_scheduler::Bytes;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

event_class! {
    /// The call's job: submitted now (it waited for its upstream), or named
    /// by the store's record (attached).
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
    /// The job ended without an entry, not because of its upstream
    /// (`state` None: the job system lost it); `upstream`: the call depends
    /// on others.
    JobEnded {
        task: u64,
        job: String,
        state: Option<String>,
        exit_code: Option<i32>,
        ended_at: Option<f64>,
        log_tail: String,
        upstream: bool,
    }
}

event_class! {
    /// The call fails as its upstream did: this executor's call `upstream`,
    /// or the failure `entry` stored up its chain by another client.
    CallAsUpstream { task: u64, upstream: Option<u64>, entry: Option<Py<StoredEntry>> }
}

event_class! {
    /// The job system did not take the call's job when it could go.
    CallNotSubmitted { task: u64, message: String }
}

fn outcome_to_python(py: Python<'_>, task: u64, outcome: Outcome) -> PyResult<Bound<'_, PyAny>> {
    Ok(match outcome {
        Outcome::Stored { key, entry } => {
            Bound::new(py, JobStored::of(py, task, &key, entry)?)?.into_any()
        }
        Outcome::Ended {
            job,
            state,
            exit_code,
            ended_at,
            log_tail,
            has_upstream,
        } => Bound::new(
            py,
            JobEnded {
                task,
                job,
                state,
                exit_code,
                ended_at,
                log_tail,
                upstream: has_upstream,
            },
        )?
        .into_any(),
        Outcome::AsUpstream(upstream) => Bound::new(
            py,
            CallAsUpstream {
                task,
                upstream: Some(upstream),
                entry: None,
            },
        )?
        .into_any(),
        Outcome::UpstreamStored { key, entry } => {
            let entry = Some(Py::new(py, stored_entry(py, &key, entry)?)?);
            Bound::new(
                py,
                CallAsUpstream {
                    task,
                    upstream: None,
                    entry,
                },
            )?
            .into_any()
        }
        Outcome::NotSubmitted(message) => {
            Bound::new(py, CallNotSubmitted { task, message })?.into_any()
        }
    })
}

fn event_to_python(py: Python<'_>, event: CallEvent) -> PyResult<Bound<'_, PyAny>> {
    Ok(match event {
        CallEvent::Launched { task, job } => Bound::new(py, JobKnown { task, job })?.into_any(),
        CallEvent::State { task, status } => Bound::new(
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
        CallEvent::Output {
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
        CallEvent::Concluded { task, outcome } => outcome_to_python(py, task, outcome)?,
    })
}

/// What became of a call at submit, as `(how, what)`.
fn taken_to_python(py: Python<'_>, key: &str, taken: Taken) -> PyResult<Py<PyAny>> {
    let entry = |entry| Py::new(py, stored_entry(py, key, entry)?);
    Ok(match taken {
        Taken::Submitted(job) => ("submitted", job).into_pyobject(py)?.into_any(),
        Taken::Waiting => ("waiting", py.None()).into_pyobject(py)?.into_any(),
        Taken::FailedUnseen { job, entry: e } => ("failed_unseen", (job, entry(e)?))
            .into_pyobject(py)?
            .into_any(),
        Taken::Attached { owner, gone, job } => ("attached", (owner, gone, job))
            .into_pyobject(py)?
            .into_any(),
        Taken::Found { owner, job } => ("found", (owner, job)).into_pyobject(py)?.into_any(),
        Taken::Stored(e) => ("stored", entry(e)?).into_pyobject(py)?.into_any(),
        Taken::Concluded(outcome) => ("concluded", outcome_to_python(py, 0, outcome)?)
            .into_pyobject(py)?
            .into_any(),
    }
    .unbind())
}

/// A call's upstream as the client names it: `(store, key, task, job)`.
type UpstreamArgument<'py> = (PyRef<'py, Store>, String, Option<u64>, Option<String>);

#[pyclass(module = "pmp._pmp", frozen)]
pub struct BatchCalls {
    calls: calls::BatchCalls,
    /// Set by `close`: a look under way delivers nothing more (the client
    /// closes before the interpreter goes).
    closed: Arc<AtomicBool>,
}

#[pymethods]
impl BatchCalls {
    /// Calls as jobs of `system`; `callback(events)` gets each batch of
    /// what its follower learns, on the follower's thread; `output_limit`
    /// is how much of a log one read takes at most.
    #[new]
    #[pyo3(signature = (callback, system, output_limit=65536))]
    fn new(callback: Py<PyAny>, system: &JobSystem, output_limit: u64) -> BatchCalls {
        let closed = Arc::new(AtomicBool::new(false));
        let closing = closed.clone();
        let deliver = Arc::new(move |events: Vec<CallEvent>| {
            if closing.load(Ordering::Acquire) {
                return;
            }
            Python::attach(|py| call_with_list(py, &callback, events, event_to_python));
        });
        let calls = calls::BatchCalls::start(system.system.clone(), output_limit, deliver);
        BatchCalls { calls, closed }
    }

    /// Take the call `task` (its key `key` in `store`) and submit its job,
    /// or let it wait for its upstream, or attach to the run that holds the
    /// key: `(how, what)`, see `jobs::calls::Taken`. `upstream`: `(store,
    /// key, task, job)` of each call it reads, in placeholder order, with
    /// this executor's task or another client's job where it is not done;
    /// `resource_column` its resources as `get_cache_data` shows them (JSON).
    /// ValueError for a value that cannot reach a job script, RuntimeError
    /// with the job system's words when it refused the job.
    #[pyo3(signature = (task, store, key, function, submitted, pickle, call, upstream, name, resources, cwd, python, sys_path, program, pmi_mode=None, template=None, resource_column=String::new()))]
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        py: Python<'_>,
        task: u64,
        store: &Store,
        key: String,
        function: String,
        submitted: f64,
        pickle: &Bound<'_, PyBytes>,
        call: &Bound<'_, PyAny>,
        upstream: Vec<UpstreamArgument<'_>>,
        name: String,
        resources: &Bound<'_, PyDict>,
        cwd: String,
        python: String,
        sys_path: Vec<String>,
        program: PathBuf,
        pmi_mode: Option<String>,
        template: Option<String>,
        resource_column: String,
    ) -> PyResult<Py<PyAny>> {
        let upstream: Vec<Upstream> = upstream
            .iter()
            .map(|(store, key, task, job)| Upstream {
                store: store.store.clone(),
                key: key.clone(),
                source: match (task, job) {
                    (Some(task), _) => Source::Call(*task),
                    (None, Some(job)) => Source::Job(job.clone()),
                    (None, None) => Source::Done,
                },
            })
            .collect();
        let input = Input {
            function,
            submitted,
            pickle: Bytes::copy_from_slice(pickle.as_bytes()),
            call: frames_from_python(call)?,
            dependencies: upstream.iter().map(|u| u.key.clone()).collect(),
            resources: resource_column,
        };
        let request = JobRequest {
            name,
            cwd,
            pmi_mode,
            template,
            job: JobEnvironment {
                program,
                store: store.store.root().to_string_lossy().into_owned(),
                key: key.clone(),
                python,
                sys_path,
            },
            ..request_of(resources)?
        };
        let spec = CallSpec {
            task,
            store: store.store.clone(),
            key: key.clone(),
            input,
            request,
            upstream,
        };
        let taken = py
            .detach(|| self.calls.submit(spec))
            .map_err(|error| match error {
                SubmitError::Invalid(message) => PyValueError::new_err(message),
                SubmitError::Refused(message) | SubmitError::DependencyRefused(message) => {
                    PyRuntimeError::new_err(message)
                }
            })?;
        taken_to_python(py, &key, taken)
    }

    /// Cancel these calls' jobs (their keys are free again); dependents
    /// waiting for them conclude.
    fn cancel(&self, py: Python<'_>, tasks: Vec<u64>) {
        py.detach(|| self.calls.cancel(&tasks));
    }

    /// The jobs of the calls not concluded yet.
    fn open_jobs(&self) -> Vec<String> {
        self.calls.open_jobs()
    }

    /// Stop following: the jobs go on without this client.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.calls.close();
    }
}

pub fn add_classes(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<BatchCalls>()?;
    m.add_class::<JobKnown>()?;
    m.add_class::<JobState>()?;
    m.add_class::<JobOutput>()?;
    m.add_class::<JobEnded>()?;
    m.add_class::<CallAsUpstream>()?;
    m.add_class::<CallNotSubmitted>()?;
    Ok(())
}
