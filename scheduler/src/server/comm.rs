//! The core's effects carried out (`Comm`): workers started (forked by the
//! zygote where it can), messages sealed and sent (large frames through
//! shared memory to a worker on this host), stops escalated to kills,
//! events to the client, cancels answered.

use super::agents::{AgentWorker, Agents};
use super::relay::{self, KeptBuffers};
use super::Internal;
use crate::backend::{Backend, WorkerEnvironment};
use crate::capacity::Placement;
use crate::core::allocations::AllocationId;
use crate::core::{Comm, Event, Launch, LostReason};
use crate::ids::{IdMap, NodeId, TaskId, WorkerId};
use crate::process::{self, Exit, PrintedSink};
use crate::protocol::agent::BufferHash;
use crate::protocol::{self, ToWorker};
use crate::seal::{Opener, Sealer};
use crate::shared_memory;
use crate::zygote::Zygotes;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// How long a worker asked to stop may take before it is killed. Only idle
/// workers are asked, so this is the time Python takes to exit (atexit
/// handlers, flushing its streams), not time to finish a task.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A worker's process: ours (spawned, or forked by our zygote), or one a
/// node agent started and holds for us.
pub(super) enum WorkerHandle {
    Here(process::WorkerProcess),
    Agent(AgentWorker),
}

impl WorkerHandle {
    /// End it: SIGTERM, SIGKILL after a grace (the agent does the same).
    pub(super) fn stop(&self) {
        match self {
            WorkerHandle::Here(process) => process.stop(),
            WorkerHandle::Agent(agent) => agent.stop(),
        }
    }

    pub(super) fn signal(&self, signal: i32) {
        match self {
            WorkerHandle::Here(process) => process.signal(signal),
            WorkerHandle::Agent(agent) => agent.signal(signal),
        }
    }

    /// The node whose agent holds it; None for ours.
    pub(super) fn node(&self) -> Option<NodeId> {
        match self {
            WorkerHandle::Here(_) => None,
            WorkerHandle::Agent(agent) => Some(agent.node),
        }
    }
}

/// How a worker's messages reach it and come from it, once it said hello.
pub(super) enum Wire {
    /// It has not said hello yet: nothing can be sent to it.
    Unconnected,
    /// Its own connection to the workers' socket: the ZeroMQ routing id
    /// its Hello came from, and that connection's session.
    Direct {
        route: Bytes,
        sealer: Box<Sealer>,
        opener: Box<Opener>,
    },
    /// Through its node's agent's link (`WorkerHandle::Agent`), which the
    /// agents' send loop seals; the agent holds the worker's own session.
    Relayed,
}

pub(super) struct Live {
    pub(super) process: WorkerHandle,
    pub(super) last_seen: Instant,
    pub(super) wire: Wire,
    /// Why we killed it, which replaces "killed by signal 9" in the report.
    pub(super) kill_reason: Option<String>,
    /// The last lines its tasks wrote to sys.stderr (sent as output, so not
    /// in the process's own stderr): part of the report if it dies.
    pub(super) task_stderr: VecDeque<String>,
    /// Whether it maps large frames from our shared memory (it said hello
    /// from this host), and the segments it has not released yet.
    pub(super) shared: SharedFrames,
}

impl Live {
    /// Whether it said hello, so that it can be sent to.
    pub(super) fn connected(&self) -> bool {
        !matches!(self.wire, Wire::Unconnected)
    }

    /// Send `message` as it is, on its own connection or through its
    /// node's agent; nothing before its hello.
    pub(super) fn send(
        &mut self,
        outgoing: &UnboundedSender<(Bytes, Vec<Bytes>)>,
        message: ToWorker,
        frames: Vec<Bytes>,
    ) {
        match (&mut self.wire, &self.process) {
            (Wire::Direct { route, sealer, .. }, _) => {
                let wire = protocol::encode(sealer, &message, frames);
                let _ = outgoing.send((route.clone(), wire));
            }
            (Wire::Relayed, WorkerHandle::Agent(agent)) => agent.relay(message, Vec::new(), frames),
            _ => {}
        }
    }
}

