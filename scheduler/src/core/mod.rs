//! The scheduler's state machine, the reactor of HyperQueue's tako: it owns
//! tasks and workers and decides what runs where; every effect (start a
//! process, send a message, tell the client) goes through `Comm`, so tests
//! drive it without sockets or processes.
//!
//! A task moves Waiting (on dependencies) → Ready (queued for resources) →
//! Assigned (sent to a worker) → Finished / Failed / Cancelled.
//!
//! `tasks` and `workers` hold the state of each, `functions` the function
//! pickles of unsent tasks, `events` what crosses the boundary, `ahead` the
//! tasks sent to a busy worker ahead of time.

mod ahead;
mod events;
mod functions;
mod tasks;
mod workers;

pub use ahead::QueueAhead;
pub use events::{Comm, Event, LostReason, SubmitError};
pub use tasks::{TaskCounts, TaskSpec};
pub use workers::{Launch, WorkerInfo, WorkerState};

use crate::ids::{TaskId, WorkerId};
use crate::protocol::{FunctionRef, Outcome, Payload, Stream, ToWorker, WorkerPlace};
use crate::resources::{Capacity, ResourceRequest};
use bytes::Bytes;
use functions::FunctionStore;
use std::collections::{BTreeMap, HashMap, VecDeque};
use tasks::{inherit, Failure, Task, TaskState, Work};
use workers::{Retract, Worker};

/// Block allocation gives up after this many workers in a row die before
/// becoming ready (a broken init function or environment would loop forever).
const MAX_FAILED_STARTS: u32 = 3;

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

/// The reactor: every client command, worker message and process exit is
/// one method call that updates the state and tells `Comm` what to do.
pub struct Core {
    allocation: Allocation,
    capacity: Capacity,
    tasks: HashMap<TaskId, Task>,
    functions: FunctionStore,
    ready: VecDeque<TaskId>,
    workers: BTreeMap<WorkerId, Worker>,
    next_worker: u32,
    init: Option<Payload>,
    failed_starts: u32,
    /// Set when block allocation cannot run anything (init function raised,
    /// workers keep dying at start): every task fails with this.
    broken: Option<Failure>,
    shutting_down: bool,
    /// Send each busy pool worker one task ahead (`ahead`), when set.
    queue_ahead: Option<QueueAhead>,
    /// An event changed what could run where: the next `schedule_if_needed`
    /// makes one pass for the whole batch of events (tako's
    /// `ask_for_scheduling`), instead of one pass per event.
    needs_scheduling: bool,
}

