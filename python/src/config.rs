//! What Python configures: a task's or worker's resources, the scheduler's
//! configuration, and the checks that share the scheduler's own logic (does
//! a request ever fit, where are the programs).

use pmp_scheduler::backend::locate;
use pmp_scheduler::core::Allocation;
use pmp_scheduler::handle::{BackendChoice, Config};
use pmp_scheduler::protocol::Payload;
use pmp_scheduler::python_frames::frames_from_python;
use pmp_scheduler::resources::{self, Capacity, Gpus, ResourceRequest};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Resources of one worker (a group of MPI ranks), named as in the user's
/// `resource_dict`. The defaults are the scheduler's, so Python never
/// restates them.
#[pyclass(
    name = "ResourceRequest",
    module = "pmp._pmp",
    frozen,
    get_all,
    eq,
    hash
)]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PyResourceRequest {
    cores: u32,
    threads_per_core: u32,
    gpus_per_core: u32,
    oversubscribe: bool,
    cwd: Option<String>,
    command_line_argument_lst: Vec<String>,
}

#[pymethods]
impl PyResourceRequest {
    #[new]
    #[pyo3(signature = (
        cores = ResourceRequest::default().cores,
        threads_per_core = ResourceRequest::default().threads_per_core,
        gpus_per_core = ResourceRequest::default().gpus_per_core,
        oversubscribe = ResourceRequest::default().oversubscribe,
        cwd = ResourceRequest::default().cwd,
        command_line_argument_lst = ResourceRequest::default().extra_args,
    ))]
    fn new(
        cores: u32,
        threads_per_core: u32,
        gpus_per_core: u32,
        oversubscribe: bool,
        cwd: Option<String>,
        command_line_argument_lst: Vec<String>,
    ) -> PyResult<PyResourceRequest> {
        // Zero ranks or threads would start a worker that can run nothing.
        for (name, value) in [("cores", cores), ("threads_per_core", threads_per_core)] {
            if value == 0 {
                return Err(PyValueError::new_err(format!(
                    "{name} must be at least 1, got 0"
                )));
            }
        }
        // srun's and sbatch's arguments, and a pilot's script, carry these.
        for (name, value) in cwd.iter().map(|cwd| ("cwd", cwd)).chain(
            command_line_argument_lst
                .iter()
                .map(|a| ("command_line_argument_lst", a)),
        ) {
            if let Some(c) = resources::control_character(value) {
                return Err(PyValueError::new_err(format!(
                    "{name} holds the control character {c:?} in {}: a job script or \
                     command line would not read it as one value; remove it",
                    quoted(value)
                )));
            }
        }
        Ok(PyResourceRequest {
            cores,
            threads_per_core,
            gpus_per_core,
            oversubscribe,
            cwd,
            command_line_argument_lst,
        })
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let cwd = self.cwd.as_deref().into_pyobject(py)?.repr()?;
        let arguments = PyList::new(py, &self.command_line_argument_lst)?.repr()?;
        Ok(format!(
            "ResourceRequest(cores={}, threads_per_core={}, gpus_per_core={}, \
             oversubscribe={}, cwd={cwd}, command_line_argument_lst={arguments})",
            self.cores,
            self.threads_per_core,
            self.gpus_per_core,
            if self.oversubscribe { "True" } else { "False" },
        ))
    }
}

impl From<&PyResourceRequest> for ResourceRequest {
    fn from(request: &PyResourceRequest) -> ResourceRequest {
        ResourceRequest {
            cores: request.cores,
            threads_per_core: request.threads_per_core,
            gpus_per_core: request.gpus_per_core,
            oversubscribe: request.oversubscribe,
            cwd: request.cwd.clone(),
            extra_args: request.command_line_argument_lst.clone(),
        }
    }
}

/// The scheduler's configuration, checked once when it is made.
#[pyclass(module = "pmp._pmp", frozen)]
pub struct SchedulerConfig {
    pub(crate) config: Config,
    /// What a task gets when submit passes no resources.
    pub(crate) worker_resources: ResourceRequest,
}

