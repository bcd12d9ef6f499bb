//! Tasks sent ahead to busy pool workers (`Core::set_queue_ahead`): when
//! they report Running, how they are taken back for an idle worker or a
//! cancel, and what a worker that dies holding one does to it.

use super::*;

fn block_ahead(workers: u32) -> (Driven, Recorder) {
    let (mut core, comm) = block(workers);
    core.set_queue_ahead(Some(QueueAhead {
        shared_from: SHARED_FROM,
    }));
    (core, comm)
}

fn submit_all(core: &mut Driven, comm: &mut Recorder, ids: std::ops::RangeInclusive<u64>) {
    for id in ids {
        core.submit(comm, task(id, &[])).unwrap();
    }
}

fn running(comm: &Recorder) -> Vec<TaskId> {
    comm.events
        .iter()
        .filter_map(|e| match e {
            Event::Running { task, .. } => Some(*task),
            _ => None,
        })
        .collect()
}

fn retracts(comm: &Recorder) -> Vec<(WorkerId, TaskId)> {
    comm.sent
        .iter()
        .filter_map(|(w, m, _)| match m {
            ToWorker::Retract { task } => Some((*w, *task)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_busy_worker_is_sent_one_task_ahead_which_reports_running_when_it_starts() {
    let (mut core, mut comm) = block_ahead(1);
    submit_all(&mut core, &mut comm, 1..=3);
    assert_eq!(
        comm.runs(),
        vec![(WorkerId(0), TaskId(1)), (WorkerId(0), TaskId(2))],
        "one ahead, no more"
    );
    assert_eq!(running(&comm), vec![TaskId(1)]);
    let counts = core.task_counts();
    assert_eq!((counts.running, counts.ready), (1, 2));
    done(&mut core, &mut comm, 0, 1, "a");
    assert_eq!(running(&comm), vec![TaskId(1), TaskId(2)]);
    assert_eq!(comm.runs().last(), Some(&(WorkerId(0), TaskId(3))));
    done(&mut core, &mut comm, 0, 2, "b");
    done(&mut core, &mut comm, 0, 3, "c");
    assert_eq!(comm.finished(), vec![TaskId(1), TaskId(2), TaskId(3)]);
    for id in 1..=3 {
        core.release(TaskId(id));
    }
    assert!(
        core.functions.by_digest_is_empty(),
        "nothing kept once done"
    );
}

#[test]
fn a_task_sent_ahead_is_cancelled_by_taking_it_back() {
    let (mut core, mut comm) = block_ahead(1);
    submit_all(&mut core, &mut comm, 1..=3);
    assert_eq!(
        core.cancel(&mut comm, TaskId(2)),
        None,
        "the worker is asked"
    );
    assert_eq!(
        core.cancel(&mut comm, TaskId(2)),
        None,
        "asked once, answered once"
    );
    assert_eq!(retracts(&comm), vec![(WorkerId(0), TaskId(2))]);
    core.task_retracted(&mut comm, WorkerId(0), TaskId(2));
    assert_eq!(comm.cancel_answers, vec![(TaskId(2), true)]);
    assert!(comm.events.contains(&Event::Cancelled {
        task: TaskId(2),
        upstream: None
    }));
    // Task 3 goes ahead in its place, its function inline again: the
    // worker never read the slot task 2's Run would have filled.
    assert_eq!(comm.runs().last(), Some(&(WorkerId(0), TaskId(3))));
    assert!(comm.last_run_inlines_its_function());
    done(&mut core, &mut comm, 0, 1, "a");
    done(&mut core, &mut comm, 0, 3, "c");
    assert_eq!(comm.finished(), vec![TaskId(1), TaskId(3)]);
}

#[test]
fn a_cancel_that_arrives_after_the_task_started_is_refused_whichever_answer_comes_first() {
    // Kept before the Done of the task it was sent behind.
    let (mut core, mut comm) = block_ahead(1);
    submit_all(&mut core, &mut comm, 1..=2);
    assert_eq!(core.cancel(&mut comm, TaskId(2)), None);
    core.task_kept(&mut comm, WorkerId(0), TaskId(2));
    assert_eq!(comm.cancel_answers, vec![(TaskId(2), false)]);
    assert_eq!(running(&comm), vec![TaskId(1)], "not before task 1 is done");
    done(&mut core, &mut comm, 0, 1, "a");
    assert_eq!(running(&comm), vec![TaskId(1), TaskId(2)]);

    // Done of the task ahead, then Kept: Running waits for the answer.
    let (mut core, mut comm) = block_ahead(1);
    submit_all(&mut core, &mut comm, 1..=2);
    assert_eq!(core.cancel(&mut comm, TaskId(2)), None);
    done(&mut core, &mut comm, 0, 1, "a");
    assert_eq!(running(&comm), vec![TaskId(1)]);
    core.task_kept(&mut comm, WorkerId(0), TaskId(2));
    assert_eq!(running(&comm), vec![TaskId(1), TaskId(2)]);
    assert_eq!(comm.cancel_answers, vec![(TaskId(2), false)]);

    // Its own Done before Kept: refused, and the late Kept changes nothing.
    let (mut core, mut comm) = block_ahead(1);
    submit_all(&mut core, &mut comm, 1..=2);
    assert_eq!(core.cancel(&mut comm, TaskId(2)), None);
    done(&mut core, &mut comm, 0, 1, "a");
    done(&mut core, &mut comm, 0, 2, "b");
    core.task_kept(&mut comm, WorkerId(0), TaskId(2));
    assert_eq!(comm.cancel_answers, vec![(TaskId(2), false)]);
    assert_eq!(running(&comm), vec![TaskId(1), TaskId(2)]);
    assert_eq!(comm.finished(), vec![TaskId(1), TaskId(2)]);
}

#[test]
fn an_idle_worker_takes_over_a_task_sent_ahead_to_a_busy_one() {
    let (mut core, mut comm) = block_ahead(2);
    submit_all(&mut core, &mut comm, 1..=4);
    assert_eq!(
        comm.runs(),
        vec![
            (WorkerId(0), TaskId(1)),
            (WorkerId(1), TaskId(2)),
            (WorkerId(0), TaskId(3)),
            (WorkerId(1), TaskId(4)),
        ]
    );
    // Worker 1 gets through its two while worker 0 is still on task 1.
    done(&mut core, &mut comm, 1, 2, "b");
    done(&mut core, &mut comm, 1, 4, "d");
    assert_eq!(retracts(&comm), vec![(WorkerId(0), TaskId(3))]);
    core.task_retracted(&mut comm, WorkerId(0), TaskId(3));
    assert_eq!(comm.runs().last(), Some(&(WorkerId(1), TaskId(3))));
    assert_eq!(running(&comm).last(), Some(&TaskId(3)));
    done(&mut core, &mut comm, 1, 3, "c");
    done(&mut core, &mut comm, 0, 1, "a");
    assert_eq!(
        comm.finished(),
        vec![TaskId(2), TaskId(4), TaskId(3), TaskId(1)]
    );
    assert!(comm.cancel_answers.is_empty());
}

#[test]
fn a_worker_that_dies_gives_back_the_task_it_held_ahead_without_using_a_restart() {
    let (mut core, mut comm) = block_ahead(1);
    submit_all(&mut core, &mut comm, 1..=2);
    core.worker_lost(
        &mut comm,
        WorkerId(0),
        LostReason::new("killed by signal 9"),
    );
    assert!(matches!(
        &comm.events.last(),
        Some(Event::Lost {
            task: TaskId(1),
            ..
        })
    ));
    // The replacement runs task 2, though it may not be restarted: it never ran.
    core.worker_hello(&mut comm, WorkerId(1), 200, "host".into());
    assert_eq!(comm.runs().last(), Some(&(WorkerId(1), TaskId(2))));
    assert!(comm.last_run_inlines_its_function());
    done(&mut core, &mut comm, 1, 2, "b");
    assert_eq!(comm.finished(), vec![TaskId(2)]);
}

#[test]
fn a_worker_that_dies_while_a_cancel_is_out_answers_it_cancelled() {
    let (mut core, mut comm) = block_ahead(1);
    submit_all(&mut core, &mut comm, 1..=2);
    assert_eq!(core.cancel(&mut comm, TaskId(2)), None);
    core.worker_lost(&mut comm, WorkerId(0), LostReason::new("exit 1"));
    assert_eq!(comm.cancel_answers, vec![(TaskId(2), true)]);
    assert!(comm.events.contains(&Event::Cancelled {
        task: TaskId(2),
        upstream: None
    }));
}

#[test]
fn shutdown_with_cancel_futures_takes_back_the_tasks_sent_ahead() {
    let (mut core, mut comm) = block_ahead(1);
    submit_all(&mut core, &mut comm, 1..=3);
    core.shutdown(&mut comm, true);
    assert_eq!(retracts(&comm), vec![(WorkerId(0), TaskId(2))]);
    core.task_retracted(&mut comm, WorkerId(0), TaskId(2));
    done(&mut core, &mut comm, 0, 1, "a");
    let cancelled: Vec<TaskId> = comm
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Cancelled { task, .. } => Some(*task),
            _ => None,
        })
        .collect();
    assert_eq!(cancelled, vec![TaskId(3), TaskId(2)]);
    assert_eq!(comm.stopped, vec![WorkerId(0)]);
}

#[test]
fn tasks_with_a_store_or_a_large_frame_are_not_sent_ahead_nor_is_anything_behind_them() {
    let (mut core, mut comm) = block_ahead(1);
    let store = StoreTarget {
        root: "/store".into(),
        key: "k".into(),
        function: "f".into(),
        submitted: 0.0,
    };
    let large = Payload::new(vec![Bytes::from(vec![0u8; SHARED_FROM])]);
    core.submit(&mut comm, task(1, &[])).unwrap();
    core.submit(
        &mut comm,
        TaskSpec {
            store: Some(store.clone()),
            ..task(2, &[])
        },
    )
    .unwrap();
    core.submit(
        &mut comm,
        TaskSpec {
            call: large,
            ..task(3, &[])
        },
    )
    .unwrap();
    assert_eq!(comm.runs(), vec![(WorkerId(0), TaskId(1))]);
    done(&mut core, &mut comm, 0, 1, "a");
    done(&mut core, &mut comm, 0, 2, "b");
    core.submit(&mut comm, task(4, &[])).unwrap();
    assert_eq!(
        comm.runs(),
        vec![
            (WorkerId(0), TaskId(1)),
            (WorkerId(0), TaskId(2)),
            (WorkerId(0), TaskId(3)),
        ],
        "nothing ahead of a large task either"
    );
    done(&mut core, &mut comm, 0, 3, "c");
    assert_eq!(comm.runs().last(), Some(&(WorkerId(0), TaskId(4))));
}

#[test]
fn a_pool_made_smaller_sends_nothing_ahead_until_it_has_shrunk() {
    let (mut core, mut comm) = block_ahead(2);
    submit_all(&mut core, &mut comm, 1..=2);
    core.resize_pool(&mut comm, 1).unwrap();
    core.submit(&mut comm, task(3, &[])).unwrap();
    assert_eq!(
        comm.runs().len(),
        2,
        "no task ahead while two workers are one too many"
    );
    done(&mut core, &mut comm, 1, 2, "b");
    assert_eq!(comm.stopped, vec![WorkerId(1)]);
    assert_eq!(
        comm.runs().last(),
        Some(&(WorkerId(0), TaskId(3))),
        "ahead again"
    );
}

#[test]
fn shutdown_with_cancel_futures_also_cancels_a_task_being_taken_back_for_an_idle_worker() {
    let (mut core, mut comm) = block_ahead(2);
    submit_all(&mut core, &mut comm, 1..=4);
    done(&mut core, &mut comm, 1, 2, "b");
    done(&mut core, &mut comm, 1, 4, "d");
    assert_eq!(
        retracts(&comm),
        vec![(WorkerId(0), TaskId(3))],
        "for idle worker 1"
    );
    done(&mut core, &mut comm, 0, 1, "a"); // task 3 may have started meanwhile
    core.shutdown(&mut comm, true);
    core.task_retracted(&mut comm, WorkerId(0), TaskId(3));
    assert!(comm.events.contains(&Event::Cancelled {
        task: TaskId(3),
        upstream: None
    }));
    assert!(!comm
        .runs()
        .iter()
        .any(|(w, t)| *w == WorkerId(1) && *t == TaskId(3)));
}
