//! The reactor: every client command, worker message and process exit is
//! one method here that updates the state, tells `Comm` what to do at once,
//! and asks for a scheduling pass where it changed what could run where.
//! Answers from a worker about a task sent ahead are in `ahead`.

use super::events::{Comm, Event, LostReason, SubmitError};
use super::tasks::{inherit, Failure, Task, TaskSpec, TaskState, Work};
use super::workers::{Retract, WorkerState, Workers};
use super::{Allocation, Core};
use crate::capacity::Placement;
use crate::capacity::WHOLE_ALLOCATION;
use crate::ids::{NodeId, TaskId, WorkerId};
use crate::protocol::{Outcome, Payload, Stream, ToWorker, WorkerPlace};
use bytes::Bytes;

/// Block allocation gives up after this many workers in a row die before
/// becoming ready (a broken init function or environment would loop forever).
const MAX_FAILED_STARTS: u32 = 3;

impl Core {
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
        match &self.allocation {
            Allocation::PerTask if self.elastic.is_some() => {
                if let Some(error) =
                    self.never_fits_an_allocation(&spec.resources, spec.run_time_max)
                {
                    return Err(error);
                }
            }
            Allocation::PerTask => {
                if let Some(why) = self.capacity.never_fits(&spec.resources) {
                    return Err(SubmitError::NeverFits(why));
                }
            }
            // Honoured or refused, never ignored. The client asks the same
            // rule first (`plan::Plan::refuse`), so that it names the user's key.
            Allocation::Block { resources, .. }
                if resources.first_difference(&spec.resources).is_some() =>
            {
                return Err(SubmitError::NotThePools(Box::new(resources.clone())));
            }
            Allocation::Block { .. } if self.elastic.is_some() => {
                if let Some(error) =
                    self.never_fits_an_allocation(&spec.resources, spec.run_time_max)
                {
                    return Err(error);
                }
            }
            Allocation::Block { .. } => {}
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
                run_time_max: spec.run_time_max,
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
        self.unfinished += 1;
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
        self.unfinished += 1;
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

    pub fn worker_hello(&mut self, comm: &mut impl Comm, worker: WorkerId, pid: u32, host: String) {
        /// What a worker that said hello does first.
        enum First {
            Init,
            Ready(Option<TaskId>),
        }
        let capacity = &self.capacity;
        let init = self.init.is_some();
        let first = self.workers.update(worker, |w| {
            if w.state != WorkerState::Starting {
                return None;
            }
            // Where the scheduler placed it, named as the allocation names
            // its nodes (the test Slurm's nodes all share one host name);
            // the host it reports where the node is the whole allocation.
            let host = match &w.launch.placement {
                Placement::Node(node) if capacity.node_name(*node) != WHOLE_ALLOCATION => {
                    capacity.node_name(*node).to_string()
                }
                // Its ranks' nodes ("node1+node2"), as exe.info says them.
                Placement::Span(_) => capacity.placement_name(&w.launch.placement),
                _ => host,
            };
            w.place = Some(WorkerPlace { worker, pid, host });
            Some(match (init, w.dedicated) {
                (true, None) => {
                    w.state = WorkerState::Initializing;
                    First::Init
                }
                (_, dedicated) => {
                    w.state = WorkerState::Idle;
                    First::Ready(dedicated)
                }
            })
        });
        match first.flatten() {
            None => return,
            Some(First::Init) => {
                let frames = self.init.as_ref().expect("checked").frames.clone();
                comm.send(worker, ToWorker::Init, frames);
            }
            Some(First::Ready(dedicated)) => {
                self.failed_starts = 0;
                if let Some(task) = dedicated {
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
        let initializing = self
            .workers
            .get(&worker)
            .is_some_and(|w| w.state == WorkerState::Initializing);
        if !initializing {
            return;
        }
        match outcome {
            Outcome::Returned => {
                self.workers.update(worker, |w| w.state = WorkerState::Idle);
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
        let ended = self.workers.update(worker, |w| {
            let ended = w.state == WorkerState::Busy(task);
            if ended {
                w.state = WorkerState::Idle;
            }
            ended
        });
        if ended != Some(true) {
            return;
        }
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
        let skipped = self.workers.update(worker, |w| {
            if w.state != WorkerState::Busy(task) {
                return false;
            }
            w.state = WorkerState::Idle;
            // The worker did not load the task's function either: forget
            // what its slots hold, so the next task sends its function again.
            w.slots = Default::default();
            true
        });
        if skipped != Some(true) {
            return;
        }
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

    /// The worker's process exited, or it stopped answering.
    pub fn worker_lost(&mut self, comm: &mut impl Comm, worker: WorkerId, reason: LostReason) {
        let Some(w) = self.workers.remove(&worker) else {
            return;
        };
        // A worker that could not start because its node went is no sign
        // that workers fail to start (its node's loss is reported already).
        let node_lost = match &w.launch.placement {
            Placement::Node(node) => self.capacity.is_lost(*node),
            Placement::Span(_) => false,
        };
        if w.dedicated.is_some() {
            self.call_ended_at(&w.launch.placement);
        }
        // Where nodes join, a pool worker held its CPUs too (`joining`).
        let held_cpus = w.dedicated.is_some() || self.capacity.nodes_join();
        if held_cpus {
            self.capacity
                .give_back(w.launch.placement, &w.launch.resources, w.launch.gpus);
        } else {
            self.capacity.give_back_from_pool(
                w.launch.placement,
                &w.launch.resources,
                w.launch.gpus,
            );
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
                } else if !self.shutting_down && !node_lost {
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

    /// `node`'s agent is gone (the server reports each of its workers lost
    /// on its own): nothing more is placed there, and a queued task that no
    /// node left can hold fails now rather than waiting forever.
    pub fn node_lost(&mut self, comm: &mut impl Comm, node: NodeId, name: &str, why: &str) {
        self.capacity.lose(node);
        if self.capacity.nodes_join() {
            // Another node may still join: the server says when none can
            // (`nodes_gone`).
            self.ask_for_scheduling();
            return;
        }
        let stranded: Vec<TaskId> =
            self.ready
                .iter()
                .copied()
                .filter(|id| {
                    self.tasks.get(id).is_some_and(|task| {
                        matches!(task.state, TaskState::Ready)
                            && task.work.as_ref().is_some_and(|work| {
                                self.capacity.never_fits(&work.resources).is_some()
                            })
                    })
                })
                .collect();
        for task in stranded {
            let reason = LostReason::new(format!(
                "no node left can run it: node {name} was lost: {why}"
            ));
            self.fail(comm, task, Failure::Lost(reason));
        }
        self.ask_for_scheduling();
    }

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
}

fn w_is_dedicated(workers: &Workers, worker: WorkerId) -> bool {
    workers.get(&worker).is_some_and(|w| w.dedicated.is_some())
}