impl Core {
    pub fn new(allocation: Allocation, capacity: Capacity, init: Option<Payload>) -> Core {
        Core {
            allocation,
            capacity,
            tasks: HashMap::new(),
            functions: FunctionStore::default(),
            ready: VecDeque::new(),
            workers: BTreeMap::new(),
            next_worker: 0,
            init,
            failed_starts: 0,
            broken: None,
            shutting_down: false,
            queue_ahead: None,
            needs_scheduling: false,
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

    pub fn submit(&mut self, comm: &mut impl Comm, spec: TaskSpec) -> Result<(), SubmitError> {
        if self.shutting_down {
            return Err(SubmitError::ShuttingDown);
        }
        if self.tasks.contains_key(&spec.id) {
            return Err(SubmitError::DuplicateId(spec.id));
        }
        if let Some(dep) = spec
            .dependencies
            .iter()
            .find(|d| !self.tasks.contains_key(d))
        {
            return Err(SubmitError::UnknownDependency(*dep));
        }
        if matches!(self.allocation, Allocation::PerTask) {
            if let Some(why) = self.capacity.never_fits(&spec.resources) {
                return Err(SubmitError::NeverFits(why));
            }
        }
        let (digest, function) = self.functions.intern(spec.function);
        let mut task = Task {
            state: TaskState::Waiting { missing: 0 },
            work: Some(Box::new(Work {
                resources: spec.resources,
                function,
                digest,
                call: spec.call,
                store: spec.store.map(Box::new),
            })),
            restarts_left: spec.restart_limit,
            resend: None,
            dependencies: spec.dependencies.clone(),
            dependents: Vec::new(),
            holds: 0,
            released: false,
        };
        let mut missing = 0;
        let mut upstream_failure = None;
        for dep_id in &spec.dependencies {
            let dep = self.tasks.get_mut(dep_id).expect("checked above");
            dep.holds += 1;
            match &dep.state {
                TaskState::Finished(_) => {}
                TaskState::Failed(failure) => {
                    upstream_failure.get_or_insert_with(|| inherit(failure, *dep_id));
                }
                _ => {
                    missing += 1;
                    dep.dependents.push(spec.id);
                }
            }
        }
        task.state = TaskState::Waiting { missing };
        self.tasks.insert(spec.id, task);
        if let Some(failure) = upstream_failure.or_else(|| self.broken.clone()) {
            self.fail(comm, spec.id, failure);
        } else if missing == 0 {
            self.make_ready(spec.id);
        }
        self.ask_for_scheduling();
        Ok(())
    }

    /// A task whose result the client will deliver (a foreign Future).
    pub fn add_external(&mut self, id: TaskId) -> Result<(), SubmitError> {
        if self.tasks.contains_key(&id) {
            return Err(SubmitError::DuplicateId(id));
        }
        self.tasks.insert(id, Task::external());
        Ok(())
    }

    pub fn resolve_external_result(&mut self, comm: &mut impl Comm, id: TaskId, result: Payload) {
        if matches!(
            self.tasks.get(&id).map(|t| &t.state),
            Some(TaskState::External)
        ) {
            self.finish(comm, id, result);
            self.ask_for_scheduling();
        }
    }

    pub fn resolve_external_error(
        &mut self,
        comm: &mut impl Comm,
        id: TaskId,
        error: Option<Payload>,
    ) {
        if matches!(
            self.tasks.get(&id).map(|t| &t.state),
            Some(TaskState::External)
        ) {
            let failure = match error {
                Some(payload) => Failure::Raised(payload),
                None => Failure::Cancelled { upstream: None },
            };
            self.fail(comm, id, failure);
            self.ask_for_scheduling();
        }
    }

    /// Cancel a task that has not started: `Some(cancelled)` at once, or
    /// None when a worker holds it ahead and is asked for it back, in which
    /// case the answer comes through `Comm::cancel_answered`.
    pub fn cancel(&mut self, comm: &mut impl Comm, id: TaskId) -> Option<bool> {
        let cancellable = matches!(
            self.tasks.get(&id).map(|t| &t.state),
            Some(TaskState::Waiting { .. } | TaskState::Ready)
        );
        if cancellable {
            self.fail(comm, id, Failure::Cancelled { upstream: None });
            self.ask_for_scheduling();
            return Some(true);
        }
        if self.retract(comm, id, Retract::Cancel) {
            return None;
        }
        Some(false)
    }

    /// The client no longer holds this task's Future.
    pub fn release(&mut self, id: TaskId) {
        if let Some(task) = self.tasks.get_mut(&id) {
            task.released = true;
        }
        self.forget_if_unused(id);
    }

    pub fn shutdown(&mut self, comm: &mut impl Comm, cancel_futures: bool) {
        self.shutting_down = true;
        if cancel_futures {
            let pending: Vec<TaskId> = self
                .tasks
                .iter()
                .filter(|(_, t)| matches!(t.state, TaskState::Waiting { .. } | TaskState::Ready))
                .map(|(id, _)| *id)
                .collect();
            let mut pending = pending;
            pending.sort();
            for id in pending {
                if matches!(
                    self.tasks[&id].state,
                    TaskState::Waiting { .. } | TaskState::Ready
                ) {
                    self.fail(comm, id, Failure::Cancelled { upstream: None });
                }
            }
            // Sent ahead, or being taken back for an idle worker (it may
            // have started meanwhile): asked back to be cancelled.
            let ahead: Vec<TaskId> = self
                .workers
                .values()
                .filter_map(|w| w.next.or(w.retract.map(|(task, _)| task)))
                .collect();
            for id in ahead {
                self.retract(comm, id, Retract::Cancel);
            }
        }
        self.ask_for_scheduling();
    }

    /// True once shut down with no work left and every worker gone.
    pub fn is_finished(&self) -> bool {
        self.shutting_down && self.workers.is_empty() && !self.has_pending_work()
    }

    fn has_pending_work(&self) -> bool {
        self.tasks.values().any(|t| !t.is_terminal())
    }

    pub fn worker_hello(&mut self, comm: &mut impl Comm, worker: WorkerId, pid: u32, host: String) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        if w.state != WorkerState::Starting {
            return;
        }
        w.place = Some(WorkerPlace { worker, pid, host });
        match (&self.init, w.dedicated) {
            (Some(init), None) => {
                w.state = WorkerState::Initializing;
                comm.send(worker, ToWorker::Init, init.frames.clone());
            }
            _ => {
                w.state = WorkerState::Idle;
                self.failed_starts = 0;
                if let Some(task) = w.dedicated {
                    self.dispatch(comm, task, worker);
                }
            }
        }
        self.ask_for_scheduling();
    }

    pub fn worker_init_done(
        &mut self,
        comm: &mut impl Comm,
        worker: WorkerId,
        outcome: Outcome,
        error: Payload,
    ) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        if w.state != WorkerState::Initializing {
            return;
        }
        match outcome {
            Outcome::Returned => {
                w.state = WorkerState::Idle;
                self.failed_starts = 0;
            }
            Outcome::Raised => {
                // The same init would raise on every worker: nothing can run.
                self.break_pool(comm, Failure::Raised(error));
            }
        }
        self.ask_for_scheduling();
    }

