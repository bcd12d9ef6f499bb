//! Elastic allocations from outside any allocation (`pmp.Allocation`,
//! issue 25): the core's policy decides when to ask for one and when to
//! give one back (`core::allocations`); this carries it out with the job
//! system (`JobSystem`: Slurm's sbatch, squeue, scancel or Flux's flux
//! batch, flux jobs, flux cancel; `allocation_jobs` writes each one's job)
//! and tells the core what happened.
//! - **submit**: sbatch or flux batch runs on a thread of its own (a busy
//!   controller can take seconds), its answer comes back as
//!   `Internal::AllocationAnswer`; the job's environment says the
//!   allocation's number (`allocation_jobs::VARIABLE`), which each agent's
//!   Hello repeats, so an agent that connects before the job system
//!   answered still finds its place.
//! - **watch**: one thread asks the job system for the states of all live
//!   jobs in one call every few seconds (as pilots' watcher); each
//!   heartbeat reads what it said: a job still queued tells the core why, a
//!   job that ended loses its nodes with its id and state named. A job
//!   that failed before any agent of it connected was refused after all:
//!   Flux takes a request it can never satisfy and fails it when it would
//!   allocate, so its words fail the waiting calls and submitting pauses,
//!   as for a refused submission, instead of submitting it again.
//! - **release**: scancel or flux cancel on a thread; its agents end with
//!   the job.
//!
//! The agents' key file stays until the executor ends: a later allocation's
//! agents read it too.

use super::held_exits::HeldExits;
use super::job_watch::JobWatch;
use super::{Internal, Server};
use crate::backend::allocation_jobs::{self, AllocationJobs, AllocationSystem};
use crate::backend::pilot::state_words;
use crate::backend::AgentStep;
use crate::capacity::Node;
use crate::core::allocations::{AllocationId, Stage};
use crate::ids::NodeId;
use crate::jobs::flux::FluxJobs;
use crate::jobs::slurm::SlurmJobs;
use crate::jobs::{ended, JobStatus, JobSystem};
use crate::process::Exit;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// What `Server::run` needs to follow elastic allocations.
pub struct AllocationStart {
    pub jobs: AllocationJobs,
    pub tool_dirs: Vec<PathBuf>,
}

/// What a submission needs, shared with the threads that run sbatch or
/// flux batch.
struct Submitter {
    system: Arc<dyn JobSystem>,
    args: Vec<String>,
    script: String,
    variables: Vec<(String, String)>,
}

/// The executor's allocation jobs, as the server follows them.
pub(super) struct Allocations {
    submitter: Arc<Submitter>,
    /// squeue, asked about the live jobs.
    watch: JobWatch,
    /// Each job's allocation.
    jobs: HashMap<String, AllocationId>,
    /// Jobs squeue says are ending (COMPLETING), whose workers' exits its
    /// end explains.
    ending: Vec<String>,
    key_file: PathBuf,
    pub(super) held: HeldExits,
}

impl Allocations {
    /// Ready to submit: nothing is submitted until the core asks. The
    /// watcher thread starts here.
    pub(super) fn new(
        start: &AllocationStart,
        step: &AgentStep,
        key_file: PathBuf,
    ) -> Result<Allocations, String> {
        let system: Arc<dyn JobSystem> = match &start.jobs.system {
            AllocationSystem::Slurm { sbatch } => {
                Arc::new(SlurmJobs::new(sbatch.clone(), &start.tool_dirs))
            }
            AllocationSystem::Flux { flux } => Arc::new(FluxJobs::new(flux.clone())),
        };
        let submitter = Arc::new(Submitter {
            system,
            args: start.jobs.arguments(),
            script: start.jobs.script(&step.environment.program),
            variables: step.variables(),
        });
        let watch = JobWatch::start(submitter.system.clone(), Vec::new(), "pmp-allocations")?;
        Ok(Allocations {
            submitter,
            watch,
            jobs: HashMap::new(),
            ending: Vec::new(),
            key_file,
            held: HeldExits::default(),
        })
    }

