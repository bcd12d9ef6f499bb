//! Placement: which worker runs which ready task (the one scheduling pass
//! of a batch of events), what a task's `Run` carries, and the pool's size.

use super::events::{Comm, Event};
use super::tasks::{Failure, TaskState};
use super::workers::{Launch, Worker, WorkerState};
use super::{Allocation, Core};
use crate::core::LostReason;
use crate::ids::{TaskId, WorkerId};
use crate::protocol::{FunctionRef, ToWorker};

impl Core {
    /// Hand ready tasks to workers: idle pool workers in block mode, fresh
    /// workers within the capacity otherwise, each on one node that has room
    /// for all of it (or, one larger than any node, across nodes). FIFO
    /// without backfill, so a big task is never starved by small ones
    /// behind it: it waits for a node with room, never split.
    pub(super) fn schedule(&mut self, comm: &mut impl Comm) {
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
                    if let Some(worker) = self.idle_worker_for(id) {
                        self.ready.pop_front();
                        self.dispatch(comm, id, worker);
                    } else if let Some(worker) = self
                        .ahead_slot(id)
                        .filter(|&worker| self.worker_may_take(worker, id))
                    {
                        self.ready.pop_front();
                        self.send_run(comm, id, worker, true);
                    } else {
                        break;
                    }
                }
                Allocation::PerTask => {
                    let (resources, run_time_max) = match &self.tasks[&id].work {
                        Some(work) => (work.resources.clone(), work.run_time_max),
                        None => unreachable!("a ready task has its work"),
                    };
                    let Some(mut placement) = self
                        .capacity
                        .place_where(&resources, |node| self.node_may_take(node, run_time_max))
                    else {
                        // A node's memory said after the call was queued
                        // (its agent's Hello) may show that it never runs.
                        if let Some(why) = self.capacity.memory_never_fits(&resources) {
                            self.ready.pop_front();
                            let why = format!("this task can never run here: {why}");
                            self.fail(comm, id, Failure::Lost(LostReason::new(why)));
                            continue;
                        }
                        break;
                    };
                    self.ready.pop_front();
                    let gpus = self.capacity.take(&mut placement, &resources);
                    let launch = Launch {
                        resources,
                        placement,
                        gpus,
                    };
                    let worker = self.add_worker(comm, launch, Some(id));
                    self.tasks.get_mut(&id).expect("ready task").state =
                        TaskState::Assigned { worker };
                }
            }
        }
        self.take_back_for_idle(comm);
        self.allocations_after_placement(comm);
        if self.shutting_down && !self.has_pending_work() {
            // Every worker is looked at once; each pass after that (one an
            // exit, as the pool stops) takes only the idle set, or stopping
            // a pool of 128,000 would look at every worker 128,000 times.
            let idle: Vec<WorkerId> = if std::mem::replace(&mut self.stopped_the_rest, true) {
                self.workers.idle().collect()
            } else {
                self.workers
                    .iter()
                    .filter(|(_, w)| {
                        matches!(
                            w.state,
                            WorkerState::Idle | WorkerState::Starting | WorkerState::Initializing
                        )
                    })
                    .map(|(id, _)| *id)
                    .collect()
            };
            for worker in idle {
                self.retire(comm, worker);
            }
        }
    }

    /// Send a task to a worker that is ready for it.
    pub(super) fn dispatch(&mut self, comm: &mut impl Comm, id: TaskId, worker: WorkerId) {
        self.send_run(comm, id, worker, false);
    }

    /// Send a task to a worker, to run now or, `ahead`, after its current one.
    pub(super) fn send_run(
        &mut self,
        comm: &mut impl Comm,
        id: TaskId,
        worker: WorkerId,
        ahead: bool,
    ) {
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
        let (function, place) = self
            .workers
            .update(worker, |w| {
                if ahead {
                    w.next = Some(id);
                } else {
                    w.state = WorkerState::Busy(id);
                    w.takes_next = takes_next;
                }
                let place = w
                    .place
                    .clone()
                    .expect("a worker that said hello has a place");
                (w.slots.reference(work.digest), place)
            })
            .expect("dispatch to a live worker");
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

    /// Start or stop pool workers until as many run (or start) as the pool's size.
    pub(super) fn balance_pool(&mut self, comm: &mut impl Comm) {
        let Allocation::Block { workers: size, .. } = self.allocation else {
            return;
        };
        if self.shutting_down || self.broken.is_some() {
            return;
        }
        // Counted, not listed: this runs after every task.
        let live = self.workers.members() as u32;
        if live < size {
            for _ in live..size {
                self.spawn_pool_worker(comm);
            }
            return;
        }
        if live == size {
            return;
        }
        let members: Vec<(WorkerId, bool)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.dedicated.is_none() && w.state != WorkerState::Stopping)
            .map(|(id, w)| (*id, matches!(w.state, WorkerState::Busy(_))))
            .collect();
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

    pub(super) fn spawn_pool_worker(&mut self, comm: &mut impl Comm) {
        let Allocation::Block { resources, .. } = &self.allocation else {
            return;
        };
        let resources = resources.clone();
        let launch = if self.capacity.nodes_join() {
            // Until a node with room joins, the worker waits (`add_node`).
            let Some(launch) = self.joined_node_launch(resources) else {
                return;
            };
            launch
        } else {
            if let Some(why) = self.capacity.memory_never_fits(&resources) {
                // No worker of the pool could ever start: its calls
                // would wait forever.
                let why = format!("the pool's workers can never start: {why}");
                self.break_pool(comm, Failure::Lost(LostReason::new(why)));
                return;
            }
            if !self.capacity.pool_memory_free(&resources) {
                // The nodes' memory holds no more of them: the pool runs
                // with those that fit.
                return;
            }
            let (placement, gpus) = self.capacity.take_for_pool(&resources);
            Launch {
                resources,
                placement,
                gpus,
            }
        };
        self.add_worker(comm, launch, None);
    }

    pub(super) fn add_worker(
        &mut self,
        comm: &mut impl Comm,
        launch: Launch,
        dedicated: Option<TaskId>,
    ) -> WorkerId {
        let id = WorkerId(self.next_worker);
        self.next_worker += 1;
        if dedicated.is_some() {
            self.call_started_at(&launch.placement);
        }
        comm.start_worker(id, &launch);
        self.workers.insert(id, Worker::new(launch, dedicated));
        id
    }

    pub(super) fn retire(&mut self, comm: &mut impl Comm, worker: WorkerId) {
        let stops = self.workers.update(worker, |w| {
            let stops = w.state != WorkerState::Stopping;
            w.state = WorkerState::Stopping;
            stops
        });
        if stops == Some(true) {
            comm.stop_worker(worker);
        }
    }
}