#[pymethods]
impl SchedulerConfig {
    /// `gpu_devices` are the device ids pmp hands out itself (local backend);
    /// `gpu_count` is the allocation's GPU count where srun or flux pick the
    /// devices (slurm, flux).
    #[new]
    #[pyo3(signature = (
        *,
        backend,
        launcher,
        worker_program,
        python,
        sys_path,
        block_allocation,
        workers,
        worker_resources,
        max_cores,
        max_workers,
        gpu_devices,
        gpu_count,
        init,
        bind_host,
        heartbeat_interval,
        heartbeat_timeout,
        tool_dirs,
        pilot_job_name = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        backend: &str,
        launcher: Option<PathBuf>,
        worker_program: PathBuf,
        python: String,
        sys_path: Vec<String>,
        block_allocation: bool,
        workers: u32,
        worker_resources: PyRef<'_, PyResourceRequest>,
        max_cores: u32,
        max_workers: Option<u32>,
        gpu_devices: Vec<String>,
        gpu_count: u32,
        init: Option<&Bound<'_, PyAny>>,
        bind_host: String,
        heartbeat_interval: f64,
        heartbeat_timeout: f64,
        tool_dirs: Vec<PathBuf>,
        pilot_job_name: Option<String>,
    ) -> PyResult<SchedulerConfig> {
        let (backend, gpus) = backend_and_gpus(backend, launcher, gpu_devices, gpu_count)?;
        let backend = match (backend, pilot_job_name) {
            // Outside any allocation: block-allocated workers are pilot jobs,
            // and `launcher` is sbatch (srun, beside it, runs their ranks).
            (BackendChoice::Slurm { srun: sbatch }, Some(job_name)) => {
                let srun = sbatch.with_file_name("srun");
                BackendChoice::SlurmPilots {
                    srun: if srun.exists() { srun } else { "srun".into() },
                    sbatch,
                    job_name,
                }
            }
            (_, Some(_)) => {
                return Err(PyValueError::new_err(
                    "pilot_job_name is for the slurm backend outside an allocation",
                ))
            }
            (backend, None) => backend,
        };
        let worker_resources = ResourceRequest::from(&*worker_resources);
        let allocation = if block_allocation {
            if workers == 0 {
                return Err(PyValueError::new_err(
                    "block_allocation needs at least one worker, got workers=0",
                ));
            }
            Allocation::Block {
                workers,
                resources: worker_resources.clone(),
            }
        } else {
            Allocation::PerTask
        };
        let init = match init {
            Some(frames) if !frames.is_none() => Some(Payload::new(frames_from_python(frames)?)),
            _ => None,
        };
        Ok(SchedulerConfig {
            config: Config {
                backend,
                worker_program,
                python,
                sys_path,
                allocation,
                max_cpus: max_cores,
                max_workers,
                gpus,
                init,
                bind_host,
                heartbeat_interval: seconds("heartbeat_interval", heartbeat_interval)?,
                heartbeat_timeout: seconds("heartbeat_timeout", heartbeat_timeout)?,
                tool_dirs,
            },
            worker_resources,
        })
    }
}

/// The backend, and the allocation's GPUs in the form that backend hands
/// them out: device ids pmp exports itself, or a count srun or flux pick from.
fn backend_and_gpus(
    backend: &str,
    launcher: Option<PathBuf>,
    gpu_devices: Vec<String>,
    gpu_count: u32,
) -> PyResult<(BackendChoice, Gpus)> {
    match (backend, launcher) {
        ("local", None) => {
            if gpu_count != 0 && gpu_count as usize != gpu_devices.len() {
                return Err(PyValueError::new_err(format!(
                    "the local backend hands out gpu_devices itself, so gpu_count is their \
                     number: {gpu_count} given for {} device(s)",
                    gpu_devices.len()
                )));
            }
            Ok((BackendChoice::Local, Gpus::Devices(gpu_devices)))
        }
        ("local", Some(launcher)) => Err(PyValueError::new_err(format!(
            "the local backend starts pmp-worker itself: launcher must be None, got {}",
            quoted(&launcher.display().to_string())
        ))),
        ("slurm" | "flux", None) => Err(PyValueError::new_err(format!(
            "the {backend} backend needs its launcher ({}): launcher is None",
            if backend == "slurm" { "srun" } else { "flux" }
        ))),
        ("slurm" | "flux", Some(launcher)) => {
            if !gpu_devices.is_empty() {
                return Err(PyValueError::new_err(format!(
                    "the {backend} backend's launcher picks the GPU devices: pass gpu_count, \
                     not gpu_devices=[{}]",
                    gpu_devices
                        .iter()
                        .map(|id| quoted(id))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            let choice = if backend == "slurm" {
                BackendChoice::Slurm { srun: launcher }
            } else {
                BackendChoice::Flux { flux: launcher }
            };
            Ok((choice, Gpus::Counted(gpu_count)))
        }
        (other, _) => Err(PyValueError::new_err(format!(
            "backend must be 'local', 'slurm' or 'flux', got {}",
            quoted(other)
        ))),
    }
}

/// `text` as Python writes a str in an error message.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    match Duration::try_from_secs_f64(value) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => Err(PyValueError::new_err(format!(
            "{name} must be a positive number of seconds, got {value}"
        ))),
    }
}

