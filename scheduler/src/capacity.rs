//! What is free where: the nodes workers run on, each with its CPUs and
//! GPUs, where a worker is placed (one node, or several for a call larger
//! than any node), and what it gives back there.

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
    /// The MB of memory the job system gives the allocation here; None
    /// where it is not known (an older agent, a job system that does not
    /// say), where calls are placed on CPUs and GPUs alone.
    pub memory_mb: Option<u32>,
}

/// Where a worker's ranks run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// All of them on one node: under its agent, or a step srun places.
    Node(NodeId),
    /// Spread over several nodes, whole ranks on each: a call larger than
    /// any node, which only a step of its own across them can run.
    Span(Vec<Share>),
}

/// One node's part of a `Placement::Span`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    pub node: NodeId,
    /// The node's name, as srun's node list says it.
    pub name: String,
    pub ranks: u32,
    /// The GPUs taken there for its ranks (`Capacity::take`), given back
    /// there.
    pub gpus: Gpus,
}

/// A node as `info()` shows it: what the scheduler knows it has, so that a
/// user can see why a call waits or was refused (`exe.info["nodes"]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    pub name: String,
    pub cpus: u32,
    pub gpus: u32,
    /// None where neither the job system nor the node's agent said it.
    pub memory_mb: Option<u32>,
    /// Its agent is gone: nothing is placed there any more.
    pub lost: bool,
}

/// A node and what of it is taken.
#[derive(Clone, Debug)]
struct NodeUse {
    name: String,
    cpus_total: u32,
    cpus_used: u32,
    gpus_total: u32,
    gpus_free: Gpus,
    /// None: not known, nothing is refused or held back for memory here.
    memory_total: Option<u32>,
    /// MB that running calls' `memory_max` keep (counted even where the
    /// total is not known, so that a total learnt later is right).
    memory_used: u32,
    /// Its agent is gone: nothing is placed here any more.
    lost: bool,
    /// An `exclusive` call takes all of it: it is one of the allocation's
    /// nodes (`Capacity::with_spans`), not the allocation as one pool.
    whole_when_exclusive: bool,
}

impl NodeUse {
    /// `node`, nothing of it taken yet.
    fn new(node: Node, whole_when_exclusive: bool) -> NodeUse {
        NodeUse {
            name: node.name,
            cpus_total: node.cpus,
            cpus_used: 0,
            gpus_total: node.gpus.count(),
            gpus_free: node.gpus,
            memory_total: node.memory_mb,
            memory_used: 0,
            lost: false,
            whole_when_exclusive,
        }
    }

    /// CPUs a request takes here. Oversubscription may exceed the node, but
    /// it still occupies all of it while it runs.
    /// An exclusive call takes all of the node, so nothing else fits
    /// beside it, and fits only where nothing runs.
    fn cpus_for(&self, request: &ResourceRequest) -> u32 {
        let cpus = if request.oversubscribe {
            request.cpus().min(self.cpus_total)
        } else {
            request.cpus()
        };
        if self.takes_whole(request) {
            cpus.max(self.cpus_total)
        } else {
            cpus
        }
    }

    fn takes_whole(&self, request: &ResourceRequest) -> bool {
        request.exclusive && self.whole_when_exclusive
    }

    /// CPUs `ranks` ranks of a span take here: all of the node for an
    /// exclusive call.
    fn cpus_for_ranks(&self, request: &ResourceRequest, ranks: u32) -> u32 {
        if self.takes_whole(request) {
            self.cpus_total
        } else {
            ranks * request.threads_per_core
        }
    }

    /// None free where an oversubscribed pool holds more than the node.
    fn cpus_free(&self) -> u32 {
        self.cpus_total.saturating_sub(self.cpus_used)
    }

    /// Whether `request`'s memory is free here now.
    fn memory_fits(&self, request: &ResourceRequest) -> bool {
        self.memory_total.is_none_or(|total| {
            u64::from(self.memory_used) + u64::from(request.memory()) <= u64::from(total)
        })
    }

    /// Whether this node has as much memory as `request` keeps at all.
    fn memory_holds(&self, request: &ResourceRequest) -> bool {
        self.memory_total
            .is_none_or(|total| request.memory() <= total)
    }

    /// Whether `request` fits in what is free here now.
    fn fits(&self, request: &ResourceRequest) -> bool {
        !self.lost
            && self.cpus_for(request) <= self.cpus_free()
            && self.gpus_free.count() >= request.gpus()
            && self.memory_fits(request)
    }

    /// Whether `request` fits here once the node is empty.
    fn holds(&self, request: &ResourceRequest) -> bool {
        !self.lost
            && self.cpus_for(request) <= self.cpus_total
            && request.gpus() <= self.gpus_total
            && self.memory_holds(request)
    }

    /// How many whole ranks of `request` (each its threads' CPUs and its
    /// GPUs, all on this node) fit in `cpus` and `gpus` of it.
    fn ranks_in(&self, request: &ResourceRequest, cpus: u32, gpus: u32) -> u32 {
        if self.lost {
            return 0;
        }
        let by_cpus = cpus / request.threads_per_core.max(1);
        match request.gpus_per_core {
            0 => by_cpus,
            per_rank => by_cpus.min(gpus / per_rank),
        }
    }

