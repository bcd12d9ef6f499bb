//! One worker's resources as Python names them (`pmp._pmp.ResourceRequest`):
//! the scheduler's defaults and checks, so Python never restates them.

use pmp_scheduler::plan;
use pmp_scheduler::resources::{self, ResourceRequest};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;

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
        // The client words these with the user's key names first; the
        // rule is `plan::MINIMUMS`, which this applies too.
        for (name, value) in [
            ("cores", cores),
            ("threads_per_core", threads_per_core),
            ("gpus_per_core", gpus_per_core),
        ] {
            let least = plan::minimum(name).unwrap_or(0);
            if value < least {
                return Err(PyValueError::new_err(format!(
                    "{name} must be >= {least}, got {value}"
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

/// `text` as Python writes a str in an error message.
pub(crate) fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}
