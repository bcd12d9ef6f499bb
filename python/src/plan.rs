//! The scheduler's plan (`pmp_scheduler::plan`) for Python: made from what
//! the user gave and what the client found out about the backend. The plan
//! decides the numbers and every refusal; Python only words a `Refusal`
//! with the user's own key names.

use crate::resource_request::PyResourceRequest;
use pmp_scheduler::plan::{self, Backend, Known, Launcher, Plan, Refusal, Wanted};
use pmp_scheduler::resources::{Gpus, NeverFits, ResourceRequest};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// An Executor's plan: `max_cores`, the pool's size `workers` (0 without
/// block allocation), `gpu_count`; `refuse` judges a call's request.
#[pyclass(name = "Plan", module = "pmp._pmp", frozen)]
pub struct PyPlan {
    pub(crate) plan: Plan,
}

#[pymethods]
impl PyPlan {
    #[getter]
    fn max_cores(&self) -> u32 {
        self.plan.max_cores
    }

    #[getter]
    fn workers(&self) -> u32 {
        self.plan.workers
    }

    #[getter]
    fn gpu_count(&self) -> u32 {
        self.plan.gpus.count()
    }

    /// "agent" or "step": how srun or flux start workers.
    #[getter]
    fn launcher(&self) -> &'static str {
        self.plan.launcher.name()
    }

    /// Why `workers` workers of `request` could never run here, or what in
    /// it the backend cannot honour; None when they can run.
    #[pyo3(signature = (request, workers = 1))]
    fn refuse(&self, request: PyRef<'_, PyResourceRequest>, workers: u32) -> Option<PyRefusal> {
        self.plan
            .refuse(&ResourceRequest::from(&*request), workers)
            .map(PyRefusal::from)
    }

    fn __repr__(&self) -> String {
        format!(
            "Plan(max_cores={}, workers={}, gpu_count={})",
            self.plan.max_cores,
            self.plan.workers,
            self.plan.gpus.count()
        )
    }
}

/// Why an Executor or a call is refused (`pmp_scheduler::plan::Refusal`):
/// `kind` is "too_small" (the count `setting` is `requested`, below its
/// least value `available`), "pilots" (pilot jobs need max_workers), "unsupported" (the
/// `backend` cannot honour the resource key `setting`), "not_the_pools" (a
/// block-allocated pool's call asks for another `setting`), or "cpus", "gpus",
/// "pool" (the CPUs of all of a block allocation's workers), "nodes"
/// (`num_nodes` the allocation cannot give: `message` names it), "memory"
/// (`memory_max`, in MB, above the largest node's: `message` names it),
/// "pool_one_node" (`setting`, num_nodes or exclusive, in a block-allocated
/// pool), or "launcher_unused" (`setting` is the launcher given, with the `backend`
/// where it chooses nothing: "local", or outside any allocation): `requested`
/// is more than `available` for `workers` workers (1 for a call), counted
/// within max_cores or, where `within` is "allocation", within the Slurm
/// allocation srun steps cannot leave.
/// `message` says it in the scheduler's words.
#[pyclass(name = "Refusal", module = "pmp._pmp", frozen, get_all, eq)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PyRefusal {
    kind: &'static str,
    within: Option<&'static str>,
    setting: Option<&'static str>,
    backend: Option<&'static str>,
    requested: u32,
    available: u32,
    workers: u32,
    message: String,
}

#[pymethods]
impl PyRefusal {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Refusal(kind='{}', message={})",
            self.kind,
            self.message.as_str().into_pyobject(py)?.repr()?
        ))
    }
}

