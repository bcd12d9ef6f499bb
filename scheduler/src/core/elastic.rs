//! The core's side of elastic allocations (issue 25): the policy
//! (`allocations`) decides, and this carries its decisions out through
//! `Comm` and feeds it what the core sees: the calls still waiting after
//! each placement pass, calls starting and ending on an allocation's nodes,
//! an allocation's nodes joining and its job ending. A call goes only to a
//! node whose allocation `may_take` it (`run_time_max`, the drain).
//!
//! A pool (`block_allocation`) lives on the allocations' nodes as pilots'
//! pools do on theirs (`joining`): its workers start on a node as it joins,
//! up to the pool's size; a call waits for an idle worker whose allocation
//! `may_take` it; calls that wait while workers are still to start ask for
//! an allocation; and an allocation released as idle stops its workers
//! first, so that the next that joins starts the pool anew (and its
//! `init_function`). Its calls are counted from its busy workers before
//! each decision (`count_pool_calls`), not at each call's start and end.

use super::allocations::{AllocationId, AllocationPolicy, Decision, Waiting};
use super::events::{Comm, LostReason, SubmitError};
use super::tasks::{Failure, TaskState};
use super::workers::WorkerState;
use super::{Allocation, Core};
use crate::capacity::{Node, Placement};
use crate::ids::{NodeId, TaskId, WorkerId};
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
    /// each node will hold. Err for a pool whose workers no node could hold.
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
        if let Allocation::Block { resources, .. } = &self.allocation {
            if resources.cpus() > node_cpus {
                return Err(format!(
                    "block_allocation=True workers of {} cores x {} threads_per_core need \
                     {} CPUs each, more than the {node_cpus} of a node of the allocations: \
                     lower cores_per_worker or threads_per_core",
                    resources.cores,
                    resources.threads_per_core,
                    resources.cpus()
                ));
            }
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
        self.count_pool_calls();
        let elastic = self.elastic.as_mut().expect("checked above");
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
    /// starts the allocation's clock, and the pool's workers still to
    /// start start there.
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
        self.balance_pool(comm);
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
        if self.elastic.is_none() {
            return;
        }
        self.count_pool_calls();
        let elastic = self.elastic.as_ref().expect("checked above");
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
        if let Allocation::Block { workers, resources } = &self.allocation {
            // A new allocation brings a pool only the workers it lacks.
            let to_start = workers.saturating_sub(self.workers.members() as u32);
            waiting.cpus = waiting.calls.min(to_start).saturating_mul(resources.cpus());
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

    /// An idle pool worker whose allocation may take `task` now (its
    /// `run_time_max`, the drain): the lowest id, as without allocations.
    pub(super) fn idle_worker_for(&self, task: TaskId) -> Option<WorkerId> {
        if self.elastic.is_none() {
            return self.workers.first_idle();
        }
        self.workers
            .idle()
            .find(|&worker| self.worker_may_take(worker, task))
    }

    /// Whether pool `worker`'s allocation may start `task` now: always
    /// without elastic allocations.
    pub(super) fn worker_may_take(&self, worker: WorkerId, task: TaskId) -> bool {
        if self.elastic.is_none() {
            return true;
        }
        let run_time_max = self
            .tasks
            .get(&task)
            .and_then(|t| t.work.as_ref())
            .and_then(|work| work.run_time_max);
        match self.workers.get(&worker).map(|w| &w.launch.placement) {
            Some(Placement::Node(node)) => self.node_may_take(*node, run_time_max),
            _ => false,
        }
    }

    /// Tell the policy how many calls each allocation's pool workers run
    /// now. One pass over the pool's workers, made only under a pool: before
    /// each decision, so that none releases an allocation whose worker was
    /// just given a call.
    fn count_pool_calls(&mut self) {
        if !matches!(self.allocation, Allocation::Block { .. }) {
            return;
        }
        let Some(elastic) = self.elastic.as_mut() else {
            return;
        };
        let mut calls: HashMap<AllocationId, u32> =
            elastic.nodes_of.keys().map(|&id| (id, 0)).collect();
        for worker in self.workers.unordered() {
            if let (WorkerState::Busy(_), Placement::Node(node)) =
                (worker.state, &worker.launch.placement)
            {
                if let Some(id) = elastic.allocation_of.get(node) {
                    *calls.entry(*id).or_default() += 1;
                }
            }
        }
        for (id, calls) in calls {
            elastic.policy.on_pool_calls(id, calls, elastic.now);
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
                    let nodes = elastic.nodes_of.get(&id).cloned().unwrap_or_default();
                    for &node in &nodes {
                        self.capacity.lose(node);
                    }
                    // Its pool workers (idle: it was released for that)
                    // stop first; the pool starts anew where nodes join.
                    let on_nodes: Vec<WorkerId> = self
                        .workers
                        .iter()
                        .filter(|(_, w)| {
                            w.dedicated.is_none()
                                && matches!(&w.launch.placement, Placement::Node(n) if nodes.contains(n))
                        })
                        .map(|(worker, _)| *worker)
                        .collect();
                    for worker in on_nodes {
                        self.retire(comm, worker);
                    }
                    comm.release_allocation(id, job.as_deref());
                    self.ask_for_scheduling();
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
