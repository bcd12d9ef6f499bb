//! The core's side of elastic allocations (issue 25): the policy
//! (`allocations`) decides, and this carries its decisions out through
//! `Comm` and feeds it what the core sees: the calls still waiting after
//! each placement pass, calls starting and ending on an allocation's nodes,
//! an allocation's nodes joining and its job ending. A call goes only to a
//! node whose allocation `may_take` it (`run_time_max`, the drain).
//!
//! Fresh workers only, for now: a pool (`block_allocation`) under elastic
//! allocations is not built yet, and `Core::with_allocations` says so.

use super::allocations::{AllocationId, AllocationPolicy, Decision, Waiting};
use super::events::{Comm, LostReason, SubmitError};
use super::tasks::{Failure, TaskState};
use super::{Allocation, Core};
use crate::capacity::{Node, Placement};
use crate::ids::{NodeId, TaskId};
use crate::resources::{NeverFits, ResourceRequest};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What the core keeps for elastic allocations.
pub(super) struct Elastic {
    policy: AllocationPolicy,
    /// The allocation each node joined from.
    allocation_of: HashMap<NodeId, AllocationId>,
    /// The nodes of each allocation, as they joined.
    nodes_of: HashMap<AllocationId, Vec<NodeId>>,
    /// The time of the latest event, as the server gave it.
    now: Instant,
    /// The CPUs of one node of an allocation (the partition's node shape):
    /// what a call may ask for at most.
    node_cpus: u32,
}

impl Core {
    /// A core whose nodes come from allocations the policy asks for as
    /// calls wait (its capacity `Capacity::joining`); `node_cpus` is what
    /// each node will hold. Err for a pool, not built yet.
    pub fn with_allocations(
        mut self,
        policy: AllocationPolicy,
        node_cpus: u32,
        now: Instant,
    ) -> Result<Core, String> {
        assert!(
            self.capacity.nodes_join(),
            "an elastic core's nodes join as their allocations start (Capacity::joining)"
        );
        if !matches!(self.allocation, Allocation::PerTask) {
            return Err(
                "elastic allocations run fresh workers only: block_allocation=True \
                 under Allocation(...) is not supported yet"
                    .into(),
            );
        }
        self.elastic = Some(Box::new(Elastic {
            policy,
            allocation_of: HashMap::new(),
            nodes_of: HashMap::new(),
            now,
            node_cpus,
        }));
        Ok(self)
    }

    /// The allocations and what the policy knows of them.
    pub fn allocation_policy(&self) -> Option<&AllocationPolicy> {
        self.elastic.as_ref().map(|e| &e.policy)
    }

    /// The allocation `node` joined from.
    pub fn allocation_of(&self, node: NodeId) -> Option<AllocationId> {
        self.elastic
            .as_ref()
            .and_then(|e| e.allocation_of.get(&node).copied())
    }

    /// The nodes that joined from allocation `id`.
    pub fn allocation_nodes(&self, id: AllocationId) -> Vec<NodeId> {
        self.elastic
            .as_ref()
            .and_then(|e| e.nodes_of.get(&id).cloned())
            .unwrap_or_default()
    }

    /// The executor starts: the allocations kept even when idle.
    pub fn start_allocations(&mut self, comm: &mut impl Comm) {
        if let Some(elastic) = self.elastic.as_mut() {
            let decisions = elastic.policy.start(elastic.now);
            self.carry_out(comm, decisions);
        }
    }

    /// The heartbeat: the time now; idle allocations go, replacements come.
    pub fn allocations_tick(&mut self, comm: &mut impl Comm, now: Instant) {
        let Some(elastic) = self.elastic.as_mut() else {
            return;
        };
        elastic.now = now;
        let decisions = elastic.policy.tick(now);
        self.carry_out(comm, decisions);
        // Time passing closes nodes to calls (the drain) or opens nothing:
        // a pass says what now waits.
        self.ask_for_scheduling();
    }

    /// The job system took allocation `id`'s submission as `job`.
    pub fn allocation_submitted(&mut self, id: AllocationId, job: String) {
        if let Some(elastic) = self.elastic.as_mut() {
            elastic.policy.on_submitted(id, job, elastic.now);
        }
    }

    /// The job system refused it (`why`, its words): the calls waiting fail.
    pub fn allocation_refused(&mut self, comm: &mut impl Comm, id: AllocationId, why: &str) {
        if let Some(elastic) = self.elastic.as_mut() {
            let decisions = elastic.policy.on_refused(id, why, elastic.now);
            self.carry_out(comm, decisions);
        }
    }

    /// Still queued, for `reason` (Slurm's Priority, Resources...).
    pub fn allocation_pending(&mut self, id: AllocationId, reason: &str) {
        if let Some(elastic) = self.elastic.as_mut() {
            elastic.policy.on_pending(id, reason);
        }
    }

    /// A node of allocation `id` joined (its agent connected): the first
    /// starts the allocation's clock.
    pub fn allocation_node_joined(
        &mut self,
        comm: &mut impl Comm,
        id: AllocationId,
        node: Node,
    ) -> NodeId {
        let node = self.capacity.add_node(node);
        if let Some(elastic) = self.elastic.as_mut() {
            elastic.allocation_of.insert(node, id);
            let nodes = elastic.nodes_of.entry(id).or_default();
            nodes.push(node);
            if nodes.len() == 1 {
                let decisions = elastic.policy.on_running(id, elastic.now);
                self.carry_out(comm, decisions);
            }
        }
        self.ask_for_scheduling();
        node
    }

