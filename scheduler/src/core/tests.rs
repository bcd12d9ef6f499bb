//! The core driven through a recording Comm: each test reads as a story of
//! what the scheduler would send, start and report.

use super::*;
use crate::capacity::{Capacity, Node};
use crate::protocol::StoreTarget;
use crate::protocol::{FunctionRef, Outcome, Stream, ToWorker};
use crate::resources::Gpus;
use bytes::Bytes;

/// The frame size from which the tests' queue-ahead counts a frame as one
/// for shared memory: smaller than the server's, which the core never sees.
const SHARED_FROM: usize = 4 << 10;

mod ahead;
mod driven;
mod elastic;
mod elastic_pool;
mod joining;
mod nodes;
mod scale;

use driven::Driven;

#[derive(Default)]
pub(super) struct Recorder {
    started: Vec<(WorkerId, Launch)>,
    sent: Vec<(WorkerId, ToWorker, Vec<Bytes>)>,
    stopped: Vec<WorkerId>,
    events: Vec<Event>,
    cancel_answers: Vec<(TaskId, bool)>,
    allocations_submitted: Vec<allocations::AllocationId>,
    allocations_released: Vec<(allocations::AllocationId, Option<String>)>,
}

impl Comm for Recorder {
    fn start_worker(&mut self, worker: WorkerId, launch: &Launch) {
        self.started.push((worker, launch.clone()));
    }
    fn send(&mut self, worker: WorkerId, message: ToWorker, frames: Vec<Bytes>) {
        self.sent.push((worker, message, frames));
    }
    fn stop_worker(&mut self, worker: WorkerId) {
        self.stopped.push(worker);
    }
    fn emit(&mut self, event: Event) {
        self.events.push(event);
    }
    fn cancel_answered(&mut self, task: TaskId, cancelled: bool) {
        self.cancel_answers.push((task, cancelled));
    }
    fn submit_allocation(&mut self, allocation: allocations::AllocationId) {
        self.allocations_submitted.push(allocation);
    }
    fn release_allocation(&mut self, allocation: allocations::AllocationId, job: Option<&str>) {
        self.allocations_released
            .push((allocation, job.map(String::from)));
    }
}

impl Recorder {
    fn runs(&self) -> Vec<(WorkerId, TaskId)> {
        self.sent
            .iter()
            .filter_map(|(w, m, _)| match m {
                ToWorker::Run { task, .. } => Some((*w, *task)),
                _ => None,
            })
            .collect()
    }
    fn last_run_frames(&self) -> (ToWorker, Vec<Bytes>) {
        let (_, m, f) = self
            .sent
            .iter()
            .rev()
            .find(|(_, m, _)| matches!(m, ToWorker::Run { .. }))
            .expect("a Run was sent");
        (m.clone(), f.clone())
    }
    /// Whether the last Run carried its function's pickle (not a slot).
    fn last_run_inlines_its_function(&self) -> bool {
        matches!(
            self.last_run_frames().0,
            ToWorker::Run {
                function: FunctionRef::Inline { .. },
                ..
            }
        )
    }
    fn finished(&self) -> Vec<TaskId> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Finished { task, .. } => Some(*task),
                _ => None,
            })
            .collect()
    }
}

/// The tasks lost, with why.
fn lost(comm: &Recorder) -> Vec<(TaskId, String)> {
    comm.events
        .iter()
        .filter_map(|e| match e {
            Event::Lost { task, reason } => Some((*task, reason.message.clone())),
            _ => None,
        })
        .collect()
}

fn payload(text: &'static str) -> Payload {
    Payload::new(vec![Bytes::from_static(text.as_bytes())])
}

fn task(id: u64, deps: &[u64]) -> TaskSpec {
    TaskSpec {
        id: TaskId(id),
        function: Bytes::from_static(b"fn"),
        call: payload("args"),
        dependencies: deps.iter().map(|d| TaskId(*d)).collect(),
        resources: ResourceRequest::default(),
        store: None,
        restart_limit: 0,
        run_time_max: None,
    }
}

