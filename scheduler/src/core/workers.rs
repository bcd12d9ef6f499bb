//! A worker as the core keeps it: its state, what it was started with, and
//! which functions it holds unpickled.

use crate::capacity::Placement;
use crate::ids::{TaskId, WorkerId};
use crate::protocol::{FunctionRef, WorkerPlace};
use crate::resources::{Gpus, ResourceRequest};
use std::collections::{HashMap, VecDeque};

/// Functions a worker keeps unpickled, by slot.
const FUNCTION_SLOTS: usize = 64;

/// What one worker needs to be started.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    pub resources: ResourceRequest,
    /// Where its ranks run (`capacity::Capacity::place`): one node, or
    /// several for a call larger than any node, a step of its own.
    pub placement: Placement,
    /// Its share of its node's GPUs, held until it exits; for a span only
    /// their count, since srun picks each rank's devices.
    pub gpus: Gpus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    Starting,
    Initializing,
    Idle,
    Busy(TaskId),
    Stopping,
}

/// A worker as `info()` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerInfo {
    pub id: WorkerId,
    pub state: WorkerState,
    pub pid: Option<u32>,
    pub host: Option<String>,
    /// The node the scheduler placed it on, by name: this machine's on the
    /// local backend, `capacity::WHOLE_ALLOCATION` where srun or flux place
    /// each worker somewhere in the allocation, "node1+node2" for a call
    /// spanning nodes.
    pub node: String,
    pub gpus: Gpus,
}

/// Why a task sent ahead is being taken back from a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Retract {
    /// Another worker is idle: run it there.
    Rebalance,
    /// The client cancels it (or shuts down with `cancel_futures`).
    Cancel,
}

pub(super) struct Worker {
    pub(super) state: WorkerState,
    pub(super) launch: Launch,
    /// Known once it said hello.
    pub(super) place: Option<WorkerPlace>,
    /// Per-task mode: the one task this worker was started for.
    pub(super) dedicated: Option<TaskId>,
    pub(super) slots: FunctionSlots,
    /// The task sent ahead, to run when the current one ends: the worker
    /// then starts it without waiting a round trip for the scheduler.
    pub(super) next: Option<TaskId>,
    /// Whether a task may be sent ahead behind the current one: it has no
    /// store (whose lock could send it back as Elsewhere) and no frame
    /// large enough for shared memory (whose refusal resends it, after
    /// whatever was sent ahead).
    pub(super) takes_next: bool,
    /// A `Retract` sent and not yet answered: the task (the one sent ahead,
    /// or it after it started in the meantime) and why.
    pub(super) retract: Option<(TaskId, Retract)>,
}

impl Worker {
    pub(super) fn new(launch: Launch, dedicated: Option<TaskId>) -> Worker {
        Worker {
            state: WorkerState::Starting,
            launch,
            place: None,
            dedicated,
            slots: FunctionSlots::default(),
            next: None,
            takes_next: false,
            retract: None,
        }
    }

    pub(super) fn info(&self, id: WorkerId, node: String) -> WorkerInfo {
        WorkerInfo {
            id,
            state: self.state,
            pid: self.place.as_ref().map(|p| p.pid),
            host: self.place.as_ref().map(|p| p.host.clone()),
            node,
            gpus: self.launch.gpus.clone(),
        }
    }
}

/// The scheduler's side of the worker's function cache: which function lives
/// in which slot, least recently used first.
#[derive(Default)]
pub(super) struct FunctionSlots {
    by_digest: HashMap<[u8; 32], u32>,
    order: VecDeque<[u8; 32]>,
}

impl FunctionSlots {
    /// How to name the function `digest` in the next Run: by its slot if the
    /// worker has it, else inline into a slot (evicting the least recently
    /// used one when all are taken).
    pub(super) fn reference(&mut self, digest: [u8; 32]) -> FunctionRef {
        if let Some(&slot) = self.by_digest.get(&digest) {
            if let Some(pos) = self.order.iter().position(|d| *d == digest) {
                self.order.remove(pos);
            }
            self.order.push_back(digest);
            return FunctionRef::Cached { slot };
        }
        let slot = if self.by_digest.len() < FUNCTION_SLOTS {
            self.by_digest.len() as u32
        } else {
            let evicted = self.order.pop_front().expect("slots are full");
            self.by_digest
                .remove(&evicted)
                .expect("ordered digests are mapped")
        };
        self.by_digest.insert(digest, slot);
        self.order.push_back(digest);
        FunctionRef::Inline { slot }
    }
}