impl From<Refusal> for PyRefusal {
    fn from(refusal: Refusal) -> PyRefusal {
        let message = refusal.to_string();
        let blank = PyRefusal {
            kind: "pilots",
            within: None,
            setting: None,
            backend: None,
            requested: 0,
            available: 0,
            workers: 0,
            message,
        };
        let never_fits = |why: NeverFits, within, workers| {
            let (kind, requested, available) = match why {
                NeverFits::Cpus {
                    cores,
                    threads_per_core,
                    cpus,
                } => ("cpus", cores.saturating_mul(threads_per_core), cpus),
                NeverFits::Gpus {
                    requested,
                    available,
                } => ("gpus", requested, available),
                NeverFits::Pool {
                    workers,
                    cpus_each,
                    cpus,
                } => ("pool", workers.saturating_mul(cpus_each), cpus),
                // Never from the plan, which sizes the allocation as one
                // node; worded as what the largest node lacks, or what the
                // nodes together lack in whole ranks.
                NeverFits::Ranks {
                    cores,
                    threads_per_core,
                    ranks,
                    ..
                } => (
                    "cpus",
                    cores.saturating_mul(threads_per_core),
                    ranks.saturating_mul(threads_per_core),
                ),
                NeverFits::SeveralNodes {
                    cpus, node_cpus, ..
                } if cpus > node_cpus => ("cpus", cpus, node_cpus),
                NeverFits::SeveralNodes {
                    gpus, node_gpus, ..
                } => ("gpus", gpus, node_gpus),
                // memory_max (MB) above every node's: the scheduler's
                // message names the key and the largest node's memory.
                NeverFits::Memory { requested, node_mb } => ("memory", requested, node_mb),
                // num_nodes: the scheduler's message names it.
                NeverFits::Nodes { nodes, available } => ("nodes", nodes, available),
                NeverFits::NodesAboveCores { nodes, cores } => ("nodes", nodes, cores),
                NeverFits::PerNode {
                    ranks, node_ranks, ..
                } => ("nodes", ranks, node_ranks),
            };
            PyRefusal {
                kind,
                within: Some(within),
                requested,
                available,
                workers,
                ..blank.clone()
            }
        };
        match refusal {
            Refusal::TooSmall {
                key,
                minimum,
                value,
            } => PyRefusal {
                kind: "too_small",
                setting: Some(key),
                requested: value,
                available: minimum,
                ..blank
            },
            Refusal::PilotsNeedMaxWorkers => blank,
            Refusal::Unsupported { setting, backend } => PyRefusal {
                kind: "unsupported",
                setting: Some(setting.key()),
                backend: Some(backend.name()),
                ..blank
            },
            Refusal::NotThePools { key } => PyRefusal {
                kind: "not_the_pools",
                setting: Some(key),
                ..blank
            },
            Refusal::PoolOnOneNode { key } => PyRefusal {
                kind: "pool_one_node",
                setting: Some(key),
                ..blank
            },
            Refusal::NeverFits { why, workers } => never_fits(why, "max_cores", workers),
            Refusal::OutsideAllocation { why, workers, .. } => {
                never_fits(why, "allocation", workers)
            }
            Refusal::LauncherUnused { launcher, backend } => PyRefusal {
                kind: "launcher_unused",
                setting: Some(launcher.name()),
                backend: Some(backend.name()),
                ..blank
            },
        }
    }
}

