//! The scheduler's state machine, the reactor of HyperQueue's tako: it owns
//! tasks and workers and decides what runs where; every effect (start a
//! process, send a message, tell the client) goes through `Comm`, so tests
//! drive it without sockets or processes.
//!
//! A task moves Waiting (on dependencies) → Ready (queued for resources) →
//! Assigned (sent to a worker) → Finished / Failed / Cancelled.
//!
//! This file holds the state (`Core`) and what the server reads of it. The
//! rest, by concern:
//! - `reactor`: one method per event (client command, worker message,
//!   process exit); each asks for scheduling rather than scheduling itself,
//!   and the server runs `schedule_if_needed` once per batch of events;
//! - `placement`: that pass (which worker runs which ready task), the `Run`
//!   it sends, and the pool's size;
//! - `graph`: dependencies, outcomes and which results are still needed;
//! - `ahead`: tasks sent to a busy worker ahead of time;
//! - `tasks`, `workers`: the record of each; `functions`: the function
//!   pickles of unsent tasks; `events`: what crosses the boundary (`Comm`).

mod ahead;
pub mod allocations;
mod elastic;
mod events;
mod functions;
mod graph;
mod joining;
mod placement;
mod reactor;
mod tasks;
mod worker_set;
mod workers;

pub use ahead::QueueAhead;
pub use events::{Comm, EndedJob, Event, LostReason, SubmitError};
pub use tasks::{TaskCounts, TaskSpec};
pub use workers::{Launch, WorkerInfo, WorkerState};

use crate::capacity::Capacity;
use crate::ids::{IdMap, TaskId, WorkerId};
use crate::protocol::Payload;
use crate::resources::ResourceRequest;
use functions::FunctionStore;
use std::collections::VecDeque;
use tasks::{Failure, Task, TaskState};
use workers::Workers;

/// How workers are provided.
#[derive(Clone, Debug)]
pub enum Allocation {
    /// `workers` long-lived workers, each with `resources`.
    Block {
        workers: u32,
        resources: ResourceRequest,
    },
    /// A fresh worker per task, within the capacity.
    PerTask,
}

/// The scheduler's state: tasks, workers, the ready queue and the pool.
pub struct Core {
    allocation: Allocation,
    capacity: Capacity,
    tasks: IdMap<TaskId, Task>,
    functions: FunctionStore,
    ready: VecDeque<TaskId>,
    workers: Workers,
    /// Tasks not yet finished or failed: whether work is pending, without
    /// a pass over every task.
    unfinished: usize,
    next_worker: u32,
    init: Option<Payload>,
    failed_starts: u32,
    /// Set when block allocation cannot run anything (init function raised,
    /// workers keep dying at start): every task fails with this.
    broken: Option<Failure>,
    shutting_down: bool,
    /// Shut down with no work left, every worker then not working was
    /// stopped: later passes stop only those that became idle since.
    stopped_the_rest: bool,
    /// Send each busy pool worker one task ahead (`ahead`), when set.
    queue_ahead: Option<QueueAhead>,
    /// An event changed what could run where: the next `schedule_if_needed`
    /// makes one pass for the whole batch of events (tako's
    /// `ask_for_scheduling`), instead of one pass per event.
    needs_scheduling: bool,
    /// Elastic allocations, where the nodes come from them (`elastic`).
    elastic: Option<Box<elastic::Elastic>>,
}

impl Core {
    pub fn new(allocation: Allocation, capacity: Capacity, init: Option<Payload>) -> Core {
        Core {
            allocation,
            capacity,
            tasks: IdMap::default(),
            functions: FunctionStore::default(),
            ready: VecDeque::new(),
            workers: Workers::default(),
            unfinished: 0,
            next_worker: 0,
            init,
            failed_starts: 0,
            broken: None,
            shutting_down: false,
            stopped_the_rest: false,
            queue_ahead: None,
            needs_scheduling: false,
            elastic: None,
        }
    }

    /// Hand out what the events since the last pass made possible. The
    /// server calls it after each batch of events, before it waits for the
    /// next, so a task never waits longer than the wake-up that readied it.
    pub fn schedule_if_needed(&mut self, comm: &mut impl Comm) {
        if std::mem::take(&mut self.needs_scheduling) {
            self.schedule(comm);
        }
    }

    fn ask_for_scheduling(&mut self) {
        self.needs_scheduling = true;
    }

    /// Whether busy pool workers are sent a task ahead, and how (off unless set).
    pub fn set_queue_ahead(&mut self, queue_ahead: Option<QueueAhead>) {
        self.queue_ahead = queue_ahead;
    }

    /// Whether each task gets a worker of its own (no block allocation).
    pub fn starts_fresh_workers(&self) -> bool {
        matches!(self.allocation, Allocation::PerTask)
    }

    /// Start the block allocation's workers.
    pub fn start(&mut self, comm: &mut impl Comm) {
        if let Allocation::Block { workers, .. } = self.allocation {
            for _ in 0..workers {
                self.spawn_pool_worker(comm);
            }
        }
    }

    /// True once shut down with no work left and every worker gone.
    pub fn is_finished(&self) -> bool {
        self.shutting_down && self.workers.is_empty() && !self.has_pending_work()
    }

    fn has_pending_work(&self) -> bool {
        self.unfinished > 0
    }

    /// The task `worker` is running now, if any.
    pub fn running_task(&self, worker: WorkerId) -> Option<TaskId> {
        match self.workers.get(&worker)?.state {
            WorkerState::Busy(task) => Some(task),
            _ => None,
        }
    }

    /// Whether `worker` is running a task now.
    pub fn is_busy(&self, worker: WorkerId) -> bool {
        self.running_task(worker).is_some()
    }

    pub fn node_rows(&self) -> Vec<crate::capacity::NodeRow> {
        self.capacity.node_rows()
    }

    pub fn worker_infos(&self) -> Vec<WorkerInfo> {
        self.workers
            .iter()
            .map(|(id, w)| w.info(*id, self.capacity.placement_name(&w.launch.placement)))
            .collect()
    }

    pub fn task_counts(&self) -> TaskCounts {
        let mut counts = TaskCounts::default();
        for task in self.tasks.values() {
            match task.state {
                TaskState::Waiting { .. } | TaskState::External => counts.waiting += 1,
                TaskState::Ready => counts.ready += 1,
                TaskState::Assigned { .. } => counts.running += 1,
                TaskState::Finished(_) => counts.finished += 1,
                TaskState::Failed(_) => counts.failed += 1,
            }
        }
        // Sent ahead is not running yet.
        let ahead = self.workers.ahead();
        counts.running = counts.running.saturating_sub(ahead);
        counts.ready += ahead;
        counts
    }
}

#[cfg(test)]
mod tests;
