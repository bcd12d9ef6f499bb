//! The allocation policy as stories: what it asks the job system for as
//! calls come and go and minutes pass (time is given, never read).

use super::*;

/// One-node allocations of 4 CPUs, an hour each.
fn settings() -> AllocationSettings {
    AllocationSettings {
        nodes: 1,
        cpus: 4,
        time_limit: Duration::from_secs(3600),
        max_allocations: 4,
        min_allocations: 0,
        backlog: 1,
        idle_timeout: Duration::from_secs(300),
        drain: Duration::from_secs(120),
    }
}

fn waiting(calls: u32) -> Waiting {
    Waiting { calls, cpus: calls }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn submits(decisions: &[Decision]) -> Vec<AllocationId> {
    decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Submit(id) => Some(*id),
            _ => None,
        })
        .collect()
}

fn releases(decisions: &[Decision]) -> Vec<AllocationId> {
    decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Release(id) => Some(*id),
            _ => None,
        })
        .collect()
}

const A: AllocationId = AllocationId(0);
const B: AllocationId = AllocationId(1);
const C: AllocationId = AllocationId(2);

/// Submitted, queued as `job`, and running from `at`.
fn running(policy: &mut AllocationPolicy, id: AllocationId, job: &str, at: Instant) {
    policy.on_submitted(id, job.into(), at);
    policy.on_running(id, at);
}

#[test]
fn nothing_is_submitted_without_work_and_a_backlog_asks_for_one_allocation() {
    let t0 = Instant::now();
    let mut policy = AllocationPolicy::new(settings());
    assert_eq!(policy.start(t0), []);
    assert_eq!(policy.on_waiting(waiting(10), t0), [Decision::Submit(A)]);
    // Ten calls of one CPU want three allocations of four, but the backlog
    // lets one wait in the queue at a time.
    assert_eq!(policy.on_waiting(waiting(10), t0), []);
    policy.on_submitted(A, "101".into(), t0);
    policy.on_pending(A, "Priority");
    assert_eq!(policy.on_waiting(waiting(10), t0 + secs(5)), []);
    assert_eq!(
        policy.allocations()[0].stage,
        Stage::Queued {
            job: "101".into(),
            since: t0,
            reason: "Priority".into()
        }
    );
    // Once it runs, its nodes take four; the six still waiting after the
    // core's next placement pass ask for the next.
    assert_eq!(policy.on_running(A, t0 + secs(30)), []);
    assert_eq!(
        policy.on_waiting(waiting(6), t0 + secs(30)),
        [Decision::Submit(B)]
    );
}

#[test]
fn queued_allocations_never_exceed_the_backlog_nor_live_ones_max_allocations() {
    let t0 = Instant::now();
    let mut policy = AllocationPolicy::new(AllocationSettings {
        backlog: 2,
        max_allocations: 3,
        ..settings()
    });
    assert_eq!(submits(&policy.on_waiting(waiting(100), t0)), [A, B]);
    running(&mut policy, A, "1", t0);
    assert_eq!(submits(&policy.on_waiting(waiting(96), t0)), [C]);
    policy.on_submitted(B, "2".into(), t0);
    policy.on_submitted(C, "3".into(), t0);
    policy.on_running(B, t0);
    // Three live: no fourth, however many calls wait.
    assert_eq!(policy.on_waiting(waiting(90), t0), []);
    assert_eq!(policy.tick(t0 + secs(60)), []);
}

#[test]
fn what_the_allocations_on_their_way_hold_is_not_asked_for_again() {
    let t0 = Instant::now();
    let mut policy = AllocationPolicy::new(AllocationSettings {
        backlog: 3,
        ..settings()
    });
    assert_eq!(submits(&policy.on_waiting(waiting(6), t0)), [A, B]);
    // Two more calls: the two queued allocations hold all eight CPUs.
    assert_eq!(policy.on_waiting(waiting(8), t0), []);
    assert_eq!(submits(&policy.on_waiting(waiting(9), t0)), [C]);
}

