//! Pilot jobs of node agents, from outside any allocation
//! (`backend::pilot_agents`): submitted when the executor starts, each
//! job's agent joins the executor when it connects (its node added to the
//! capacity, the pool's waiting workers started there), and one watcher
//! thread asks squeue for all of the jobs' states in one call every few
//! seconds. A job that ends after its agent joined is a lost node, named
//! with the job's id and Slurm's state; one that ends before leaves the
//! pool smaller, and once no job is left that could still run the pool's
//! work, that work fails with the last job's id and state.
//!
//! A later allocation (issue 25) is more of the same: `submit` more jobs,
//! whose agents join as these do.

use super::held_exits::HeldExits;
use super::job_watch::JobWatch;
use super::Server;
use crate::backend::pilot::state_words;
use crate::backend::pilot_agents::PilotJobs;
use crate::backend::AgentStep;
use crate::capacity::Node;
use crate::ids::NodeId;
use crate::jobs::slurm::SlurmJobs;
use crate::jobs::{ended, JobSystem};
use crate::process::Exit;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long shutdown waits for the jobs of joined agents to end.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// One pilot job.
struct Pilot {
    id: String,
    /// Its node, once squeue named it.
    node: Option<String>,
    /// Slurm's state once the job ended.
    ended: Option<String>,
    /// squeue said COMPLETING: it is ending.
    ending: bool,
}

/// The executor's pilot jobs, as the scheduler follows them.
pub(super) struct Pilots {
    jobs: Vec<Pilot>,
    system: Arc<SlurmJobs>,
    watch: JobWatch,
    /// The agents' key file, until every job's agent joined or the job ended.
    key_file: Option<PathBuf>,
    joined: usize,
    held: HeldExits,
}

/// What `Server::run` needs to submit the pilot jobs.
pub struct PilotStart {
    pub jobs: PilotJobs,
    pub tool_dirs: Vec<PathBuf>,
}

impl Pilots {
    /// Submit every job (blocking: the executor is starting), each running
    /// an agent with `step`'s variables; the watcher starts with them. Err
    /// where sbatch refused one, the others cancelled.
    pub(super) fn submit(
        start: &PilotStart,
        step: &AgentStep,
        key_file: PathBuf,
    ) -> Result<Pilots, String> {
        let system = Arc::new(SlurmJobs::new(start.jobs.sbatch.clone(), &start.tool_dirs));
        let script = PilotJobs::script(&step.environment.program);
        let variables = step.variables();
        let mut ids = Vec::new();
        let count = start.jobs.jobs.len();
        for (i, job) in start.jobs.jobs.iter().enumerate() {
            let args = start.jobs.arguments(job);
            match system.submit_script(&args, &script, &variables) {
                Ok(id) => ids.push(id),
                Err(why) => {
                    system.cancel(&ids);
                    let _ = std::fs::remove_file(&key_file);
                    return Err(format!(
                        "pilot job {} of {count} (sbatch {}) was not submitted: {why}",
                        i + 1,
                        args.join(" ")
                    ));
                }
            }
        }
        let watch = JobWatch::start(system.clone(), ids.clone(), "pmp-pilots")?;
        Ok(Pilots {
            jobs: ids
                .into_iter()
                .map(|id| Pilot {
                    id,
                    node: None,
                    ended: None,
                    ending: false,
                })
                .collect(),
            system,
            watch,
            key_file: Some(key_file),
            joined: 0,
            held: HeldExits::default(),
        })
    }

    /// The job ids, for what is said about them.
    fn ids(&self) -> String {
        let ids: Vec<&str> = self.jobs.iter().map(|p| p.id.as_str()).collect();
        ids.join(", ")
    }

    /// A job's agent joined: once every job's did (or ended), the key
    /// file has done its work.
    fn on_join(&mut self) {
        self.joined += 1;
        self.forget_key_once_all_came();
    }

    fn forget_key_once_all_came(&mut self) {
        let ended_unjoined = self
            .jobs
            .iter()
            .filter(|p| p.ended.is_some() && p.node.is_none())
            .count();
        if self.joined + ended_unjoined >= self.jobs.len() {
            if let Some(file) = self.key_file.take() {
                let _ = std::fs::remove_file(file);
            }
        }
    }

    /// The executor is ending, its joined agents told to stop: wait (a
    /// few seconds at most) until their jobs end with them, cancel those
    /// whose agents never joined (still queued, or just starting), and
    /// then any job still running.
    pub(super) async fn shut_down(&mut self, joined_nodes: &HashMap<String, NodeId>) {
        if let Some(file) = self.key_file.take() {
            let _ = std::fs::remove_file(file);
        }
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        let mut cancelled = Vec::new();
        let mut running: Vec<String> = self
            .jobs
            .iter()
            .filter(|p| p.ended.is_none())
            .map(|p| p.id.clone())
            .collect();
        while !running.is_empty() && Instant::now() < deadline {
            // The send loop gets to send the agents their Shutdown first.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let system = self.system.clone();
            let asked = running.clone();
            let states = tokio::task::spawn_blocking(move || system.states(&asked))
                .await
                .ok()
                .flatten()
                .unwrap_or_default();
            let mut unjoined = Vec::new();
            running.retain(|id| {
                let Some(status) = states.get(id) else {
                    return true; // no news: asked again
                };
                if ended(&status.state) || status.state == "COMPLETING" {
                    return false;
                }
                let joined = status
                    .nodes
                    .split(',')
                    .any(|node| joined_nodes.contains_key(node.trim()));
                if !joined && !cancelled.contains(id) {
                    unjoined.push(id.clone());
                }
                true
            });
            if !unjoined.is_empty() {
                self.system.cancel(&unjoined);
                cancelled.extend(unjoined);
            }
        }
        if !running.is_empty() {
            self.system.cancel(&running);
        }
    }
}