/// The plan of an Executor's scheduler, or why it is refused. `backend` is
/// "local", "slurm" or "flux" (`pilots`: slurm outside any allocation, a
/// pilot job per block-allocated worker, or allocations' jobs; flux: the
/// flux batch jobs of elastic allocations); `worker` is one worker's
/// resources. What the backend knows: `allocation_cores` (None where it
/// does not say), `step_cpus` (the whole Slurm job's CPUs srun steps cannot
/// leave, or None), `cpu_count`, and the GPUs: `gpu_devices` that the local
/// backend hands out itself, else the allocation's `gpu_count`;
/// `in_allocation`: inside a Slurm allocation or a Flux instance, where
/// `launcher` ("agent", "step" or None) chooses how workers start; `nodes`:
/// the allocation's nodes, where known.
#[pyfunction]
#[pyo3(signature = (
    *,
    backend,
    pilots,
    max_workers,
    max_cores,
    block_allocation,
    worker,
    allocation_cores,
    step_cpus,
    cpu_count,
    gpu_devices,
    gpu_count,
    in_allocation,
    launcher,
    nodes = None,
))]
#[allow(clippy::too_many_arguments)]
pub fn make_plan(
    py: Python<'_>,
    backend: &str,
    pilots: bool,
    max_workers: Option<u32>,
    max_cores: Option<u32>,
    block_allocation: bool,
    worker: PyRef<'_, PyResourceRequest>,
    allocation_cores: Option<u32>,
    step_cpus: Option<u32>,
    cpu_count: u32,
    gpu_devices: Vec<String>,
    gpu_count: u32,
    in_allocation: bool,
    launcher: Option<&str>,
    nodes: Option<u32>,
) -> PyResult<Py<PyAny>> {
    let backend = backend_named(backend, pilots)?;
    let launcher = launcher.map(launcher_named).transpose()?;
    let gpus = match backend {
        Backend::Local => Gpus::Devices(gpu_devices),
        _ if !gpu_devices.is_empty() => {
            return Err(PyValueError::new_err(format!(
                "the {} backend's launcher picks the GPU devices: pass gpu_count, not \
                 gpu_devices",
                backend.name()
            )))
        }
        _ => Gpus::Counted(gpu_count),
    };
    let wanted = Wanted {
        max_workers,
        max_cores,
        block_allocation,
        worker: ResourceRequest::from(&*worker),
        launcher,
    };
    let known = Known {
        backend,
        in_allocation,
        allocation_cores,
        step_cpus,
        cpu_count,
        nodes,
        gpus,
    };
    Ok(match Plan::make(&wanted, known) {
        Ok(plan) => Py::new(py, PyPlan { plan })?.into_any(),
        Err(refusal) => Py::new(py, PyRefusal::from(refusal))?.into_any(),
    })
}

/// What in `request` the backend named `backend` cannot honour, or None:
/// the plan's rule, asked before anything probes the backend.
#[pyfunction]
pub fn unsupported(
    backend: &str,
    request: PyRef<'_, PyResourceRequest>,
) -> PyResult<Option<PyRefusal>> {
    let backend = backend_named(backend, false)?;
    Ok(
        plan::unsupported(backend, &ResourceRequest::from(&*request))
            .map(|setting| PyRefusal::from(Refusal::Unsupported { setting, backend })),
    )
}

/// The launcher for the backend named `backend` (`in_allocation`: inside
/// a Slurm allocation or a Flux instance; `pilots`: slurm's pool outside
/// any, as pilot jobs) where the user asked for `launcher`: its name, or
/// the refusal of a launcher given where it chooses nothing. The plan's
/// rule, asked where no plan is made (calls as batch jobs).
#[pyfunction]
#[pyo3(signature = (backend, in_allocation, launcher, pilots = false))]
pub fn choose_launcher(
    py: Python<'_>,
    backend: &str,
    in_allocation: bool,
    launcher: Option<&str>,
    pilots: bool,
) -> PyResult<Py<PyAny>> {
    let backend = backend_named(backend, pilots)?;
    let wanted = launcher.map(launcher_named).transpose()?;
    Ok(match plan::launcher(backend, in_allocation, wanted) {
        Ok(launcher) => launcher.name().into_pyobject(py)?.into_any().unbind(),
        Err(refusal) => Py::new(py, PyRefusal::from(refusal))?.into_any(),
    })
}

/// The launcher named `name`; the client checked it first, in the user's
/// words (`executor_checks`).
fn launcher_named(name: &str) -> PyResult<Launcher> {
    Launcher::named(name).ok_or_else(|| {
        PyValueError::new_err(format!(
            "launcher must be one of {}, got {name:?}",
            Launcher::ALL.map(|l| format!("{:?}", l.name())).join(", ")
        ))
    })
}

fn backend_named(backend: &str, pilots: bool) -> PyResult<Backend> {
    match (backend, pilots) {
        ("local", false) => Ok(Backend::Local),
        ("slurm", false) => Ok(Backend::Slurm),
        ("slurm", true) => Ok(Backend::SlurmPilots),
        ("flux", false) => Ok(Backend::Flux),
        ("flux", true) => Ok(Backend::FluxAllocations),
        _ => Err(PyValueError::new_err(format!(
            "backend must be 'local', 'slurm' or 'flux' (pilots: 'slurm' or 'flux' outside any \
             allocation), \
             got {backend:?} with pilots={}",
            if pilots { "True" } else { "False" }
        ))),
    }
}