#[derive(Default)]
pub(super) struct SharedFrames {
    pub(super) on: bool,
    pub(super) lent: Vec<shared_memory::Lent>,
    /// The last `Run` sent with shared frames (or, relayed, kept frames),
    /// as the core made it, until its task is done: what is sent again if
    /// the worker cannot map them. Only one: a task with large frames is
    /// never queued ahead (`core::QueueAhead`).
    pub(super) unshared: Option<(TaskId, ToWorker, Vec<Bytes>)>,
    /// The buffers that relayed `Run` named in `kept`: its node's agent
    /// does not hold them if it answers `CannotMap`.
    pub(super) kept: Vec<BufferHash>,
}

/// The effects of the core, carried out.
pub(super) struct ServerComm<'a> {
    pub(super) outgoing: &'a UnboundedSender<(Bytes, Vec<Bytes>)>,
    pub(super) events: &'a mut super::events_out::EventsOut,
    pub(super) backend: &'a dyn Backend,
    pub(super) environment: &'a WorkerEnvironment,
    pub(super) live: &'a mut IdMap<WorkerId, Live>,
    pub(super) internal: &'a UnboundedSender<Internal>,
    pub(super) printed: &'a PrintedSink,
    pub(super) exits: &'a UnboundedSender<Exit>,
    pub(super) zygotes: &'a mut Zygotes,
    /// The node agents, where workers start through them.
    pub(super) agents: Option<&'a Agents>,
    /// Builds the command an agent runs for a worker (mpiexec for ranks).
    pub(super) agent_commands: &'a crate::backend::local::LocalBackend,
    pub(super) cancels: &'a mut PendingCancels,
    /// What each node's agent keeps of large buffers.
    pub(super) kept: &'a mut KeptBuffers,
}

/// `cancel()` calls waiting for a worker to give their task back.
pub(super) type PendingCancels = HashMap<TaskId, Vec<std::sync::mpsc::Sender<bool>>>;

/// Send a `Run`'s large frames through shared memory (the worker is on this
/// host), and let its result come back the same way. Returns the `Run` as it
/// was, to be sent again if the worker cannot map them; None when nothing
/// was shared.
fn share_run(
    message: &mut ToWorker,
    frames: &mut [Bytes],
    lent: &mut Vec<shared_memory::Lent>,
) -> Option<(TaskId, ToWorker, Vec<Bytes>)> {
    // Most calls have no large frame: no copy of the message is kept for them.
    let original = shared_memory::has_large(frames).then(|| (message.clone(), frames.to_vec()));
    let ToWorker::Run {
        task,
        shared,
        shared_results,
        ..
    } = message
    else {
        return None;
    };
    *shared_results = true;
    let (run, frames_before) = original?;
    *shared = shared_memory::share(frames, lent);
    (!shared.is_empty()).then_some((*task, run, frames_before))
}

impl ServerComm<'_> {
    /// Start a worker's process here: the backend's command, forked by the
    /// zygote where it can reproduce it.
    fn start_here(
        &mut self,
        worker: WorkerId,
        launch: &Launch,
    ) -> Result<process::WorkerProcess, String> {
        let cmd = self.backend.command(self.environment, worker, launch)?;
        let exits = match self.backend.exit_explainer(worker) {
            Some(explain) => process::explained_exits(self.exits.clone(), explain),
            None => self.exits.clone(),
        };
        self.zygotes
            .start_worker(self.environment, cmd, worker, self.printed.clone(), exits)
            .map_err(|e| e.to_string())
    }

    /// Ask the agent of the worker's node to start it, as the local backend
    /// would start it on that node.
    fn start_under_agent(
        &mut self,
        agents: &Agents,
        worker: WorkerId,
        launch: &Launch,
    ) -> Result<WorkerHandle, String> {
        let Placement::Node(node) = launch.placement else {
            unreachable!("no one agent runs a call spanning nodes (Backend::under_agent)")
        };
        if let Some(why) = agents.gone(node) {
            return Err(format!("node {} was lost: {why}", agents.node_name(node)));
        }
        let command = self
            .agent_commands
            .command(self.environment, worker, launch)?;
        agents.send(node, crate::backend::agent_start(&command, worker, launch));
        Ok(WorkerHandle::Agent(AgentWorker {
            node,
            worker,
            outbox: agents.outbox.clone(),
        }))
    }
}