#[test]
fn an_idle_allocation_is_released_after_idle_timeout_but_min_allocations_stay() {
    let t0 = Instant::now();
    let mut policy = AllocationPolicy::new(AllocationSettings {
        min_allocations: 1,
        ..settings()
    });
    // The one kept even when idle is asked for at the start.
    assert_eq!(policy.start(t0), [Decision::Submit(A)]);
    running(&mut policy, A, "1", t0);
    assert_eq!(policy.on_waiting(waiting(8), t0), [Decision::Submit(B)]);
    running(&mut policy, B, "2", t0 + secs(10));
    for id in [A, B] {
        policy.on_call_started(id);
    }
    policy.on_waiting(waiting(0), t0 + secs(10));
    policy.on_call_ended(A, t0 + secs(20));
    policy.on_call_ended(B, t0 + secs(40));
    // Idle, but not for idle_timeout yet.
    assert_eq!(policy.tick(t0 + secs(300)), []);
    // A has been idle for 300 s: released; B then is the last, kept.
    assert_eq!(policy.tick(t0 + secs(320)), [Decision::Release(A)]);
    assert_eq!(policy.tick(t0 + secs(1000)), []);
    policy.on_ended(A, "CANCELLED", t0 + secs(322));
    assert!(policy.was_released(A));
    assert_eq!(policy.tick(t0 + secs(2000)), []);
}

#[test]
fn an_allocation_with_a_call_running_is_never_released_for_idleness() {
    let t0 = Instant::now();
    let mut policy = AllocationPolicy::new(settings());
    policy.on_waiting(waiting(1), t0);
    running(&mut policy, A, "1", t0);
    policy.on_call_started(A);
    policy.on_waiting(waiting(0), t0);
    assert_eq!(policy.tick(t0 + secs(1000)), []);
    policy.on_call_ended(A, t0 + secs(1000));
    assert_eq!(policy.tick(t0 + secs(1299)), []);
    assert_eq!(policy.tick(t0 + secs(1300)), [Decision::Release(A)]);
    // A call after that starts a new allocation.
    assert_eq!(
        policy.on_waiting(waiting(1), t0 + secs(1301)),
        [Decision::Submit(B)]
    );
}

#[test]
fn a_call_goes_only_where_its_run_time_max_is_left_and_none_starts_in_the_drain() {
    let t0 = Instant::now();
    let mut policy = AllocationPolicy::new(settings());
    policy.on_waiting(waiting(1), t0);
    running(&mut policy, A, "1", t0);
    let at = |s| t0 + secs(s);
    assert!(policy.may_take(A, Some(secs(3000)), at(0)));
    assert!(!policy.may_take(A, Some(secs(3000)), at(601)));
    assert!(
        policy.may_take(A, Some(secs(100)), at(3400)),
        "100 s of 200 left"
    );
    // Without run_time_max: anywhere but the last 120 s.
    assert!(policy.may_take(A, None, at(3479)));
    assert!(!policy.may_take(A, None, at(3480)));
    // Not running yet, or unknown: nothing starts there.
    assert!(!policy.may_take(B, None, at(0)));
    assert_eq!(
        policy.never_fits(secs(3601)).as_deref(),
        Some(
            "resource_dict key 'run_time_max' is 3601 s, more than the allocations' time_limit \
             of 3600 s: no allocation could finish it; lower it or raise \
             Allocation(time_limit=...)"
        )
    );
    assert_eq!(policy.never_fits(secs(3600)), None);
}

