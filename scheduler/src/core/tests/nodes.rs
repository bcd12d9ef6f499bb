//! Fresh workers placed on the nodes of an allocation: each call's ranks
//! all on one node with room for them, its GPUs that node's, what does not
//! fit yet queued, what no node could ever hold refused at submit, or,
//! where the backend can start a step across nodes, spread over them.

use super::*;
use crate::capacity::Placement;
use crate::resources::NeverFits;

fn node(name: &str, cpus: u32, gpus: &[&str]) -> Node {
    Node {
        name: name.into(),
        cpus,
        gpus: Gpus::Devices(gpus.iter().map(|id| id.to_string()).collect()),
        memory_mb: None,
    }
}

fn on_nodes(nodes: Vec<Node>) -> (Driven, Recorder) {
    let core = Driven(Core::new(
        Allocation::PerTask,
        Capacity::of_nodes(nodes, None),
        None,
    ));
    (core, Recorder::default())
}

/// Nodes whose backend runs a call larger than any of them as a step of
/// its own across them (Slurm under node agents).
fn spanned(nodes: Vec<Node>) -> (Driven, Recorder) {
    let core = Driven(Core::new(
        Allocation::PerTask,
        Capacity::of_nodes(nodes, None).with_spans(),
        None,
    ));
    (core, Recorder::default())
}

fn counted(name: &str, cpus: u32, gpus: u32) -> Node {
    Node {
        name: name.into(),
        cpus,
        gpus: Gpus::Counted(gpus),
        memory_mb: None,
    }
}

/// The ranks each node got of the worker started `nth`, by node name; one
/// node with all of them where it was not spread.
fn ranks_of(core: &Driven, comm: &Recorder, nth: usize) -> Vec<(String, u32)> {
    let launch = &comm.started[nth].1;
    match &launch.placement {
        Placement::Node(node) => vec![(
            core.capacity.node_name(*node).to_string(),
            launch.resources.cores,
        )],
        Placement::Span(shares) => shares
            .iter()
            .map(|share| (share.name.clone(), share.ranks))
            .collect(),
    }
}

fn ranks(pairs: &[(&str, u32)]) -> Vec<(String, u32)> {
    pairs.iter().map(|(n, r)| (n.to_string(), *r)).collect()
}

fn call(id: u64, cores: u32, gpus_per_core: u32) -> TaskSpec {
    TaskSpec {
        resources: ResourceRequest {
            cores,
            gpus_per_core,
            ..Default::default()
        },
        ..task(id, &[])
    }
}

/// The node of each worker started so far, by name, in start order.
fn nodes_started(core: &Driven, comm: &Recorder) -> Vec<String> {
    comm.started
        .iter()
        .map(|(_, launch)| core.capacity.placement_name(&launch.placement))
        .collect()
}

/// The worker started for `task` says hello, finishes it and exits.
fn ends(core: &mut Driven, comm: &mut Recorder, worker: u32, task: u64) {
    core.worker_hello(comm, WorkerId(worker), 100 + worker, "h".into());
    done(core, comm, worker, task, "r");
    core.worker_lost(comm, WorkerId(worker), LostReason::new("exit 0"));
}

#[test]
fn four_two_core_calls_fill_two_nodes_and_a_fifth_waits_for_one_to_end() {
    let (mut core, mut comm) = on_nodes(vec![node("a", 4, &[]), node("b", 4, &[])]);
    for id in 1..=5 {
        core.submit(&mut comm, call(id, 2, 0)).unwrap();
    }
    assert_eq!(nodes_started(&core, &comm), ["a", "a", "b", "b"]);
    let info: Vec<String> = core.worker_infos().into_iter().map(|w| w.node).collect();
    assert_eq!(
        info,
        ["a", "a", "b", "b"],
        "info() names each worker's node"
    );
    ends(&mut core, &mut comm, 2, 3);
    assert_eq!(
        nodes_started(&core, &comm),
        ["a", "a", "b", "b", "b"],
        "the fifth goes where the third ended"
    );
}

