//! The GPUs a node agent hands out to its workers. The scheduler counts
//! each node's GPUs and places a call where enough are free; only the agent
//! knows which device ids its node's step was given, so it picks them
//! (`CUDA_VISIBLE_DEVICES` of the worker) and takes them back when the
//! worker exits. Two workers never share one.

use pmp_scheduler::ids::WorkerId;
use std::collections::{BTreeSet, HashMap};

pub struct NodeGpus {
    /// The node's device ids, in the order the job system listed them.
    ids: Vec<String>,
    /// Indices into `ids` of those no worker holds; the lowest go first.
    free: BTreeSet<usize>,
    held: HashMap<WorkerId, Vec<usize>>,
}

impl NodeGpus {
    pub fn new(ids: Vec<String>) -> NodeGpus {
        NodeGpus {
            free: (0..ids.len()).collect(),
            ids,
            held: HashMap::new(),
        }
    }

    /// `count` device ids for `worker`, held until `give_back`; why not,
    /// when fewer are free (the scheduler placed more than the node has).
    pub fn take(&mut self, worker: WorkerId, count: u32) -> Result<Vec<String>, String> {
        let count = count as usize;
        if count == 0 {
            return Ok(Vec::new());
        }
        if count > self.free.len() {
            return Err(format!(
                "it asks for {count} GPUs, and {} of this node's {} are free ({})",
                self.free.len(),
                self.ids.len(),
                if self.ids.is_empty() {
                    "CUDA_VISIBLE_DEVICES lists none for the agent".to_string()
                } else {
                    format!("CUDA_VISIBLE_DEVICES={}", self.ids.join(","))
                }
            ));
        }
        let taken: Vec<usize> = self.free.iter().copied().take(count).collect();
        for index in &taken {
            self.free.remove(index);
        }
        let ids = taken.iter().map(|&i| self.ids[i].clone()).collect();
        self.held.entry(worker).or_default().extend(taken);
        Ok(ids)
    }

    /// Whether the node has GPUs to hand out at all.
    pub fn any(&self) -> bool {
        !self.ids.is_empty()
    }

    /// What `worker` held is free again (it exited, or never started).
    pub fn give_back(&mut self, worker: WorkerId) {
        if let Some(indices) = self.held.remove(&worker) {
            self.free.extend(indices);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::NodeGpus;
    use pmp_scheduler::ids::WorkerId;

    #[test]
    fn workers_get_distinct_gpus_and_the_freed_ones_go_again() {
        let mut gpus = NodeGpus::new(vec!["0".into(), "1".into(), "2".into()]);
        assert_eq!(gpus.take(WorkerId(1), 2).unwrap(), ["0", "1"]);
        let refused = gpus.take(WorkerId(2), 2).unwrap_err();
        assert!(
            refused.contains("asks for 2 GPUs, and 1 of this node's 3"),
            "{refused}"
        );
        assert_eq!(gpus.take(WorkerId(3), 1).unwrap(), ["2"]);
        assert!(gpus.take(WorkerId(4), 0).unwrap().is_empty());
        gpus.give_back(WorkerId(1));
        gpus.give_back(WorkerId(2));
        assert_eq!(gpus.take(WorkerId(5), 2).unwrap(), ["0", "1"]);
    }

    #[test]
    fn a_node_without_gpus_says_so() {
        let refused = NodeGpus::new(Vec::new()).take(WorkerId(1), 1).unwrap_err();
        assert!(refused.contains("lists none"), "{refused}");
    }
}
