//! Elastic allocations through the core, as the server drives it: calls
//! that wait ask for an allocation, run on its nodes as they join, and an
//! idle allocation is given back; `run_time_max` and a refused submission,
//! told with given time.

use super::*;
use crate::capacity::Placement;
use crate::core::allocations::{AllocationId, AllocationPolicy, AllocationSettings};
use crate::ids::NodeId;
use std::time::{Duration, Instant};

pub(super) const A: AllocationId = AllocationId(0);
pub(super) const B: AllocationId = AllocationId(1);

pub(super) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// One-node allocations of `cpus` CPUs, an hour each (the last minute their
/// drain), at most 2 at once, idle for 10 s at most.
pub(super) fn hour_long(cpus: u32) -> AllocationPolicy {
    AllocationPolicy::new(AllocationSettings {
        nodes: 1,
        cpus,
        time_limit: secs(3600),
        max_allocations: 2,
        min_allocations: 0,
        backlog: 1,
        idle_timeout: secs(10),
        drain: secs(60),
    })
}

fn elastic(t0: Instant) -> (Driven, Recorder) {
    let core = Core::new(Allocation::PerTask, Capacity::joining(None), None)
        .with_allocations(hour_long(2), 2, t0)
        .expect("fresh workers");
    (Driven(core), Recorder::default())
}

/// A node of such an allocation.
pub(super) fn node(name: &str) -> Node {
    Node {
        name: name.into(),
        cpus: 2,
        gpus: Gpus::Counted(0),
        memory_mb: None,
    }
}

fn lasting(id: u64, seconds: u64) -> TaskSpec {
    TaskSpec {
        run_time_max: Some(seconds as u32),
        ..task(id, &[])
    }
}

/// Its node joins (a batch of its own, as the server's), at `now`.
fn joins(core: &mut Driven, comm: &mut Recorder, id: AllocationId, name: &str, now: Instant) {
    core.0.allocations_tick(comm, now);
    core.0.allocation_node_joined(comm, id, node(name));
    core.0.schedule_if_needed(comm);
}

/// Where each worker started so far was placed.
fn placements(comm: &Recorder) -> Vec<Placement> {
    comm.started
        .iter()
        .map(|(_, launch)| launch.placement.clone())
        .collect()
}

fn tick(core: &mut Driven, comm: &mut Recorder, now: Instant) {
    core.0.allocations_tick(comm, now);
    core.0.schedule_if_needed(comm);
}

/// Worker `w` says hello, runs its call and exits.
fn runs(core: &mut Driven, comm: &mut Recorder, w: u32, task: u64) {
    core.worker_hello(comm, WorkerId(w), 100 + w, "node".into());
    core.task_done(
        comm,
        WorkerId(w),
        TaskId(task),
        Outcome::Returned,
        payload("r"),
    );
    core.worker_lost(comm, WorkerId(w), LostReason::new("exited"));
}

#[test]
fn waiting_calls_ask_for_an_allocation_run_on_its_node_and_an_idle_one_is_released() {
    let t0 = Instant::now();
    let (mut core, mut comm) = elastic(t0);
    core.0.start_allocations(&mut comm);
    assert!(
        comm.allocations_submitted.is_empty(),
        "nothing asked without work"
    );
    for id in 1..=3 {
        core.submit(&mut comm, task(id, &[])).unwrap();
    }
    // Three calls of one CPU: one allocation of two queued at a time.
    assert_eq!(comm.allocations_submitted, [A]);
    core.0.allocation_submitted(A, "701".into());
    core.0.allocation_pending(A, "Priority");
    joins(&mut core, &mut comm, A, "node1", t0 + secs(30));
    let placed = placements(&comm);
    assert_eq!(
        placed,
        [Placement::Node(NodeId(0)), Placement::Node(NodeId(0))]
    );
    // The third still waits: the next allocation is asked for.
    assert_eq!(comm.allocations_submitted, [A, B]);
    runs(&mut core, &mut comm, 0, 1);
    runs(&mut core, &mut comm, 1, 2);
    assert_eq!(
        comm.started.len(),
        3,
        "the third ran on node1 once it had room"
    );
    runs(&mut core, &mut comm, 2, 3);
    assert_eq!(comm.finished(), [TaskId(1), TaskId(2), TaskId(3)]);
    // Idle for idle_timeout: released, and its node takes nothing more.
    tick(&mut core, &mut comm, t0 + secs(39));
    assert!(comm.allocations_released.is_empty());
    tick(&mut core, &mut comm, t0 + secs(40));
    assert_eq!(comm.allocations_released, [(A, Some("701".into()))]);
    core.submit(&mut comm, task(4, &[])).unwrap();
    assert_eq!(comm.started.len(), 3, "not on the released node");
}