#[test]
fn small_calls_pack_one_node_so_that_a_whole_node_call_finds_another_empty() {
    let (mut core, mut comm) = on_nodes(vec![node("a", 4, &[]), node("b", 4, &[])]);
    core.submit(&mut comm, call(1, 2, 0)).unwrap();
    core.submit(&mut comm, call(2, 2, 0)).unwrap();
    core.submit(&mut comm, call(3, 4, 0)).unwrap();
    assert_eq!(nodes_started(&core, &comm), ["a", "a", "b"]);
}

#[test]
fn a_whole_node_call_waits_for_an_empty_node_rather_than_being_split() {
    let (mut core, mut comm) = on_nodes(vec![node("a", 4, &[]), node("b", 4, &[])]);
    for id in 1..=3 {
        core.submit(&mut comm, call(id, 2, 0)).unwrap();
    }
    assert_eq!(nodes_started(&core, &comm), ["a", "a", "b"]);
    ends(&mut core, &mut comm, 1, 2);
    core.submit(&mut comm, call(4, 4, 0)).unwrap();
    assert_eq!(
        comm.started.len(),
        3,
        "2 CPUs free on a and 2 on b are 4, but on no one node"
    );
    ends(&mut core, &mut comm, 0, 1);
    assert_eq!(nodes_started(&core, &comm), ["a", "a", "b", "a"]);
    assert_eq!(comm.started[3].1.resources.cores, 4);
}

#[test]
fn gpus_are_distinct_per_call_and_come_from_the_calls_node() {
    // Device ids are per node: each node has its own GPU 0.
    let (mut core, mut comm) = on_nodes(vec![node("a", 4, &["0"]), node("b", 4, &["0", "1"])]);
    for id in 1..=4 {
        core.submit(&mut comm, call(id, 1, 1)).unwrap();
    }
    let placed = |core: &Driven, comm: &Recorder| -> Vec<(String, Vec<String>)> {
        let nodes = nodes_started(core, comm);
        let gpus = comm.started.iter().map(|(_, l)| l.gpus.devices().to_vec());
        nodes.into_iter().zip(gpus).collect()
    };
    let gpu = |name: &str, id: &str| (name.to_string(), vec![id.to_string()]);
    assert_eq!(
        placed(&core, &comm),
        [gpu("a", "0"), gpu("b", "0"), gpu("b", "1")],
        "a has CPUs left for the fourth, but no GPU"
    );
    ends(&mut core, &mut comm, 0, 1);
    assert_eq!(
        placed(&core, &comm)[3],
        gpu("a", "0"),
        "a's GPU, given back"
    );
}

#[test]
fn a_call_larger_than_any_node_is_refused_at_submit_though_all_nodes_hold_it_together() {
    let (mut core, mut comm) = on_nodes(vec![node("a", 4, &[]), node("b", 4, &[])]);
    let refused = core.submit(&mut comm, call(1, 6, 0)).unwrap_err();
    assert_eq!(
        refused,
        SubmitError::NeverFits(NeverFits::SeveralNodes {
            cpus: 6,
            gpus: 0,
            node_cpus: 4,
            node_gpus: 0
        })
    );
    assert!(refused.to_string().contains("fit on no single node"));
    assert!(comm.started.is_empty());
    core.shutdown(&mut comm, false);
    assert!(core.is_finished(), "nothing was left queued");
}

#[test]
fn a_worker_that_exits_gives_back_the_cpus_of_its_own_node_only() {
    let (mut core, mut comm) = on_nodes(vec![node("a", 4, &[]), node("b", 4, &[])]);
    for id in 1..=4 {
        core.submit(&mut comm, call(id, 4, 0)).unwrap();
    }
    assert_eq!(nodes_started(&core, &comm), ["a", "b"]);
    ends(&mut core, &mut comm, 1, 2);
    assert_eq!(
        nodes_started(&core, &comm),
        ["a", "b", "b"],
        "b's CPUs came back; a's are still taken"
    );
    ends(&mut core, &mut comm, 0, 1);
    assert_eq!(nodes_started(&core, &comm), ["a", "b", "b", "a"]);
}

