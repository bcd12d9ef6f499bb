//! The task graph: a task becomes ready when its dependencies finished, its
//! outcome reaches its dependents (a failure transitively), and a result is
//! kept while a dependent still needs it or the client holds its Future.

use super::events::{Comm, Event, LostReason};
use super::tasks::{inherit, Failure, TaskState};
use super::workers::WorkerState;
use super::Core;
use crate::ids::{TaskId, WorkerId};
use crate::protocol::{Payload, Stream};
use bytes::Bytes;

impl Core {
    pub(super) fn make_ready(&mut self, id: TaskId) {
        if let Some(task) = self.tasks.get_mut(&id) {
            task.state = TaskState::Ready;
            self.ready.push_back(id);
        }
    }

    /// A task no longer needs these dependencies' results.
    pub(super) fn let_go_of_inputs(&mut self, dependencies: Vec<TaskId>) {
        for dep in dependencies {
            if let Some(d) = self.tasks.get_mut(&dep) {
                d.holds = d.holds.saturating_sub(1);
            }
            self.forget_if_unused(dep);
        }
    }

    /// The copy a task kept to be sent again, no longer needed: it ended.
    pub(super) fn drop_resend(&mut self, id: TaskId) {
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
    pub(super) fn run_again(
        &mut self,
        comm: &mut impl Comm,
        id: TaskId,
        reason: &LostReason,
    ) -> bool {
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

    pub(super) fn finish(&mut self, comm: &mut impl Comm, id: TaskId, result: Payload) {
        self.drop_resend(id);
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        if !task.is_terminal() {
            self.unfinished -= 1;
        }
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
    pub(super) fn fail(&mut self, comm: &mut impl Comm, id: TaskId, failure: Failure) {
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
            self.unfinished -= 1;
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
    pub(super) fn break_pool(&mut self, comm: &mut impl Comm, failure: Failure) {
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
        // What the pool's workers run fails too: a worker retired while
        // busy is Stopping from now on, and its exit would no longer say
        // which task it held.
        let running: Vec<TaskId> = self
            .workers
            .values()
            .filter_map(|w| match w.state {
                WorkerState::Busy(task) => Some(task),
                _ => None,
            })
            .collect();
        for id in running {
            self.fail(comm, id, failure.clone());
        }
        let live: Vec<WorkerId> = self.workers.keys().copied().collect();
        for worker in live {
            self.retire(comm, worker);
        }
    }

    pub(super) fn forget_if_unused(&mut self, id: TaskId) {
        if let Some(task) = self.tasks.get(&id) {
            if task.released && task.holds == 0 && task.is_terminal() {
                self.tasks.remove(&id);
            }
        }
    }
}