impl Comm for ServerComm<'_> {
    fn start_worker(&mut self, worker: WorkerId, launch: &Launch) {
        let started = match self.agents {
            Some(agents) if self.backend.under_agent(launch) => {
                self.start_under_agent(agents, worker, launch)
            }
            _ => self.start_here(worker, launch).map(WorkerHandle::Here),
        };
        match started {
            Ok(process) => {
                self.live.insert(
                    worker,
                    Live {
                        process,
                        last_seen: Instant::now(),
                        wire: Wire::Unconnected,
                        kill_reason: None,
                        task_stderr: VecDeque::new(),
                        shared: SharedFrames::default(),
                    },
                );
            }
            Err(message) => {
                // Report it as an exit so the core handles it in one place.
                let _ = self.exits.send(Exit {
                    worker,
                    reason: LostReason::new(format!("could not start worker: {message}")),
                });
            }
        }
    }

    fn send(&mut self, worker: WorkerId, mut message: ToWorker, mut frames: Vec<Bytes>) {
        // The core only sends to workers that said hello.
        let Some(live) = self.live.get_mut(&worker) else {
            return;
        };
        match (&mut live.wire, &live.process) {
            (Wire::Unconnected, _) => {}
            (Wire::Direct { route, sealer, .. }, _) => {
                if live.shared.on && matches!(message, ToWorker::Run { .. }) {
                    live.shared.unshared =
                        share_run(&mut message, &mut frames, &mut live.shared.lent);
                }
                let wire = protocol::encode(sealer, &message, frames);
                let _ = self.outgoing.send((route.clone(), wire));
            }
            (Wire::Relayed, WorkerHandle::Agent(agent)) => {
                relay::send(agent, self.kept, &mut live.shared, message, frames)
            }
            (Wire::Relayed, WorkerHandle::Here(_)) => {
                unreachable!("only a worker under an agent says hello through one")
            }
        }
    }

    fn stop_worker(&mut self, worker: WorkerId) {
        if let Some(live) = self.live.get_mut(&worker) {
            if !live.connected() {
                // Still starting: it has nothing to finish and cannot hear a
                // Shutdown yet, so waiting for it would only delay the stop.
                live.kill_reason = Some("stopped before it connected".into());
                live.process.stop();
                return;
            }
        }
        self.send(worker, ToWorker::Shutdown, Vec::new());
        let internal = self.internal.clone();
        tokio::spawn(async move {
            tokio::time::sleep(STOP_GRACE).await;
            let _ = internal.send(Internal::KillIfAlive(worker));
        });
    }

    fn emit(&mut self, event: Event) {
        self.kept.task_ended(&event);
        self.events.push(event);
    }

    fn cancel_answered(&mut self, task: TaskId, cancelled: bool) {
        // The client hears of the task's end no later than of the answer.
        self.events.flush();
        for reply in self.cancels.remove(&task).unwrap_or_default() {
            let _ = reply.send(cancelled);
        }
    }

    fn submit_allocation(&mut self, allocation: AllocationId) {
        if let Some(allocations) = self.agents.and_then(|a| a.allocations.as_ref()) {
            allocations.submit(allocation, self.internal.clone());
        }
    }

    fn release_allocation(&mut self, allocation: AllocationId, job: Option<&str>) {
        let _ = allocation;
        // A job not answered yet is cancelled when sbatch answers
        // (`on_allocation_answer`).
        if let (Some(allocations), Some(job)) =
            (self.agents.and_then(|a| a.allocations.as_ref()), job)
        {
            allocations.cancel(vec![job.to_string()]);
        }
    }
}
