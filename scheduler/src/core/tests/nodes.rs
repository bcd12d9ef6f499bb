//! Fresh workers placed on the nodes of an allocation: each call's ranks
//! all on one node with room for them, its GPUs that node's, what does not
//! fit yet queued, what no node could ever hold refused at submit.

use super::*;
use crate::resources::NeverFits;

fn node(name: &str, cpus: u32, gpus: &[&str]) -> Node {
    Node {
        name: name.into(),
        cpus,
        gpus: Gpus::Devices(gpus.iter().map(|id| id.to_string()).collect()),
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
        .map(|(_, launch)| core.capacity.node_name(launch.node).to_string())
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
