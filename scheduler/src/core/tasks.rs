//! A task as the core keeps it: its state, what it still needs to be sent,
//! and who depends on it.

use super::events::LostReason;
use crate::ids::{TaskId, WorkerId};
use crate::protocol::{Payload, StoreTarget};
use crate::resources::ResourceRequest;
use bytes::Bytes;

/// A task as the client submits it.
pub struct TaskSpec {
    pub id: TaskId,
    pub function: Bytes,
    pub call: Payload,
    pub dependencies: Vec<TaskId>,
    pub resources: ResourceRequest,
    /// Where the worker also writes the outcome, if the task has a store.
    pub store: Option<StoreTarget>,
    /// How many times the task runs again when the worker running it dies
    /// (executorlib's `restart_limit`) before it fails with the loss.
    pub restart_limit: u32,
    /// executorlib's `run_time_max`, in seconds: under elastic allocations,
    /// it starts only where that much of the allocation's time is left.
    pub run_time_max: Option<u32>,
}

/// Counts for `info()`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskCounts {
    pub waiting: usize,
    pub ready: usize,
    pub running: usize,
    pub finished: usize,
    pub failed: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Failure {
    Raised(Payload),
    Lost(LostReason),
    Cancelled { upstream: Option<TaskId> },
}

/// The failure a dependent inherits from its upstream: the same exception,
/// the same lost worker, or "upstream was cancelled".
pub(super) fn inherit(failure: &Failure, upstream: TaskId) -> Failure {
    match failure {
        Failure::Cancelled { .. } => Failure::Cancelled {
            upstream: Some(upstream),
        },
        other => other.clone(),
    }
}

#[derive(Debug)]
pub(super) enum TaskState {
    Waiting {
        missing: usize,
    },
    Ready,
    /// Sent to `worker` (or, per task, a worker started for it): running
    /// there, or held there ahead of its current task.
    Assigned {
        worker: WorkerId,
    },
    /// A result the client delivers itself (a foreign Future).
    External,
    Finished(Payload),
    /// Boxed: a failure is rare and large (a lost worker's message and
    /// stderr), and every task's record would otherwise be as large.
    Failed(Box<Failure>),
}

/// What is sent to the worker and what starting it takes, kept until then.
#[derive(Clone)]
pub(super) struct Work {
    pub(super) resources: ResourceRequest,
    pub(super) function: Bytes,
    /// Names `function` in the function store and the workers' caches.
    pub(super) digest: [u8; 32],
    pub(super) call: Payload,
    /// Boxed: most tasks have no store, and this waits in every queued task.
    pub(super) store: Option<Box<StoreTarget>>,
    pub(super) run_time_max: Option<u32>,
}

/// Kept for every task whose Future the client holds, so it is small: what
/// only an unsent task needs is boxed in `work` and let go of once sent
/// (100,000 finished calls held cost about 120 bytes each here).
pub(super) struct Task {
    pub(super) state: TaskState,
    /// The function, arguments and resources until the task is sent.
    pub(super) work: Option<Box<Work>>,
    /// Runs left should its worker die (`TaskSpec::restart_limit`).
    pub(super) restarts_left: u32,
    /// A copy of `work` kept after sending while `restarts_left` > 0, with
    /// the function pickle and the dependencies' results held for it too.
    pub(super) resend: Option<Box<Work>>,
    pub(super) dependencies: Vec<TaskId>,
    pub(super) dependents: Vec<TaskId>,
    /// Dependents not yet sent: they still need this task's result.
    pub(super) holds: u32,
    /// The client dropped its Future: forget the task once nothing needs it.
    pub(super) released: bool,
}

impl Task {
    /// A task whose result the client delivers (a foreign Future).
    pub(super) fn external() -> Task {
        Task {
            state: TaskState::External,
            work: None,
            restarts_left: 0,
            resend: None,
            dependencies: Vec::new(),
            dependents: Vec::new(),
            holds: 0,
            released: false,
        }
    }

    pub(super) fn is_terminal(&self) -> bool {
        matches!(self.state, TaskState::Finished(_) | TaskState::Failed(_))
    }
}