fn block(workers: u32) -> (Driven, Recorder) {
    let mut core = Driven(Core::new(
        Allocation::Block {
            workers,
            resources: ResourceRequest::default(),
        },
        Capacity::new(workers, None, Gpus::Counted(0)),
        None,
    ));
    let mut comm = Recorder::default();
    core.start(&mut comm);
    for w in 0..workers {
        core.worker_hello(&mut comm, WorkerId(w), 100 + w, "host".into());
    }
    (core, comm)
}

fn per_task(cpus: u32) -> (Driven, Recorder) {
    let core = Driven(Core::new(
        Allocation::PerTask,
        Capacity::new(cpus, None, Gpus::Counted(0)),
        None,
    ));
    (core, Recorder::default())
}

fn done(core: &mut Driven, comm: &mut Recorder, worker: u32, task: u64, result: &'static str) {
    core.task_done(
        comm,
        WorkerId(worker),
        TaskId(task),
        Outcome::Returned,
        payload(result),
    );
}

#[test]
fn a_block_allocated_pool_refuses_a_task_asking_for_other_resources() {
    let (mut core, mut comm) = block(1);
    let mut more = task(1, &[]);
    more.resources.cores = 2;
    let refused = core.submit(&mut comm, more);
    assert!(
        matches!(&refused, Err(SubmitError::NotThePools(pool)) if pool.cores == 1),
        "{refused:?}"
    );
    assert!(comm.runs().is_empty(), "never run as if it had them");
    core.submit(&mut comm, task(2, &[])).unwrap();
    assert_eq!(comm.runs(), vec![(WorkerId(0), TaskId(2))]);
}

#[test]
fn block_allocation_runs_tasks_in_order_on_idle_workers() {
    let (mut core, mut comm) = block(2);
    for id in 1..=3 {
        core.submit(&mut comm, task(id, &[])).unwrap();
    }
    assert_eq!(
        comm.runs(),
        vec![(WorkerId(0), TaskId(1)), (WorkerId(1), TaskId(2))]
    );
    done(&mut core, &mut comm, 1, 2, "r2");
    assert_eq!(comm.runs().last(), Some(&(WorkerId(1), TaskId(3))));
    assert_eq!(comm.finished(), vec![TaskId(2)]);
}

#[test]
fn a_function_is_sent_once_per_worker_then_named_by_slot() {
    let (mut core, mut comm) = block(1);
    core.submit(&mut comm, task(1, &[])).unwrap();
    let (first, frames) = comm.last_run_frames();
    assert!(matches!(
        first,
        ToWorker::Run {
            function: FunctionRef::Inline { slot: 0 },
            ..
        }
    ));
    assert_eq!(frames.len(), 2, "function + call");
    done(&mut core, &mut comm, 0, 1, "r");
    core.submit(&mut comm, task(2, &[])).unwrap();
    let (second, frames) = comm.last_run_frames();
    assert!(matches!(
        second,
        ToWorker::Run {
            function: FunctionRef::Cached { slot: 0 },
            ..
        }
    ));
    assert_eq!(frames.len(), 1, "call only");
}

#[test]
fn a_dependent_waits_and_receives_its_dependency_result_as_frames() {
    let (mut core, mut comm) = block(2);
    core.submit(&mut comm, task(1, &[])).unwrap();
    core.submit(&mut comm, task(2, &[1])).unwrap();
    assert_eq!(comm.runs(), vec![(WorkerId(0), TaskId(1))], "2 waits for 1");
    done(&mut core, &mut comm, 0, 1, "three");
    let (run, frames) = comm.last_run_frames();
    assert!(
        matches!(run, ToWorker::Run { task: TaskId(2), ref dependency_frames, .. } if dependency_frames == &vec![1])
    );
    assert_eq!(frames.last().unwrap(), &Bytes::from_static(b"three"));
}

