//! What Python configures: a task's or worker's resources, the scheduler's
//! configuration, and the checks that share the scheduler's own logic (does
//! a request ever fit, where are the programs).

use crate::plan::PyPlan;
use crate::resource_request::quoted;
use pmp_scheduler::backend::locate;
use pmp_scheduler::core::Allocation;
use pmp_scheduler::handle::{BackendChoice, Config};
use pmp_scheduler::plan::Backend;
use pmp_scheduler::protocol::Payload;
use pmp_scheduler::python_frames::frames_from_python;
use pmp_scheduler::resources::{self, ResourceRequest};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// The scheduler's configuration, checked once when it is made.
#[pyclass(module = "pmp._pmp", frozen)]
pub struct SchedulerConfig {
    pub(crate) config: Config,
    /// What a task gets when submit passes no resources.
    pub(crate) worker_resources: ResourceRequest,
}

#[pymethods]
impl SchedulerConfig {
    /// `plan` (`make_plan`) says the backend, the CPUs, the pool and the
    /// GPUs; `launcher` is srun, flux, or sbatch for pilot jobs (named
    /// `pilot_job_name`), None for the local backend.
    #[new]
    #[pyo3(signature = (
        *,
        plan,
        launcher,
        worker_program,
        python,
        sys_path,
        init,
        bind_host,
        heartbeat_interval,
        heartbeat_timeout,
        tool_dirs,
        pilot_job_name = None,
        allocation = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        plan: PyRef<'_, PyPlan>,
        launcher: Option<PathBuf>,
        worker_program: PathBuf,
        python: String,
        sys_path: Vec<String>,
        init: Option<&Bound<'_, PyAny>>,
        bind_host: String,
        heartbeat_interval: f64,
        heartbeat_timeout: f64,
        tool_dirs: Vec<PathBuf>,
        pilot_job_name: Option<String>,
        allocation: Option<PyRef<'_, crate::allocation::PyAllocationRequest>>,
    ) -> PyResult<SchedulerConfig> {
        let plan = &plan.plan;
        let backend = backend_choice(plan.backend, launcher, pilot_job_name)?;
        let pool = if plan.workers > 0 {
            Allocation::Block {
                workers: plan.workers,
                resources: plan.worker.clone(),
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
                launcher: plan.launcher,
                worker_program,
                python,
                sys_path,
                allocation: pool,
                max_cpus: plan.max_cores,
                max_workers: plan.max_workers,
                gpus: plan.gpus.clone(),
                init,
                bind_host,
                heartbeat_interval: seconds("heartbeat_interval", heartbeat_interval)?,
                heartbeat_timeout: seconds("heartbeat_timeout", heartbeat_timeout)?,
                tool_dirs,
                elastic: allocation.map(|a| a.request.clone()),
            },
            worker_resources: plan.worker.clone(),
        })
    }
}

/// How the scheduler starts workers on the planned `backend`, with its
/// `launcher` (sbatch for pilot jobs, which srun beside it runs the ranks of).
fn backend_choice(
    backend: Backend,
    launcher: Option<PathBuf>,
    pilot_job_name: Option<String>,
) -> PyResult<BackendChoice> {
    match (backend, launcher, pilot_job_name) {
        (Backend::Local, None, None) => Ok(BackendChoice::Local),
        (Backend::Slurm, Some(srun), None) => Ok(BackendChoice::Slurm { srun }),
        (Backend::Flux, Some(flux), None) => Ok(BackendChoice::Flux { flux }),
        (Backend::FluxAllocations, Some(flux), Some(job_name)) => {
            Ok(BackendChoice::FluxAllocations { flux, job_name })
        }
        (Backend::SlurmPilots, Some(sbatch), Some(job_name)) => {
            let srun = sbatch.with_file_name("srun");
            Ok(BackendChoice::SlurmPilots {
                srun: if srun.exists() { srun } else { "srun".into() },
                sbatch,
                job_name,
            })
        }
        (backend, launcher, job_name) => Err(PyValueError::new_err(format!(
            "the {} backend{} needs {}, got launcher={} and pilot_job_name={}",
            backend.name(),
            if backend == Backend::SlurmPilots {
                "'s pilot jobs"
            } else if backend == Backend::FluxAllocations {
                "'s allocations"
            } else {
                ""
            },
            match backend {
                Backend::Local => "no launcher and no pilot_job_name",
                Backend::Slurm => "srun as its launcher and no pilot_job_name",
                Backend::Flux => "flux as its launcher and no pilot_job_name",
                Backend::SlurmPilots => "sbatch as its launcher and a pilot_job_name",
                Backend::FluxAllocations => "flux as its launcher and a pilot_job_name",
            },
            launcher.map_or("None".into(), |l| quoted(&l.display().to_string())),
            job_name.map_or("None".into(), |n| quoted(&n)),
        ))),
    }
}

fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    match Duration::try_from_secs_f64(value) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => Err(PyValueError::new_err(format!(
            "{name} must be a positive number of seconds, got {value}"
        ))),
    }
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