    /// Ask the job system for allocation `id` on a thread; its answer
    /// comes back on `internal`.
    pub(super) fn submit(&self, id: AllocationId, internal: UnboundedSender<Internal>) {
        let submitter = self.submitter.clone();
        let answers = internal.clone();
        let spawned = std::thread::Builder::new()
            .name("pmp-allocation-submit".into())
            .spawn(move || {
                let mut variables = submitter.variables.clone();
                variables.push((allocation_jobs::VARIABLE.to_string(), id.0.to_string()));
                let answer =
                    submitter
                        .system
                        .submit_script(&submitter.args, &submitter.script, &variables);
                let _ = answers.send(Internal::AllocationAnswer { id, answer });
            });
        if let Err(e) = spawned {
            let answer = Err(format!(
                "cannot start a thread to submit an allocation: {e}"
            ));
            let _ = internal.send(Internal::AllocationAnswer { id, answer });
        }
    }

    /// Cancel `jobs` (scancel, flux cancel) on a thread.
    pub(super) fn cancel(&self, jobs: Vec<String>) {
        if jobs.is_empty() {
            return;
        }
        let submitter = self.submitter.clone();
        let _ = std::thread::Builder::new()
            .name("pmp-allocation-cancel".into())
            .spawn(move || submitter.system.cancel(&jobs));
    }

    fn watch(&mut self, id: AllocationId, job: String) {
        self.watch.watch(job.clone());
        self.jobs.insert(job, id);
    }

    fn unwatch(&mut self, job: &str) {
        self.watch.unwatch(job);
        self.ending.retain(|j| j != job);
    }

    /// The executor ends: every job still followed is cancelled (queued
    /// ones never start; running ones end with their agents, told to stop
    /// already), and the key file goes.
    pub(super) fn shut_down(&mut self) {
        let _ = std::fs::remove_file(&self.key_file);
        let live = self.watch.watched();
        // On this thread: the executor waits for its jobs to be gone.
        if !live.is_empty() {
            self.submitter.system.cancel(&live);
        }
    }
}

/// The words for an allocation's job that ended (`system`: the job
/// system's name).
fn ended_words(system: &str, job: &str, state: &str) -> String {
    let why = match (system, state) {
        ("flux", "CANCELLED") => "it was cancelled (flux cancel, or an administrator)",
        ("flux", _) if state_words(state) == state_words("") => "Flux ended it",
        _ => state_words(state),
    };
    format!("allocation job {job} ended {state}: {why}")
}

/// Why a job that ended before any agent of it connected was, in effect,
/// refused; None where its end says nothing of the request (a job
/// cancelled while queued, or one that completed).
fn refused_words(system: &str, job: &str, status: &JobStatus) -> Option<String> {
    if status.state != "FAILED" {
        return None;
    }
    let said = match status.reason.as_str() {
        "" | "None" => String::new(),
        reason => format!(": {reason}"),
    };
    let system = if system == "flux" { "Flux" } else { "Slurm" };
    Some(format!(
        "{system} took allocation job {job} but failed it before any of its node agents \
         started{said}"
    ))
}

impl Server {
    fn allocations(&mut self) -> Option<&mut Allocations> {
        self.agents.as_mut().and_then(|a| a.allocations.as_mut())
    }

    /// Whether an agent of allocation `number` may join: the allocation
    /// is one the policy asked for and still counts on.
    pub(super) fn allocation_takes_agents(&self, number: u32) -> bool {
        self.core.allocation_policy().is_some_and(|policy| {
            policy
                .allocations()
                .iter()
                .any(|a| a.id == AllocationId(number) && a.is_live())
        })
    }

    /// Whether an agent that said hello from node `name` for `allocation`
    /// may join (false: ignored, said why). A node an earlier allocation
    /// had joins anew: Slurm gave it to this allocation, so the earlier
    /// one's agent there is gone, even if squeue has not said so yet.
    pub(super) fn make_room_for_allocation_agent(
        &mut self,
        name: &str,
        allocation: Option<u32>,
    ) -> bool {
        let Some(number) = allocation.filter(|&n| self.allocation_takes_agents(n)) else {
            eprintln!(
                "pmp scheduler: an agent said hello from node {name:?} for allocation \
                 {allocation:?}, which this executor does not count on; ignored"
            );
            return false;
        };
        let Some(agents) = self.agents.as_mut() else {
            return false;
        };
        let Some(&earlier) = agents.nodes.get(name) else {
            return true;
        };
        if self.core.allocation_of(earlier) == Some(AllocationId(number)) {
            return true; // the same agent again: refused as a second Hello
        }
        agents.nodes.remove(name);
        self.node_lost(
            earlier,
            format!("its allocation ended: Slurm gave node {name} to another allocation"),
        );
        true
    }

