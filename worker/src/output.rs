//! What a task prints: `pmp.worker.runtime` swaps `sys.stdout`/`sys.stderr` for
//! writers that hand their text to this sink, which sends it to the scheduler
//! as `Output` of the task running now — so a notebook shows it with the task,
//! not in the log of whatever process started the worker.

use crate::connection::Sender;
use pmp_scheduler::ids::TaskId;
use pmp_scheduler::protocol::{FromWorker, Stream};
use pmp_scheduler::Bytes;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// No task is running: output is dropped (it has nobody to go to).
const IDLE: u64 = 0;

/// The task that output belongs to; the main thread sets it around each run.
#[derive(Clone, Default)]
pub struct CurrentTask(Arc<AtomicU64>);

impl CurrentTask {
    pub fn set(&self, task: Option<TaskId>) {
        self.0.store(task.map_or(IDLE, |t| t.0), Ordering::SeqCst);
    }
}

/// Called from Python as `sink(stream_name, data)`, from any thread.
#[pyclass(frozen)]
pub struct OutputSink {
    sender: Sender,
    task: CurrentTask,
    pid: u32,
}

impl OutputSink {
    pub fn new(sender: Sender, task: CurrentTask) -> OutputSink {
        OutputSink {
            sender,
            task,
            pid: std::process::id(),
        }
    }
}

#[pymethods]
impl OutputSink {
    /// Returns once the text is written to the connection: output printed
    /// just before the process dies (`os._exit`, a segfault) is not lost in
    /// a queue.
    fn __call__(&self, py: Python<'_>, stream: &str, data: &[u8]) -> PyResult<()> {
        let stream = match stream {
            "stdout" => Stream::Stdout,
            "stderr" => Stream::Stderr,
            other => return Err(PyValueError::new_err(format!("no stream named {other:?}"))),
        };
        if std::process::id() != self.pid {
            // A child the task forked: it has no connection thread to wait for.
            return Ok(());
        }
        let task = self.task.0.load(Ordering::SeqCst);
        if task != IDLE && !data.is_empty() {
            let message = FromWorker::Output {
                task: TaskId(task),
                stream,
            };
            let frames = vec![Bytes::copy_from_slice(data)];
            py.detach(|| self.sender.send_now(message, frames));
        }
        Ok(())
    }
}