    pub fn task_done(
        &mut self,
        comm: &mut impl Comm,
        worker: WorkerId,
        task: TaskId,
        outcome: Outcome,
        payload: Payload,
    ) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        if w.state != WorkerState::Busy(task) {
            return;
        }
        w.state = WorkerState::Idle;
        if self.settle_retract(comm, worker, task) {
            self.started(comm, worker, task);
        }
        match outcome {
            Outcome::Returned => self.finish(comm, task, payload),
            Outcome::Raised => self.fail(comm, task, Failure::Raised(payload)),
        }
        self.promote_next(comm, worker);
        if w_is_dedicated(&self.workers, worker) {
            self.retire(comm, worker);
        } else {
            self.balance_pool(comm); // a pool made smaller lets this one go now
        }
        self.ask_for_scheduling();
    }

    /// The worker found the task's store key locked by another live run and
    /// did not run it: the task becomes one the client resolves, as a
    /// foreign Future's, when that run's entry appears.
    pub fn task_elsewhere(&mut self, comm: &mut impl Comm, worker: WorkerId, task: TaskId) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        if w.state != WorkerState::Busy(task) {
            return;
        }
        w.state = WorkerState::Idle;
        // The worker did not load the task's function either: forget what
        // its slots hold, so the next task sends its function again.
        w.slots = Default::default();
        if let Some(t) = self.tasks.get_mut(&task) {
            t.state = TaskState::External;
        }
        comm.emit(Event::Elsewhere { task });
        self.promote_next(comm, worker);
        if w_is_dedicated(&self.workers, worker) {
            self.retire(comm, worker);
        }
        self.ask_for_scheduling();
    }

    /// Output of the task `worker` is running; anything else (a task that
    /// already ended, a worker claiming another's task) is dropped.
    pub fn task_output(
        &mut self,
        comm: &mut impl Comm,
        worker: WorkerId,
        task: TaskId,
        stream: Stream,
        text: Bytes,
    ) {
        let running_here = self
            .workers
            .get(&worker)
            .is_some_and(|w| w.state == WorkerState::Busy(task));
        if running_here {
            comm.emit(Event::Output { task, stream, text });
        }
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

    /// The worker's process exited, or it stopped answering.
    pub fn worker_lost(&mut self, comm: &mut impl Comm, worker: WorkerId, reason: LostReason) {
        let Some(w) = self.workers.remove(&worker) else {
            return;
        };
        if w.dedicated.is_some() {
            self.capacity.give_back(&w.launch.resources, w.launch.gpus);
        } else {
            self.capacity.return_gpus(w.launch.gpus);
        }
        let current_dealt_with = self.lost_ahead(comm, w.state, w.next, w.retract);
        match w.state {
            WorkerState::Busy(_) if current_dealt_with => {}
            WorkerState::Busy(task) => {
                if !self.run_again(comm, task, &reason) {
                    self.fail(comm, task, Failure::Lost(reason));
                }
            }
            WorkerState::Starting | WorkerState::Initializing => {
                if let Some(task) = w.dedicated {
                    if !self.run_again(comm, task, &reason) {
                        self.fail(comm, task, Failure::Lost(reason));
                    }
                } else if !self.shutting_down {
                    self.failed_starts += 1;
                    if self.failed_starts >= MAX_FAILED_STARTS {
                        let mut reason = reason;
                        reason.message = format!(
                            "{MAX_FAILED_STARTS} workers in a row failed to start; the last: {}",
                            reason.message
                        );
                        self.break_pool(comm, Failure::Lost(reason));
                    }
                }
            }
            WorkerState::Idle | WorkerState::Stopping => {}
        }
        if w.dedicated.is_none() {
            self.balance_pool(comm); // a replacement, unless the pool was made smaller
        }
        self.ask_for_scheduling();
    }

    pub fn worker_infos(&self) -> Vec<WorkerInfo> {
        self.workers.iter().map(|(id, w)| w.info(*id)).collect()
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
        let ahead = self.workers.values().filter(|w| w.next.is_some()).count();
        counts.running = counts.running.saturating_sub(ahead);
        counts.ready += ahead;
        counts
    }

    // ---- internals ----

    /// Grow or shrink the block-allocated pool to `workers` (executorlib's
    /// settable `max_workers`): new workers start now; surplus ones stop,
    /// idle and starting ones first, busy ones when their task ends.
    pub fn resize_pool(&mut self, comm: &mut impl Comm, workers: u32) -> Result<(), String> {
        let Allocation::Block { workers: size, .. } = &mut self.allocation else {
            return Err("only a block-allocated pool has a size to change".into());
        };
        if workers == 0 {
            return Err("a pool needs at least one worker".into());
        }
        if self.shutting_down {
            return Err("the executor is shutting down".into());
        }
        *size = workers;
        self.balance_pool(comm);
        self.ask_for_scheduling();
        Ok(())
    }

    /// Start or stop pool workers until as many run (or start) as the pool's size.
    fn balance_pool(&mut self, comm: &mut impl Comm) {
        let Allocation::Block { workers: size, .. } = self.allocation else {
            return;
        };
        if self.shutting_down || self.broken.is_some() {
            return;
        }
        let members: Vec<(WorkerId, bool)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.dedicated.is_none() && w.state != WorkerState::Stopping)
            .map(|(id, w)| (*id, matches!(w.state, WorkerState::Busy(_))))
            .collect();
        let live = members.len() as u32;
        if live < size {
            for _ in live..size {
                self.spawn_pool_worker(comm);
            }
            return;
        }
        // Idle and starting ones go first; newest first among them.
        let surplus: Vec<WorkerId> = members
            .iter()
            .rev()
            .filter(|(_, busy)| !busy)
            .map(|(id, _)| *id)
            .take((live - size) as usize)
            .collect();
        for worker in surplus {
            self.retire(comm, worker);
        }
    }

    fn spawn_pool_worker(&mut self, comm: &mut impl Comm) {
        let Allocation::Block { resources, .. } = &self.allocation else {
            return;
        };
        let resources = resources.clone();
        let gpus = self.capacity.take_gpus(resources.gpus());
        self.add_worker(comm, Launch { resources, gpus }, None);
    }

    fn add_worker(
        &mut self,
        comm: &mut impl Comm,
        launch: Launch,
        dedicated: Option<TaskId>,
    ) -> WorkerId {
        let id = WorkerId(self.next_worker);
        self.next_worker += 1;
        comm.start_worker(id, &launch);
        self.workers.insert(id, Worker::new(launch, dedicated));
        id
    }

    fn retire(&mut self, comm: &mut impl Comm, worker: WorkerId) {
        if let Some(w) = self.workers.get_mut(&worker) {
            if w.state != WorkerState::Stopping {
                w.state = WorkerState::Stopping;
                comm.stop_worker(worker);
            }
        }
    }

    fn make_ready(&mut self, id: TaskId) {
        if let Some(task) = self.tasks.get_mut(&id) {
            task.state = TaskState::Ready;
            self.ready.push_back(id);
        }
    }

    /// Hand ready tasks to workers: idle pool workers in block mode, fresh
    /// workers within the capacity otherwise. FIFO without backfill, so a big
    /// task is never starved by small ones behind it.
    fn schedule(&mut self, comm: &mut impl Comm) {
        while let Some(&id) = self.ready.front() {
            if !matches!(
                self.tasks.get(&id).map(|t| &t.state),
                Some(TaskState::Ready)
            ) {
                self.ready.pop_front();
                continue;
            }
            match self.allocation {
                Allocation::Block { .. } => {
                    let idle = self
                        .workers
                        .iter()
                        .find(|(_, w)| w.state == WorkerState::Idle && w.dedicated.is_none())
                        .map(|(id, _)| *id);
                    if let Some(worker) = idle {
                        self.ready.pop_front();
                        self.dispatch(comm, id, worker);
                    } else if let Some(worker) = self.ahead_slot(id) {
                        self.ready.pop_front();
                        self.send_run(comm, id, worker, true);
                    } else {
                        break;
                    }
                }
                Allocation::PerTask => {
                    let resources = match &self.tasks[&id].work {
                        Some(work) => work.resources.clone(),
                        None => unreachable!("a ready task has its work"),
                    };
                    if !self.capacity.fits(&resources) {
                        break;
                    }
                    self.ready.pop_front();
                    let gpus = self.capacity.take(&resources);
                    let worker = self.add_worker(comm, Launch { resources, gpus }, Some(id));
                    self.tasks.get_mut(&id).expect("ready task").state =
                        TaskState::Assigned { worker };
                }
            }
        }
        self.take_back_for_idle(comm);
        if self.shutting_down && !self.has_pending_work() {
            let idle: Vec<WorkerId> = self
                .workers
                .iter()
                .filter(|(_, w)| {
                    matches!(
                        w.state,
                        WorkerState::Idle | WorkerState::Starting | WorkerState::Initializing
                    )
                })
                .map(|(id, _)| *id)
                .collect();
            for worker in idle {
                self.retire(comm, worker);
            }
        }
    }

    /// Send a task to a worker that is ready for it.
    fn dispatch(&mut self, comm: &mut impl Comm, id: TaskId, worker: WorkerId) {
        self.send_run(comm, id, worker, false);
    }

    /// Send a task to a worker, to run now or, `ahead`, after its current one.
    fn send_run(&mut self, comm: &mut impl Comm, id: TaskId, worker: WorkerId, ahead: bool) {
        // What may go ahead may also have a task ahead behind it.
        let takes_next = !ahead && self.may_go_ahead(id);
        let task = self.tasks.get_mut(&id).expect("dispatched task exists");
        let work = task
            .work
            .take()
            .expect("a task is dispatched once at a time");
        // A task that may run again, or be taken back, keeps what it needs
        // to be sent again; one that may not lets go of its function and
        // its inputs now.
        let keep = task.restarts_left > 0 || ahead;
        let dependencies = if keep {
            task.resend = Some(work.clone());
            task.dependencies.clone()
        } else {
            self.functions.release(&work.digest);
            std::mem::take(&mut task.dependencies)
        };
        task.state = TaskState::Assigned { worker };
        let w = self
            .workers
            .get_mut(&worker)
            .expect("dispatch to a live worker");
        if ahead {
            w.next = Some(id);
        } else {
            w.state = WorkerState::Busy(id);
        }
        let function = w.slots.reference(work.digest);
        let mut frames = Vec::new();
        if let FunctionRef::Inline { .. } = function {
            frames.push(work.function);
        }
        let call_frames = work.call.frames.len() as u32;
        frames.extend(work.call.frames);
        let mut dependency_frames = Vec::with_capacity(dependencies.len());
        for dep in &dependencies {
            let TaskState::Finished(result) = &self.tasks[dep].state else {
                unreachable!("a task is ready only when its dependencies finished")
            };
            dependency_frames.push(result.frames.len() as u32);
            frames.extend(result.frames.iter().cloned());
        }
        if !ahead {
            w.takes_next = takes_next;
        }
        let place = w
            .place
            .clone()
            .expect("a worker that said hello has a place");
        comm.send(
            worker,
            ToWorker::Run {
                task: id,
                function,
                call_frames,
                dependency_frames,
                store: work.store.map(|target| *target),
                shared: Vec::new(),
                shared_results: false,
            },
            frames,
        );
        if !ahead {
            comm.emit(Event::Running { task: id, place });
        }
        if !keep {
            self.let_go_of_inputs(dependencies);
        }
    }

    /// A task no longer needs these dependencies' results.
    fn let_go_of_inputs(&mut self, dependencies: Vec<TaskId>) {
        for dep in dependencies {
            if let Some(d) = self.tasks.get_mut(&dep) {
                d.holds = d.holds.saturating_sub(1);
            }
            self.forget_if_unused(dep);
        }
    }

    /// The copy a task kept to be sent again, no longer needed: it ended.
    fn drop_resend(&mut self, id: TaskId) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        if let Some(work) = task.resend.take() {
            self.functions.release(&work.digest);
            let dependencies = std::mem::take(&mut task.dependencies);
            self.let_go_of_inputs(dependencies);
        }
    }

    /// Queue a task whose worker died again, first in line, if it has runs
    /// left; false when it has none (it fails with the loss).
    fn run_again(&mut self, comm: &mut impl Comm, id: TaskId, reason: &LostReason) -> bool {
        if self.broken.is_some() {
            return false;
        }
        let Some(task) = self.tasks.get_mut(&id) else {
            return false;
        };
        if task.restarts_left == 0 || task.is_terminal() {
            return false;
        }
        if task.work.is_none() {
            task.work = task.resend.take();
        }
        if task.work.is_none() {
            return false;
        }
        task.restarts_left -= 1;
        task.state = TaskState::Ready;
        let left = task.restarts_left;
        self.ready.push_front(id);
        let text = format!(
            "pmp: the worker running this task died ({}); running it again ({left} restart(s) \
             left)\n",
            reason.message
        );
        comm.emit(Event::Output {
            task: id,
            stream: Stream::Stderr,
            text: Bytes::from(text),
        });
        true
    }

    fn finish(&mut self, comm: &mut impl Comm, id: TaskId, result: Payload) {
        self.drop_resend(id);
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        task.state = TaskState::Finished(result.clone());
        let dependents = std::mem::take(&mut task.dependents);
        comm.emit(Event::Finished { task: id, result });
        for dependent in dependents {
            if let Some(TaskState::Waiting { missing }) =
                self.tasks.get_mut(&dependent).map(|t| &mut t.state)
            {
                *missing -= 1;
                if *missing == 0 {
                    self.make_ready(dependent);
                }
            }
        }
        self.forget_if_unused(id);
    }

    /// Fail a task and, transitively, everything waiting on it.
    fn fail(&mut self, comm: &mut impl Comm, id: TaskId, failure: Failure) {
        let mut stack = vec![(id, failure)];
        while let Some((id, failure)) = stack.pop() {
            let Some(task) = self.tasks.get_mut(&id) else {
                continue;
            };
            if task.is_terminal() {
                continue;
            }
            if let Some(work) = task.work.take() {
                self.functions.release(&work.digest);
            }
            if let Some(work) = task.resend.take() {
                self.functions.release(&work.digest);
            }
            let dependents = std::mem::take(&mut task.dependents);
            let dependencies = std::mem::take(&mut task.dependencies);
            task.state = TaskState::Failed(Box::new(failure.clone()));
            comm.emit(match &failure {
                Failure::Raised(error) => Event::Raised {
                    task: id,
                    error: error.clone(),
                },
                Failure::Lost(reason) => Event::Lost {
                    task: id,
                    reason: reason.clone(),
                },
                Failure::Cancelled { upstream } => Event::Cancelled {
                    task: id,
                    upstream: *upstream,
                },
            });
            // A failed task will never be sent: it no longer needs its inputs.
            self.let_go_of_inputs(dependencies);
            for dependent in dependents {
                stack.push((dependent, inherit(&failure, id)));
            }
            self.forget_if_unused(id);
        }
    }

    /// Stop everything: block allocation cannot run tasks any more.
    fn break_pool(&mut self, comm: &mut impl Comm, failure: Failure) {
        self.broken = Some(failure.clone());
        let pending: Vec<TaskId> = self.ready.drain(..).collect();
        for id in pending {
            self.fail(comm, id, failure.clone());
        }
        let waiting: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| matches!(t.state, TaskState::Waiting { .. }))
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            self.fail(comm, id, failure.clone());
        }
        let live: Vec<WorkerId> = self.workers.keys().copied().collect();
        for worker in live {
            self.retire(comm, worker);
        }
    }

    fn forget_if_unused(&mut self, id: TaskId) {
        if let Some(task) = self.tasks.get(&id) {
            if task.released && task.holds == 0 && task.is_terminal() {
                self.tasks.remove(&id);
            }
        }
    }
}

fn w_is_dedicated(workers: &BTreeMap<WorkerId, Worker>, worker: WorkerId) -> bool {
    workers.get(&worker).is_some_and(|w| w.dedicated.is_some())
}

#[cfg(test)]
mod tests;