#[test]
fn upstream_exception_and_cancellation_reach_every_dependent() {
    let (mut core, mut comm) = block(1);
    core.submit(&mut comm, task(1, &[])).unwrap();
    core.submit(&mut comm, task(2, &[1])).unwrap();
    core.submit(&mut comm, task(3, &[2])).unwrap();
    core.task_done(
        &mut comm,
        WorkerId(0),
        TaskId(1),
        Outcome::Raised,
        payload("boom"),
    );
    let raised: Vec<_> = comm
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Raised { task, error } => Some((task.0, error.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        raised,
        vec![
            (1, payload("boom")),
            (2, payload("boom")),
            (3, payload("boom"))
        ]
    );
    // Submitting on an already-failed task fails at once.
    core.submit(&mut comm, task(4, &[1])).unwrap();
    assert!(matches!(
        comm.events.last(),
        Some(Event::Raised {
            task: TaskId(4),
            ..
        })
    ));

    core.submit(&mut comm, task(10, &[])).unwrap(); // runs
    core.submit(&mut comm, task(11, &[])).unwrap(); // queued
    core.submit(&mut comm, task(12, &[11])).unwrap();
    assert_eq!(core.cancel(&mut comm, TaskId(11)), Some(true));
    assert!(comm.events.contains(&Event::Cancelled {
        task: TaskId(12),
        upstream: Some(TaskId(11))
    }));
    assert_eq!(
        core.cancel(&mut comm, TaskId(10)),
        Some(false),
        "a running task cannot be cancelled"
    );
}

#[test]
fn a_dead_worker_fails_only_its_task_which_is_not_rerun() {
    let (mut core, mut comm) = block(2);
    for id in 1..=3 {
        core.submit(&mut comm, task(id, &[])).unwrap();
    }
    let mut reason = LostReason::new("killed by signal 11 (SIGSEGV)");
    reason.signal = Some(11);
    core.worker_lost(&mut comm, WorkerId(0), reason.clone());
    assert!(comm.events.contains(&Event::Lost {
        task: TaskId(1),
        reason
    }));
    assert_eq!(comm.started.len(), 3, "a replacement worker is started");
    core.worker_hello(&mut comm, WorkerId(2), 7, "host".into());
    let runs = comm.runs();
    assert_eq!(runs.iter().filter(|(_, t)| *t == TaskId(1)).count(), 1);
    assert_eq!(runs.last(), Some(&(WorkerId(2), TaskId(3))));
}

#[test]
fn per_task_mode_starts_a_fresh_worker_per_task_within_the_cpus() {
    let (mut core, mut comm) = per_task(2);
    for id in 1..=3 {
        core.submit(&mut comm, task(id, &[])).unwrap();
    }
    assert_eq!(comm.started.len(), 2, "two cpus, two workers");
    core.worker_hello(&mut comm, WorkerId(0), 1, "h".into());
    assert_eq!(comm.runs(), vec![(WorkerId(0), TaskId(1))]);
    done(&mut core, &mut comm, 0, 1, "r");
    assert_eq!(
        comm.stopped,
        vec![WorkerId(0)],
        "a per-task worker is stopped after its task"
    );
    assert_eq!(comm.started.len(), 2, "its cpu is free only once it exited");
    core.worker_lost(
        &mut comm,
        WorkerId(0),
        LostReason::new("exited with exit code 0"),
    );
    assert_eq!(comm.started.len(), 3);
    assert_eq!(
        comm.finished(),
        vec![TaskId(1)],
        "a normal exit fails nothing"
    );
}

#[test]
fn per_task_gpu_tasks_run_side_by_side_up_to_the_allocations_gpus() {
    // Under srun or flux pmp counts GPUs, it does not name them.
    let mut core = Driven(Core::new(
        Allocation::PerTask,
        Capacity::new(4, None, Gpus::Counted(2)),
        None,
    ));
    let mut comm = Recorder::default();
    let gpu_task = |id| TaskSpec {
        resources: ResourceRequest {
            gpus_per_core: 1,
            ..Default::default()
        },
        ..task(id, &[])
    };
    for id in 1..=3 {
        core.submit(&mut comm, gpu_task(id)).unwrap();
    }
    assert_eq!(comm.started.len(), 2, "two GPUs, two workers at once");
    assert!(comm.started.iter().all(|(_, l)| l.gpus == Gpus::Counted(1)));
    core.worker_hello(&mut comm, WorkerId(0), 1, "h".into());
    done(&mut core, &mut comm, 0, 1, "r");
    core.worker_lost(&mut comm, WorkerId(0), LostReason::new("exit 0"));
    assert_eq!(
        comm.started.len(),
        3,
        "the freed GPU goes to the third task"
    );
}

#[test]
fn a_per_task_request_larger_than_the_allocation_is_refused_not_queued() {
    let (mut core, mut comm) = per_task(2);
    let too_big = |id, cores, gpus_per_core| TaskSpec {
        resources: ResourceRequest {
            cores,
            gpus_per_core,
            ..Default::default()
        },
        ..task(id, &[])
    };
    let refused = core.submit(&mut comm, too_big(1, 1, 1)).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "this task can never run here: 1 GPU(s) requested but the allocation has 0"
    );
    assert!(matches!(
        core.submit(&mut comm, too_big(2, 3, 0)),
        Err(SubmitError::NeverFits(_))
    ));
    assert!(comm.started.is_empty());
    core.shutdown(&mut comm, false);
    assert!(core.is_finished(), "nothing was left queued");
}