#[test]
fn a_call_larger_than_any_node_spans_the_emptiest_nodes_and_gives_each_its_cpus_back() {
    let (mut core, mut comm) = spanned(vec![
        node("a", 4, &[]),
        node("b", 4, &[]),
        node("c", 4, &[]),
    ]);
    core.submit(&mut comm, call(1, 1, 0)).unwrap();
    core.submit(&mut comm, call(2, 6, 0)).unwrap();
    assert_eq!(
        ranks_of(&core, &comm, 1),
        ranks(&[("b", 4), ("c", 2)]),
        "the nodes with the most room first: as few as hold it, a's one CPU taken left alone"
    );
    let info: Vec<String> = core.worker_infos().into_iter().map(|w| w.node).collect();
    assert_eq!(info, ["a", "b+c"], "info() names every node of a span");
    assert_eq!(
        comm.started[1].1.gpus,
        Gpus::Counted(0),
        "srun picks a span's devices: pmp exports none"
    );
    // c has 2 CPUs left, a 3: two calls of 2 fill them, a third waits.
    for id in 3..=5 {
        core.submit(&mut comm, call(id, 2, 0)).unwrap();
    }
    assert_eq!(nodes_started(&core, &comm), ["a", "b+c", "c", "a"]);
    ends(&mut core, &mut comm, 1, 2);
    assert_eq!(
        nodes_started(&core, &comm)[4],
        "c",
        "c's 2 CPUs came back: the fullest node with room"
    );
    for id in 6..=8 {
        core.submit(&mut comm, call(id, if id == 6 { 4 } else { 1 }, 0))
            .unwrap();
    }
    assert_eq!(
        nodes_started(&core, &comm)[5..],
        ["b", "a"],
        "b's 4 came back too, and no more than the span took: the last waits"
    );
}

#[test]
fn a_span_waits_its_turn_until_the_nodes_hold_its_ranks_together_and_blocks_those_behind() {
    let (mut core, mut comm) = spanned(vec![node("a", 4, &[]), node("b", 4, &[])]);
    core.submit(&mut comm, call(1, 2, 0)).unwrap();
    core.submit(&mut comm, call(2, 7, 0)).unwrap();
    core.submit(&mut comm, call(3, 1, 0)).unwrap();
    assert_eq!(
        nodes_started(&core, &comm),
        ["a"],
        "6 CPUs free, 7 asked for: it waits, and the call behind it with it"
    );
    ends(&mut core, &mut comm, 0, 1);
    assert_eq!(nodes_started(&core, &comm), ["a", "a+b", "b"]);
    assert_eq!(ranks_of(&core, &comm, 1), ranks(&[("a", 4), ("b", 3)]));
}

#[test]
fn a_span_takes_whole_ranks_with_their_gpus_on_each_node_and_returns_them() {
    let (mut core, mut comm) = spanned(vec![counted("a", 4, 2), counted("b", 4, 2)]);
    // Three ranks of one GPU: two GPUs a node, so no node holds it.
    core.submit(&mut comm, call(1, 3, 1)).unwrap();
    assert_eq!(ranks_of(&core, &comm, 0), ranks(&[("a", 2), ("b", 1)]));
    assert_eq!(comm.started[0].1.gpus, Gpus::Counted(3));
    for id in 2..=3 {
        core.submit(&mut comm, call(id, 1, 1)).unwrap();
    }
    assert_eq!(
        nodes_started(&core, &comm),
        ["a+b", "b"],
        "b's last GPU; the next waits for one"
    );
    ends(&mut core, &mut comm, 0, 1);
    for id in 4..=6 {
        core.submit(&mut comm, call(id, 1, 1)).unwrap();
    }
    assert_eq!(
        nodes_started(&core, &comm),
        ["a+b", "b", "b", "a", "a"],
        "the span's GPU on b and both on a came back; the last call waits for one"
    );
}

