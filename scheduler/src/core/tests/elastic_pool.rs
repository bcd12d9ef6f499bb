//! A pool (`block_allocation`) under elastic allocations, as the server
//! drives it: its workers start on an allocation's node as it joins (and
//! run the init function there), calls that wait with workers still to
//! start ask for an allocation, an idle allocation's workers stop before it
//! is given back, and an allocation lost under a call fails or reruns that
//! call while the pool lives on.

use super::elastic::{hour_long, node, secs, A, B};
use super::*;
use crate::capacity::Placement;
use crate::core::allocations::AllocationId;
use crate::ids::NodeId;
use std::time::Instant;

/// A pool of `workers` one-CPU workers with an init function, in
/// `hour_long` allocations.
fn pool(workers: u32, t0: Instant) -> (Driven, Recorder) {
    let core = Core::new(
        Allocation::Block {
            workers,
            resources: ResourceRequest::default(),
        },
        Capacity::joining(Some(workers)),
        Some(payload("init")),
    )
    .with_allocations(hour_long(2), 2, t0)
    .expect("a worker fits a node");
    let mut core = Driven(core);
    let mut comm = Recorder::default();
    core.start(&mut comm);
    core.0.start_allocations(&mut comm);
    (core, comm)
}

/// The time is `now` (the server's heartbeat), in a batch of its own.
fn tick(core: &mut Driven, comm: &mut Recorder, now: Instant) {
    core.0.allocations_tick(comm, now);
    core.0.schedule_if_needed(comm);
}

/// Allocation `id` runs as `job`; its node joins at `now`.
fn joins(core: &mut Driven, comm: &mut Recorder, id: AllocationId, job: &str, now: Instant) {
    core.0.allocation_submitted(id, job.into());
    tick(core, comm, now);
    core.0
        .allocation_node_joined(comm, id, node(&format!("node-of-{job}")));
    core.0.schedule_if_needed(comm);
}

/// Pool worker `w` connects and its init function returns.
fn ready(core: &mut Driven, comm: &mut Recorder, w: u32) {
    core.worker_hello(comm, WorkerId(w), 100 + w, "node".into());
    core.worker_init_done(comm, WorkerId(w), Outcome::Returned, payload(""));
}

fn done(core: &mut Driven, comm: &mut Recorder, w: u32, task: u64) {
    core.task_done(
        comm,
        WorkerId(w),
        TaskId(task),
        Outcome::Returned,
        payload("r"),
    );
}

/// The workers the init function was sent to, in order.
fn initialized(comm: &Recorder) -> Vec<WorkerId> {
    comm.sent
        .iter()
        .filter(|(_, message, _)| matches!(message, ToWorker::Init))
        .map(|(worker, _, _)| *worker)
        .collect()
}

fn placed(comm: &Recorder) -> Vec<(WorkerId, Placement)> {
    comm.started
        .iter()
        .map(|(worker, launch)| (*worker, launch.placement.clone()))
        .collect()
}

#[test]
fn pool_workers_start_on_each_allocations_node_as_it_joins_and_run_the_waiting_calls() {
    let t0 = Instant::now();
    let (mut core, mut comm) = pool(3, t0);
    assert!(comm.started.is_empty() && comm.allocations_submitted.is_empty());
    for id in 1..=4 {
        core.submit(&mut comm, task(id, &[])).unwrap();
    }
    // Three workers to start, two CPUs an allocation: two are needed, one
    // queued at a time (backlog=1).
    assert_eq!(comm.allocations_submitted, [A]);
    joins(&mut core, &mut comm, A, "701", t0 + secs(30));
    let node1 = Placement::Node(NodeId(0));
    assert_eq!(
        placed(&comm),
        [(WorkerId(0), node1.clone()), (WorkerId(1), node1)]
    );
    // The third worker has no room yet: the next allocation is asked for.
    assert_eq!(comm.allocations_submitted, [A, B]);
    ready(&mut core, &mut comm, 0);
    ready(&mut core, &mut comm, 1);
    assert_eq!(initialized(&comm), [WorkerId(0), WorkerId(1)]);
    assert_eq!(
        comm.runs(),
        [(WorkerId(0), TaskId(1)), (WorkerId(1), TaskId(2))]
    );
    joins(&mut core, &mut comm, B, "702", t0 + secs(40));
    assert_eq!(placed(&comm)[2], (WorkerId(2), Placement::Node(NodeId(1))));
    assert_eq!(
        comm.started.len(),
        3,
        "the pool's size, not the nodes' room"
    );
    ready(&mut core, &mut comm, 2);
    assert_eq!(comm.runs()[2], (WorkerId(2), TaskId(3)));
    done(&mut core, &mut comm, 0, 1);
    assert_eq!(comm.runs()[3], (WorkerId(0), TaskId(4)));
    assert_eq!(comm.allocations_submitted, [A, B], "nothing more waits");
}

