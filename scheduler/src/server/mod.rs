//! The scheduler's server: one thread, one current-thread tokio runtime.
//! It feeds the core with client commands, worker messages, process exits and
//! heartbeat ticks, and carries out what the core decides through `Comm`.
//! Nothing polls: every wake-up is an event.
//!
//! This file starts it (`run`: the socket, the channels, the tasks that read
//! them) and holds its state (`Server`). By concern:
//! - `event_loop`: the wake-ups, client commands, and the one scheduling
//!   pass after each batch of events;
//! - `messages`: what workers send (sealed messages, shared-memory frames)
//!   and what their processes print;
//! - `relay`: workers under a node agent (`agents`), whose messages go
//!   through its link, and the large buffers each agent keeps;
//! - `liveness`: process exits (held back briefly for late messages) and
//!   heartbeats;
//! - `comm`: the core's effects carried out (start, send, stop, emit);
//! - `events_out`: the client's events, sent together at the end of a turn.

use crate::admission;
use crate::auth::Key;
use crate::backend::{Backend, WorkerEnvironment};
use crate::core::{Core, Event, TaskCounts, TaskSpec, WorkerInfo};
use crate::ids::{IdMap, TaskId, WorkerId};
use crate::process::{self, Exit, Printed, PrintedSink};
use crate::protocol::Payload;
use crate::seal::{Protection, SaltsSeen};
use crate::zygote::Zygotes;
use bytes::Bytes;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

/// What the client (the Python Executor) asks of the scheduler.
// Most commands are submits: boxing the large one would cost an allocation
// for each, to save the channel's slots a few bytes for the rare others.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    Submit(TaskSpec),
    AddExternal(TaskId),
    ResolveExternal {
        task: TaskId,
        result: Result<Payload, Option<Payload>>,
    },
    Cancel(TaskId, std::sync::mpsc::Sender<bool>),
    Release(TaskId),
    ResizePool(u32, std::sync::mpsc::Sender<Result<(), String>>),
    Info(std::sync::mpsc::Sender<Snapshot>),
    Shutdown {
        cancel_futures: bool,
    },
}

#[derive(Clone, Debug)]
pub struct Snapshot {
    pub workers: Vec<WorkerInfo>,
    /// The nodes calls are placed on, as the scheduler knows them.
    pub nodes: Vec<crate::capacity::NodeRow>,
    pub tasks: TaskCounts,
    /// Each node's agent, where there are agents.
    pub agents: Vec<AgentStats>,
    /// Elastic allocations, where the executor has them (none yet: empty).
    pub allocations: Option<Vec<AllocationRow>>,
}

/// What a node's agent was sent to keep of large buffers (each is sent to
/// a node once while it holds it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentStats {
    pub node: String,
    /// How many buffers (`Keep`s), and their bytes.
    pub kept: u64,
    pub kept_bytes: u64,
}

pub struct Timing {
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
}

/// What reaches the event loop from workers, in the order it arrived: a
/// worker's messages and what its process printed share one queue, so output
/// read before a task's Done is handled before it.
enum Incoming {
    Message(Vec<Bytes>),
    Printed(Printed),
    /// A message on the node agents' socket.
    Agent(Vec<Bytes>),
}

enum Internal {
    KillIfAlive(WorkerId),
    /// sbatch's answer for an elastic allocation: its job, or why not.
    AllocationAnswer {
        id: crate::core::allocations::AllocationId,
        answer: Result<String, String>,
    },
    /// An exit held back for `LATE_MESSAGES`.
    Exited(Exit),
}

struct Server {
    core: Core,
    /// The executor's key, from which each connection's session is derived.
    key: Key,
    /// The salts of the sessions accepted, so that none is accepted twice.
    salts: SaltsSeen,
    /// What protects the backend's workers' messages.
    protection: Protection,
    backend: Box<dyn Backend>,
    environment: WorkerEnvironment,
    timing: Timing,
    live: IdMap<WorkerId, Live>,
    /// Which worker each connected route belongs to.
    routes: HashMap<Bytes, WorkerId>,
    /// Admits and closes connections (see `admission`).
    connections: zeromq::RouterSendHalf,
    /// The client's events, sent at the end of each turn (`events_out`).
    events: events_out::EventsOut,
    outgoing: UnboundedSender<(Bytes, Vec<Bytes>)>,
    internal_tx: UnboundedSender<Internal>,
    printed: PrintedSink,
    exits_tx: UnboundedSender<Exit>,
    zygotes: Zygotes,
    /// The node agents, where workers start through them.
    agents: Option<agents::Agents>,
    /// Builds the command an agent runs for a worker.
    agent_commands: crate::backend::local::LocalBackend,
    cancels: PendingCancels,
    /// What each node's agent keeps of large buffers (`relay`).
    kept: relay::KeptBuffers,
    dropped_messages: u64,
}