#[test]
fn what_the_nodes_cannot_hold_together_in_whole_ranks_is_refused_at_submit_saying_why() {
    let (mut core, mut comm) = spanned(vec![node("a", 5, &[]), node("b", 5, &[])]);
    let threads = |id, cores, threads| TaskSpec {
        resources: ResourceRequest {
            cores,
            threads_per_core: threads,
            ..Default::default()
        },
        ..task(id, &[])
    };
    assert_eq!(
        core.submit(&mut comm, call(1, 11, 0)).unwrap_err(),
        SubmitError::NeverFits(NeverFits::Cpus {
            cores: 11,
            threads_per_core: 1,
            cpus: 10
        }),
        "more than all nodes hold is said in the allocation's totals"
    );
    // 9 CPUs of 10, but a rank of 3 threads fits once on a node of 5.
    let refused = core.submit(&mut comm, threads(2, 3, 3)).unwrap_err();
    assert_eq!(
        refused,
        SubmitError::NeverFits(NeverFits::Ranks {
            cores: 3,
            threads_per_core: 3,
            gpus_per_core: 0,
            ranks: 2
        })
    );
    assert!(
        refused.to_string().contains("hold only 2 such ranks"),
        "{refused}"
    );
    core.submit(&mut comm, threads(3, 2, 3)).unwrap();
    assert_eq!(ranks_of(&core, &comm, 0), ranks(&[("a", 1), ("b", 1)]));
    assert!(comm.started.len() == 1);
}

#[test]
fn a_block_pool_spreads_over_the_nodes_and_a_lost_worker_returns_its_share() {
    // Under node agents each node's agent starts the workers placed on it:
    // a pool of 4 on two nodes of 2 CPUs is two on each, not four on the
    // first.
    let mut core = Driven(Core::new(
        Allocation::Block {
            workers: 4,
            resources: ResourceRequest::default(),
        },
        Capacity::of_nodes(vec![counted("a", 2, 0), counted("b", 2, 0)], None),
        None,
    ));
    let mut comm = Recorder::default();
    core.start(&mut comm);
    let nodes = |comm: &Recorder| -> Vec<String> {
        let mut names: Vec<String> = (0..comm.started.len())
            .map(|nth| ranks_of(&core, comm, nth)[0].0.clone())
            .collect();
        names.sort();
        names
    };
    assert_eq!(nodes(&comm), ["a", "a", "b", "b"]);
    // The replacement of a worker lost on b goes where it left room: b.
    let on_b = (0..4)
        .find(|&nth| ranks_of(&core, &comm, nth)[0].0 == "b")
        .unwrap();
    let lost = comm.started[on_b].0;
    core.worker_lost(&mut comm, lost, LostReason::new("killed"));
    assert_eq!(comm.started.len(), 5);
    assert_eq!(ranks_of(&core, &comm, 4)[0].0, "b");
}

/// A node of `cpus` CPUs and `mb` MB of memory.
fn with_memory(name: &str, cpus: u32, mb: u32) -> Node {
    Node {
        memory_mb: Some(mb),
        ..counted(name, cpus, 0)
    }
}

/// A one-core call keeping `mb` MB (`memory_max`).
fn keeping(id: u64, mb: u32) -> TaskSpec {
    TaskSpec {
        resources: ResourceRequest {
            memory_mb: std::num::NonZeroU32::new(mb),
            ..Default::default()
        },
        ..task(id, &[])
    }
}

#[test]
fn a_call_waits_for_memory_though_cpus_are_free_and_gets_it_when_one_ends() {
    let (mut core, mut comm) = on_nodes(vec![with_memory("a", 4, 1000), with_memory("b", 4, 1000)]);
    for id in 1..=3 {
        core.submit(&mut comm, keeping(id, 600)).unwrap();
    }
    assert_eq!(
        nodes_started(&core, &comm),
        ["a", "b"],
        "600 MB of 1000 a node: one call on each, the third waits"
    );
    ends(&mut core, &mut comm, 0, 1);
    assert_eq!(
        nodes_started(&core, &comm),
        ["a", "b", "a"],
        "the first's memory given back on a"
    );
    // Calls without memory_max still fill the CPUs beside them.
    core.submit(&mut comm, call(4, 3, 0)).unwrap();
    assert_eq!(nodes_started(&core, &comm)[3], "a");
}

