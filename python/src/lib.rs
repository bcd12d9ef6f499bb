//! `pmp._pmp`: the scheduler as a Python object. Python stays thin (argument
//! checks, cloudpickle, futures); this module only translates between Python
//! values and the scheduler's commands and events.

use pmp_scheduler::core::{Allocation, Event, SubmitError, TaskSpec};
use pmp_scheduler::handle::{BackendChoice, Config, SchedulerHandle};
use pmp_scheduler::ids::TaskId;
use pmp_scheduler::protocol::{Payload, Stream};
use pmp_scheduler::python_frames::{frames_from_python, frames_to_python, Frame};
use pmp_scheduler::resources::ResourceRequest;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

/// Events delivered to Python in one call at most.
const MAX_BATCH: usize = 4096;

#[pyclass(module = "pmp._pmp")]
struct Scheduler {
    handle: Mutex<SchedulerHandle>,
    /// What a task gets when submit passes no resources.
    default_resources: ResourceRequest,
    events_thread: Mutex<Option<JoinHandle<()>>>,
    address: String,
}

fn get<'py, T: FromPyObjectOwned<'py>>(config: &Bound<'py, PyDict>, key: &str) -> PyResult<T> {
    config
        .get_item(key)?
        .ok_or_else(|| PyValueError::new_err(format!("scheduler config lacks {key:?}")))?
        .extract::<T>()
        .map_err(Into::into)
        .map_err(|e: PyErr| PyValueError::new_err(format!("scheduler config {key:?}: {e}")))
}

fn resources_from(dict: &Bound<'_, PyDict>) -> PyResult<ResourceRequest> {
    Ok(ResourceRequest {
        cores: get(dict, "cores")?,
        threads_per_core: get(dict, "threads_per_core")?,
        gpus_per_core: get(dict, "gpus_per_core")?,
        oversubscribe: get(dict, "oversubscribe")?,
        cwd: get(dict, "cwd")?,
        extra_args: get(dict, "command_line_argument_lst")?,
    })
}

fn seconds(config: &Bound<'_, PyDict>, key: &str) -> PyResult<Duration> {
    let s: f64 = get(config, key)?;
    Duration::try_from_secs_f64(s).map_err(|e| PyValueError::new_err(format!("{key}: {e}")))
}

fn config_from(config: &Bound<'_, PyDict>) -> PyResult<Config> {
    let allocation = if get::<bool>(config, "block_allocation")? {
        let resources: Bound<'_, PyDict> = get(config, "worker_resources")?;
        Allocation::Block {
            workers: get(config, "workers")?,
            resources: resources_from(&resources)?,
        }
    } else {
        Allocation::PerTask
    };
    let init = match config.get_item("init")? {
        Some(frames) if !frames.is_none() => Some(Payload::new(frames_from_python(&frames)?)),
        _ => None,
    };
    let backend = match get::<String>(config, "backend")?.as_str() {
        "local" => BackendChoice::Local,
        "slurm" => BackendChoice::Slurm {
            srun: get::<String>(config, "launcher")?.into(),
        },
        "flux" => BackendChoice::Flux {
            flux: get::<String>(config, "launcher")?.into(),
        },
        other => return Err(PyValueError::new_err(format!("unknown backend {other:?}"))),
    };
    Ok(Config {
        backend,
        worker_program: get::<String>(config, "worker_program")?.into(),
        python: get(config, "python")?,
        sys_path: get(config, "sys_path")?,
        allocation,
        max_cpus: get(config, "max_cores")?,
        max_workers: get(config, "max_workers")?,
        gpus: get(config, "gpus")?,
        init,
        bind_host: get(config, "bind_host")?,
        heartbeat_interval: seconds(config, "heartbeat_interval")?,
        heartbeat_timeout: seconds(config, "heartbeat_timeout")?,
        stop_grace: seconds(config, "stop_grace")?,
        extra_env: get(config, "extra_env")?,
        tool_dirs: get::<Vec<String>>(config, "tool_dirs")?
            .into_iter()
            .map(Into::into)
            .collect(),
    })
}

/// One event as the Python tuple `(kind, task_id, detail)`.
fn event_to_python<'py>(py: Python<'py>, event: Event) -> PyResult<Bound<'py, PyTuple>> {
    let tuple = match event {
        Event::Running { task, place } => (
            "running",
            task.0,
            (place.worker.0, place.pid, place.host)
                .into_pyobject(py)?
                .into_any(),
        )
            .into_pyobject(py)?,
        Event::Finished { task, result } => (
            "finished",
            task.0,
            frames_to_python(py, &result.frames, true)?.into_any(),
        )
            .into_pyobject(py)?,
        Event::Raised { task, error } => (
            "raised",
            task.0,
            frames_to_python(py, &error.frames, true)?.into_any(),
        )
            .into_pyobject(py)?,
        Event::Lost { task, reason } => (
            "lost",
            task.0,
            (
                reason.message,
                reason.exit_code,
                reason.signal,
                reason.stderr_tail,
            )
                .into_pyobject(py)?
                .into_any(),
        )
            .into_pyobject(py)?,
        Event::Cancelled { task, upstream } => (
            "cancelled",
            task.0,
            upstream.map(|t| t.0).into_pyobject(py)?.into_any(),
        )
            .into_pyobject(py)?,
        Event::Rejected { task, error } => {
            // The client's check at submit() catches these first; if one gets
            // through, its exception type still says what was wrong.
            let kind = match error {
                SubmitError::NeverFits(_) => "ValueError",
                _ => "RuntimeError",
            };
            (
                "rejected",
                task.0,
                (kind, error.to_string()).into_pyobject(py)?.into_any(),
            )
                .into_pyobject(py)?
        }
        Event::Output { task, stream, text } => {
            let name = match stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            };
            let text = String::from_utf8_lossy(&text);
            ("output", task.0, (name, text).into_pyobject(py)?.into_any()).into_pyobject(py)?
        }
    };
    Ok(tuple)
}