    /// An agent of allocation `number` said hello from `name`: its node
    /// joins the capacity, and the allocation's clock starts with its first.
    pub(super) fn join_allocation_node(&mut self, number: u32, node: Node) -> NodeId {
        with_comm!(self, |core, comm| core.allocation_node_joined(
            &mut comm,
            AllocationId(number),
            node
        ))
    }

    /// sbatch answered for allocation `id`: a job to follow, or why not.
    pub(super) fn on_allocation_answer(
        &mut self,
        id: AllocationId,
        answer: Result<String, String>,
    ) {
        match answer {
            Ok(job) => {
                let released = self
                    .core
                    .allocation_policy()
                    .is_some_and(|policy| policy.was_released(id));
                let Some(allocations) = self.allocations() else {
                    return;
                };
                if released {
                    // Given back while sbatch was still answering.
                    allocations.cancel(vec![job]);
                    return;
                }
                allocations.watch(id, job.clone());
                self.core.allocation_submitted(id, job);
            }
            Err(why) => {
                eprintln!("pmp scheduler: an allocation was not submitted: {why}");
                with_comm!(self, |core, comm| core
                    .allocation_refused(&mut comm, id, &why));
            }
        }
    }

    /// Whether `exit` of a worker on `node` goes to the core now: under
    /// allocations, held until the watcher says whether its job is ending.
    pub(super) fn allocation_exit(&mut self, node: NodeId, exit: Exit) -> Option<Exit> {
        match self.allocations() {
            Some(allocations) => allocations.held.hold(node, exit),
            None => Some(exit),
        }
    }

    /// Read what the watcher reported (each heartbeat): why queued jobs
    /// wait, which ended (their nodes lost with the job named), and which
    /// held exits their job's end explains.
    pub(super) fn on_allocation_reports(&mut self) {
        let Some(allocations) = self.allocations() else {
            return;
        };
        let mut ended_jobs = Vec::new();
        let mut refused = Vec::new();
        let mut pending = Vec::new();
        let mut reported = false;
        let system = allocations.submitter.system.name();
        while let Some(states) = allocations.watch.next_report() {
            reported = true;
            for (job, status) in states {
                let Some(&id) = allocations.jobs.get(&job) else {
                    continue;
                };
                if ended(&status.state) {
                    let words = refused_words(system, &job, &status);
                    refused.push((id, words));
                    ended_jobs.push((id, job, status.state));
                } else if status.state == "PENDING" {
                    pending.push((id, status.reason));
                } else if status.state == "COMPLETING" && !allocations.ending.contains(&job) {
                    allocations.ending.push(job);
                }
            }
        }
        if !reported {
            for exit in allocations.held.stale() {
                let _ = self.exits_tx.send(exit);
            }
            return;
        }
        for (_, job, _) in &ended_jobs {
            allocations.unwatch(job);
            allocations.jobs.remove(job);
        }
        for (id, reason) in pending {
            self.core.allocation_pending(id, &reason);
        }
        // Failed with no node joined: refused, unless the policy gave it up.
        let refused: Vec<(AllocationId, String)> = refused
            .into_iter()
            .filter_map(|(id, words)| {
                let policy = self.core.allocation_policy()?;
                let joined = !self.core.allocation_nodes(id).is_empty();
                (!joined && !policy.was_released(id)).then_some((id, words?))
            })
            .collect();
        let ended_jobs: Vec<_> = ended_jobs
            .into_iter()
            .filter(|(id, _, _)| !refused.iter().any(|(r, _)| r == id))
            .collect();
        for (id, why) in refused {
            eprintln!("pmp scheduler: an allocation was refused: {why}");
            with_comm!(self, |core, comm| core
                .allocation_refused(&mut comm, id, &why));
        }
        // Held exits: those on a node whose job is ending wait for its loss.
        let ending_ids: Vec<AllocationId> = {
            let allocations = self.allocations().expect("checked above");
            allocations
                .ending
                .iter()
                .filter_map(|job| allocations.jobs.get(job).copied())
                .chain(ended_jobs.iter().map(|(id, _, _)| *id))
                .collect()
        };
        let ending_nodes: Vec<NodeId> = ending_ids
            .iter()
            .flat_map(|&id| self.core.allocation_nodes(id))
            .collect();
        let allocations = self.allocations().expect("checked above");
        let release = allocations
            .held
            .after_report(|node| ending_nodes.contains(&node));
        for exit in release {
            let _ = self.exits_tx.send(exit);
        }
        for (id, job, state) in ended_jobs {
            let released = self
                .core
                .allocation_policy()
                .is_some_and(|policy| policy.was_released(id));
            let why = if released {
                format!("its allocation (job {job}) was released")
            } else {
                ended_words(system, &job, &state)
            };
            let ended = crate::core::EndedJob {
                id: job.clone(),
                state: state.clone(),
            };
            for node in self.core.allocation_nodes(id) {
                if let Some(allocations) = self.allocations() {
                    allocations.held.forget(node);
                }
                self.node_lost_with_job(node, why.clone(), Some(ended.clone()));
            }
            with_comm!(self, |core, comm| core
                .allocation_ended(&mut comm, id, &state));
        }
    }