    /// A span keeps `memory_max` on each of its nodes (srun's `--mem` is
    /// per node), so a node without it free has room for no rank.
    fn ranks_free(&self, request: &ResourceRequest) -> u32 {
        if (self.takes_whole(request) && self.cpus_used > 0) || !self.memory_fits(request) {
            return 0;
        }
        self.ranks_in(request, self.cpus_free(), self.gpus_free.count())
    }

    fn ranks_held(&self, request: &ResourceRequest) -> u32 {
        if !self.memory_holds(request) {
            return 0;
        }
        self.ranks_in(request, self.cpus_total, self.gpus_total)
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
    /// Whether a call larger than any node may span several
    /// (`with_spans`): only where the backend can start it as a step of
    /// its own across them.
    spans: bool,
    /// Whether nodes join as their agents connect (`joining`): a pool
    /// worker then waits for a node with room for it, and holds its CPUs
    /// there, since pmp, not Slurm, packs the node's workers.
    joins: bool,
}

impl Capacity {
    /// The allocation as one node (`WHOLE_ALLOCATION`), as the plan sizes it.
    pub fn new(cpus: u32, max_workers: Option<u32>, gpus: Gpus) -> Capacity {
        let whole = Node {
            name: WHOLE_ALLOCATION.into(),
            cpus,
            gpus,
            memory_mb: None,
        };
        Capacity::of_nodes(vec![whole], max_workers)
    }

    /// These nodes, numbered in this order (`NodeId`); `max_workers` counts
    /// workers on all of them together.
    pub fn of_nodes(nodes: Vec<Node>, max_workers: Option<u32>) -> Capacity {
        let nodes = nodes
            .into_iter()
            .map(|node| NodeUse::new(node, false))
            .collect();
        Capacity {
            nodes,
            max_workers,
            workers: 0,
            max_cpus: None,
            spans: false,
            joins: false,
        }
    }

    /// No node yet: each joins when its agent connects (`add_node`), as
    /// pilot jobs start.
    pub fn joining(max_workers: Option<u32>) -> Capacity {
        Capacity {
            joins: true,
            ..Capacity::of_nodes(Vec::new(), max_workers)
        }
    }

    /// Whether nodes join as their agents connect (`joining`).
    pub fn nodes_join(&self) -> bool {
        self.joins
    }

    /// Every node, in `NodeId` order.
    pub fn node_rows(&self) -> Vec<NodeRow> {
        self.nodes
            .iter()
            .map(|node| NodeRow {
                name: node.name.clone(),
                cpus: node.cpus_total,
                gpus: node.gpus_total,
                memory_mb: node.memory_total,
                lost: node.lost,
            })
            .collect()
    }

    /// A node whose agent connected, numbered after the others.
    pub fn add_node(&mut self, node: Node) -> NodeId {
        let id = NodeId(self.nodes.len() as u32);
        // As `with_spans` marks the nodes known from the start.
        self.nodes.push(NodeUse::new(node, self.spans));
        id
    }

    /// `node`'s memory, as its agent's Hello says it, where it was not
    /// known before (the job's variables say it first where they can).
    pub fn learn_memory(&mut self, node: NodeId, mb: u32) {
        let node = &mut self.nodes[node.0 as usize];
        node.memory_total.get_or_insert(mb);
    }