#[test]
fn memory_max_above_every_nodes_memory_is_refused_at_submit_naming_the_key() {
    let (mut core, mut comm) = on_nodes(vec![with_memory("a", 4, 2048), with_memory("b", 4, 1024)]);
    let refused = core.submit(&mut comm, keeping(1, 3072)).unwrap_err();
    assert_eq!(
        refused,
        SubmitError::NeverFits(NeverFits::Memory {
            requested: 3072,
            node_mb: 2048
        })
    );
    let words = refused.to_string();
    assert!(
        words.contains("memory_max' asks for 3 GB on one node, more than the 2 GB"),
        "{words}"
    );
    core.submit(&mut comm, keeping(2, 2048)).unwrap();
    assert_eq!(nodes_started(&core, &comm), ["a"], "only a holds it");
    // A node whose memory is not known (an agent that did not say) may
    // hold it: placed there on CPUs alone.
    let (mut unknown, mut comm) = on_nodes(vec![with_memory("a", 4, 1024), counted("b", 4, 0)]);
    unknown.submit(&mut comm, keeping(1, 3072)).unwrap();
    assert_eq!(nodes_started(&unknown, &comm), ["b"]);
}

#[test]
fn memory_an_agent_says_later_holds_calls_back_from_then_on() {
    let (mut core, mut comm) = on_nodes(vec![counted("a", 4, 0)]);
    core.submit(&mut comm, keeping(1, 600)).unwrap();
    core.learn_memory(&mut comm, crate::ids::NodeId(0), 1000);
    core.submit(&mut comm, keeping(2, 600)).unwrap();
    assert_eq!(
        nodes_started(&core, &comm),
        ["a"],
        "the first call's 600 MB counted though the node's memory came after it"
    );
}

fn pool_keeping(workers: u32, mb: u32, nodes: Vec<Node>) -> (Driven, Recorder) {
    let mut core = Driven(Core::new(
        Allocation::Block {
            workers,
            resources: ResourceRequest {
                memory_mb: std::num::NonZeroU32::new(mb),
                ..Default::default()
            },
        },
        Capacity::of_nodes(nodes, None),
        None,
    ));
    let mut comm = Recorder::default();
    core.start(&mut comm);
    (core, comm)
}

#[test]
fn pool_workers_keep_their_memory_for_life_and_only_as_many_start_as_the_nodes_hold() {
    let (core, comm) = pool_keeping(
        3,
        600,
        vec![with_memory("a", 4, 1000), with_memory("b", 4, 1000)],
    );
    assert_eq!(
        nodes_started(&core, &comm),
        ["a", "b"],
        "600 MB a worker, 1000 a node: the third never starts"
    );
}

#[test]
fn a_pool_whose_worker_no_node_has_the_memory_for_fails_its_calls_saying_why() {
    let (mut core, mut comm) = pool_keeping(1, 2048, vec![with_memory("a", 4, 1024)]);
    assert!(comm.started.is_empty());
    core.submit(&mut comm, keeping(1, 2048)).unwrap();
    let failed = comm
        .events
        .iter()
        .find_map(|event| match event {
            Event::Lost { task, reason } if *task == TaskId(1) => Some(reason.message.clone()),
            _ => None,
        })
        .expect("the call fails");
    assert!(
        failed.contains("the pool's workers can never start: resource_dict key 'memory_max'"),
        "{failed}"
    );
}

#[test]
fn a_queued_call_that_a_memory_said_later_shows_never_fits_fails_saying_why() {
    let (mut core, mut comm) = on_nodes(vec![counted("a", 1, 0)]);
    core.submit(&mut comm, call(1, 1, 0)).unwrap();
    core.submit(&mut comm, keeping(2, 3072)).unwrap();
    assert_eq!(comm.started.len(), 1, "the second waits for the CPU");
    core.learn_memory(&mut comm, crate::ids::NodeId(0), 1024);
    let failed = comm.events.iter().find_map(|event| match event {
        Event::Lost { task, reason } if *task == TaskId(2) => Some(reason.message.clone()),
        _ => None,
    });
    let failed = failed.expect("it fails rather than wait forever");
    assert!(
        failed.contains("resource_dict key 'memory_max' asks for 3 GB"),
        "{failed}"
    );
    core.submit(&mut comm, call(3, 1, 0)).unwrap();
    ends(&mut core, &mut comm, 0, 1);
    assert_eq!(comm.started.len(), 2, "the queue moves on");
}
