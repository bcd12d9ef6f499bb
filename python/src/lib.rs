//! `pmp._pmp`: the scheduler as a Python object. Python stays thin (argument
//! checks, cloudpickle, futures); this module only translates between Python
//! values and the scheduler's commands and events: `plan` for the numbers and
//! refusals the scheduler decides, `config` for what goes in, `events` for
//! what comes out.

mod allocation;
mod batch_calls;
mod config;
mod events;
mod jobs;
mod plan;
mod resource_request;
mod store;

use config::SchedulerConfig;
use pmp_scheduler::core::{TaskSpec, WorkerState};
use pmp_scheduler::handle::{SchedulerHandle, StartError};
use pmp_scheduler::ids::TaskId;
use pmp_scheduler::protocol::{Payload, StoreTarget};
use pmp_scheduler::python_frames::{frames_from_python, sharable_frames_from_python, Frame};
use pmp_scheduler::resources::ResourceRequest;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use resource_request::PyResourceRequest;
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;

/// The Rust half of this module (the scheduler's thread above all) allocates
/// with mimalloc, not the C library's malloc: a call makes and drops a few
/// small buffers and map entries, and at 128,000 workers glibc's malloc,
/// free and consolidation were a tenth of the scheduler thread's CPU, each
/// call's whole cost a third higher, and each finished call held a third
/// more memory (issue 24's simulation, `scheduler/examples/simulate.rs`,
/// which uses the same allocator). Python's own objects are unaffected:
/// nothing allocated here is freed by Python or the other way round. Linux
/// only: elsewhere the system's allocator (python/Cargo.toml says why).
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[pyclass(module = "pmp._pmp")]
struct Scheduler {
    handle: Mutex<SchedulerHandle>,
    /// What a task gets when submit passes no resources.
    default_resources: ResourceRequest,
    events_thread: Mutex<Option<JoinHandle<()>>>,
    address: String,
}