#[test]
fn a_call_starts_only_where_its_run_time_max_is_left() {
    let t0 = Instant::now();
    let (mut core, mut comm) = elastic(t0);
    assert_eq!(
        core.submit(&mut comm, lasting(1, 3601))
            .unwrap_err()
            .to_string(),
        "resource_dict key 'run_time_max' is 3601 s, more than the allocations' time_limit \
         of 3600 s: no allocation could finish it; lower it or raise Allocation(time_limit=...)"
    );
    core.submit(&mut comm, lasting(2, 60)).unwrap();
    core.0.allocation_submitted(A, "701".into());
    joins(&mut core, &mut comm, A, "node1", t0);
    runs(&mut core, &mut comm, 0, 2);
    // 40 minutes later, 20 are left: a call of 30 minutes waits for a new
    // allocation, one of 10 runs here.
    tick(&mut core, &mut comm, t0 + secs(2400));
    core.submit(&mut comm, lasting(3, 1800)).unwrap();
    assert_eq!(comm.started.len(), 1);
    assert_eq!(comm.allocations_submitted, [A, B]);
    core.submit(&mut comm, lasting(4, 600)).unwrap();
    assert_eq!(
        comm.started.len(),
        1,
        "first in, first out: it waits behind 3"
    );
    core.0.allocation_submitted(B, "702".into());
    joins(&mut core, &mut comm, B, "node2", t0 + secs(2500));
    let placed = placements(&comm);
    // 3 on the new node, node1 having too little time left for it; 4 fits
    // both and is packed beside it.
    assert_eq!(
        placed[1..],
        [Placement::Node(NodeId(1)), Placement::Node(NodeId(1))]
    );
    // Later node1 has 20 s left, in its drain: a call without run_time_max
    // does not start there, and node2 is full. Idle in its drain, node1's
    // allocation is given back.
    tick(&mut core, &mut comm, t0 + secs(3580));
    core.submit(&mut comm, task(5, &[])).unwrap();
    assert_eq!(comm.started.len(), 3);
    assert_eq!(comm.allocations_released, [(A, Some("701".into()))]);
}

#[test]
fn a_refused_submission_fails_the_waiting_calls_with_the_job_systems_words() {
    let t0 = Instant::now();
    let (mut core, mut comm) = elastic(t0);
    core.submit(&mut comm, task(1, &[])).unwrap();
    core.0.allocation_refused(
        &mut comm,
        A,
        "sbatch: error: invalid partition specified: nope",
    );
    let words = "the allocation was not submitted: sbatch: error: invalid partition specified: \
                 nope (pmp submits none again for 60 s; check Allocation(partition=..., \
                 extra_args=...))";
    assert_eq!(lost(&comm), [(TaskId(1), words.to_string())]);
    // During the pause a new call fails at once, with no new submission.
    core.submit(&mut comm, task(2, &[])).unwrap();
    assert_eq!(lost(&comm)[1], (TaskId(2), words.to_string()));
    assert_eq!(comm.allocations_submitted, [A]);
}

#[test]
fn an_allocation_that_ends_on_its_own_loses_its_calls_which_rerun_in_another() {
    let t0 = Instant::now();
    let (mut core, mut comm) = elastic(t0);
    core.submit(&mut comm, restartable(1, &[], 1)).unwrap();
    core.0.allocation_submitted(A, "701".into());
    joins(&mut core, &mut comm, A, "node1", t0);
    core.worker_hello(&mut comm, WorkerId(0), 100, "node1".into());
    core.0.allocation_ended(&mut comm, A, "CANCELLED");
    core.worker_lost(
        &mut comm,
        WorkerId(0),
        LostReason::new("node node1 was lost: allocation job 701 ended CANCELLED"),
    );
    // Run again (restart_limit=1): it waits for a new allocation.
    assert!(comm.events.iter().all(|e| !matches!(e, Event::Lost { .. })));
    assert_eq!(comm.allocations_submitted, [A, B]);
    core.0.allocation_submitted(B, "702".into());
    joins(&mut core, &mut comm, B, "node2", t0 + secs(60));
    assert_eq!(comm.started[1].1.placement, Placement::Node(NodeId(1)));
}
