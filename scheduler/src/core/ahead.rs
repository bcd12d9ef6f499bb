//! Tasks sent ahead: with `QueueAhead` set, a pool worker busy with one task
//! is sent the next as well, so that it starts it the moment the first ends
//! instead of a round trip later (for short tasks, that round trip is most
//! of the time a worker spends per task).
//!
//! A task sent ahead is not running: it reports Running only once the
//! worker's previous task is done, and it can be taken back (`Retract`)
//! when another worker falls idle, or cancelled. The worker answers
//! `Retracted` if it had not started it, else `Kept`; until then the core
//! does not know which, so Running waits for that answer too.

use super::tasks::TaskState;
use super::workers::{Retract, WorkerState};
use super::{Allocation, Comm, Core, Event, Failure};
use crate::ids::{TaskId, WorkerId};
use crate::protocol::ToWorker;

/// How tasks are sent ahead, as the server configures it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueAhead {
    /// The size from which the server sends a frame through shared memory:
    /// a task with such a frame is not sent ahead (see `may_go_ahead`).
    pub shared_from: usize,
}

impl Core {
    /// A busy pool worker `id` may be sent ahead to, if any (and if `id` may be).
    pub(super) fn ahead_slot(&self, id: TaskId) -> Option<WorkerId> {
        if self.queue_ahead.is_none() || self.pool_oversized() {
            return None;
        }
        let worker = self.workers.first_open()?;
        self.may_go_ahead(id).then_some(worker)
    }

    /// Only a task with no store and no frame large enough for shared
    /// memory is sent ahead, or has one sent ahead behind it (see
    /// `Worker::takes_next`). Asked before the task is sent.
    pub(super) fn may_go_ahead(&self, id: TaskId) -> bool {
        let Some(QueueAhead { shared_from }) = self.queue_ahead else {
            return false;
        };
        let Some(work) = self.tasks.get(&id).and_then(|t| t.work.as_deref()) else {
            return false;
        };
        let small = |frames: &[bytes::Bytes]| frames.iter().all(|f| f.len() < shared_from);
        work.store.is_none()
            && work.function.len() < shared_from
            && small(&work.call.frames)
            && self.tasks[&id].dependencies.iter().all(|dep| {
                matches!(&self.tasks[dep].state, TaskState::Finished(result) if small(&result.frames))
            })
    }

    /// Whether the pool has more workers than its size: a worker that is
    /// to stop once its task ends is sent nothing ahead.
    fn pool_oversized(&self) -> bool {
        let Allocation::Block { workers: size, .. } = self.allocation else {
            return false;
        };
        self.workers.members() > size as usize
    }

    /// The worker's task ended: the one sent ahead is running now, unless a
    /// Retract is out for it (its answer says).
    pub(super) fn promote_next(&mut self, comm: &mut impl Comm, worker: WorkerId) {
        let promoted = self.workers.update(worker, |w| {
            let next = w.next.take()?;
            w.state = WorkerState::Busy(next);
            w.takes_next = true; // only such tasks are sent ahead
            Some((next, w.retract.is_some_and(|(task, _)| task == next)))
        });
        let Some(Some((next, retracting))) = promoted else {
            return;
        };
        if retracting {
            return;
        }
        self.started(comm, worker, next);
    }

    /// `task` is known to run on `worker`: tell the client, and let go of
    /// what was kept to take it back (unless it may run again anyway).
    pub(super) fn started(&mut self, comm: &mut impl Comm, worker: WorkerId, task: TaskId) {
        let Some(place) = self.workers.get(&worker).and_then(|w| w.place.clone()) else {
            return;
        };
        comm.emit(Event::Running { task, place });
        if self.tasks.get(&task).is_some_and(|t| t.restarts_left == 0) {
            self.drop_resend(task);
        }
    }

    /// The worker ended `task` before it heard the Retract sent for it: it
    /// ran here. Returns whether Running is still to be told.
    pub(super) fn settle_retract(
        &mut self,
        comm: &mut impl Comm,
        worker: WorkerId,
        task: TaskId,
    ) -> bool {
        let settled = self.workers.update(worker, |w| match w.retract {
            Some((retracted, why)) if retracted == task => {
                w.retract = None;
                Some(why)
            }
            _ => None,
        });
        match settled.flatten() {
            Some(why) => {
                if why == Retract::Cancel {
                    comm.cancel_answered(task, false);
                }
                true
            }
            None => false,
        }
    }

