//! A worker as the core keeps it: its state, what it was started with, and
//! which functions it holds unpickled.

use super::worker_set::WorkerSet;
use crate::capacity::Placement;
use crate::ids::{IdMap, TaskId, WorkerId};
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

/// Every worker, with what the scheduling pass looks for kept at hand: the
/// idle pool workers, those a task may be sent ahead to, those holding one
/// ahead. A pass so finds a worker in a few word operations, not by scanning
/// a thousand nodes' workers per call. Workers change only through `update`,
/// which keeps these in step.
#[derive(Default)]
pub(super) struct Workers {
    all: IdMap<WorkerId, Worker>,
    /// Pool workers that are idle.
    idle: WorkerSet,
    /// Busy pool workers that take a task ahead and hold none (`ahead_slot`).
    open: WorkerSet,
    /// Workers holding a task ahead that no Retract is out for.
    holding: WorkerSet,
    /// Workers asked for a task back for an idle worker.
    rebalancing: usize,
    /// Pool workers not stopping: the pool's size as it is.
    members: usize,
    /// Workers holding a task ahead.
    ahead: usize,
}

/// Which of `Workers`' sets and counts a worker is in.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Marks {
    idle: bool,
    open: bool,
    holding: bool,
    rebalancing: bool,
    member: bool,
    ahead: bool,
}

impl Marks {
    fn of(w: &Worker) -> Marks {
        let pool = w.dedicated.is_none();
        Marks {
            idle: pool && w.state == WorkerState::Idle,
            open: pool
                && matches!(w.state, WorkerState::Busy(_))
                && w.takes_next
                && w.next.is_none()
                && w.retract.is_none(),
            holding: w.next.is_some() && w.retract.is_none(),
            rebalancing: w.retract.is_some_and(|(_, why)| why == Retract::Rebalance),
            member: pool && w.state != WorkerState::Stopping,
            ahead: w.next.is_some(),
        }
    }
}

/// Put `id` in or out of `set` where that changed (the sets are touched
/// once or twice a call, and only where a worker moved).
fn mark(set: &mut WorkerSet, id: WorkerId, before: bool, after: bool) {
    match (before, after) {
        (false, true) => {
            set.insert(id);
        }
        (true, false) => {
            set.remove(id);
        }
        _ => {}
    }
}

fn count(counter: &mut usize, before: bool, after: bool) {
    match (before, after) {
        (false, true) => *counter += 1,
        (true, false) => *counter -= 1,
        _ => {}
    }
}

impl Workers {
    pub(super) fn get(&self, id: &WorkerId) -> Option<&Worker> {
        self.all.get(id)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Every worker, by id: the rare passes over all of them (resizing the
    /// pool, breaking it, shutting down, `info`) act in the order the
    /// workers were started. The map itself is hashed, not ordered: the
    /// lookups of every call, over as many as 128,000 workers, are what
    /// it is for.
    pub(super) fn iter(&self) -> impl DoubleEndedIterator<Item = (&WorkerId, &Worker)> {
        let mut all: Vec<(&WorkerId, &Worker)> = self.all.iter().collect();
        all.sort_unstable_by_key(|(id, _)| **id);
        all.into_iter()
    }

    /// Every worker, in no order: for counts, where order does not matter
    /// and a sort each pass would.
    pub(super) fn unordered(&self) -> impl Iterator<Item = &Worker> {
        self.all.values()
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Worker> {
        self.iter().map(|(_, w)| w)
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &WorkerId> {
        self.iter().map(|(id, _)| id)
    }

    /// The idle pool workers, lowest id first.
    pub(super) fn idle(&self) -> impl Iterator<Item = WorkerId> + '_ {
        self.idle.iter()
    }

    pub(super) fn insert(&mut self, id: WorkerId, worker: Worker) {
        let after = Marks::of(&worker);
        if let Some(old) = self.all.insert(id, worker) {
            self.reindex(id, Marks::of(&old), after);
        } else {
            self.reindex(id, Marks::default(), after);
        }
    }

    pub(super) fn remove(&mut self, id: &WorkerId) -> Option<Worker> {
        let worker = self.all.remove(id)?;
        self.reindex(*id, Marks::of(&worker), Marks::default());
        Some(worker)
    }

    /// Change worker `id` (None if there is none), keeping the sets in step.
    pub(super) fn update<R>(
        &mut self,
        id: WorkerId,
        f: impl FnOnce(&mut Worker) -> R,
    ) -> Option<R> {
        let worker = self.all.get_mut(&id)?;
        let before = Marks::of(worker);
        let result = f(worker);
        let after = Marks::of(worker);
        if before != after {
            self.reindex(id, before, after);
        }
        Some(result)
    }

    fn reindex(&mut self, id: WorkerId, before: Marks, after: Marks) {
        mark(&mut self.idle, id, before.idle, after.idle);
        mark(&mut self.open, id, before.open, after.open);
        mark(&mut self.holding, id, before.holding, after.holding);
        count(&mut self.rebalancing, before.rebalancing, after.rebalancing);
        count(&mut self.members, before.member, after.member);
        count(&mut self.ahead, before.ahead, after.ahead);
    }

    /// The idle pool worker of the lowest id.
    pub(super) fn first_idle(&self) -> Option<WorkerId> {
        self.idle.first()
    }

    pub(super) fn idle_count(&self) -> usize {
        self.idle.len()
    }

    /// The busy pool worker of the lowest id that may be sent a task ahead.
    pub(super) fn first_open(&self) -> Option<WorkerId> {
        self.open.first()
    }

    /// The tasks held ahead that no Retract is out for, by worker.
    pub(super) fn held_ahead(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.holding.iter().filter_map(|id| self.all[&id].next)
    }

    pub(super) fn rebalancing(&self) -> usize {
        self.rebalancing
    }

    pub(super) fn members(&self) -> usize {
        self.members
    }

    pub(super) fn ahead(&self) -> usize {
        self.ahead
    }
}
