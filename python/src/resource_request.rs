//! One worker's resources as Python names them (`pmp._pmp.ResourceRequest`):
//! the scheduler's defaults and checks, so Python never restates them.

use pmp_scheduler::plan;
use pmp_scheduler::resources::{self, ResourceRequest};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;
use std::num::{NonZeroU16, NonZeroU32};

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
    num_nodes: Option<u32>,
    exclusive: bool,
    /// `memory_max` (GB) in the scheduler's whole MB (`resources::memory_mb`).
    memory_mb: Option<u32>,
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
        command_line_argument_lst = Vec::new(),
        num_nodes = None,
        exclusive = ResourceRequest::default().exclusive,
        memory_max = None,
    ))]
    // One keyword argument per resource_dict key, as Python calls it.
    #[allow(clippy::too_many_arguments)]
    fn new(
        cores: u32,
        threads_per_core: u32,
        gpus_per_core: u32,
        oversubscribe: bool,
        cwd: Option<String>,
        command_line_argument_lst: Vec<String>,
        num_nodes: Option<u32>,
        exclusive: bool,
        memory_max: Option<f64>,
    ) -> PyResult<PyResourceRequest> {
        // The client words these with the user's key names first; the
        // rule is `plan::MINIMUMS`, which this applies too.
        for (name, value) in [
            ("cores", cores),
            ("threads_per_core", threads_per_core),
            ("gpus_per_core", gpus_per_core),
            ("num_nodes", num_nodes.unwrap_or(1)),
        ] {
            let least = plan::minimum(name).unwrap_or(0);
            if value < least {
                return Err(PyValueError::new_err(format!(
                    "{name} must be >= {least}, got {value}"
                )));
            }
        }
        // The scheduler keeps a node count in 16 bits (`ResourceRequest::nodes`).
        if let Some(nodes) = num_nodes.filter(|&n| n > u32::from(u16::MAX)) {
            return Err(PyValueError::new_err(format!(
                "num_nodes must be <= {}, got {nodes}",
                u16::MAX
            )));
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
        // The client words this with the key first (`check_memory_max`).
        if let Some(gb) = memory_max.filter(|gb| !gb.is_finite() || *gb <= 0.0) {
            return Err(PyValueError::new_err(format!(
                "memory_max must be a positive number of GB, got {gb}"
            )));
        }
        Ok(PyResourceRequest {
            cores,
            threads_per_core,
            gpus_per_core,
            oversubscribe,
            cwd,
            command_line_argument_lst,
            num_nodes,
            exclusive,
            memory_mb: memory_max.map(|gb| resources::memory_mb(gb).get()),
        })
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let cwd = self.cwd.as_deref().into_pyobject(py)?.repr()?;
        let arguments = PyList::new(py, &self.command_line_argument_lst)?.repr()?;
        Ok(format!(
            "ResourceRequest(cores={}, threads_per_core={}, gpus_per_core={}, \
             oversubscribe={}, cwd={cwd}, command_line_argument_lst={arguments}, \
             num_nodes={}, exclusive={}, memory_mb={})",
            self.cores,
            self.threads_per_core,
            self.gpus_per_core,
            if self.oversubscribe { "True" } else { "False" },
            self.num_nodes
                .map_or_else(|| "None".to_string(), |n| n.to_string()),
            if self.exclusive { "True" } else { "False" },
            self.memory_mb
                .map_or_else(|| "None".to_string(), |mb| mb.to_string()),
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
            extra_args: request.command_line_argument_lst.clone().into(),
            // Checked in `new`: 1 to u16::MAX.
            nodes: request
                .num_nodes
                .and_then(|n| u16::try_from(n).ok())
                .and_then(NonZeroU16::new),
            exclusive: request.exclusive,
            memory_mb: request.memory_mb.and_then(NonZeroU32::new),
        }
    }
}

/// `text` as Python writes a str in an error message.
pub(crate) fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}