#[test]
fn a_task_whose_worker_dies_before_connecting_fails_with_the_reason() {
    let (mut core, mut comm) = per_task(1);
    core.submit(&mut comm, task(1, &[])).unwrap();
    core.worker_lost(
        &mut comm,
        WorkerId(0),
        LostReason::new("could not start worker"),
    );
    assert!(
        matches!(&comm.events[0], Event::Lost { task: TaskId(1), reason } if reason.message.contains("could not start"))
    );
}

#[test]
fn shutdown_with_cancel_futures_cancels_the_queue_and_stops_workers_when_idle() {
    let (mut core, mut comm) = block(1);
    core.submit(&mut comm, task(1, &[])).unwrap();
    core.submit(&mut comm, task(2, &[])).unwrap();
    core.shutdown(&mut comm, true);
    assert!(comm.events.contains(&Event::Cancelled {
        task: TaskId(2),
        upstream: None
    }));
    assert!(comm.stopped.is_empty(), "task 1 still runs");
    done(&mut core, &mut comm, 0, 1, "r");
    assert_eq!(comm.stopped, vec![WorkerId(0)]);
    assert!(!core.is_finished());
    core.worker_lost(&mut comm, WorkerId(0), LostReason::new("exit 0"));
    assert!(core.is_finished());
    assert_eq!(
        core.submit(&mut comm, task(3, &[])),
        Err(SubmitError::ShuttingDown)
    );
}

#[test]
fn an_init_function_that_raises_fails_every_task_with_its_exception() {
    let mut core = Driven(Core::new(
        Allocation::Block {
            workers: 1,
            resources: ResourceRequest::default(),
        },
        Capacity::new(1, None, Gpus::Counted(0)),
        Some(payload("init")),
    ));
    let mut comm = Recorder::default();
    core.start(&mut comm);
    core.worker_hello(&mut comm, WorkerId(0), 1, "h".into());
    assert!(matches!(comm.sent[0].1, ToWorker::Init));
    core.submit(&mut comm, task(1, &[])).unwrap();
    core.worker_init_done(
        &mut comm,
        WorkerId(0),
        Outcome::Raised,
        payload("init failed"),
    );
    assert!(comm.events.contains(&Event::Raised {
        task: TaskId(1),
        error: payload("init failed")
    }));
    core.submit(&mut comm, task(2, &[])).unwrap();
    assert!(comm.events.contains(&Event::Raised {
        task: TaskId(2),
        error: payload("init failed")
    }));
    assert_eq!(comm.started.len(), 1, "no restart loop");
}

