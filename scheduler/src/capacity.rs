//! What is free where: the nodes workers run on, each with its CPUs and
//! GPUs, which node a worker is placed on, and what it gives back there.

use crate::ids::NodeId;
use crate::resources::{Gpus, NeverFits, ResourceRequest};

/// The name of the one node that stands for a whole allocation, where pmp
/// does not know its nodes one by one (srun or flux place each step).
pub const WHOLE_ALLOCATION: &str = "allocation";

/// A node workers run on: the local machine, or a node of the allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub cpus: u32,
    pub gpus: Gpus,
}

/// A node and what of it is taken.
#[derive(Clone, Debug)]
struct NodeUse {
    name: String,
    cpus_total: u32,
    cpus_used: u32,
    gpus_total: u32,
    gpus_free: Gpus,
    /// Its agent is gone: nothing is placed here any more.
    lost: bool,
}

impl NodeUse {
    /// CPUs a request takes here. Oversubscription may exceed the node, but
    /// it still occupies all of it while it runs.
    fn cpus_for(&self, request: &ResourceRequest) -> u32 {
        if request.oversubscribe {
            request.cpus().min(self.cpus_total)
        } else {
            request.cpus()
        }
    }

    fn cpus_free(&self) -> u32 {
        self.cpus_total - self.cpus_used
    }

    /// Whether `request` fits in what is free here now.
    fn fits(&self, request: &ResourceRequest) -> bool {
        !self.lost
            && self.cpus_for(request) <= self.cpus_free()
            && self.gpus_free.count() >= request.gpus()
    }

    /// Whether `request` fits here once the node is empty.
    fn holds(&self, request: &ResourceRequest) -> bool {
        !self.lost && self.cpus_for(request) <= self.cpus_total && request.gpus() <= self.gpus_total
    }
}

/// The free part of the allocation, node by node. In fresh-process-per-task
/// mode a worker takes CPUs and GPUs of one node for its life; a
/// block-allocated worker takes GPUs only (the plan checked its CPUs once).
#[derive(Clone, Debug)]
pub struct Capacity {
    nodes: Vec<NodeUse>,
    max_workers: Option<u32>,
    workers: u32,
    /// The user's `max_cores` over all nodes together, where it is less
    /// than they hold (node agents: the nodes are the allocation's).
    max_cpus: Option<u32>,
}

impl Capacity {
    /// The allocation as one node (`WHOLE_ALLOCATION`), as the plan sizes it.
    pub fn new(cpus: u32, max_workers: Option<u32>, gpus: Gpus) -> Capacity {
        let whole = Node {
            name: WHOLE_ALLOCATION.into(),
            cpus,
            gpus,
        };
        Capacity::of_nodes(vec![whole], max_workers)
    }

    /// These nodes, numbered in this order (`NodeId`); `max_workers` counts
    /// workers on all of them together.
    pub fn of_nodes(nodes: Vec<Node>, max_workers: Option<u32>) -> Capacity {
        let nodes = nodes
            .into_iter()
            .map(|node| NodeUse {
                name: node.name,
                cpus_total: node.cpus,
                cpus_used: 0,
                gpus_total: node.gpus.count(),
                gpus_free: node.gpus,
                lost: false,
            })
            .collect();
        Capacity {
            nodes,
            max_workers,
            workers: 0,
            max_cpus: None,
        }
    }

    /// At most `cpus` CPUs in use on all nodes together (`max_cores`).
    pub fn with_max_cpus(mut self, cpus: u32) -> Capacity {
        self.max_cpus = Some(cpus);
        self
    }

    fn cpus_in_use(&self) -> u32 {
        self.nodes.iter().map(|n| n.cpus_used).sum()
    }

    fn live_nodes(&self) -> impl Iterator<Item = &NodeUse> {
        self.nodes.iter().filter(|n| !n.lost)
    }

    pub fn node_name(&self, node: NodeId) -> &str {
        &self.nodes[node.0 as usize].name
    }

