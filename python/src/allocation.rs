//! `pmp._pmp.AllocationRequest`: what `pmp.Allocation(...)` asks for,
//! checked by the scheduler's own rules (`backend::allocation_jobs`), so
//! Python never restates them.

use pmp_scheduler::backend::allocation_jobs::{parse_time_limit, AllocationRequest};
use pmp_scheduler::backend::pilot_nodes::NodeShape;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::time::Duration;

#[pyclass(name = "AllocationRequest", module = "pmp._pmp", frozen)]
pub struct PyAllocationRequest {
    pub(crate) request: AllocationRequest,
}

/// Seconds (a number), a Slurm time string or a Flux duration, as `name`.
fn duration(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Duration> {
    if let Ok(text) = value.extract::<String>() {
        return parse_time_limit(&text)
            .map_err(|why| PyValueError::new_err(why.replace("time_limit", name)));
    }
    let not_a_time = || {
        PyValueError::new_err(format!(
            "Allocation({name}=...) must be seconds (a number >= 0), a Slurm time string or \
             a Flux duration, got {}",
            value.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    };
    if value.is_instance_of::<pyo3::types::PyBool>() {
        return Err(not_a_time());
    }
    let seconds: f64 = value.extract().map_err(|_| not_a_time())?;
    Duration::try_from_secs_f64(seconds).map_err(|_| not_a_time())
}

#[pymethods]
impl PyAllocationRequest {
    #[new]
    #[pyo3(signature = (
        *,
        nodes,
        time_limit,
        max_allocations,
        min_allocations,
        backlog,
        idle_timeout,
        drain,
        partition,
        extra_args,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        nodes: u32,
        time_limit: &Bound<'_, PyAny>,
        max_allocations: u32,
        min_allocations: u32,
        backlog: u32,
        idle_timeout: &Bound<'_, PyAny>,
        drain: Option<&Bound<'_, PyAny>>,
        partition: Option<String>,
        extra_args: Vec<String>,
    ) -> PyResult<PyAllocationRequest> {
        let request = AllocationRequest {
            nodes,
            time_limit: duration("time_limit", time_limit)?,
            max_allocations,
            min_allocations,
            backlog,
            idle_timeout: duration("idle_timeout", idle_timeout)?,
            drain: drain
                .filter(|d| !d.is_none())
                .map(|d| duration("drain", d))
                .transpose()?,
            partition,
            extra_args,
        };
        request.check().map_err(PyValueError::new_err)?;
        Ok(PyAllocationRequest { request })
    }

    #[getter]
    fn time_limit(&self) -> f64 {
        self.request.time_limit.as_secs_f64()
    }

    #[getter]
    fn drain(&self) -> f64 {
        self.request.drain().as_secs_f64()
    }

    #[getter]
    fn idle_timeout(&self) -> f64 {
        self.request.idle_timeout.as_secs_f64()
    }

    /// Why a call with `run_time_max` seconds could never run in these
    /// allocations, or None.
    fn refuse_run_time_max(&self, run_time_max: u32) -> Option<String> {
        // The node's shape does not bear on time.
        self.request
            .settings(NodeShape { cpus: 1, gpus: 0 })
            .never_fits(Duration::from_secs(run_time_max.into()))
    }
}