#[test]
fn released_results_are_kept_while_a_dependent_still_needs_them() {
    let (mut core, mut comm) = block(1);
    core.submit(&mut comm, task(1, &[])).unwrap();
    core.submit(&mut comm, task(2, &[1])).unwrap();
    core.release(TaskId(1));
    done(&mut core, &mut comm, 0, 1, "kept");
    assert_eq!(
        comm.last_run_frames().1.last().unwrap(),
        &Bytes::from_static(b"kept")
    );
    assert_eq!(core.task_counts().finished, 0, "released once sent");
}

#[test]
fn an_external_result_unblocks_its_dependents() {
    let (mut core, mut comm) = block(1);
    core.add_external(TaskId(1)).unwrap();
    core.submit(&mut comm, task(2, &[1])).unwrap();
    assert!(comm.runs().is_empty());
    core.resolve_external_result(&mut comm, TaskId(1), payload("foreign"));
    assert_eq!(comm.runs(), vec![(WorkerId(0), TaskId(2))]);
    core.add_external(TaskId(5)).unwrap();
    core.submit(&mut comm, task(6, &[5])).unwrap();
    core.resolve_external_error(&mut comm, TaskId(5), None);
    assert!(comm.events.contains(&Event::Cancelled {
        task: TaskId(6),
        upstream: Some(TaskId(5))
    }));
}

#[test]
fn output_is_reported_only_for_the_task_the_worker_is_running() {
    let (mut core, mut comm) = block(2);
    core.submit(&mut comm, task(1, &[])).unwrap();
    let text = |s: &'static str| Bytes::from_static(s.as_bytes());
    core.task_output(
        &mut comm,
        WorkerId(0),
        TaskId(1),
        Stream::Stdout,
        text("hi\n"),
    );
    // Worker 1 is idle, and cannot speak for worker 0's task.
    core.task_output(
        &mut comm,
        WorkerId(1),
        TaskId(1),
        Stream::Stderr,
        text("forged"),
    );
    done(&mut core, &mut comm, 0, 1, "r1");
    // Late output of a finished task is dropped.
    core.task_output(
        &mut comm,
        WorkerId(0),
        TaskId(1),
        Stream::Stdout,
        text("late"),
    );
    let outputs: Vec<_> = comm
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Output { task, stream, text } => Some((*task, *stream, text.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(outputs, vec![(TaskId(1), Stream::Stdout, text("hi\n"))]);
}

#[test]
fn a_dependent_that_raises_does_not_drop_a_result_its_sibling_still_needs() {
    let (mut core, mut comm) = block(1);
    core.submit(&mut comm, task(1, &[])).unwrap();
    core.submit(&mut comm, task(2, &[1])).unwrap();
    core.submit(&mut comm, task(3, &[1])).unwrap();
    core.release(TaskId(1));
    done(&mut core, &mut comm, 0, 1, "shared");
    core.task_done(
        &mut comm,
        WorkerId(0),
        TaskId(2),
        Outcome::Raised,
        payload("error"),
    );
    assert_eq!(comm.runs().last(), Some(&(WorkerId(0), TaskId(3))));
    assert_eq!(
        comm.last_run_frames().1.last().unwrap(),
        &Bytes::from_static(b"shared")
    );
}

fn restartable(id: u64, deps: &[u64], restart_limit: u32) -> TaskSpec {
    TaskSpec {
        restart_limit,
        run_time_max: None,
        ..task(id, deps)
    }
}

#[test]
fn a_task_whose_worker_dies_runs_again_up_to_its_restart_limit_then_fails() {
    let (mut core, mut comm) = block(1);
    core.submit(&mut comm, task(1, &[])).unwrap();
    core.submit(&mut comm, restartable(2, &[1], 2)).unwrap();
    core.release(TaskId(1));
    done(&mut core, &mut comm, 0, 1, "input");
    let lost = |core: &mut Driven, comm: &mut Recorder, worker: u32| {
        core.worker_lost(
            comm,
            WorkerId(worker),
            LostReason::new("killed by signal 9"),
        );
        core.worker_hello(comm, WorkerId(worker + 1), 200 + worker, "host".into());
    };
    lost(&mut core, &mut comm, 0);
    lost(&mut core, &mut comm, 1);
    // Sent three times, each time whole: the function and the input again.
    let sent: Vec<_> = comm
        .runs()
        .into_iter()
        .filter(|(_, t)| *t == TaskId(2))
        .collect();
    assert_eq!(
        sent,
        vec![
            (WorkerId(0), TaskId(2)),
            (WorkerId(1), TaskId(2)),
            (WorkerId(2), TaskId(2))
        ]
    );
    assert!(comm.last_run_inlines_its_function());
    let (_, frames) = comm.last_run_frames();
    assert_eq!(frames.last().unwrap(), &Bytes::from_static(b"input"));
    let restarted = comm
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Output {
                    task: TaskId(2),
                    ..
                }
            )
        })
        .count();
    assert_eq!(restarted, 2, "each restart is said on the task's stderr");
    assert!(!comm.events.iter().any(|e| matches!(e, Event::Lost { .. })));
    // The third loss is one too many.
    core.worker_lost(
        &mut comm,
        WorkerId(2),
        LostReason::new("killed by signal 9"),
    );
    assert!(comm.events.iter().any(|e| matches!(
        e,
        Event::Lost {
            task: TaskId(2),
            ..
        }
    )));
    assert_eq!(core.task_counts().failed, 1);
    assert_eq!(
        core.task_counts().finished,
        0,
        "the input is let go of at the end"
    );
}

