//! The task store as Python sees it: `Store` (entries verified before their
//! frames reach Python; inputs, the calls batch jobs run, written for
//! pmp-worker to read), `StoredEntry`, and `task_key`, the content hash that
//! names a call's entry.

use pmp_scheduler::python_frames::{frames_from_python, frames_to_python};
use pmp_scheduler::store::{self, Entry, Input, Meta, State, StoreError};
use pmp_scheduler::Bytes;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyPermissionError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use std::path::PathBuf;

create_exception!(
    _pmp,
    InvalidEntry,
    PyException,
    "A store entry that failed its signature check or is malformed: it was not unpickled."
);

fn to_python(error: StoreError) -> PyErr {
    match error {
        StoreError::Invalid { .. } => InvalidEntry::new_err(error.to_string()),
        StoreError::InvalidKey(_) | StoreError::InvalidJobId(_) => {
            PyValueError::new_err(error.to_string())
        }
        StoreError::NotPrivate { .. } => PyPermissionError::new_err(error.to_string()),
        other => PyRuntimeError::new_err(other.to_string()),
    }
}

/// One verified entry: what `get_cache_data` reports, and the frames of the
/// pickled result (state "done") or exception (state "failed").
#[pyclass(module = "pmp._pmp", frozen, get_all)]
pub struct StoredEntry {
    key: String,
    function: String,
    state: &'static str,
    submitted: f64,
    started: f64,
    finished: f64,
    host: String,
    pid: u32,
    frames: Py<PyList>,
}

fn state_name(state: State) -> &'static str {
    match state {
        State::Done => "done",
        State::Failed => "failed",
    }
}

pub(crate) fn stored_entry(py: Python<'_>, key: &str, entry: Entry) -> PyResult<StoredEntry> {
    let Entry { meta, frames } = entry;
    Ok(StoredEntry {
        key: key.to_string(),
        function: meta.function,
        state: state_name(meta.state),
        submitted: meta.submitted,
        started: meta.started,
        finished: meta.finished,
        host: meta.host,
        pid: meta.pid,
        frames: frames_to_python(py, &frames, true)?.unbind(),
    })
}

#[pyclass(module = "pmp._pmp", frozen)]
pub struct Store {
    pub(crate) store: store::Store,
}

#[pymethods]
impl Store {
    /// Open the store at `root`, creating it (0700, with its key file) if needed.
    #[new]
    fn new(py: Python<'_>, root: PathBuf) -> PyResult<Store> {
        let store = py.detach(|| store::Store::open(&root)).map_err(to_python)?;
        Ok(Store { store })
    }

    #[getter]
    fn root(&self) -> PathBuf {
        self.store.root().to_path_buf()
    }

    /// The verified entry under `key`, or None; `InvalidEntry` if it fails the check.
    fn read(&self, py: Python<'_>, key: &str) -> PyResult<Option<StoredEntry>> {
        let Some(entry) = py.detach(|| self.store.read(key)).map_err(to_python)? else {
            return Ok(None);
        };
        stored_entry(py, key, entry).map(Some)
    }

    /// `(key, entry)` of the failure that stopped the chain `keys` belong
    /// to (a failed entry among them or upstream of them, found through
    /// their inputs), or None.
    fn failed_upstream(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
    ) -> PyResult<Option<(String, StoredEntry)>> {
        let Some((key, entry)) = py
            .detach(|| self.store.failed_upstream(&keys))
            .map_err(to_python)?
        else {
            return Ok(None);
        };
        let entry = stored_entry(py, &key, entry)?;
        Ok(Some((key, entry)))
    }