    /// The allocations as `exe.info()` shows them.
    pub(super) fn allocation_rows(&self) -> Option<Vec<AllocationRow>> {
        let policy = self.core.allocation_policy()?;
        let now = Instant::now();
        Some(
            policy
                .allocations()
                .iter()
                .map(|a| {
                    let (state, reason) = match &a.stage {
                        Stage::Submitting => ("SUBMITTING".to_string(), String::new()),
                        Stage::Queued { reason, .. } => ("PENDING".to_string(), reason.clone()),
                        Stage::Running { .. } => ("RUNNING".to_string(), String::new()),
                        Stage::Ended { state, .. } => (state.clone(), String::new()),
                    };
                    let nodes = self
                        .core
                        .allocation_nodes(a.id)
                        .into_iter()
                        .filter_map(|node| {
                            self.agents
                                .as_ref()
                                .map(|ag| ag.node_name(node).to_string())
                        })
                        .collect();
                    AllocationRow {
                        number: a.id.0,
                        job: a.job().map(String::from),
                        state,
                        reason,
                        nodes,
                        time_left_s: a.time_left(now).map(|t| t.as_secs_f64()),
                        calls: a.calls,
                    }
                })
                .collect(),
        )
    }
}

/// One allocation, as `exe.info()["allocations"]` lists it.
#[derive(Clone, Debug)]
pub struct AllocationRow {
    pub number: u32,
    pub job: Option<String>,
    /// SUBMITTING, PENDING (and why), RUNNING, or the state it ended in.
    pub state: String,
    pub reason: String,
    pub nodes: Vec<String>,
    pub time_left_s: Option<f64>,
    pub calls: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: &str, reason: &str) -> JobStatus {
        JobStatus {
            state: state.into(),
            reason: reason.into(),
            nodes: String::new(),
            started: None,
        }
    }

    #[test]
    fn a_job_failed_before_it_ran_is_a_refusal_in_the_job_systems_words() {
        let note = "unsatisfiable request: need 3 exclusive node(s), only 2 eligible";
        assert_eq!(
            refused_words("flux", "fAb", &status("FAILED", note)).as_deref(),
            Some(
                "Flux took allocation job fAb but failed it before any of its node agents \
                 started: unsatisfiable request: need 3 exclusive node(s), only 2 eligible"
            )
        );
        // Cancelled while queued, or ended cleanly: nothing said of the request.
        assert_eq!(refused_words("flux", "fAb", &status("CANCELLED", "")), None);
        assert_eq!(
            refused_words("slurm", "12", &status("COMPLETED", "None")),
            None
        );
        assert!(refused_words("slurm", "12", &status("FAILED", "None"))
            .unwrap()
            .ends_with("node agents started"));
    }

    #[test]
    fn an_ended_job_is_named_with_its_state_in_its_job_systems_terms() {
        assert_eq!(
            ended_words("flux", "fAb", "CANCELLED"),
            "allocation job fAb ended CANCELLED: it was cancelled (flux cancel, or an \
             administrator)"
        );
        assert!(ended_words("slurm", "12", "CANCELLED").contains("scancel"));
        assert!(ended_words("flux", "fAb", "TIMEOUT").ends_with("its time limit"));
        assert!(ended_words("flux", "fAb", "WEIRD").ends_with("Flux ended it"));
    }
}