#[pymethods]
impl Scheduler {
    #[new]
    fn new(
        py: Python<'_>,
        config: PyRef<'_, SchedulerConfig>,
        on_events: Py<PyAny>,
    ) -> PyResult<Scheduler> {
        let default_resources = config.worker_resources.clone();
        let config = config.config.clone();
        let (events_tx, events_rx) = mpsc::channel();
        let handle = py
            .detach(|| SchedulerHandle::start(config, events_tx))
            .map_err(|error| match error {
                StartError::Refused(message) => PyValueError::new_err(message),
                StartError::Failed(message) => PyRuntimeError::new_err(message),
            })?;
        let events_thread = std::thread::Builder::new()
            .name("pmp-events".into())
            .spawn(move || events::deliver_events(events_rx, on_events))
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

    /// `store`: `(root, key, function name, submitted)` when the worker also
    /// writes the outcome to the task store at `root` under `key`.
    /// `restart_limit`: how many times the task runs again if its worker dies.
    /// `run_time_max`: seconds the call may take at most (elastic
    /// allocations start it only where that much time is left).
    #[pyo3(signature = (task, function, call, dependencies, resources, store = None, restart_limit = 0, run_time_max = None))]
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        task: u64,
        function: &Bound<'_, pyo3::types::PyBytes>,
        call: &Bound<'_, PyAny>,
        dependencies: Vec<u64>,
        resources: Option<PyRef<'_, PyResourceRequest>>,
        store: Option<(String, String, String, f64)>,
        restart_limit: u32,
        run_time_max: Option<u32>,
    ) -> PyResult<()> {
        let resources = match resources {
            Some(request) => ResourceRequest::from(&*request),
            None => self.default_resources.clone(),
        };
        let spec = TaskSpec {
            id: TaskId(task),
            function: pmp_scheduler::Bytes::copy_from_slice(function.as_bytes()),
            call: Payload::new(sharable_frames_from_python(call)?),
            dependencies: dependencies.into_iter().map(TaskId).collect(),
            resources,
            restart_limit,
            run_time_max,
            store: store.map(|(root, key, function, submitted)| StoreTarget {
                root,
                key,
                function,
                submitted,
            }),
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

    /// Grow or shrink the block-allocated pool to `workers`.
    fn resize_pool(&self, py: Python<'_>, workers: u32) -> PyResult<()> {
        py.detach(|| self.lock().resize_pool(workers))
            .map_err(PyValueError::new_err)
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

    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let info = PyDict::new(py);
        info.set_item("address", &self.address)?;
        let Some(snapshot) = py.detach(|| self.lock().snapshot()) else {
            info.set_item("workers", PyList::empty(py))?;
            return Ok(info);
        };
        let workers = PyList::empty(py);
        for w in snapshot.workers {
            let (state, task) = match w.state {
                WorkerState::Starting => ("starting", None),
                WorkerState::Initializing => ("initializing", None),
                WorkerState::Idle => ("idle", None),
                WorkerState::Busy(task) => ("busy", Some(task.0)),
                WorkerState::Stopping => ("stopping", None),
            };
            let d = PyDict::new(py);
            d.set_item("id", w.id.0)?;
            d.set_item("state", state)?;
            d.set_item("task", task)?;
            d.set_item("pid", w.pid)?;
            d.set_item("host", w.host)?;
            d.set_item("node", w.node)?;
            // Device ids pmp handed out; none where srun or flux pick them.
            d.set_item("gpus", w.gpus.devices())?;
            d.set_item("gpu_count", w.gpus.count())?;
            workers.append(d)?;
        }
        info.set_item("workers", workers)?;
        // What the scheduler places calls by: each node's CPUs, GPUs and
        // memory, as the job system or the node's agent said them.
        let nodes = PyDict::new(py);
        for node in snapshot.nodes {
            let d = PyDict::new(py);
            d.set_item("cpus", node.cpus)?;
            d.set_item("gpus", node.gpus)?;
            d.set_item("memory_mb", node.memory_mb)?;
            d.set_item("lost", node.lost)?;
            nodes.set_item(node.name, d)?;
        }
        info.set_item("nodes", nodes)?;
        let tasks = PyDict::new(py);
        tasks.set_item("waiting", snapshot.tasks.waiting)?;
        tasks.set_item("queued", snapshot.tasks.ready)?;
        tasks.set_item("running", snapshot.tasks.running)?;
        tasks.set_item("finished", snapshot.tasks.finished)?;
        tasks.set_item("failed", snapshot.tasks.failed)?;
        info.set_item("tasks", tasks)?;
        if !snapshot.agents.is_empty() {
            // What each node's agent was sent to keep of large buffers:
            // a buffer crosses the network once per node.
            let agents = PyDict::new(py);
            for agent in snapshot.agents {
                let d = PyDict::new(py);
                d.set_item("kept", agent.kept)?;
                d.set_item("kept_bytes", agent.kept_bytes)?;
                agents.set_item(agent.node, d)?;
            }
            info.set_item("agents", agents)?;
        }
        if let Some(rows) = snapshot.allocations {
            let allocations = PyList::empty(py);
            for a in rows {
                let d = PyDict::new(py);
                d.set_item("number", a.number)?;
                d.set_item("job", a.job)?;
                d.set_item("state", a.state)?;
                d.set_item("reason", a.reason)?;
                d.set_item("nodes", a.nodes)?;
                d.set_item("time_left", a.time_left_s)?;
                d.set_item("calls", a.calls)?;
                allocations.append(d)?;
            }
            info.set_item("allocations", allocations)?;
        }
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
    m.add_class::<PyResourceRequest>()?;
    m.add_class::<SchedulerConfig>()?;
    m.add_class::<allocation::PyAllocationRequest>()?;
    m.add_class::<plan::PyPlan>()?;
    m.add_class::<plan::PyRefusal>()?;
    events::add_classes(m)?;
    jobs::add_classes(m)?;
    batch_calls::add_classes(m)?;
    m.add_function(wrap_pyfunction!(plan::make_plan, m)?)?;
    m.add_function(wrap_pyfunction!(plan::unsupported, m)?)?;
    m.add_function(wrap_pyfunction!(plan::choose_launcher, m)?)?;
    m.add(
        "LAUNCHERS",
        pmp_scheduler::plan::Launcher::ALL.map(|launcher| launcher.name()),
    )?;
    m.add(
        "MINIMUMS",
        pmp_scheduler::plan::MINIMUMS
            .into_iter()
            .collect::<std::collections::HashMap<_, _>>(),
    )?;
    m.add_function(wrap_pyfunction!(config::control_character, m)?)?;
    m.add_function(wrap_pyfunction!(config::locate_worker_program, m)?)?;
    m.add_function(wrap_pyfunction!(config::locate_mpiexec, m)?)?;
    m.add_function(wrap_pyfunction!(config::srun_mpi_options, m)?)?;
    m.add(
        "THREAD_VARIABLES",
        pmp_scheduler::backend::THREAD_VARIABLES.to_vec(),
    )?;
    m.add_class::<store::Store>()?;
    m.add_class::<store::StoredEntry>()?;
    m.add("InvalidEntry", m.py().get_type::<store::InvalidEntry>())?;
    m.add_function(wrap_pyfunction!(store::valid_key, m)?)?;
    m.add_function(wrap_pyfunction!(store::lock_holder, m)?)?;
    m.add_function(wrap_pyfunction!(store::key_file_name, m)?)?;
    m.add_function(wrap_pyfunction!(store::valid_job_id, m)?)?;
    m.add_function(wrap_pyfunction!(store::task_key, m)?)?;
    Ok(())
}