/// Call the core with a `ServerComm` borrowing the server's fields (a
/// method could not: it would borrow all of `self` beside the core). Defined
/// before the submodules, since a macro is visible only after its definition.
macro_rules! with_comm {
    ($self:ident, |$core:ident, $comm:ident| $body:expr) => {{
        let mut $comm = $crate::server::comm::ServerComm {
            outgoing: &$self.outgoing,
            events: &mut $self.events,
            backend: $self.backend.as_ref(),
            environment: &$self.environment,
            live: &mut $self.live,
            internal: &$self.internal_tx,
            printed: &$self.printed,
            exits: &$self.exits_tx,
            zygotes: &mut $self.zygotes,
            agents: $self.agents.as_ref(),
            agent_commands: &$self.agent_commands,
            cancels: &mut $self.cancels,
            kept: &mut $self.kept,
        };
        let $core = &mut $self.core;
        $body
    }};
}

mod agents;
mod allocations;
mod comm;
mod event_loop;
mod events_out;
mod held_exits;
mod job_watch;
mod liveness;
mod messages;
mod pilots;
mod relay;
#[cfg(test)]
mod relay_tests;
#[cfg(test)]
mod tests;

use comm::{Live, PendingCancels};
pub use relay::{keep_bytes, KEEP_BYTES_VARIABLE};

/// Bind the worker socket on `bind_host`, then run until shutdown. `ready`
/// receives the address workers connect to (or why binding failed).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    core: Core,
    key: Key,
    backend: Box<dyn Backend>,
    mut environment: WorkerEnvironment,
    timing: Timing,
    bind_host: String,
    agent_nodes: Option<AgentNodes>,
    commands: UnboundedReceiver<Command>,
    events: std::sync::mpsc::Sender<Event>,
    ready: std::sync::mpsc::Sender<Result<String, String>>,
) {
    let mut socket = admission::worker_socket();
    let endpoint = match socket.bind(&format!("tcp://{bind_host}:0")).await {
        Ok(endpoint) => endpoint.to_string(),
        Err(e) => {
            let _ = ready.send(Err(format!("cannot listen on {bind_host}: {e}")));
            return;
        }
    };
    environment.address = endpoint.clone();
    let (send_half, mut recv_half) = socket.split();
    let connections = send_half.clone();
    let (outgoing, outgoing_rx) = unbounded_channel();
    let (incoming_tx, incoming) = unbounded_channel::<Incoming>();
    let (internal_tx, internal) = unbounded_channel();
    let (exits_tx, exits) = unbounded_channel();
    tokio::spawn(send_loop(send_half, outgoing_rx));
    let printed_tx = incoming_tx.clone();
    let agents_tx = incoming_tx.clone();
    let printed: PrintedSink = std::sync::Arc::new(move |p| {
        let _ = printed_tx.send(Incoming::Printed(p));
    });
    tokio::spawn(async move {
        while let Ok(message) = recv_half.recv().await {
            if incoming_tx
                .send(Incoming::Message(message.into_vec()))
                .is_err()
            {
                break;
            }
        }
    });
    let zygotes = Zygotes::start(
        core.starts_fresh_workers() && backend.runs_workers_here(),
        &environment,
    );
    let (step_exits_tx, step_exits) = unbounded_channel();
    let kept = relay::KeptBuffers::new(
        agent_nodes
            .as_ref()
            .map_or(relay::DEFAULT_KEEP_BYTES, |nodes| nodes.keep_bytes),
    );
    let agent_commands = crate::backend::local::LocalBackend::new(
        agent_nodes
            .as_ref()
            .map(|nodes| nodes.tool_dirs.clone())
            .unwrap_or_default(),
    );
    let agents = match agent_nodes {
        Some(nodes) => {
            match start_agents(
                &*backend,
                &environment,
                &bind_host,
                nodes,
                &agents_tx,
                &printed,
                step_exits_tx,
            )
            .await
            {
                Ok(agents) => agents,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            }
        }
        None => None,
    };
    let _ = ready.send(Ok(endpoint));
    let mut server = Server {
        core,
        key,
        salts: SaltsSeen::default(),
        protection: backend.protection(),
        backend,
        environment,
        timing,
        live: IdMap::default(),
        routes: HashMap::new(),
        connections,
        events: events_out::EventsOut::new(events),
        outgoing,
        internal_tx,
        printed,
        exits_tx,
        zygotes,
        agents,
        agent_commands,
        cancels: HashMap::new(),
        kept,
        dropped_messages: 0,
    };
    with_comm!(server, |core, comm| {
        core.start(&mut comm);
        core.start_allocations(&mut comm);
    });
    server
        .serve(commands, incoming, internal, exits, step_exits)
        .await;
    server.events.flush();
    if let Some(agents) = server.agents.as_mut() {
        agents.shut_down().await;
    }
    // Whatever is still alive (the client vanished) goes now: SIGTERM so that
    // srun and flux end their steps, then SIGKILL.
    if !server.live.is_empty() {
        for live in server.live.values() {
            live.process.signal(libc::SIGTERM);
        }
        tokio::time::sleep(process::TERM_GRACE).await;
        for live in server.live.values() {
            live.process.signal(libc::SIGKILL);
        }
    }
}

