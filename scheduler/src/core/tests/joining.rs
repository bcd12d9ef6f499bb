//! Nodes that join as their agents connect (pilot jobs): the pool's
//! workers wait for a node with room, start there as it joins, and a
//! node's loss leaves the work queued for nodes still to come until the
//! server says none can (`nodes_gone`).

use super::*;
use crate::capacity::Placement;
use crate::ids::NodeId;

fn joining(workers: u32) -> (Driven, Recorder) {
    let mut core = Driven(Core::new(
        Allocation::Block {
            workers,
            resources: ResourceRequest::default(),
        },
        Capacity::joining(Some(workers)),
        None,
    ));
    let mut comm = Recorder::default();
    core.start(&mut comm);
    (core, comm)
}

fn node(name: &str, cpus: u32) -> Node {
    Node {
        name: name.into(),
        cpus,
        gpus: Gpus::Counted(0),
        memory_mb: None,
    }
}

fn placed(comm: &Recorder) -> Vec<(u32, Placement)> {
    comm.started
        .iter()
        .map(|(worker, launch)| (worker.0, launch.placement.clone()))
        .collect()
}

#[test]
fn pool_workers_wait_for_nodes_and_fill_each_as_it_joins() {
    let (mut core, mut comm) = joining(3);
    assert!(comm.started.is_empty(), "no node joined yet");
    core.submit(&mut comm, task(1, &[])).unwrap();
    assert_eq!(core.add_node(&mut comm, node("node1", 2)), NodeId(0));
    assert_eq!(
        placed(&comm),
        [
            (0, Placement::Node(NodeId(0))),
            (1, Placement::Node(NodeId(0)))
        ]
    );
    core.add_node(&mut comm, node("node2", 2));
    assert_eq!(placed(&comm)[2], (2, Placement::Node(NodeId(1))));
    assert_eq!(
        comm.started.len(),
        3,
        "the pool's size, not the nodes' room"
    );
}

#[test]
fn a_lost_node_leaves_work_queued_until_no_node_can_join() {
    let (mut core, mut comm) = joining(1);
    core.add_node(&mut comm, node("node1", 1));
    core.worker_hello(&mut comm, WorkerId(0), 100, "node1".into());
    core.submit(&mut comm, task(1, &[])).unwrap();
    core.submit(&mut comm, task(2, &[])).unwrap();
    core.0
        .node_lost(&mut comm, NodeId(0), "node1", "its job ended");
    let why = "node node1 was lost".to_string();
    core.worker_lost(&mut comm, WorkerId(0), LostReason::new(why.clone()));
    assert_eq!(
        lost(&comm),
        [(TaskId(1), why.clone())],
        "2 waits: a node may join"
    );
    assert_eq!(comm.started.len(), 1, "no room to start a replacement");
    core.0.nodes_gone(&mut comm, "no pilot job is left".into());
    assert_eq!(
        lost(&comm)[1],
        (TaskId(2), "no pilot job is left".to_string())
    );
}