#[test]
fn a_restartable_task_that_finishes_lets_go_of_its_copy_and_inputs() {
    let (mut core, mut comm) = block(1);
    core.submit(&mut comm, task(1, &[])).unwrap();
    core.submit(&mut comm, restartable(2, &[1], 3)).unwrap();
    core.release(TaskId(1));
    done(&mut core, &mut comm, 0, 1, "input");
    assert_eq!(core.task_counts().finished, 1, "held for a possible rerun");
    done(&mut core, &mut comm, 0, 2, "out");
    core.release(TaskId(2));
    assert_eq!(core.task_counts().finished, 0);
    assert!(core.functions.by_digest_is_empty());
}

#[test]
fn per_task_mode_restarts_on_a_fresh_worker() {
    let (mut core, mut comm) = per_task(1);
    core.submit(&mut comm, restartable(1, &[], 1)).unwrap();
    core.worker_hello(&mut comm, WorkerId(0), 1, "h".into());
    core.worker_lost(&mut comm, WorkerId(0), LostReason::new("exit 1"));
    assert_eq!(comm.started.len(), 2, "a new worker for the second run");
    core.worker_hello(&mut comm, WorkerId(1), 2, "h".into());
    done(&mut core, &mut comm, 1, 1, "ok");
    assert_eq!(comm.finished(), vec![TaskId(1)]);
}

#[test]
fn a_pool_grows_at_once_and_shrinks_idle_workers_first_busy_ones_after_their_task() {
    let (mut core, mut comm) = block(1);
    for id in 1..=3 {
        core.submit(&mut comm, task(id, &[])).unwrap();
    }
    core.resize_pool(&mut comm, 3).unwrap();
    assert_eq!(comm.started.len(), 3, "two more workers start");
    core.worker_hello(&mut comm, WorkerId(1), 11, "host".into());
    core.worker_hello(&mut comm, WorkerId(2), 12, "host".into());
    assert_eq!(comm.runs().len(), 3, "the queued tasks run on them");
    done(&mut core, &mut comm, 2, 3, "r3");
    // Down to one: the idle worker 2 stops now, busy 0 or 1 once its task ends.
    core.resize_pool(&mut comm, 1).unwrap();
    assert_eq!(comm.stopped, vec![WorkerId(2)]);
    done(&mut core, &mut comm, 1, 2, "r2");
    assert_eq!(comm.stopped, vec![WorkerId(2), WorkerId(1)]);
    done(&mut core, &mut comm, 0, 1, "r1");
    assert_eq!(comm.stopped.len(), 2, "the last one stays");
    // Retired workers that exit are not replaced.
    core.worker_lost(&mut comm, WorkerId(1), LostReason::new("exit 0"));
    core.worker_lost(&mut comm, WorkerId(2), LostReason::new("exit 0"));
    assert_eq!(comm.started.len(), 3);
    assert!(core.resize_pool(&mut comm, 0).is_err());
}