/// What node agents need: the allocation's nodes, one agent each, in
/// `Capacity`'s order, and where to look for mpiexec for their workers.
pub struct AgentNodes {
    pub names: Vec<String>,
    pub tool_dirs: Vec<std::path::PathBuf>,
    /// The most bytes of large buffers each agent keeps (`relay`).
    pub keep_bytes: u64,
    /// Pilot jobs to submit, whose agents join as they connect (`names`
    /// is then empty).
    pub pilots: Option<PilotStart>,
    /// Elastic allocations, submitted as the core asks; their agents join
    /// as they connect (`names` is then empty).
    pub allocations: Option<AllocationStart>,
}

pub use allocations::{AllocationRow, AllocationStart};
pub use pilots::PilotStart;

/// Bind the agents' socket and start the step that runs them, where the
/// backend starts agents; None where it does not.
async fn start_agents(
    backend: &dyn Backend,
    environment: &WorkerEnvironment,
    bind_host: &str,
    nodes: AgentNodes,
    incoming: &UnboundedSender<Incoming>,
    printed: &PrintedSink,
    step_exits: UnboundedSender<Exit>,
) -> Result<Option<agents::Agents>, String> {
    let (mut agents, address) =
        agents::bind(bind_host, nodes.names.clone(), incoming.clone()).await?;
    let key_file = environment
        .key_files
        .write_for(&environment.key, "agents")?;
    let step = crate::backend::AgentStep {
        environment,
        address: &address,
        key_file: &key_file,
        nodes: &nodes.names,
    };
    if backend.agents_connect_by_themselves(&step) {
        return Ok(Some(agents));
    }
    if let Some(start) = &nodes.pilots {
        agents.pilots = Some(pilots::Pilots::submit(start, &step, key_file.clone())?);
        return Ok(Some(agents));
    }
    if let Some(start) = &nodes.allocations {
        agents.allocations = Some(allocations::Allocations::new(
            start,
            &step,
            key_file.clone(),
        )?);
        return Ok(Some(agents));
    }
    let Some(command) = backend.agent_step(&step) else {
        let _ = std::fs::remove_file(&key_file);
        return Ok(None);
    };
    agents.start_step(command.map(|c| (c, key_file)), printed.clone(), step_exits);
    Ok(Some(agents))
}

async fn send_loop(
    mut socket: zeromq::RouterSendHalf,
    mut outgoing: UnboundedReceiver<(Bytes, Vec<Bytes>)>,
) {
    while let Some((route, frames)) = outgoing.recv().await {
        let mut message = ZmqMessage::from(route);
        for frame in frames {
            message.push_back(frame);
        }
        // A worker that already went away cannot be sent to; its exit is
        // reported by its process watcher.
        let _ = socket.send(message).await;
    }
}