    /// Ask for a task sent ahead back, for `why`; false when no worker holds
    /// it ahead (it is running, or was never sent ahead).
    pub(super) fn retract(&mut self, comm: &mut impl Comm, task: TaskId, why: Retract) -> bool {
        let Some(TaskState::Assigned { worker }) = self.tasks.get(&task).map(|t| &t.state) else {
            return false;
        };
        let worker = *worker;
        /// What asking for `task` back comes to.
        enum Asked {
            NotHeld,
            Already,
            Now,
        }
        let asked = self.workers.update(worker, |w| {
            let holds =
                w.next == Some(task) || w.retract.is_some_and(|(retracted, _)| retracted == task);
            if !holds {
                return Asked::NotHeld;
            }
            match &mut w.retract {
                Some((retracted, reason)) if *retracted == task => {
                    if why == Retract::Cancel {
                        *reason = Retract::Cancel;
                    }
                    Asked::Already
                }
                Some(_) => Asked::NotHeld, // one Retract at a time; only `next` is ever asked
                None => {
                    w.retract = Some((task, why));
                    Asked::Now
                }
            }
        });
        match asked {
            None | Some(Asked::NotHeld) => false,
            Some(Asked::Already) => true,
            Some(Asked::Now) => {
                comm.send(worker, ToWorker::Retract { task }, Vec::new());
                true
            }
        }
    }

    /// Idle pool workers while others hold tasks ahead: take those back, one
    /// per idle worker, so they run now.
    pub(super) fn take_back_for_idle(&mut self, comm: &mut impl Comm) {
        if self.queue_ahead.is_none() || !matches!(self.allocation, Allocation::Block { .. }) {
            return;
        }
        let idle = self.workers.idle_count();
        if idle == 0 {
            return;
        }
        let asked = self.workers.rebalancing();
        let held: Vec<TaskId> = self
            .workers
            .held_ahead()
            .take(idle.saturating_sub(asked))
            .collect();
        for task in held {
            self.retract(comm, task, Retract::Rebalance);
        }
    }

    /// The worker gave `task` back without running it.
    pub fn task_retracted(&mut self, comm: &mut impl Comm, worker: WorkerId, task: TaskId) {
        let given_back = self.workers.update(worker, |w| {
            let (_, why) = w.retract.filter(|(retracted, _)| *retracted == task)?;
            w.retract = None;
            if w.next == Some(task) {
                w.next = None;
            } else if w.state == WorkerState::Busy(task) {
                w.state = WorkerState::Idle;
            } else {
                return None;
            }
            // Its Run may have put its function in a slot the worker never
            // filled: forget what the slots hold, so functions are sent again.
            w.slots = Default::default();
            Some(why)
        });
        let Some(Some(why)) = given_back else {
            return;
        };
        self.take_back(comm, task, why);
        self.balance_pool(comm);
        self.ask_for_scheduling();
    }

    /// The worker had started `task` when the Retract for it arrived.
    pub fn task_kept(&mut self, comm: &mut impl Comm, worker: WorkerId, task: TaskId) {
        if !self.settle_retract(comm, worker, task) {
            return;
        }
        let running_here = self
            .workers
            .get(&worker)
            .is_some_and(|w| w.state == WorkerState::Busy(task));
        if running_here {
            self.started(comm, worker, task);
        }
        // Still `next` here: its Running is told when the task before it ends.
        self.ask_for_scheduling();
    }

    /// A task sent ahead is back in the core's hands, never run: first in
    /// line again, or cancelled.
    fn take_back(&mut self, comm: &mut impl Comm, task: TaskId, why: Retract) {
        let Some(t) = self.tasks.get_mut(&task) else {
            return;
        };
        if t.work.is_none() {
            t.work = t.resend.take();
        }
        match why {
            Retract::Rebalance => {
                t.state = TaskState::Ready;
                self.ready.push_front(task);
            }
            Retract::Cancel => {
                self.fail(comm, task, Failure::Cancelled { upstream: None });
                comm.cancel_answered(task, true);
            }
        }
    }

    /// The worker died holding `next` ahead (and maybe a Retract for its
    /// current task): those go back, `next` without using a restart, since
    /// it never ran. Returns whether the current task is dealt with (it was
    /// being cancelled).
    pub(super) fn lost_ahead(
        &mut self,
        comm: &mut impl Comm,
        state: WorkerState,
        next: Option<TaskId>,
        retract: Option<(TaskId, Retract)>,
    ) -> bool {
        let why_for = |task| match retract {
            Some((retracted, Retract::Cancel)) if retracted == task => Retract::Cancel,
            _ => Retract::Rebalance,
        };
        if let Some(next) = next {
            self.take_back(comm, next, why_for(next));
        }
        match state {
            WorkerState::Busy(task) if why_for(task) == Retract::Cancel => {
                self.fail(comm, task, Failure::Cancelled { upstream: None });
                comm.cancel_answered(task, true);
                true
            }
            _ => false,
        }
    }
}
