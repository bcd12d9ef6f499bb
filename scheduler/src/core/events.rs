//! What crosses the core's boundary: the events the client hears, why a task
//! was lost or refused, and the `Comm` trait through which every effect goes.

use super::allocations::AllocationId;
use super::workers::Launch;
use crate::ids::{TaskId, WorkerId};
use crate::protocol::{Payload, Stream, ToWorker, WorkerPlace};
use crate::resources::{NeverFits, ResourceRequest};
use bytes::Bytes;

/// Why a task failed without a Python exception of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostReason {
    pub message: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stderr_tail: String,
    /// The job whose end took the worker with it (an elastic allocation's),
    /// which the client raises as a job's failure. Boxed: rare.
    pub job: Option<Box<EndedJob>>,
}

/// A job system's job that ended, and its word for how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndedJob {
    pub id: String,
    pub state: String,
}

impl LostReason {
    pub fn new(message: impl Into<String>) -> LostReason {
        LostReason {
            message: message.into(),
            exit_code: None,
            signal: None,
            stderr_tail: String::new(),
            job: None,
        }
    }
}

/// What the client hears about its tasks.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Running {
        task: TaskId,
        place: WorkerPlace,
    },
    Finished {
        task: TaskId,
        result: Payload,
    },
    Raised {
        task: TaskId,
        error: Payload,
    },
    Lost {
        task: TaskId,
        reason: LostReason,
    },
    Cancelled {
        task: TaskId,
        upstream: Option<TaskId>,
    },
    /// The scheduler refused the task (submission is asynchronous, so the
    /// refusal arrives as an event).
    Rejected {
        task: TaskId,
        error: SubmitError,
    },
    /// Another live process runs the task's store key: the client resolves
    /// the task (`resolve_external_*`) once that run's entry appears.
    Elsewhere {
        task: TaskId,
    },
    /// The running task printed `text` (UTF-8) on `stream`.
    Output {
        task: TaskId,
        stream: Stream,
        text: Bytes,
    },
    /// The task's worker could not write its outcome to the task store
    /// (`why`); sent before the task's `Finished` or `Raised`.
    Unstored {
        task: TaskId,
        why: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitError {
    DuplicateId(TaskId),
    UnknownDependency(TaskId),
    ShuttingDown,
    /// The task asks for more than the whole allocation holds: it would wait forever.
    NeverFits(NeverFits),
    /// A block-allocated pool runs every task on its workers as they were
    /// started: a task asking for other resources would not get them.
    NotThePools(Box<ResourceRequest>),
    /// No elastic allocation could ever run it (`AllocationPolicy::never_fits`).
    NeverFitsAllocations(String),
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::DuplicateId(id) => write!(f, "{id} was already submitted"),
            SubmitError::UnknownDependency(id) => {
                write!(f, "dependency {id} is unknown (released?)")
            }
            SubmitError::ShuttingDown => write!(f, "cannot schedule new futures after shutdown"),
            SubmitError::NeverFits(why) => write!(f, "this task can never run here: {why}"),
            SubmitError::NeverFitsAllocations(why) => write!(f, "{why}"),
            SubmitError::NotThePools(pool) => write!(
                f,
                "with block allocation every task runs on the pool's workers, started with \
                 {pool:?}: a task cannot ask for other resources"
            ),
        }
    }
}

/// The core's effects. The server carries them out on sockets and
/// processes; the tests record them.
pub trait Comm {
    fn start_worker(&mut self, worker: WorkerId, launch: &Launch);
    fn send(&mut self, worker: WorkerId, message: ToWorker, frames: Vec<Bytes>);
    /// Ask the worker to exit (it may be busy finishing nothing: the core only
    /// stops idle workers); the server escalates to a kill if it lingers.
    fn stop_worker(&mut self, worker: WorkerId);
    fn emit(&mut self, event: Event);
    /// The answer to a `Core::cancel` that returned None: whether `task`
    /// was cancelled (taken back before it started) or not (it ran).
    fn cancel_answered(&mut self, task: TaskId, cancelled: bool);
    /// Ask the job system for allocation `allocation` (elastic allocations,
    /// `allocations`); the answer comes back as `Core::allocation_submitted`
    /// or `allocation_refused`. Only a core with allocations calls it.
    fn submit_allocation(&mut self, allocation: AllocationId) {
        let _ = allocation;
    }
    /// Give allocation `allocation` back (its job `job`, once it has one):
    /// its agents stop, its job ends. Only a core with allocations calls it.
    fn release_allocation(&mut self, allocation: AllocationId, job: Option<&str>) {
        let _ = (allocation, job);
    }
}
