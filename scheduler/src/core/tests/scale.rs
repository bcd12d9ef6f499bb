//! The core at the scale of issue 24: a pool of one worker per core on
//! 1,000 nodes of 128 cores, a million no-op calls. Ignored (seconds in
//! release, minutes in debug); run it to measure the core alone:
//! `cargo test --release -p pmp-scheduler --lib a_million_calls -- --ignored --nocapture`.

use super::*;
use std::time::Instant;

/// A Comm that keeps only what the run needs: the Runs to answer, and how
/// many calls finished.
#[derive(Default)]
struct Lean {
    runs: Vec<(WorkerId, TaskId)>,
    finished: usize,
}

impl Comm for Lean {
    fn start_worker(&mut self, _: WorkerId, _: &Launch) {}
    fn send(&mut self, worker: WorkerId, message: ToWorker, _: Vec<Bytes>) {
        if let ToWorker::Run { task, .. } = message {
            self.runs.push((worker, task));
        }
    }
    fn stop_worker(&mut self, _: WorkerId) {}
    fn emit(&mut self, event: Event) {
        if let Event::Finished { .. } = event {
            self.finished += 1;
        }
    }
    fn cancel_answered(&mut self, _: TaskId, _: bool) {}
}

/// The process's resident memory now, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| {
            kb.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<usize>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

#[test]
#[ignore]
fn a_million_calls_on_a_thousand_nodes_of_128_cores() {
    const NODES: u32 = 1000;
    const CORES: u32 = 128;
    const CALLS: u64 = 1_000_000;
    /// The server's most events between two scheduling passes.
    const BATCH: usize = 256;
    let nodes = (0..NODES)
        .map(|i| Node {
            name: format!("node{i}"),
            cpus: CORES,
            gpus: Gpus::Counted(0),
            memory_mb: None,
        })
        .collect();
    let workers = NODES * CORES;
    let mut core = Core::new(
        Allocation::Block {
            workers,
            resources: ResourceRequest::default(),
        },
        Capacity::of_nodes(nodes, None),
        None,
    );
    core.set_queue_ahead(Some(QueueAhead {
        shared_from: SHARED_FROM,
    }));
    let mut comm = Lean::default();
    let started = Instant::now();
    core.start(&mut comm);
    for w in 0..workers {
        core.worker_hello(&mut comm, WorkerId(w), w, "host".into());
    }
    core.schedule_if_needed(&mut comm);
    let pool_started = started.elapsed();
    let memory_before = rss();
    let started = Instant::now();
    let mut submitted = 0u64;
    let mut answered = 0usize;
    while comm.finished < CALLS as usize {
        for _ in 0..BATCH {
            if submitted == CALLS {
                break;
            }
            submitted += 1;
            core.submit(&mut comm, task(submitted, &[])).unwrap();
        }
        core.schedule_if_needed(&mut comm);
        // A worker answers its Runs in the order they were sent to it.
        let runs = std::mem::take(&mut comm.runs);
        for chunk in runs.chunks(BATCH) {
            for &(worker, task) in chunk {
                core.task_done(
                    &mut comm,
                    worker,
                    task,
                    Outcome::Returned,
                    payload("result"),
                );
                answered += 1;
            }
            core.schedule_if_needed(&mut comm);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let held = rss().saturating_sub(memory_before) as f64 / CALLS as f64;
    println!(
        "{{\"nodes\": {NODES}, \"workers\": {workers}, \"calls\": {CALLS}, \"answered\": \
         {answered}, \"pool_start_s\": {:.2}, \"calls_per_s\": {:.0}, \"us_per_call\": {:.2}, \
         \"bytes_per_finished_call_held\": {held:.0}, \"task_record_bytes\": {}}}",
        pool_started.as_secs_f64(),
        CALLS as f64 / elapsed,
        elapsed * 1e6 / CALLS as f64,
        std::mem::size_of::<tasks::Task>(),
    );
    assert_eq!(core.task_counts().finished, CALLS as usize);
}
