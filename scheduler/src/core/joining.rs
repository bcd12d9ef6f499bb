//! Nodes that join while the executor runs (pilot jobs' agents, as each
//! connects): a pool worker waits for a node with room, holds its CPUs and
//! GPUs there, and starts as soon as one joins.

use super::events::Comm;
use super::tasks::Failure;
use super::workers::Launch;
use super::Core;
use crate::capacity::Node;
use crate::core::LostReason;
use crate::ids::NodeId;
use crate::resources::ResourceRequest;

impl Core {
    /// A node whose agent connected: the pool workers waiting for room
    /// start there.
    pub fn add_node(&mut self, comm: &mut impl Comm, node: Node) -> NodeId {
        let id = self.capacity.add_node(node);
        self.balance_pool(comm);
        self.ask_for_scheduling();
        id
    }

    /// `node`'s agent said its memory, which was not known before (the
    /// job's variables say it first where they can): calls waiting for
    /// memory may fit there now.
    pub fn learn_memory(&mut self, comm: &mut impl Comm, node: NodeId, mb: u32) {
        self.capacity.learn_memory(node, mb);
        self.balance_pool(comm);
        self.ask_for_scheduling();
    }

    /// Every node that could still join is gone before it did (its pilot
    /// job ended): nothing can run the pool's work, which fails with `why`.
    pub fn nodes_gone(&mut self, comm: &mut impl Comm, why: String) {
        if self.broken.is_none() {
            self.break_pool(comm, Failure::Lost(LostReason::new(why)));
        }
    }

    /// Where a pool worker of `resources` runs on the nodes joined so far,
    /// its CPUs and GPUs taken there; None while none has room (or, under
    /// elastic allocations, none outside its allocation's drain, where it
    /// would get no call).
    pub(super) fn joined_node_launch(&mut self, resources: ResourceRequest) -> Option<Launch> {
        let mut placement = self
            .capacity
            .place_where(&resources, |node| self.node_may_take(node, None))?;
        let gpus = self.capacity.take(&mut placement, &resources);
        Some(Launch {
            resources,
            placement,
            gpus,
        })
    }
}