    /// Store an outcome the client itself holds (a foreign Future's, or a
    /// failure that never reached a worker).
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (key, function, state, frames, submitted, started, finished, host, pid))]
    fn write(
        &self,
        py: Python<'_>,
        key: &str,
        function: String,
        state: &str,
        frames: &Bound<'_, PyAny>,
        submitted: f64,
        started: f64,
        finished: f64,
        host: String,
        pid: u32,
    ) -> PyResult<()> {
        let state = match state {
            "done" => State::Done,
            "failed" => State::Failed,
            other => {
                return Err(PyValueError::new_err(format!(
                    "state must be 'done' or 'failed', got {other:?}"
                )))
            }
        };
        let entry = Entry {
            meta: Meta {
                function,
                state,
                submitted,
                started,
                finished,
                host,
                pid,
            },
            frames: frames_from_python(frames)?,
        };
        py.detach(|| self.store.write(key, &entry))
            .map_err(to_python)
    }

    fn contains(&self, key: &str) -> bool {
        self.store.contains(key)
    }

    /// Store the call a batch job is to run under `key`: `function` its
    /// qualified name, `pickle` the cloudpickled function, `call` its frames,
    /// `dependencies` the keys of the entries its Future placeholders stand
    /// for, in placeholder-index order; `resources` the call's resources as
    /// a JSON object. pmp-worker in job mode reads it. (Batch calls write
    /// theirs in the scheduler, `BatchCalls`; this is for tools and tests.)
    #[pyo3(signature = (key, function, submitted, pickle, call, dependencies, resources=String::new()))]
    #[allow(clippy::too_many_arguments)]
    fn write_input(
        &self,
        py: Python<'_>,
        key: &str,
        function: String,
        submitted: f64,
        pickle: &Bound<'_, PyBytes>,
        call: &Bound<'_, PyAny>,
        dependencies: Vec<String>,
        resources: String,
    ) -> PyResult<()> {
        let input = Input {
            function,
            submitted,
            pickle: Bytes::copy_from_slice(pickle.as_bytes()),
            call: frames_from_python(call)?,
            dependencies,
            resources,
        };
        py.detach(|| self.store.write_input(key, &input))
            .map_err(to_python)
    }

    /// The call stored under `key` for a batch job, verified like an entry:
    /// `(function, submitted, call, dependencies, resources)`, its qualified
    /// name, when it was submitted, its frames, the keys of the entries its
    /// Future placeholders stand for and its resources (JSON text, "" when
    /// its client did not keep them); None if there is none; `InvalidEntry` if it
    /// fails the check (nothing of it reaches Python then).
    #[allow(clippy::type_complexity)]
    fn read_input<'py>(
        &self,
        py: Python<'py>,
        key: &str,
    ) -> PyResult<Option<(String, f64, Bound<'py, PyList>, Vec<String>, String)>> {
        let Some(input) = py
            .detach(|| self.store.read_input(key))
            .map_err(to_python)?
        else {
            return Ok(None);
        };
        let call = frames_to_python(py, &input.call, true)?;
        Ok(Some((
            input.function,
            input.submitted,
            call,
            input.dependencies,
            input.resources,
        )))
    }

    /// Whether an input is stored under `key` (one stat, not verified).
    fn has_input(&self, key: &str) -> bool {
        self.store.has_input(key)
    }

    /// The keys of every entry, sorted.
    fn stored_keys(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        py.detach(|| self.store.keys()).map_err(to_python)
    }

    fn remove(&self, key: &str) -> PyResult<bool> {
        self.store.remove(key).map_err(to_python)
    }

    fn clear(&self, py: Python<'_>) -> PyResult<usize> {
        py.detach(|| self.store.clear()).map_err(to_python)
    }

    /// Take the lock on `key` for this process (`batch`: which submits a
    /// batch job), taking over one left by a dead process of this host.
    #[pyo3(signature = (key, batch=false))]
    fn claim(&self, key: &str, batch: bool) -> PyResult<bool> {
        let owner = store::LockOwner::this_process(batch).text();
        self.store.claim(key, &owner).map_err(to_python)
    }

    /// Whether the lock on `key` was left by a dead process of this host.
    fn lock_is_stale(&self, key: &str) -> bool {
        self.store.lock_is_stale(key)
    }

    /// Whether the lock on `key` was taken by a process of this host that
    /// no longer runs, a batch job's submitter too.
    fn lock_owner_gone(&self, key: &str) -> bool {
        self.store.lock_owner_gone(key)
    }

    /// The keys that have a lock file, sorted.
    fn lock_keys(&self) -> PyResult<Vec<String>> {
        self.store.lock_keys().map_err(to_python)
    }

    fn try_lock(&self, key: &str, owner: &str) -> PyResult<bool> {
        self.store.try_lock(key, owner).map_err(to_python)
    }

    fn lock_owner(&self, key: &str) -> Option<String> {
        self.store.lock_owner(key)
    }

    fn unlock(&self, key: &str) -> PyResult<()> {
        self.store.unlock(key).map_err(to_python)
    }

    /// Record that batch job `job` runs `key`'s call (signed); ValueError if
    /// `job` is not a job id.
    fn write_job(&self, key: &str, job: &str) -> PyResult<()> {
        self.store.write_job(key, job).map_err(to_python)
    }

    /// The verified job id recorded for `key`, or None; `InvalidEntry` if
    /// the record fails its check.
    fn read_job(&self, key: &str) -> PyResult<Option<String>> {
        self.store.read_job(key).map_err(to_python)
    }

    /// Remove the job record of `key` (a client saw its job end); False if
    /// there was none.
    fn remove_job(&self, key: &str) -> PyResult<bool> {
        self.store.remove_job(key).map_err(to_python)
    }

    /// The keys that have a job record, sorted (not verified).
    fn job_keys(&self) -> PyResult<Vec<String>> {
        self.store.job_keys().map_err(to_python)
    }

    /// Where `key`'s entry is (or would be), for a user to look at.
    fn entry_path(&self, key: &str) -> PyResult<PathBuf> {
        self.store.entry_path(key).map_err(to_python)
    }

    /// Whether the store is still there (its directory was not removed).
    fn present(&self) -> bool {
        self.store.present()
    }

    /// Where the batch job of `key` writes what it prints.
    fn log_path(&self, key: &str) -> PyResult<PathBuf> {
        self.store.log_path(key).map_err(to_python)
    }

    /// The last `limit` bytes of the log of `key`'s batch job, or None;
    /// PermissionError if it is not the user's own file.
    fn log_tail<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        limit: u64,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let tail = self.store.log_tail(key, limit).map_err(to_python)?;
        Ok(tail.map(|bytes| PyBytes::new(py, &bytes)))
    }

    /// The log of `key`'s batch job from byte `offset` on, as `(start,
    /// bytes)`: at most its last `limit` bytes, `start` past `offset` when
    /// more was written since and below it when a new job started the log
    /// again; None if there is none; PermissionError if it is not the
    /// user's own file.
    fn log_from<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        offset: u64,
        limit: u64,
    ) -> PyResult<Option<(u64, Bound<'py, PyBytes>)>> {
        let read = self.store.log_from(key, offset, limit).map_err(to_python)?;
        Ok(read.map(|(start, bytes)| (start, PyBytes::new(py, &bytes))))
    }
}