    /// Allocation `id`'s job ended (`state`, the job system's word). Its
    /// nodes take nothing more; its calls are lost with the job named
    /// (their workers' exits, reported by the server, fail or rerun them
    /// per `restart_limit`), unless the policy released it.
    pub fn allocation_ended(&mut self, comm: &mut impl Comm, id: AllocationId, state: &str) {
        let Some(elastic) = self.elastic.as_mut() else {
            return;
        };
        let job = elastic.policy.job(id).map(String::from);
        let released = elastic.policy.was_released(id);
        let decisions = elastic.policy.on_ended(id, state, elastic.now);
        let nodes = elastic.nodes_of.get(&id).cloned().unwrap_or_default();
        for node in nodes {
            let name = self.capacity.node_name(node).to_string();
            let why = match (&job, released) {
                (_, true) => "its allocation was released".to_string(),
                (Some(job), false) => format!("allocation job {job} ended {state}"),
                (None, false) => format!("its allocation ended {state}"),
            };
            self.node_lost(comm, node, &name, &why);
        }
        self.carry_out(comm, decisions);
    }

    /// Why a call could never run in any allocation: more CPUs than a node
    /// brings, or a `run_time_max` beyond the allocations' time limit.
    pub(super) fn never_fits_an_allocation(
        &self,
        resources: &ResourceRequest,
        run_time_max: Option<u32>,
    ) -> Option<SubmitError> {
        let elastic = self.elastic.as_ref()?;
        let run_time_max = run_time_max.map(|s| Duration::from_secs(s.into()));
        if let Some(why) = run_time_max.and_then(|t| elastic.policy.never_fits(t)) {
            return Some(SubmitError::NeverFitsAllocations(why));
        }
        (resources.cpus() > elastic.node_cpus).then_some(SubmitError::NeverFits(NeverFits::Cpus {
            cores: resources.cores,
            threads_per_core: resources.threads_per_core,
            cpus: elastic.node_cpus,
        }))
    }

    /// Whether `node` may start a call with `run_time_max` (seconds) now:
    /// always without elastic allocations.
    pub(super) fn node_may_take(&self, node: NodeId, run_time_max: Option<u32>) -> bool {
        let Some(elastic) = self.elastic.as_ref() else {
            return true;
        };
        elastic.allocation_of.get(&node).is_some_and(|&id| {
            let needed = run_time_max.map(|s| Duration::from_secs(s.into()));
            elastic.policy.may_take(id, needed, elastic.now)
        })
    }

    /// After a placement pass: the calls still ready wait for an
    /// allocation. Counted up to what `max_allocations` could ever hold,
    /// so a pass costs no more with a backlog of a million.
    pub(super) fn allocations_after_placement(&mut self, comm: &mut impl Comm) {
        let Some(elastic) = self.elastic.as_ref() else {
            return;
        };
        let settings = elastic.policy.settings();
        let enough = settings
            .cpus
            .saturating_mul(settings.max_allocations.max(1));
        let mut waiting = Waiting::default();
        for id in &self.ready {
            let Some(task) = self.tasks.get(id) else {
                continue;
            };
            if let (TaskState::Ready, Some(work)) = (&task.state, &task.work) {
                waiting.calls += 1;
                waiting.cpus = waiting.cpus.saturating_add(work.resources.cpus());
                if waiting.cpus >= enough {
                    break;
                }
            }
        }
        let elastic = self.elastic.as_mut().expect("checked above");
        let mut decisions = elastic.policy.on_waiting(waiting, elastic.now);
        // Submitting paused after a refusal, and no allocation left to run
        // what waits: it fails now with the refusal's words, not later.
        let none_left = !elastic.policy.allocations().iter().any(|a| a.is_live());
        if let (Some(why), true, true) = (
            elastic.policy.paused(elastic.now),
            none_left,
            waiting.calls > 0,
        ) {
            decisions.push(Decision::FailWaiting(why.to_string()));
        }
        self.carry_out(comm, decisions);
    }

    /// A call's fresh worker started at `placement`.
    pub(super) fn call_started_at(&mut self, placement: &Placement) {
        if let (Some(elastic), Placement::Node(node)) = (self.elastic.as_mut(), placement) {
            if let Some(&id) = elastic.allocation_of.get(node) {
                elastic.policy.on_call_started(id);
            }
        }
    }

    /// A call's fresh worker at `placement` is gone.
    pub(super) fn call_ended_at(&mut self, placement: &Placement) {
        if let (Some(elastic), Placement::Node(node)) = (self.elastic.as_mut(), placement) {
            if let Some(&id) = elastic.allocation_of.get(node) {
                elastic.policy.on_call_ended(id, elastic.now);
            }
        }
    }

    fn carry_out(&mut self, comm: &mut impl Comm, decisions: Vec<Decision>) {
        for decision in decisions {
            match decision {
                Decision::Submit(id) => comm.submit_allocation(id),
                Decision::Release(id) => {
                    let elastic = self.elastic.as_ref().expect("decided by the policy");
                    let job = elastic.policy.job(id).map(String::from);
                    // Nothing more starts there while it ends.
                    for node in elastic.nodes_of.get(&id).cloned().unwrap_or_default() {
                        self.capacity.lose(node);
                    }
                    comm.release_allocation(id, job.as_deref());
                }
                Decision::FailWaiting(words) => {
                    let waiting: Vec<TaskId> = self.ready.drain(..).collect();
                    for task in waiting {
                        if matches!(
                            self.tasks.get(&task).map(|t| &t.state),
                            Some(TaskState::Ready)
                        ) {
                            self.fail(comm, task, Failure::Lost(LostReason::new(words.clone())));
                        }
                    }
                }
            }
        }
    }
}