    /// A call that no node holds but the live nodes hold together is
    /// placed across them (`Placement::Span`) rather than refused.
    /// These are the allocation's nodes one by one, so an `exclusive`
    /// call takes all of each of its nodes, and `num_nodes` picks them.
    pub fn with_spans(mut self) -> Capacity {
        self.spans = true;
        for node in &mut self.nodes {
            node.whole_when_exclusive = true;
        }
        self
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

    /// The name of where a worker runs: its node's, or those of a span
    /// joined by "+" ("node1+node2").
    pub fn placement_name(&self, placement: &Placement) -> String {
        match placement {
            Placement::Node(node) => self.node_name(*node).to_string(),
            Placement::Span(shares) => {
                let names: Vec<&str> = shares.iter().map(|share| share.name.as_str()).collect();
                names.join("+")
            }
        }
    }

    /// Where `request` is to run now, if there is room for all of it.
    ///
    /// Packed: the fullest node that fits (fewest free CPUs, then fewest
    /// free GPUs, then the first). Calls are queued first in, first out
    /// without backfill, so a call that needs a whole node blocks the queue
    /// until one is empty; filling nodes one by one keeps the others empty
    /// for it, where spreading small calls over every node would leave a
    /// little free on each and none whole. A call that one node could
    /// hold waits for one, never split; only a call larger than any node
    /// spans several (`span`).
    pub fn place(&self, request: &ResourceRequest) -> Option<Placement> {
        self.place_where(request, |_| true)
    }

    /// `place`, on the nodes `open` says may take this call now (elastic
    /// allocations: those with time left for it).
    pub fn place_where(
        &self,
        request: &ResourceRequest,
        open: impl Fn(NodeId) -> bool,
    ) -> Option<Placement> {
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
        if let Some(nodes) = request.spread().filter(|_| self.spans) {
            return self.span_over(request, nodes);
        }
        let node = (0u32..)
            .zip(&self.nodes)
            .filter(|(id, node)| node.fits(request) && open(NodeId(*id)))
            .min_by_key(|(id, node)| (node.cpus_free(), node.gpus_free.count(), *id))
            .map(|(id, _)| Placement::Node(NodeId(id)));
        if node.is_some() || !self.spans || self.nodes.iter().any(|n| n.holds(request)) {
            return node;
        }
        self.span(request)
    }

    /// Whole ranks of `request` spread over the nodes with the most room
    /// for ranks now, most first (the first node of those that tie): the
    /// fewest nodes that hold them, so that the others stay free for
    /// calls of one node. Where the free ranks of all nodes together are
    /// too few, the call waits (first in, first out, as any other).
    fn span(&self, request: &ResourceRequest) -> Option<Placement> {
        let mut free: Vec<(u32, u32)> = (0u32..)
            .zip(&self.nodes)
            .map(|(id, node)| (id, node.ranks_free(request)))
            .filter(|&(_, ranks)| ranks > 0)
            .collect();
        free.sort_by_key(|&(id, ranks)| (std::cmp::Reverse(ranks), id));
        let mut left = request.cores;
        let mut shares = Vec::new();
        for (id, ranks) in free {
            if left == 0 {
                break;
            }
            let ranks = ranks.min(left);
            left -= ranks;
            shares.push(Share {
                node: NodeId(id),
                name: self.nodes[id as usize].name.clone(),
                ranks,
                gpus: Gpus::Counted(0),
            });
        }
        (left == 0).then_some(Placement::Span(shares))
    }

    /// A call with `num_nodes` = `nodes` (more than one): its ranks split
    /// over exactly that many nodes as srun's block distribution would
    /// (`ResourceRequest::ranks_per_node`), the largest share on the node
    /// with the most room for ranks now (the first of those that tie).
    /// Where fewer than `nodes` nodes have room for their share, it waits.
    fn span_over(&self, request: &ResourceRequest, nodes: u32) -> Option<Placement> {
        let mut free: Vec<(u32, u32)> = (0u32..)
            .zip(&self.nodes)
            .map(|(id, node)| (id, node.ranks_free(request)))
            .collect();
        free.sort_by_key(|&(id, ranks)| (std::cmp::Reverse(ranks), id));
        let wanted = request.ranks_per_node(nodes);
        if free.len() < wanted.len() {
            return None;
        }
        free.iter()
            .zip(wanted)
            .map(|(&(id, free), ranks)| {
                (ranks > 0 && free >= ranks).then(|| Share {
                    node: NodeId(id),
                    name: self.nodes[id as usize].name.clone(),
                    ranks,
                    gpus: Gpus::Counted(0),
                })
            })
            .collect::<Option<Vec<Share>>>()
            .map(Placement::Span)
    }

    /// Why a call with `num_nodes` = `nodes` could never run: fewer than
    /// `nodes` live nodes hold its share of ranks each, even empty.
    fn span_over_never_fits(&self, request: &ResourceRequest, nodes: u32) -> Option<NeverFits> {
        let mut held: Vec<u32> = self
            .live_nodes()
            .map(|node| node.ranks_held(request))
            .collect();
        held.sort_unstable_by(|a, b| b.cmp(a));
        let wanted = request.ranks_per_node(nodes);
        let fits = held.len() >= wanted.len() && held.iter().zip(&wanted).all(|(h, w)| h >= w);
        (!fits).then(|| NeverFits::PerNode {
            nodes,
            ranks: wanted[0],
            node_ranks: held.get(nodes as usize - 1).copied().unwrap_or(0),
        })
    }

    /// Take what `request` needs where `place` put it; returns the GPUs
    /// handed to it: its node's, or for a span their count (srun picks
    /// the devices of each rank), each node's own kept in its `Share`.
    pub fn take(&mut self, placement: &mut Placement, request: &ResourceRequest) -> Gpus {
        self.workers += 1;
        self.take_at(placement, request)
    }

    /// What `take` takes on the nodes, without counting a worker.
    fn take_at(&mut self, placement: &mut Placement, request: &ResourceRequest) -> Gpus {
        match placement {
            Placement::Node(node) => {
                let node = &mut self.nodes[node.0 as usize];
                node.cpus_used += node.cpus_for(request);
                node.memory_used += request.memory();
                node.gpus_free.take(request.gpus())
            }
            Placement::Span(shares) => {
                let mut gpus = 0;
                for share in shares {
                    let node = &mut self.nodes[share.node.0 as usize];
                    node.cpus_used += node.cpus_for_ranks(request, share.ranks);
                    node.memory_used += request.memory();
                    share.gpus = node.gpus_free.take(share.ranks * request.gpus_per_core);
                    gpus += share.gpus.count();
                }
                Gpus::Counted(gpus)
            }
        }
    }

    /// Return what `take` took for `placement`, where it took it.
    pub fn give_back(&mut self, placement: Placement, request: &ResourceRequest, gpus: Gpus) {
        self.workers -= 1;
        self.give_back_at(placement, request, gpus);
    }

    /// What `give_back` returns to the nodes, without counting a worker.
    fn give_back_at(&mut self, placement: Placement, request: &ResourceRequest, gpus: Gpus) {
        match placement {
            Placement::Node(node) => {
                let used = &mut self.nodes[node.0 as usize];
                used.cpus_used = used.cpus_used.saturating_sub(used.cpus_for(request));
                used.memory_used = used.memory_used.saturating_sub(request.memory());
                used.gpus_free.put_back(gpus);
            }
            // `gpus` only counts those of its shares.
            Placement::Span(shares) => {
                for share in shares {
                    let used = &mut self.nodes[share.node.0 as usize];
                    used.cpus_used = used
                        .cpus_used
                        .saturating_sub(used.cpus_for_ranks(request, share.ranks));
                    used.memory_used = used.memory_used.saturating_sub(request.memory());
                    used.gpus_free.put_back(share.gpus);
                }
            }
        }
    }

    /// A node and GPUs for a block-allocated worker like `request`, which
    /// holds them for its life: the node with the most GPUs free, then the
    /// most CPUs free (the first of those), so that the pool's GPUs come
    /// from wherever they are left and its workers spread over the nodes
    /// (under node agents, each node's agent starts the workers placed on
    /// it: a pool of 128 workers on two nodes of 64 CPUs is 64 on each). A
    /// worker the allocation has no GPUs left for gets none, as the plan
    /// allows; the plan checked the pool's CPUs once, so an oversubscribed
    /// pool may hold more CPUs than a node has. A node with the worker's
    /// `memory_max` free comes first: the worker keeps it for its life.
    ///
    /// A worker larger than any node, where the backend can start one
    /// across nodes (`with_spans`), spans them as such a call does (`span`):
    /// packed on one node, its ranks would oversubscribe it while the
    /// others idle.
    pub fn take_for_pool(&mut self, request: &ResourceRequest) -> (Placement, Gpus) {
        if self.spans && !self.live_nodes().any(|node| node.holds(request)) {
            if let Some(mut placement) = self.span(request) {
                let gpus = self.take_at(&mut placement, request);
                return (placement, gpus);
            }
        }
        let (id, node) = (0u32..)
            .zip(self.nodes.iter_mut())
            .max_by_key(|(id, node)| {
                (
                    !node.lost,
                    node.memory_fits(request),
                    node.gpus_free.count(),
                    node.cpus_free(),
                    std::cmp::Reverse(*id),
                )
            })
            .expect("a capacity has a node");
        node.cpus_used += node.cpus_for(request);
        node.memory_used += request.memory();
        (
            Placement::Node(NodeId(id)),
            node.gpus_free.take(request.gpus()),
        )
    }

    /// Whether a block-allocated worker like `request` has its memory
    /// free on some live node now (always, where it keeps none or a
    /// node's memory is not known). Pool workers hold it for their life:
    /// one without room waits, as under nodes that join.
    pub fn pool_memory_free(&self, request: &ResourceRequest) -> bool {
        request.memory() == 0 || self.live_nodes().any(|node| node.memory_fits(request))
    }

    /// Return what `take_for_pool` took for `placement`.
    pub fn give_back_from_pool(
        &mut self,
        placement: Placement,
        request: &ResourceRequest,
        gpus: Gpus,
    ) {
        self.give_back_at(placement, request, gpus);
    }

    /// `node` is gone (its agent died): nothing more is placed there, and
    /// what only it could hold never fits any more. What runs there is
    /// given back as its workers are reported lost.
    pub fn lose(&mut self, node: NodeId) {
        self.nodes[node.0 as usize].lost = true;
    }

    /// Whether `node` is gone (`lose`).
    pub fn is_lost(&self, node: NodeId) -> bool {
        self.nodes[node.0 as usize].lost
    }

    /// Why `request` could never run here, even on an empty allocation: a
    /// task like that would wait forever, so it is refused instead. What
    /// the whole allocation cannot hold says so in its totals. What it
    /// holds only across nodes runs across them where the backend can
    /// (`with_spans`), unless its whole ranks do not fit the nodes
    /// (`NeverFits::Ranks`); elsewhere it is `NeverFits::SeveralNodes`.
    pub fn never_fits(&self, request: &ResourceRequest) -> Option<NeverFits> {
        // `num_nodes` is honoured only where the nodes are known one by
        // one; elsewhere srun or flux place the step on that many.
        let nodes = u32::try_from(self.live_nodes().count()).unwrap_or(u32::MAX);
        if let Some(why) = request.nodes_never_fit(self.spans.then_some(nodes)) {
            return Some(why);
        }
        if let Some(why) = self.memory_never_fits(request) {
            return Some(why);
        }
        if let Some(nodes) = request.spread().filter(|_| self.spans) {
            return self
                .pool_never_fits(request, 1)
                .or_else(|| self.span_over_never_fits(request, nodes));
        }
        if self.nodes.iter().any(|node| node.holds(request)) {
            return None;
        }
        if let Some(why) = self.pool_never_fits(request, 1) {
            return Some(why);
        }
        // num_nodes=1 keeps the ranks on one node.
        if self.spans && request.nodes.is_none() {
            let ranks: u32 = self.live_nodes().map(|n| n.ranks_held(request)).sum();
            return (ranks < request.cores).then_some(NeverFits::Ranks {
                cores: request.cores,
                threads_per_core: request.threads_per_core,
                gpus_per_core: request.gpus_per_core,
                ranks,
            });
        }
        Some(NeverFits::SeveralNodes {
            cpus: request.cpus(),
            gpus: request.gpus(),
            node_cpus: self.live_nodes().map(|n| n.cpus_total).max().unwrap_or(0),
            node_gpus: self.live_nodes().map(|n| n.gpus_total).max().unwrap_or(0),
        })
    }

    /// Why `request`'s `memory_max` could never be kept: more than every
    /// live node has, where each says its memory. A node whose memory is
    /// not known may hold it, so nothing is refused while there is one.
    pub fn memory_never_fits(&self, request: &ResourceRequest) -> Option<NeverFits> {
        let requested = request.memory();
        if requested == 0 {
            return None;
        }
        let mut largest = 0;
        for node in self.live_nodes() {
            match node.memory_total {
                None => return None,
                Some(mb) if mb >= requested => return None,
                Some(mb) => largest = largest.max(mb),
            }
        }
        // No live node: the other rules say so in CPUs.
        (largest > 0).then_some(NeverFits::Memory {
            requested,
            node_mb: largest,
        })
    }

    /// The same for a block allocation of `workers` workers like `request`,
    /// in the allocation's totals: each must fit on its own, and they hold
    /// their CPUs and GPUs all at once (a worker the allocation has no GPUs
    /// left for would get none). Only oversubscribed workers may share CPUs.
    pub fn pool_never_fits(&self, request: &ResourceRequest, workers: u32) -> Option<NeverFits> {
        if let Some(why) = self.memory_never_fits(request) {
            return Some(why);
        }
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

    #[test]
    fn joined_nodes_are_numbered_in_order_and_filled_one_by_one() {
        let mut cap = Capacity::joining(None);
        let one = ResourceRequest::default();
        assert_eq!(cap.place(&one), None, "no node joined yet");
        let node = |name: &str| Node {
            name: name.into(),
            cpus: 2,
            gpus: Gpus::Counted(0),
            memory_mb: None,
        };
        assert_eq!(cap.add_node(node("node1")), NodeId(0));
        assert_eq!(cap.add_node(node("node2")), NodeId(1));
        let mut placed = Vec::new();
        while let Some(mut placement) = cap.place(&one) {
            cap.take(&mut placement, &one);
            placed.push(cap.placement_name(&placement));
        }
        assert_eq!(placed, ["node1", "node1", "node2", "node2"]);
    }

    fn devices(ids: &[&str]) -> Gpus {
        Gpus::Devices(ids.iter().map(|id| id.to_string()).collect())
    }

    const ONE: NodeId = NodeId(0);

    #[test]
    fn a_block_worker_takes_what_is_left_and_returns_it() {
        let mut cap = Capacity::new(4, None, Gpus::Counted(3));
        let two = ResourceRequest::of(1, 1, 2);
        let (at_a, a) = cap.take_for_pool(&two);
        let (at_b, b) = cap.take_for_pool(&two);
        assert_eq!((&a, &b), (&Gpus::Counted(2), &Gpus::Counted(1)));
        cap.give_back_from_pool(at_a, &two, a);
        cap.give_back_from_pool(at_b, &two, b);
        assert!(cap.place(&ResourceRequest::of(1, 1, 3)).is_some());
        assert!(cap.place(&ResourceRequest::of(4, 1, 0)).is_some());
    }

    #[test]
    fn a_block_worker_larger_than_any_node_spans_them_where_steps_can() {
        let two_nodes = || {
            let node = |name: &str| Node {
                name: name.into(),
                cpus: 4,
                gpus: Gpus::Counted(0),
                memory_mb: None,
            };
            Capacity::of_nodes(vec![node("node1"), node("node2")], None)
        };
        let six = ResourceRequest::of(6, 1, 0);
        let mut cap = two_nodes().with_spans();
        let (placement, gpus) = cap.take_for_pool(&six);
        assert_eq!(cap.placement_name(&placement), "node1+node2");
        let Placement::Span(shares) = &placement else {
            panic!("a span: {placement:?}");
        };
        assert_eq!(shares.iter().map(|s| s.ranks).collect::<Vec<_>>(), [4, 2]);
        // Both nodes' CPUs are held: a call of 3 no longer fits either.
        assert!(cap.place(&ResourceRequest::of(3, 1, 0)).is_none());
        cap.give_back_from_pool(placement, &six, gpus);
        assert!(cap.place(&ResourceRequest::of(4, 1, 0)).is_some());
        // Where the backend cannot start a worker across nodes, it stays on one.
        let (placement, _) = two_nodes().take_for_pool(&six);
        assert_eq!(placement, Placement::Node(ONE));
    }

    #[test]
    fn cpus_count_threads_and_gpus_are_distinct_devices() {
        let mut cap = Capacity::new(4, None, devices(&["0", "1"]));
        assert!(cap.place(&ResourceRequest::of(2, 2, 0)).is_some());
        assert!(cap.place(&ResourceRequest::of(3, 2, 0)).is_none());
        let a = cap.take(&mut Placement::Node(ONE), &ResourceRequest::of(1, 1, 1));
        let b = cap.take(&mut Placement::Node(ONE), &ResourceRequest::of(1, 1, 1));
        assert_eq!((a.clone(), b), (devices(&["0"]), devices(&["1"])));
        assert!(
            cap.place(&ResourceRequest::of(1, 1, 1)).is_none(),
            "no GPU left"
        );
        cap.give_back(Placement::Node(ONE), &ResourceRequest::of(1, 1, 1), a);
        assert!(cap.place(&ResourceRequest::of(1, 1, 1)).is_some());
    }

    #[test]
    fn max_workers_limits_concurrent_workers() {
        let mut cap = Capacity::new(8, Some(1), Gpus::Counted(0));
        cap.take(&mut Placement::Node(ONE), &ResourceRequest::of(1, 1, 0));
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
        let a = cap.take(&mut Placement::Node(ONE), &ResourceRequest::of(1, 1, 1));
        assert_eq!((a.count(), a.devices()), (1, &[][..]));
        let _b = cap.take(&mut Placement::Node(ONE), &ResourceRequest::of(1, 1, 1));
        assert!(
            cap.place(&ResourceRequest::of(1, 1, 1)).is_none(),
            "both GPUs are taken"
        );
        cap.give_back(Placement::Node(ONE), &ResourceRequest::of(1, 1, 1), a);
        assert!(cap.place(&ResourceRequest::of(1, 1, 1)).is_some());
        assert!(cap.place(&ResourceRequest::of(1, 1, 2)).is_none());
    }

    #[test]
    fn a_request_that_only_several_nodes_hold_together_says_so() {
        let node = |name: &str| Node {
            name: name.into(),
            cpus: 4,
            gpus: Gpus::Counted(1),
            memory_mb: None,
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

    fn two_nodes(cpus: u32, gpus: u32) -> Capacity {
        let node = |name: &str| Node {
            name: name.into(),
            cpus,
            gpus: Gpus::Counted(gpus),
            memory_mb: None,
        };
        Capacity::of_nodes(vec![node("a"), node("b")], None)
    }

    /// (node, ranks) of a span.
    fn shares(placement: &Placement) -> Vec<(u32, u32)> {
        match placement {
            Placement::Span(shares) => shares.iter().map(|s| (s.node.0, s.ranks)).collect(),
            Placement::Node(node) => panic!("on one node: {node}"),
        }
    }

    #[test]
    fn only_a_call_larger_than_any_node_spans_and_only_where_spans_are_allowed() {
        let six = ResourceRequest::of(6, 1, 0);
        assert_eq!(two_nodes(4, 0).place(&six), None, "no span: it never runs");
        let cap = two_nodes(4, 0).with_spans();
        assert_eq!(cap.never_fits(&six), None);
        assert_eq!(shares(&cap.place(&six).unwrap()), [(0, 4), (1, 2)]);
        assert_eq!(
            cap.place(&ResourceRequest::of(4, 1, 0)),
            Some(Placement::Node(NodeId(0))),
            "what one node holds stays on one node"
        );
        let mut busy = cap.clone();
        busy.take(&mut Placement::Node(ONE), &ResourceRequest::of(3, 1, 0));
        assert_eq!(
            busy.place(&ResourceRequest::of(4, 1, 0)),
            Some(Placement::Node(NodeId(1)))
        );
        assert_eq!(
            busy.place(&ResourceRequest::of(6, 1, 0)),
            None,
            "5 CPUs free: it waits, never fewer ranks"
        );
    }

    #[test]
    fn a_span_gives_back_exactly_what_it_took_on_each_node() {
        let mut cap = two_nodes(4, 2).with_spans();
        let request = ResourceRequest::of(3, 2, 1);
        let mut span = cap.place(&request).unwrap();
        assert_eq!(shares(&span), [(0, 2), (1, 1)], "two 2-CPU ranks a node");
        let gpus = cap.take(&mut span, &request);
        assert_eq!(gpus, Gpus::Counted(3));
        let Placement::Span(taken) = &span else {
            unreachable!()
        };
        let each: Vec<u32> = taken.iter().map(|s| s.gpus.count()).collect();
        assert_eq!(each, [2, 1], "each node's GPUs kept in its share");
        assert_eq!(
            cap.place(&ResourceRequest::of(1, 1, 0)),
            Some(Placement::Node(NodeId(1)))
        );
        assert_eq!(
            cap.place(&ResourceRequest::of(1, 1, 1)),
            Some(Placement::Node(NodeId(1)))
        );
        assert_eq!(cap.place(&ResourceRequest::of(1, 1, 2)), None);
        cap.give_back(span, &request, gpus);
        assert_eq!(
            cap.place(&request).map(|p| shares(&p)),
            Some(vec![(0, 2), (1, 1)]),
            "all of it back"
        );
        assert_eq!(
            cap.place(&ResourceRequest::of(2, 2, 1)),
            Some(Placement::Node(ONE))
        );
    }

    #[test]
    fn a_span_counts_within_max_cores_and_leaves_a_lost_node_out() {
        let six = ResourceRequest::of(6, 1, 0);
        let limited = two_nodes(4, 0).with_spans().with_max_cpus(5);
        assert_eq!(
            limited.never_fits(&six),
            Some(NeverFits::Cpus {
                cores: 6,
                threads_per_core: 1,
                cpus: 5
            })
        );
        let mut three = Capacity::of_nodes(
            ["a", "b", "c"]
                .iter()
                .map(|name| Node {
                    name: name.to_string(),
                    cpus: 4,
                    gpus: Gpus::Counted(0),
                    memory_mb: None,
                })
                .collect(),
            None,
        )
        .with_spans();
        three.lose(NodeId(0));
        let span = three.place(&six).unwrap();
        assert_eq!(shares(&span), [(1, 4), (2, 2)]);
        assert_eq!(three.placement_name(&span), "b+c");
        three.lose(NodeId(1));
        assert_eq!(
            three.never_fits(&six),
            Some(NeverFits::Cpus {
                cores: 6,
                threads_per_core: 1,
                cpus: 4
            })
        );
    }

    #[test]
    fn whole_ranks_that_the_nodes_cannot_hold_together_can_never_span() {
        let cap = two_nodes(5, 0).with_spans();
        let why = cap.never_fits(&ResourceRequest::of(3, 3, 0)).unwrap();
        assert_eq!(
            why.to_string(),
            "3 cores of 3 threads_per_core and 0 GPU(s) each can never fit: each rank runs on \
             one node, and the allocation's nodes hold only 2 such ranks together; ask for \
             fewer cores, threads or GPUs per core"
        );
        let gpus = two_nodes(4, 3).with_spans();
        assert_eq!(
            gpus.never_fits(&ResourceRequest::of(3, 1, 2)),
            Some(NeverFits::Ranks {
                cores: 3,
                threads_per_core: 1,
                gpus_per_core: 2,
                ranks: 2
            }),
            "6 GPUs of 6, but one rank of 2 a node"
        );
    }

    fn spread(cores: u32, nodes: u16) -> ResourceRequest {
        ResourceRequest::of(cores, 1, 0).over(nodes)
    }

    #[test]
    fn num_nodes_spreads_the_ranks_over_exactly_that_many_nodes_as_srun_would() {
        let cap = two_nodes(4, 0).with_spans();
        let two = spread(2, 2);
        assert_eq!(cap.never_fits(&two), None);
        let span = cap.place(&two).unwrap();
        assert_eq!(
            shares(&span),
            [(0, 1), (1, 1)],
            "one node holds it, yet two"
        );
        assert_eq!(cap.placement_name(&span), "a+b");
        assert_eq!(shares(&cap.place(&spread(3, 2)).unwrap()), [(0, 2), (1, 1)]);
        assert_eq!(
            cap.place(&spread(2, 1)),
            Some(Placement::Node(ONE)),
            "num_nodes=1: one node, under its agent"
        );
        let mut busy = cap.clone();
        busy.take(&mut Placement::Node(ONE), &ResourceRequest::of(3, 1, 0));
        assert_eq!(
            shares(&busy.place(&spread(3, 2)).unwrap()),
            [(1, 2), (0, 1)],
            "the larger share where there is room for it"
        );
        busy.take(
            &mut Placement::Node(NodeId(1)),
            &ResourceRequest::of(4, 1, 0),
        );
        assert_eq!(busy.place(&two), None, "a node full: it waits");
    }

    #[test]
    fn num_nodes_that_the_allocation_cannot_give_is_refused_and_says_why() {
        let cap = two_nodes(4, 0).with_spans();
        assert_eq!(
            cap.never_fits(&spread(3, 3)),
            Some(NeverFits::Nodes {
                nodes: 3,
                available: 2
            })
        );
        assert_eq!(
            cap.never_fits(&spread(1, 2)),
            Some(NeverFits::NodesAboveCores { nodes: 2, cores: 1 })
        );
        // 9 CPUs of 10, but a node holds one rank of 3 threads, not 2.
        let threads = ResourceRequest {
            threads_per_core: 3,
            ..spread(3, 2)
        };
        let why = two_nodes(5, 0).with_spans().never_fits(&threads).unwrap();
        assert_eq!(
            why,
            NeverFits::PerNode {
                nodes: 2,
                ranks: 2,
                node_ranks: 1
            }
        );
        assert!(why
            .to_string()
            .starts_with("num_nodes=2 puts 2 ranks on a node"));
        assert!(
            matches!(
                cap.never_fits(&spread(6, 1)),
                Some(NeverFits::SeveralNodes { .. })
            ),
            "num_nodes=1 never spans"
        );
        // Where srun or flux place steps, the nodes are theirs to count.
        let pool = Capacity::new(8, None, Gpus::Counted(0));
        assert_eq!(pool.never_fits(&spread(2, 2)), None);
        assert_eq!(pool.place(&spread(2, 2)), Some(Placement::Node(ONE)));
    }

    #[test]
    fn an_exclusive_call_has_its_nodes_to_itself_until_it_ends() {
        let mut cap = two_nodes(4, 0).with_spans();
        let exclusive = ResourceRequest {
            exclusive: true,
            ..spread(2, 2)
        };
        let mut span = cap.place(&exclusive).unwrap();
        let gpus = cap.take(&mut span, &exclusive);
        assert_eq!(cap.place(&ResourceRequest::of(1, 1, 0)), None);
        cap.give_back(span, &exclusive, gpus);
        let mut one = Placement::Node(ONE);
        cap.take(&mut one, &ResourceRequest::of(1, 1, 0));
        assert_eq!(cap.place(&exclusive), None, "waits for both nodes to empty");
        let alone = ResourceRequest {
            exclusive: true,
            ..ResourceRequest::of(1, 1, 0)
        };
        assert_eq!(cap.place(&alone), Some(Placement::Node(NodeId(1))));
        let mut there = Placement::Node(NodeId(1));
        cap.take(&mut there, &alone);
        assert_eq!(
            cap.place(&ResourceRequest::of(1, 1, 0)),
            Some(Placement::Node(ONE)),
            "3 CPUs of node b are free, yet only a runs more"
        );
        cap.give_back(there, &alone, Gpus::Counted(0));
        assert_eq!(
            cap.place(&ResourceRequest::of(4, 1, 0)),
            Some(Placement::Node(NodeId(1)))
        );
        // Oversubscribed, it still fits a node, and takes all of it.
        let mut crowded = ResourceRequest {
            oversubscribe: true,
            ..ResourceRequest::of(6, 1, 0)
        };
        crowded.exclusive = true;
        assert_eq!(cap.never_fits(&crowded), None);
        assert_eq!(cap.place(&crowded), Some(Placement::Node(NodeId(1))));
        // The allocation as one pool (steps placed by srun): only its CPUs.
        let mut pool = Capacity::new(8, None, Gpus::Counted(0));
        pool.take(&mut Placement::Node(ONE), &alone);
        assert!(pool.place(&ResourceRequest::of(7, 1, 0)).is_some());
    }

    fn keeping(request: ResourceRequest, mb: u32) -> ResourceRequest {
        ResourceRequest {
            memory_mb: std::num::NonZeroU32::new(mb),
            ..request
        }
    }

    fn two_nodes_of_memory(mb: u32) -> Capacity {
        let node = |name: &str| Node {
            name: name.into(),
            cpus: 4,
            gpus: Gpus::Counted(0),
            memory_mb: Some(mb),
        };
        Capacity::of_nodes(vec![node("a"), node("b")], None)
    }

    #[test]
    fn memory_max_is_kept_on_the_calls_node_until_it_is_given_back() {
        let mut cap = two_nodes_of_memory(1000);
        let big = keeping(ResourceRequest::of(1, 1, 0), 700);
        let mut first = cap.place(&big).unwrap();
        assert_eq!(first, Placement::Node(ONE));
        cap.take(&mut first, &big);
        assert_eq!(
            cap.place(&big),
            Some(Placement::Node(NodeId(1))),
            "a has 300 MB left"
        );
        let mut second = Placement::Node(NodeId(1));
        cap.take(&mut second, &big);
        assert_eq!(cap.place(&big), None, "CPUs free, memory not: it waits");
        assert_eq!(
            cap.place(&keeping(ResourceRequest::of(1, 1, 0), 300)),
            Some(Placement::Node(ONE)),
            "what is left still holds a smaller call"
        );
        assert_eq!(cap.never_fits(&big), None, "it waits, never refused");
        cap.give_back(first, &big, Gpus::Counted(0));
        assert_eq!(cap.place(&big), Some(Placement::Node(ONE)));
    }

    #[test]
    fn memory_max_above_every_node_never_fits_and_a_node_not_known_may_hold_it() {
        let cap = two_nodes_of_memory(1024);
        let why = cap
            .never_fits(&keeping(ResourceRequest::of(1, 1, 0), 1536))
            .unwrap();
        assert_eq!(
            why,
            NeverFits::Memory {
                requested: 1536,
                node_mb: 1024
            }
        );
        assert_eq!(
            why.to_string(),
            "resource_dict key 'memory_max' asks for 1.5 GB on one node, more than the 1 GB \
             of the allocation's largest node (what the job system gives it): ask for at most \
             that much, or for an allocation with more memory per node (pmp keeps this much \
             free for the call while it runs; it does not limit what the call uses)"
        );
        assert!(cap
            .pool_never_fits(&keeping(ResourceRequest::of(1, 1, 0), 1536), 1)
            .is_some());
        let mut unknown = cap.clone();
        unknown.add_node(Node {
            name: "c".into(),
            cpus: 4,
            gpus: Gpus::Counted(0),
            memory_mb: None,
        });
        assert_eq!(
            unknown.never_fits(&keeping(ResourceRequest::of(1, 1, 0), 1536)),
            None
        );
        assert_eq!(
            unknown.place(&keeping(ResourceRequest::of(1, 1, 0), 1536)),
            Some(Placement::Node(NodeId(2)))
        );
    }

    #[test]
    fn a_span_keeps_memory_max_on_each_of_its_nodes() {
        let mut cap = two_nodes_of_memory(1000).with_spans();
        let small = keeping(ResourceRequest::of(1, 1, 0), 600);
        let mut on_a = Placement::Node(ONE);
        cap.take(&mut on_a, &small);
        let spread = keeping(ResourceRequest::of(2, 1, 0).over(2), 600);
        assert_eq!(cap.place(&spread), None, "a has no 600 MB left");
        cap.give_back(on_a, &small, Gpus::Counted(0));
        let mut span = cap.place(&spread).unwrap();
        cap.take(&mut span, &spread);
        assert_eq!(cap.place(&small), None, "600 MB kept on both");
        cap.give_back(span, &spread, Gpus::Counted(0));
        assert!(cap.place(&small).is_some());
    }

    #[test]
    fn a_pool_worker_keeps_its_memory_for_its_life_on_a_node_that_has_it() {
        let mut cap = two_nodes_of_memory(1000);
        let worker = keeping(ResourceRequest::of(1, 1, 0), 600);
        let (a, _) = cap.take_for_pool(&worker);
        let (b, _) = cap.take_for_pool(&worker);
        assert_ne!(a, b, "600 MB on each node");
        assert_eq!(cap.place(&worker), None);
        cap.give_back_from_pool(a.clone(), &worker, Gpus::Counted(0));
        assert_eq!(cap.place(&worker), Some(a));
    }
}