    /// The node `request` is to run on now, if one has room for all of it.
    ///
    /// Packed: the fullest node that fits (fewest free CPUs, then fewest
    /// free GPUs, then the first). Calls are queued first in, first out
    /// without backfill, so a call that needs a whole node blocks the queue
    /// until one is empty; filling nodes one by one keeps the others empty
    /// for it, where spreading small calls over every node would leave a
    /// little free on each and none whole.
    pub fn place(&self, request: &ResourceRequest) -> Option<NodeId> {
        if self.max_workers.is_some_and(|max| self.workers >= max) {
            return None;
        }
        if let Some(max) = self.max_cpus {
            // Oversubscribed calls count at most a node's worth, as on it.
            let cpus = if request.oversubscribe {
                request.cpus().min(max)
            } else {
                request.cpus()
            };
            if self.cpus_in_use() + cpus > max {
                return None;
            }
        }
        (0u32..)
            .zip(&self.nodes)
            .filter(|(_, node)| node.fits(request))
            .min_by_key(|(id, node)| (node.cpus_free(), node.gpus_free.count(), *id))
            .map(|(id, _)| NodeId(id))
    }

    /// Take what `request` needs on `node` (where `place` put it); returns
    /// the GPUs handed to it, that node's.
    pub fn take(&mut self, node: NodeId, request: &ResourceRequest) -> Gpus {
        self.workers += 1;
        let node = &mut self.nodes[node.0 as usize];
        node.cpus_used += node.cpus_for(request);
        node.gpus_free.take(request.gpus())
    }

    /// Return what `take` took on `node`, to that node.
    pub fn give_back(&mut self, node: NodeId, request: &ResourceRequest, gpus: Gpus) {
        self.workers -= 1;
        let used = &mut self.nodes[node.0 as usize];
        used.cpus_used -= used.cpus_for(request);
        used.gpus_free.put_back(gpus);
    }

    /// A node and GPUs for a block-allocated worker, which holds them for
    /// its life: the node with the most GPUs free (the first of those), so
    /// that the pool's GPUs come from wherever they are left; a worker the
    /// allocation has no GPUs left for gets none, as the plan allows.
    pub fn take_gpus(&mut self, n: u32) -> (NodeId, Gpus) {
        let (id, node) = (0u32..)
            .zip(self.nodes.iter_mut())
            .max_by_key(|(id, node)| (!node.lost, node.gpus_free.count(), std::cmp::Reverse(*id)))
            .expect("a capacity has a node");
        (NodeId(id), node.gpus_free.take(n))
    }

    pub fn return_gpus(&mut self, node: NodeId, gpus: Gpus) {
        self.nodes[node.0 as usize].gpus_free.put_back(gpus);
    }

    /// `node` is gone (its agent died): nothing more is placed there, and
    /// what only it could hold never fits any more. What runs there is
    /// given back as its workers are reported lost.
    pub fn lose(&mut self, node: NodeId) {
        self.nodes[node.0 as usize].lost = true;
    }

    /// Why `request` could never run here, even on an empty allocation: a
    /// task like that would wait forever, so it is refused instead. What
    /// the whole allocation cannot hold says so in its totals; what it
    /// holds only across nodes is `NeverFits::SeveralNodes`.
    pub fn never_fits(&self, request: &ResourceRequest) -> Option<NeverFits> {
        if self.nodes.iter().any(|node| node.holds(request)) {
            return None;
        }
        if let Some(why) = self.pool_never_fits(request, 1) {
            return Some(why);
        }
        Some(NeverFits::SeveralNodes {
            cpus: request.cpus(),
            gpus: request.gpus(),
            node_cpus: self.live_nodes().map(|n| n.cpus_total).max().unwrap_or(0),
            node_gpus: self.live_nodes().map(|n| n.gpus_total).max().unwrap_or(0),
        })
    }