/// What happened to a job since the last report.
enum Change {
    /// It ended after its agent joined as `node`.
    NodeLost(NodeId, String),
    /// It ended before its agent joined.
    EndedUnjoined(String),
}

/// Slurm's words for a job that ended: its id, state and why.
fn ended_words(id: &str, state: &str) -> String {
    format!("pilot job {id} ended {state}: {}", state_words(state))
}

impl Server {
    /// An agent of a pilot job said hello from `name`: its node joins the
    /// capacity with what the job holds there, and the pool's waiting
    /// workers start there.
    pub(super) fn join_pilot_node(&mut self, node: Node) -> NodeId {
        if let Some(pilots) = self.agents.as_mut().and_then(|a| a.pilots.as_mut()) {
            pilots.on_join();
        }
        with_comm!(self, |core, comm| core.add_node(&mut comm, node))
    }

    /// Whether `exit` of a worker on `node` goes to the core now. Under a
    /// pilot, any exit but a clean one (a worker told to stop) is held
    /// until the watcher says whether its job is ending: scancel or a time
    /// limit end the workers with the agent, which reports them before
    /// squeue says why, and the job's id and state are what explains
    /// them; a replacement started meanwhile would go to the dying node.
    pub(super) fn pilot_exit(&mut self, node: NodeId, exit: Exit) -> Option<Exit> {
        let Some(pilots) = self.agents.as_mut().and_then(|a| a.pilots.as_mut()) else {
            return Some(exit);
        };
        pilots.held.hold(node, exit)
    }

    /// Read what the watcher reported (called each heartbeat): nodes whose
    /// job ended are lost, held exits are explained or let go, and once no
    /// job is left the pool's work fails.
    pub(super) fn on_pilot_reports(&mut self) {
        let Some(agents) = self.agents.as_mut() else {
            return;
        };
        let Some(pilots) = agents.pilots.as_mut() else {
            return;
        };
        let mut changes = Vec::new();
        let mut reported = false;
        while let Some(states) = pilots.watch.next_report() {
            reported = true;
            for pilot in pilots.jobs.iter_mut().filter(|p| p.ended.is_none()) {
                let Some(status) = states.get(&pilot.id) else {
                    continue;
                };
                let nodes = status.nodes.trim();
                if !nodes.is_empty() && nodes != "(null)" {
                    pilot.node = Some(nodes.to_string());
                }
                pilot.ending = status.state == "COMPLETING";
                if !ended(&status.state) {
                    continue;
                }
                pilot.ended = Some(status.state.clone());
                pilots.watch.unwatch(&pilot.id);
                let words = ended_words(&pilot.id, &status.state);
                let joined = pilot.node.as_ref().and_then(|n| agents.nodes.get(n));
                changes.push(match joined {
                    Some(&node) => Change::NodeLost(node, words),
                    None => Change::EndedUnjoined(words),
                });
            }
        }
        if !reported {
            for exit in pilots.held.stale() {
                let _ = self.exits_tx.send(exit);
            }
            return;
        }
        pilots.forget_key_once_all_came();
        let names = &agents.names;
        let ending = |node: NodeId| {
            let name = &names[node.0 as usize];
            pilots
                .jobs
                .iter()
                .any(|p| p.node.as_ref() == Some(name) && (p.ending || p.ended.is_some()))
        };
        let release = pilots.held.after_report(ending);
        let all_ended = pilots.jobs.iter().all(|p| p.ended.is_some());
        let ids = pilots.ids();
        for exit in release {
            let _ = self.exits_tx.send(exit);
        }
        let mut last = None;
        for change in changes {
            match change {
                Change::NodeLost(node, why) => {
                    if let Some(pilots) = self.agents.as_mut().and_then(|a| a.pilots.as_mut()) {
                        pilots.held.forget(node);
                    }
                    self.node_lost(node, why.clone());
                    last = Some(why);
                }
                Change::EndedUnjoined(why) => {
                    eprintln!(
                        "pmp scheduler: {why}, before its node agent connected; the pool's \
                         workers it was to run do not start"
                    );
                    last = Some(format!("{why}, before its node agent connected"));
                }
            }
        }
        if let (true, Some(why)) = (all_ended, last) {
            let why = format!("no pilot job is left to run it (jobs {ids}); the last: {why}");
            with_comm!(self, |core, comm| core.nodes_gone(&mut comm, why));
        }
    }
}