/// Whether `job` is a batch job id (Slurm's digits, Flux's f58).
#[pyfunction]
pub fn valid_job_id(job: &str) -> bool {
    store::valid_job_id(job)
}

/// Whether `key` can name an entry (letters, digits, `.`, `_`, `-`, in parts
/// joined by `/`; up to 200).
#[pyfunction]
pub fn valid_key(key: &str) -> bool {
    store::valid_key(key)
}

/// The file name `key` has in the store's directories ('/' as '%').
#[pyfunction]
pub fn key_file_name(key: &str) -> String {
    store::file_name(key)
}

/// The content key of a call: BLAKE3 of its function pickle, its argument
/// frames and the keys of the Futures it depends on (in the order the call
/// refers to them), each length-prefixed so that bytes cannot move between
/// parts. The same call gets the same key in any process.
///
/// `cores` changes the result's shape (a list of one result per MPI rank
/// above 1), so it is part of the key; a call of one rank hashes nothing
/// more, so its key stays the one stores written before hold.
#[pyfunction]
#[pyo3(signature = (function, call, dependency_keys, cores = 1))]
pub fn task_key(
    function: &Bound<'_, PyBytes>,
    call: &Bound<'_, PyAny>,
    dependency_keys: Vec<String>,
    cores: u32,
) -> PyResult<String> {
    let frames = frames_from_python(call)?;
    let mut hasher = blake3::Hasher::new();
    let mut part = |bytes: &[u8]| {
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    part(b"pmp task key 1");
    part(function.as_bytes());
    part(&(frames.len() as u64).to_le_bytes());
    for frame in &frames {
        part(frame);
    }
    for key in &dependency_keys {
        part(key.as_bytes());
    }
    if cores != 1 {
        part(b"\0cores"); // no key holds a NUL, so no dependency key reads as this
        part(&cores.to_le_bytes());
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// `(host, pid)` of the process a lock's `owner` text names; None for any
/// other text.
#[pyfunction]
#[pyo3(signature = (owner))]
pub fn lock_holder(owner: Option<&str>) -> Option<(String, u32)> {
    let owner = store::LockOwner::parse(owner?)?;
    Some((owner.host, owner.pid))
}