/// Why a request can never run in an allocation (the scheduler's
/// `NeverFits`): `kind` is "cpus", "gpus" or "pool" (the CPUs of all of a
/// block allocation's workers), `requested` and `available` count
/// those, `message` says it in the scheduler's words.
#[pyclass(module = "pmp._pmp", frozen, get_all, eq)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeverFits {
    kind: &'static str,
    requested: u32,
    available: u32,
    message: String,
}

#[pymethods]
impl NeverFits {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "NeverFits(kind='{}', requested={}, available={}, message={})",
            self.kind,
            self.requested,
            self.available,
            self.message.as_str().into_pyobject(py)?.repr()?
        ))
    }
}

impl From<resources::NeverFits> for NeverFits {
    fn from(why: resources::NeverFits) -> NeverFits {
        let message = why.to_string();
        let (kind, requested, available) = match why {
            resources::NeverFits::Cpus {
                cores,
                threads_per_core,
                cpus,
            } => ("cpus", cores.saturating_mul(threads_per_core), cpus),
            resources::NeverFits::Gpus {
                requested,
                available,
            } => ("gpus", requested, available),
            resources::NeverFits::Pool {
                workers,
                cpus_each,
                cpus,
            } => ("pool", workers.saturating_mul(cpus_each), cpus),
        };
        NeverFits {
            kind,
            requested,
            available,
            message,
        }
    }
}

/// Why `request` could never run in an allocation of `max_cores` CPUs and
/// `gpu_count` GPUs, or None: the same check the scheduler makes. `workers`
/// is the size of a block allocation, whose workers hold their GPUs at once.
#[pyfunction]
#[pyo3(signature = (request, max_cores, gpu_count, workers = 1))]
pub fn never_fits(
    request: PyRef<'_, PyResourceRequest>,
    max_cores: u32,
    gpu_count: u32,
    workers: u32,
) -> Option<NeverFits> {
    Capacity::new(max_cores, None, Gpus::Counted(gpu_count))
        .pool_never_fits(&ResourceRequest::from(&*request), workers)
        .map(NeverFits::from)
}

/// The first control character in `text` (as a str), or None: the
/// scheduler's rule for every value that reaches a script or command line.
#[pyfunction]
pub fn control_character(text: &str) -> Option<char> {
    resources::control_character(text)
}

/// The `pmp-worker` workers run: $PMP_WORKER_PROGRAM, else the first of
/// `tool_dirs` that has it, else PATH.
#[pyfunction]
pub fn locate_worker_program(tool_dirs: Vec<PathBuf>) -> PyResult<OsString> {
    locate::worker_program(&tool_dirs)
        .map(PathBuf::into_os_string)
        .map_err(PyRuntimeError::new_err)
}

/// srun's options for ranks of the MPI in `tool_dirs` (or on PATH): the
/// scheduler's rule (`MpiFlavor::srun_option`), for batch jobs' scripts.
#[pyfunction]
pub fn srun_mpi_options(tool_dirs: Vec<PathBuf>) -> Vec<&'static str> {
    use pmp_scheduler::backend::mpi::{MpiFlavor, MpiLauncher};

    let flavor = MpiLauncher::locate(&tool_dirs).ok().map(|m| m.flavor);
    MpiFlavor::srun_option(flavor).into_iter().collect()
}

/// The `mpiexec` that starts a worker of several MPI ranks on the local
/// backend: the first of `tool_dirs` that has it, else PATH.
#[pyfunction]
pub fn locate_mpiexec(tool_dirs: Vec<PathBuf>) -> PyResult<OsString> {
    locate::mpiexec(&tool_dirs)
        .map(PathBuf::into_os_string)
        .map_err(PyRuntimeError::new_err)
}