    /// The same for a block allocation of `workers` workers like `request`,
    /// in the allocation's totals: each must fit on its own, and they hold
    /// their CPUs and GPUs all at once (a worker the allocation has no GPUs
    /// left for would get none). Only oversubscribed workers may share CPUs.
    pub fn pool_never_fits(&self, request: &ResourceRequest, workers: u32) -> Option<NeverFits> {
        let cpus_total: u32 = self.live_nodes().map(|n| n.cpus_total).sum();
        let cpus_total = self.max_cpus.map_or(cpus_total, |max| max.min(cpus_total));
        let gpus_total: u32 = self.live_nodes().map(|n| n.gpus_total).sum();
        let cpus_each = if request.oversubscribe {
            request.cpus().min(cpus_total)
        } else {
            request.cpus()
        };
        if cpus_each > cpus_total {
            return Some(NeverFits::Cpus {
                cores: request.cores,
                threads_per_core: request.threads_per_core,
                cpus: cpus_total,
            });
        }
        let cpus = u64::from(request.cpus()) * u64::from(workers);
        if !request.oversubscribe && cpus > u64::from(cpus_total) {
            return Some(NeverFits::Pool {
                workers,
                cpus_each: request.cpus(),
                cpus: cpus_total,
            });
        }
        let gpus = request.gpus().saturating_mul(workers);
        if gpus > gpus_total {
            return Some(NeverFits::Gpus {
                requested: gpus,
                available: gpus_total,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices(ids: &[&str]) -> Gpus {
        Gpus::Devices(ids.iter().map(|id| id.to_string()).collect())
    }

    const ONE: NodeId = NodeId(0);

    #[test]
    fn a_block_worker_takes_what_is_left_and_returns_it() {
        let mut cap = Capacity::new(4, None, Gpus::Counted(3));
        let (_, a) = cap.take_gpus(2);
        let (_, b) = cap.take_gpus(2);
        assert_eq!((&a, &b), (&Gpus::Counted(2), &Gpus::Counted(1)));
        cap.return_gpus(ONE, a);
        cap.return_gpus(ONE, b);
        assert!(cap.place(&ResourceRequest::of(1, 1, 3)).is_some());
    }

    #[test]
    fn cpus_count_threads_and_gpus_are_distinct_devices() {
        let mut cap = Capacity::new(4, None, devices(&["0", "1"]));
        assert!(cap.place(&ResourceRequest::of(2, 2, 0)).is_some());
        assert!(cap.place(&ResourceRequest::of(3, 2, 0)).is_none());
        let a = cap.take(ONE, &ResourceRequest::of(1, 1, 1));
        let b = cap.take(ONE, &ResourceRequest::of(1, 1, 1));
        assert_eq!((a.clone(), b), (devices(&["0"]), devices(&["1"])));
        assert!(
            cap.place(&ResourceRequest::of(1, 1, 1)).is_none(),
            "no GPU left"
        );
        cap.give_back(ONE, &ResourceRequest::of(1, 1, 1), a);
        assert!(cap.place(&ResourceRequest::of(1, 1, 1)).is_some());
    }

    #[test]
    fn max_workers_limits_concurrent_workers() {
        let mut cap = Capacity::new(8, Some(1), Gpus::Counted(0));
        cap.take(ONE, &ResourceRequest::of(1, 1, 0));
        assert!(cap.place(&ResourceRequest::of(1, 1, 0)).is_none());
    }

    #[test]
    fn oversubscribe_fits_a_request_larger_than_the_allocation() {
        let mut over = ResourceRequest::of(4, 1, 0);
        over.oversubscribe = true;
        let cap = Capacity::new(2, None, Gpus::Counted(0));
        assert!(cap.never_fits(&over).is_none() && cap.place(&over).is_some());
        let why = cap.never_fits(&ResourceRequest::of(4, 1, 0)).unwrap();
        assert_eq!(
            why,
            NeverFits::Cpus {
                cores: 4,
                threads_per_core: 1,
                cpus: 2
            }
        );
        assert_eq!(
            why.to_string(),
            "4 cores x 1 threads_per_core can never fit in 2 CPUs"
        );
    }

    #[test]
    fn more_gpus_than_the_allocation_holds_can_never_fit_and_says_why() {
        let cap = Capacity::new(4, None, devices(&["0", "1"]));
        assert!(cap.never_fits(&ResourceRequest::of(2, 1, 1)).is_none());
        assert!(cap
            .pool_never_fits(&ResourceRequest::of(1, 1, 1), 2)
            .is_none());
        assert_eq!(
            cap.pool_never_fits(&ResourceRequest::of(1, 1, 1), 3),
            Some(NeverFits::Gpus {
                requested: 3,
                available: 2
            })
        );
        let why = cap.never_fits(&ResourceRequest::of(1, 1, 3)).unwrap();
        assert_eq!(
            why,
            NeverFits::Gpus {
                requested: 3,
                available: 2
            }
        );
        assert_eq!(
            why.to_string(),
            "3 GPU(s) requested but the allocation has 2"
        );
        let none = Capacity::new(4, None, Gpus::Devices(vec![]));
        assert!(none.never_fits(&ResourceRequest::of(1, 1, 1)).is_some());
        assert!(none.never_fits(&ResourceRequest::of(1, 1, 0)).is_none());
    }

    #[test]
    fn a_pool_holds_the_cpus_of_all_its_workers_unless_oversubscribed() {
        let cap = Capacity::new(1, None, Gpus::Counted(0));
        let why = cap
            .pool_never_fits(&ResourceRequest::of(1, 1, 0), 2)
            .unwrap();
        assert_eq!(
            why,
            NeverFits::Pool {
                workers: 2,
                cpus_each: 1,
                cpus: 1
            }
        );
        assert_eq!(
            why.to_string(),
            "2 workers of 1 CPUs each can never fit in 1 CPUs"
        );
        assert!(cap
            .pool_never_fits(&ResourceRequest::of(1, 1, 0), 1)
            .is_none());
        let mut over = ResourceRequest::of(1, 1, 0);
        over.oversubscribe = true;
        assert!(cap.pool_never_fits(&over, 2).is_none());
    }

    #[test]
    fn counted_gpus_are_handed_out_by_number_only() {
        // srun and flux pick the devices: pmp only counts the allocation's GPUs.
        let mut cap = Capacity::new(4, None, Gpus::Counted(2));
        let a = cap.take(ONE, &ResourceRequest::of(1, 1, 1));
        assert_eq!((a.count(), a.devices()), (1, &[][..]));
        let _b = cap.take(ONE, &ResourceRequest::of(1, 1, 1));
        assert!(
            cap.place(&ResourceRequest::of(1, 1, 1)).is_none(),
            "both GPUs are taken"
        );
        cap.give_back(ONE, &ResourceRequest::of(1, 1, 1), a);
        assert!(cap.place(&ResourceRequest::of(1, 1, 1)).is_some());
        assert!(cap.place(&ResourceRequest::of(1, 1, 2)).is_none());
    }

    #[test]
    fn a_request_that_only_several_nodes_hold_together_says_so() {
        let node = |name: &str| Node {
            name: name.into(),
            cpus: 4,
            gpus: Gpus::Counted(1),
        };
        let cap = Capacity::of_nodes(vec![node("a"), node("b")], None);
        assert_eq!(cap.never_fits(&ResourceRequest::of(4, 1, 0)), None);
        let why = cap.never_fits(&ResourceRequest::of(6, 1, 0)).unwrap();
        assert_eq!(
            why,
            NeverFits::SeveralNodes {
                cpus: 6,
                gpus: 0,
                node_cpus: 4,
                node_gpus: 1
            }
        );
        assert_eq!(
            why.to_string(),
            "6 CPUs and 0 GPU(s) fit on no single node of the allocation (the largest has 4 \
             CPUs, the most GPUs on one node are 1); all ranks of a call run on one node: ask \
             for at most that many cores x threads_per_core and GPUs"
        );
        assert!(matches!(
            cap.never_fits(&ResourceRequest::of(1, 1, 2)),
            Some(NeverFits::SeveralNodes { gpus: 2, .. })
        ));
        // More than all nodes hold together is said in the allocation's totals.
        assert_eq!(
            cap.never_fits(&ResourceRequest::of(9, 1, 0)),
            Some(NeverFits::Cpus {
                cores: 9,
                threads_per_core: 1,
                cpus: 8
            })
        );
    }
}