/// Deliver events to `callback` in batches: one GIL acquisition for all
/// events that are already waiting.
fn deliver_events(events: mpsc::Receiver<Event>, callback: Py<PyAny>) {
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
        Python::attach(|py| {
            let delivered = batch
                .into_iter()
                .map(|e| event_to_python(py, e))
                .collect::<PyResult<Vec<_>>>()
                .and_then(|items| callback.call1(py, (PyList::new(py, items)?,)));
            if let Err(e) = delivered {
                e.print(py);
            }
        });
    }
}

#[pymethods]
impl Scheduler {
    #[new]
    fn new(
        py: Python<'_>,
        config: &Bound<'_, PyDict>,
        on_events: Py<PyAny>,
    ) -> PyResult<Scheduler> {
        let default_resources = resources_from(&get(config, "worker_resources")?)?;
        let config = config_from(config)?;
        let (events_tx, events_rx) = mpsc::channel();
        let handle = py
            .detach(|| SchedulerHandle::start(config, events_tx))
            .map_err(PyRuntimeError::new_err)?;
        let events_thread = std::thread::Builder::new()
            .name("pmp-events".into())
            .spawn(move || deliver_events(events_rx, on_events))
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the events thread: {e}")))?;
        Ok(Scheduler {
            address: handle.address().to_string(),
            default_resources,
            handle: Mutex::new(handle),
            events_thread: Mutex::new(Some(events_thread)),
        })
    }

    #[getter]
    fn address(&self) -> &str {
        &self.address
    }

    #[pyo3(signature = (task, function, call, dependencies, resources))]
    fn submit(
        &self,
        task: u64,
        function: &Bound<'_, pyo3::types::PyBytes>,
        call: &Bound<'_, PyAny>,
        dependencies: Vec<u64>,
        resources: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let resources = match resources {
            Some(dict) => resources_from(dict)?,
            None => self.default_resources.clone(),
        };
        let spec = TaskSpec {
            id: TaskId(task),
            function: pmp_scheduler::Bytes::copy_from_slice(function.as_bytes()),
            call: Payload::new(frames_from_python(call)?),
            dependencies: dependencies.into_iter().map(TaskId).collect(),
            resources,
        };
        self.lock().submit(spec).map_err(PyRuntimeError::new_err)
    }

    fn add_external(&self, task: u64) -> PyResult<()> {
        self.lock()
            .add_external(TaskId(task))
            .map_err(PyRuntimeError::new_err)
    }

    /// `ok=True`: `frames` is the pickled result; `ok=False`: the pickled
    /// exception, or None when the foreign Future was cancelled.
    fn resolve_external(&self, task: u64, ok: bool, frames: &Bound<'_, PyAny>) -> PyResult<()> {
        let payload = if frames.is_none() {
            None
        } else {
            Some(Payload::new(frames_from_python(frames)?))
        };
        let result = match (ok, payload) {
            (true, Some(payload)) => Ok(payload),
            (true, None) => return Err(PyValueError::new_err("a result needs frames")),
            (false, error) => Err(error),
        };
        self.lock()
            .resolve_external(TaskId(task), result)
            .map_err(PyRuntimeError::new_err)
    }

    fn cancel(&self, py: Python<'_>, task: u64) -> bool {
        py.detach(|| self.lock().cancel(TaskId(task)))
    }

    fn release(&self, task: u64) {
        self.lock().release(TaskId(task));
    }

    fn shutdown(&self, cancel_futures: bool) {
        self.lock().shutdown(cancel_futures);
    }

    /// Wait until every task is done and every worker has exited, and every
    /// event has been delivered.
    fn join(&self, py: Python<'_>) {
        py.detach(|| {
            self.lock().join();
            let events = self.events_thread.lock().expect("not poisoned").take();
            if let Some(events) = events {
                // A done-callback may shut its own executor down.
                if events.thread().id() != std::thread::current().id() {
                    let _ = events.join();
                }
            }
        });
    }

    fn is_running(&self) -> bool {
        self.lock().is_running()
    }

    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let info = PyDict::new(py);
        info.set_item("address", &self.address)?;
        let Some(snapshot) = py.detach(|| self.lock().snapshot()) else {
            info.set_item("workers", PyList::empty(py))?;
            return Ok(info);
        };
        let workers = PyList::empty(py);
        for w in snapshot.workers {
            let d = PyDict::new(py);
            d.set_item("id", w.id.0)?;
            d.set_item("state", format!("{:?}", w.state).to_lowercase())?;
            d.set_item("pid", w.pid)?;
            d.set_item("host", w.host)?;
            d.set_item("gpus", w.gpus)?;
            workers.append(d)?;
        }
        info.set_item("workers", workers)?;
        let tasks = PyDict::new(py);
        tasks.set_item("waiting", snapshot.tasks.waiting)?;
        tasks.set_item("queued", snapshot.tasks.ready)?;
        tasks.set_item("running", snapshot.tasks.running)?;
        tasks.set_item("finished", snapshot.tasks.finished)?;
        tasks.set_item("failed", snapshot.tasks.failed)?;
        info.set_item("tasks", tasks)?;
        Ok(info)
    }
}

impl Scheduler {
    fn lock(&self) -> std::sync::MutexGuard<'_, SchedulerHandle> {
        self.handle
            .lock()
            .expect("the handle mutex is never poisoned")
    }
}

#[pymodule]
fn _pmp(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Scheduler>()?;
    m.add_class::<Frame>()?;
    Ok(())
}