#[test]
fn a_replacement_is_asked_for_ahead_of_the_drain_as_early_as_the_last_queue_wait() {
    let t0 = Instant::now();
    let mut policy = AllocationPolicy::new(settings());
    policy.on_waiting(waiting(1), t0);
    policy.on_submitted(A, "1".into(), t0);
    // It waited 200 s in the queue.
    policy.on_running(A, t0 + secs(200));
    policy.on_call_started(A);
    policy.on_waiting(waiting(0), t0 + secs(200));
    // It ends at 3800 s; its drain starts at 3680; the replacement is asked
    // for 200 s before that.
    assert_eq!(policy.tick(t0 + secs(3479)), []);
    assert_eq!(policy.tick(t0 + secs(3480)), [Decision::Submit(B)]);
    // Once, however long A lasts.
    assert_eq!(policy.tick(t0 + secs(3500)), []);
    running(&mut policy, B, "2", t0 + secs(3600));
    assert_eq!(policy.tick(t0 + secs(3700)), []);
    // A's last call ends in its drain: A goes at once, B stays.
    policy.on_call_ended(A, t0 + secs(3710));
    assert_eq!(policy.tick(t0 + secs(3711)), [Decision::Release(A)]);
}

#[test]
fn an_idle_allocation_needs_no_replacement() {
    let t0 = Instant::now();
    let mut policy = AllocationPolicy::new(AllocationSettings {
        idle_timeout: secs(7200),
        min_allocations: 1,
        ..settings()
    });
    policy.start(t0);
    running(&mut policy, A, "1", t0);
    assert_eq!(policy.tick(t0 + secs(3500)), []);
}

#[test]
fn a_refused_submission_fails_the_waiting_calls_and_pauses_submitting() {
    let t0 = Instant::now();
    let mut policy = AllocationPolicy::new(settings());
    assert_eq!(policy.on_waiting(waiting(3), t0), [Decision::Submit(A)]);
    let why = "sbatch: error: invalid partition specified: nope";
    let decisions = policy.on_refused(A, why, t0 + secs(1));
    let expected = "the allocation was not submitted: sbatch: error: invalid partition \
                    specified: nope (pmp submits none again for 60 s; check \
                    Allocation(partition=..., extra_args=...))";
    assert_eq!(decisions, [Decision::FailWaiting(expected.into())]);
    assert_eq!(policy.paused(t0 + secs(2)), Some(expected));
    // New calls during the pause: nothing is submitted (the core fails
    // them with the pause's words).
    assert_eq!(policy.on_waiting(waiting(3), t0 + secs(30)), []);
    assert_eq!(policy.tick(t0 + secs(60)), []);
    // After it, one more try; refused again, the pause doubles.
    assert_eq!(policy.tick(t0 + secs(61)), [Decision::Submit(B)]);
    let decisions = policy.on_refused(B, why, t0 + secs(62));
    assert!(
        matches!(&decisions[..], [Decision::FailWaiting(w)] if w.contains("for 120 s")),
        "{decisions:?}"
    );
    // An accepted submission ends the run of refusals.
    assert_eq!(
        policy.on_waiting(waiting(1), t0 + secs(182)),
        [Decision::Submit(C)]
    );
    policy.on_submitted(C, "3".into(), t0 + secs(183));
    assert_eq!(policy.refusals_in_a_row, 0);
}

#[test]
fn an_allocation_that_ends_on_its_own_is_a_loss_and_waiting_calls_get_another() {
    let t0 = Instant::now();
    let mut policy = AllocationPolicy::new(settings());
    policy.on_waiting(waiting(1), t0);
    running(&mut policy, A, "1", t0);
    policy.on_call_started(A);
    policy.on_waiting(waiting(0), t0);
    // scancel: its call is the core's to fail or rerun (restart_limit).
    assert_eq!(policy.on_ended(A, "CANCELLED", t0 + secs(10)), []);
    assert!(!policy.was_released(A));
    assert_eq!(
        policy.allocations()[0].stage,
        Stage::Ended {
            job: Some("1".into()),
            state: "CANCELLED".into()
        }
    );
    // The rerun waits: a new allocation.
    assert_eq!(
        policy.on_waiting(waiting(1), t0 + secs(10)),
        [Decision::Submit(B)]
    );
    assert_eq!(releases(&policy.tick(t0 + secs(20))), []);
}