#[test]
fn an_idle_pools_workers_stop_and_its_allocation_is_released_then_a_call_starts_anew() {
    let t0 = Instant::now();
    let (mut core, mut comm) = pool(2, t0);
    core.submit(&mut comm, task(1, &[])).unwrap();
    joins(&mut core, &mut comm, A, "701", t0);
    ready(&mut core, &mut comm, 0);
    ready(&mut core, &mut comm, 1);
    // A call keeps it: busy at the heartbeat past idle_timeout.
    tick(&mut core, &mut comm, t0 + secs(20));
    assert!(comm.allocations_released.is_empty());
    done(&mut core, &mut comm, 0, 1);
    tick(&mut core, &mut comm, t0 + secs(29));
    assert!(comm.allocations_released.is_empty(), "idle 9 s of 10");
    tick(&mut core, &mut comm, t0 + secs(30));
    assert_eq!(comm.stopped, [WorkerId(0), WorkerId(1)]);
    assert_eq!(comm.allocations_released, [(A, Some("701".into()))]);
    for w in 0..2 {
        core.worker_lost(&mut comm, WorkerId(w), LostReason::new("stopped"));
    }
    assert_eq!(comm.started.len(), 2, "no node left to start the pool on");
    // A new call: a new allocation, a new pool there, its init run again.
    core.submit(&mut comm, task(2, &[])).unwrap();
    assert_eq!(comm.allocations_submitted, [A, B]);
    joins(&mut core, &mut comm, B, "702", t0 + secs(90));
    let node2 = Placement::Node(NodeId(1));
    assert_eq!(
        placed(&comm)[2..],
        [(WorkerId(2), node2.clone()), (WorkerId(3), node2)]
    );
    ready(&mut core, &mut comm, 2);
    assert_eq!(initialized(&comm), [WorkerId(0), WorkerId(1), WorkerId(2)]);
    assert_eq!(comm.runs().last(), Some(&(WorkerId(2), TaskId(2))));
}

#[test]
fn an_allocation_lost_under_calls_fails_or_reruns_them_and_the_pool_lives_on() {
    let t0 = Instant::now();
    let (mut core, mut comm) = pool(2, t0);
    core.submit(&mut comm, restartable(1, &[], 1)).unwrap();
    core.submit(&mut comm, task(2, &[])).unwrap();
    joins(&mut core, &mut comm, A, "701", t0);
    ready(&mut core, &mut comm, 0);
    ready(&mut core, &mut comm, 1);
    assert_eq!(
        comm.runs(),
        [(WorkerId(0), TaskId(1)), (WorkerId(1), TaskId(2))]
    );
    core.0.allocation_ended(&mut comm, A, "CANCELLED");
    let why = "node node-of-701 was lost: allocation job 701 ended CANCELLED";
    for w in 0..2 {
        core.worker_lost(&mut comm, WorkerId(w), LostReason::new(why));
    }
    assert_eq!(lost(&comm), [(TaskId(2), why.to_string())]);
    // Not the function's fault: the pool is whole again in a new allocation,
    // where the call with restart_limit=1 runs again, and new calls run.
    assert_eq!(comm.allocations_submitted, [A, B]);
    joins(&mut core, &mut comm, B, "702", t0 + secs(60));
    ready(&mut core, &mut comm, 2);
    ready(&mut core, &mut comm, 3);
    assert_eq!(comm.runs()[2], (WorkerId(2), TaskId(1)));
    core.submit(&mut comm, task(3, &[])).unwrap();
    assert_eq!(comm.runs()[3], (WorkerId(3), TaskId(3)));
    assert_eq!(lost(&comm).len(), 1);
}

#[test]
fn pool_workers_in_their_allocations_drain_take_only_calls_that_finish_in_time() {
    let t0 = Instant::now();
    let (mut core, mut comm) = pool(1, t0);
    core.submit(&mut comm, task(1, &[])).unwrap();
    joins(&mut core, &mut comm, A, "701", t0);
    ready(&mut core, &mut comm, 0);
    // 50 s left, in the drain: a call of 30 s at most still runs here once
    // the worker is free; one without run_time_max waits for another
    // allocation, asked for ahead of this one's end.
    tick(&mut core, &mut comm, t0 + secs(3550));
    core.submit(
        &mut comm,
        TaskSpec {
            run_time_max: Some(30),
            ..task(2, &[])
        },
    )
    .unwrap();
    core.submit(&mut comm, task(3, &[])).unwrap();
    assert_eq!(comm.allocations_submitted, [A, B]);
    done(&mut core, &mut comm, 0, 1);
    assert_eq!(comm.runs()[1], (WorkerId(0), TaskId(2)));
    assert!(comm.allocations_released.is_empty(), "a call runs there");
    done(&mut core, &mut comm, 0, 2);
    assert_eq!(comm.runs().len(), 2, "3 does not start in the drain");
    // Idle in its drain: its worker stops and it is given back; the pool
    // starts again on the replacement, which runs 3.
    assert_eq!(comm.stopped, [WorkerId(0)]);
    assert_eq!(comm.allocations_released, [(A, Some("701".into()))]);
    core.worker_lost(&mut comm, WorkerId(0), LostReason::new("stopped"));
    joins(&mut core, &mut comm, B, "702", t0 + secs(3560));
    ready(&mut core, &mut comm, 1);
    assert_eq!(comm.runs()[2], (WorkerId(1), TaskId(3)));
}