#[test]
fn events_of_one_batch_are_scheduled_together_after_it() {
    let (mut core, mut comm) = block(1);
    // Submitted and cancelled in one batch: the pass after it finds the
    // task cancelled, so the worker is never sent it.
    core.0.submit(&mut comm, task(1, &[])).unwrap();
    core.0.submit(&mut comm, task(2, &[])).unwrap();
    assert!(comm.runs().is_empty(), "nothing is sent during the batch");
    assert_eq!(core.0.cancel(&mut comm, TaskId(1)), Some(true));
    core.schedule_if_needed(&mut comm);
    assert_eq!(comm.runs(), vec![(WorkerId(0), TaskId(2))]);
    // A batch that changed nothing schedulable makes no pass.
    core.0.task_output(
        &mut comm,
        WorkerId(0),
        TaskId(2),
        Stream::Stdout,
        Bytes::new(),
    );
    let sent = comm.sent.len();
    core.schedule_if_needed(&mut comm);
    assert_eq!(comm.sent.len(), sent);
}

#[test]
fn a_task_records_the_worker_it_was_sent_to() {
    let assigned_to = |core: &Driven, id: u64| match core.tasks[&TaskId(id)].state {
        TaskState::Assigned { worker } => Some(worker),
        _ => None,
    };
    let (mut core, mut comm) = block(2);
    core.submit(&mut comm, task(1, &[])).unwrap();
    core.submit(&mut comm, task(2, &[])).unwrap();
    core.submit(&mut comm, task(3, &[])).unwrap();
    assert_eq!(assigned_to(&core, 1), Some(WorkerId(0)));
    assert_eq!(assigned_to(&core, 2), Some(WorkerId(1)));
    assert_eq!(assigned_to(&core, 3), None, "still queued");
    done(&mut core, &mut comm, 1, 2, "b");
    assert_eq!(assigned_to(&core, 3), Some(WorkerId(1)));

    let (mut core, mut comm) = per_task(1);
    core.submit(&mut comm, task(1, &[])).unwrap();
    assert_eq!(comm.started.len(), 1);
    assert_eq!(assigned_to(&core, 1), Some(comm.started[0].0));
}

#[test]
fn a_pool_that_breaks_fails_the_task_a_busy_worker_runs_too() {
    // Its node went (an agent died): the busy worker's exit may come only
    // after the replacements' failed starts have broken the pool.
    let (mut core, mut comm) = block(2);
    core.submit(&mut comm, task(1, &[])).unwrap();
    assert_eq!(comm.runs(), vec![(WorkerId(0), TaskId(1))]);
    let gone = LostReason::new("could not start worker: node node1 was lost");
    core.worker_lost(&mut comm, WorkerId(1), gone.clone());
    for replacement in 2..5 {
        core.worker_lost(&mut comm, WorkerId(replacement), gone.clone());
    }
    let lost = |comm: &Recorder| {
        comm.events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::Lost {
                        task: TaskId(1),
                        ..
                    }
                )
            })
            .count()
    };
    assert_eq!(lost(&comm), 1, "{:?}", comm.events);
    core.worker_lost(&mut comm, WorkerId(0), gone);
    assert_eq!(
        lost(&comm),
        1,
        "failed once, not again by its worker's exit"
    );
}
