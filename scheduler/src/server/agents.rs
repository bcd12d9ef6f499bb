//! Node agents (`launcher="agent"`): one `pmp-worker` agent per node of the
//! allocation, all started by one srun step (or flux job) when the executor
//! starts, each starting the workers the core places on its node as forks
//! of its own zygote. A call so costs a fork on its node, not a job step,
//! which is what the seed warns about for many small calls.
//!
//! Agents connect to a socket of their own (`protocol::agent`, always
//! encrypted); the workers they start talk only to their agent, whose one
//! connection carries their messages both ways (`relay`), so a node costs
//! one connection and one session however many workers it runs. An agent
//! reports what its workers print and how they end, which becomes the
//! same `Printed` and `Exit` a local worker's process gives.
//!
//! Which agent is which node: its Hello names the node (Slurm's name; under
//! Flux the name the scheduler gave its broker rank), one
//! of those the allocation has; a second Hello for a node is refused.
//! Pilot jobs' agents (`pilots`) name nodes not known beforehand: each
//! joins the capacity with its Hello. A
//! worker started before its node's agent connected waits in the send
//! loop's queue for it. A node whose agent is gone (its step ended, it
//! stopped answering, it never connected) fails the calls it was running
//! with the node and the cause named; a worker placed there later fails at
//! once with the same words.

use super::{Incoming, Internal, Server};
use crate::admission;
use crate::capacity::Node;
use crate::core::LostReason;
use crate::ids::{NodeId, WorkerId};
use crate::process::{self, Exit, Printed, WorkerProcess};
use crate::protocol::agent::{FromAgent, ToAgent};
use crate::protocol::batch::{self, Batch};
use crate::protocol::{self};
use crate::resources::Gpus;
use crate::seal::{Opener, Protection, Sealer};
use bytes::Bytes;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

/// The pseudo worker id the agents' step prints under: not a worker, so
/// what srun or an agent says goes to our own stderr.
pub(super) const AGENT_STEP: WorkerId = WorkerId(u32::MAX);

/// How long the agents may take to connect, from the step's start: srun
/// starting a step on every node, each agent reading its key. A node whose
/// agent is not there by then is given up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// How many messages the agents' reader passes on before it lets the
/// event loop run (it yields itself: see `bind`).
const READ_TURN: u32 = 64;

/// What the send loop is told: it owns each agent's sealer (messages are
/// sealed in the order they are sent) and what waits for an agent that has
/// not connected yet.
pub(super) enum Out {
    Connected {
        node: NodeId,
        route: Bytes,
        sealer: Box<Sealer>,
    },
    /// `message` and its payload frames (a relayed message's, a kept
    /// buffer), sent in the order given.
    Message {
        node: NodeId,
        message: ToAgent,
        frames: Vec<Bytes>,
    },
    Gone {
        node: NodeId,
    },
}

/// How a worker under an agent is stopped or signalled: by a message to
/// its node's agent, which holds its process.
#[derive(Clone)]
pub(super) struct AgentWorker {
    pub(super) node: NodeId,
    pub(super) worker: WorkerId,
    pub(super) outbox: UnboundedSender<Out>,
}

impl AgentWorker {
    pub(super) fn stop(&self) {
        self.send(ToAgent::Stop {
            worker: self.worker,
        });
    }

    pub(super) fn signal(&self, signal: i32) {
        self.send(ToAgent::Signal {
            worker: self.worker,
            signal,
        });
    }

    pub(super) fn send(&self, message: ToAgent) {
        self.send_with(message, Vec::new());
    }

    pub(super) fn send_with(&self, message: ToAgent, frames: Vec<Bytes>) {
        let _ = self.outbox.send(Out::Message {
            node: self.node,
            message,
            frames,
        });
    }
}

/// A connected agent.
struct Link {
    node: NodeId,
    opener: Opener,
    last_seen: Instant,
}

pub(super) struct Agents {
    /// The nodes by the names their agents say, and back.
    pub(super) nodes: HashMap<String, NodeId>,
    pub(super) names: Vec<String>,
    links: HashMap<Bytes, Link>,
    /// Nodes whose agent is gone, with why.
    gone: HashMap<NodeId, String>,
    pub(super) outbox: UnboundedSender<Out>,
    connections: zeromq::RouterSendHalf,
    /// The srun step or flux job that runs every agent.
    step: Option<WorkerProcess>,
    started: Instant,
    /// The agents' key file: every agent reads it, so it is removed once
    /// all have connected (or with the executor).
    key_file: Option<PathBuf>,
    /// Pilot jobs, whose agents join as they connect (`pilots`); None
    /// inside an allocation, whose nodes are known from the start.
    pub(super) pilots: Option<super::pilots::Pilots>,
    /// Elastic allocations, whose agents join as they connect and leave
    /// with their job (`allocations`).
    pub(super) allocations: Option<super::allocations::Allocations>,
}

/// The agents' socket, its reader feeding `incoming` and its send loop.
pub(super) async fn bind(
    bind_host: &str,
    names: Vec<String>,
    incoming: UnboundedSender<Incoming>,
) -> Result<(Agents, String), String> {
    let mut socket = admission::agents_socket(names.len());
    let endpoint = socket
        .bind(&format!("tcp://{bind_host}:0"))
        .await
        .map_err(|e| format!("cannot listen for node agents on {bind_host}: {e}"))?
        .to_string();
    let (send_half, mut recv_half) = socket.split();
    let (outbox, outbox_rx) = unbounded_channel();
    tokio::spawn(send_loop(send_half.clone(), outbox_rx));
    // Out of tokio's cooperative budget, yielding every `READ_TURN`
    // messages instead: with the budget spent inside the socket's fair
    // queue over a thousand connections, some connections were not read
    // again for over ten seconds while the scheduler was the busiest part
    // (their unread bytes grew in the kernel; 1,000 x 128 simulated, 5 of
    // 8 runs lost a node to "stopped answering"; none in 11 since).
    tokio::spawn(tokio::task::unconstrained(async move {
        let mut read = 0u32;
        while let Ok(message) = recv_half.recv().await {
            if incoming.send(Incoming::Agent(message.into_vec())).is_err() {
                break;
            }
            read = (read + 1) % READ_TURN;
            if read == 0 {
                tokio::task::yield_now().await;
            }
        }
    }));
    let nodes = (0u32..)
        .zip(&names)
        .map(|(id, name)| (name.clone(), NodeId(id)))
        .collect();
    Ok((
        Agents {
            nodes,
            names,
            links: HashMap::new(),
            gone: HashMap::new(),
            outbox,
            connections: send_half,
            step: None,
            started: Instant::now(),
            key_file: None,
            pilots: None,
            allocations: None,
        },
        endpoint,
    ))
}

/// Seal and send what is for connected agents; hold what is for the others
/// until they connect, and drop what is for one that is gone. Everything
/// already queued is read before anything is sent, and what it holds for
/// one agent goes as batches (`protocol::batch`): the messages of a turn of
/// the event loop cost each agent one sealed message, not one each.
async fn send_loop(mut socket: zeromq::RouterSendHalf, mut outbox: UnboundedReceiver<Out>) {
    let mut connected: HashMap<NodeId, Connected> = HashMap::new();
    let mut waiting: HashMap<NodeId, Vec<(ToAgent, Vec<Bytes>)>> = HashMap::new();
    // The agents given messages since the last flush: a turn costs what it
    // touched, not every agent.
    let mut touched: Vec<NodeId> = Vec::new();
    while let Some(first) = outbox.recv().await {
        let mut next = Some(first);
        while let Some(out) = next.take() {
            match out {
                Out::Connected {
                    node,
                    route,
                    sealer,
                } => {
                    let link = Connected {
                        route,
                        sealer,
                        batch: Batch::default(),
                        ready: Vec::new(),
                    };
                    connected.insert(node, link);
                    let link = connected.get_mut(&node).expect("just inserted");
                    for (message, frames) in waiting.remove(&node).unwrap_or_default() {
                        link.batch.add(message, frames, &mut link.ready);
                    }
                    touched.push(node);
                }
                Out::Message {
                    node,
                    message,
                    frames,
                } => match connected.get_mut(&node) {
                    Some(link) => {
                        if link.batch.is_empty() && link.ready.is_empty() {
                            touched.push(node);
                        }
                        link.batch.add(message, frames, &mut link.ready);
                    }
                    None => waiting.entry(node).or_default().push((message, frames)),
                },
                Out::Gone { node } => {
                    connected.remove(&node);
                    waiting.remove(&node);
                }
            }
            next = outbox.try_recv().ok();
        }
        for node in touched.drain(..) {
            let Some(Connected {
                route,
                sealer,
                batch,
                ready,
            }) = connected.get_mut(&node)
            else {
                continue;
            };
            let last = batch.take();
            // Drained in place: at a thousand agents a turn touches most of
            // them with a message or two, and a list per agent per turn was
            // an allocation per message.
            for (message, frames) in ready.drain(..).chain(last) {
                let mut wire = ZmqMessage::from(route.clone());
                for frame in protocol::encode(sealer, &message, frames) {
                    wire.push_back(frame);
                }
                // An agent that went away is found out by its heartbeats.
                let _ = socket.send(wire).await;
            }
        }
    }
}

/// A connected agent, as the send loop knows it: where it is, the session
/// that seals for it, and what is to be sent to it.
struct Connected {
    route: Bytes,
    sealer: Box<Sealer>,
    batch: Batch<ToAgent>,
    /// Messages to send before what `batch` holds, in order.
    ready: Vec<(ToAgent, Vec<Bytes>)>,
}

impl Agents {
    /// Start the step that runs every agent; what it prints goes to our own
    /// stderr, its exit to `exits`.
    pub(super) fn start_step(
        &mut self,
        command: Result<(Command, PathBuf), String>,
        printed: process::PrintedSink,
        exits: UnboundedSender<Exit>,
    ) {
        self.started = Instant::now();
        let spawned = command.and_then(|(command, key_file)| {
            self.key_file = Some(key_file);
            process::spawn(command, AGENT_STEP, printed, exits).map_err(|e| e.to_string())
        });
        match spawned {
            Ok(step) => self.step = Some(step),
            Err(e) => {
                let why = format!("the node agents could not start: {e}");
                for node in 0..self.names.len() as u32 {
                    self.gone.insert(NodeId(node), why.clone());
                }
            }
        }
    }

    /// The allocation's nodes, by `NodeId`.
    pub(super) fn names(&self) -> &[String] {
        &self.names
    }

    pub(super) fn node_name(&self, node: NodeId) -> &str {
        &self.names[node.0 as usize]
    }

    /// Why workers can no longer start on `node`, if its agent is gone.
    pub(super) fn gone(&self, node: NodeId) -> Option<&str> {
        self.gone.get(&node).map(String::as_str)
    }

    pub(super) fn send(&self, node: NodeId, message: ToAgent) {
        let _ = self.outbox.send(Out::Message {
            node,
            message,
            frames: Vec::new(),
        });
    }

    /// Mark `node`'s agent gone for `why`; returns whether it was not already.
    fn lose(&mut self, node: NodeId, why: String) -> bool {
        if self.gone.contains_key(&node) {
            return false;
        }
        self.links.retain(|_, link| link.node != node);
        let _ = self.outbox.send(Out::Gone { node });
        self.gone.insert(node, why);
        true
    }

    fn remove_key_file(&mut self) {
        if let Some(file) = self.key_file.take() {
            let _ = std::fs::remove_file(file);
        }
    }

    /// Ask every agent to end its workers and exit, then end the step:
    /// nothing of the executor is left on any node.
    pub(super) async fn shut_down(&mut self) {
        for node in 0..self.names.len() as u32 {
            if !self.gone.contains_key(&NodeId(node)) {
                self.send(NodeId(node), ToAgent::Shutdown);
            }
        }
        self.remove_key_file();
        if let Some(pilots) = self.pilots.as_mut() {
            pilots.shut_down(&self.nodes).await;
        }
        if let Some(allocations) = self.allocations.as_mut() {
            // The send loop gets to send the agents their Shutdown first.
            tokio::time::sleep(Duration::from_millis(200)).await;
            allocations.shut_down();
        }
        if let Some(step) = self.step.take() {
            // The agents exit on their own once their workers are gone;
            // the step ends with them. A step that does not is stopped.
            let deadline = Instant::now() + process::TERM_GRACE * 2;
            while step_alive(&step) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if step_alive(&step) {
                step.signal(libc::SIGTERM);
                tokio::time::sleep(process::TERM_GRACE).await;
                step.signal(libc::SIGKILL);
            }
        }
    }
}

/// Whether the step's process group still has a process.
fn step_alive(step: &WorkerProcess) -> bool {
    // SAFETY: signal 0 only checks that the group exists.
    unsafe { libc::killpg(step.pid as i32, 0) == 0 }
}

impl Server {
    /// A message on the agents' socket: a Hello that opens a session, or a
    /// message of a connected agent.
    pub(super) fn on_agent_message(&mut self, mut message: Vec<Bytes>) {
        let Some(agents) = self.agents.as_mut() else {
            return;
        };
        if message.is_empty() {
            return;
        }
        let route = message.remove(0);
        if let Some(link) = agents.links.get_mut(&route) {
            let Ok((header, frames)) = protocol::decode::<FromAgent>(&mut link.opener, message)
            else {
                self.dropped_messages += 1;
                return;
            };
            link.last_seen = Instant::now();
            let node = link.node;
            let Ok(messages) = batch::unpack(header, frames) else {
                self.dropped_messages += 1;
                return;
            };
            for (header, frames) in messages {
                self.on_agent_said(node, header, frames);
            }
            return;
        }
        let Ok((sealer, mut opener)) =
            self.salts
                .session(&self.key, Protection::Encrypted, &message)
        else {
            self.dropped_messages += 1;
            return;
        };
        let Ok((
            FromAgent::Hello {
                node,
                cpus,
                gpus,
                memory_mb,
                allocation,
                ..
            },
            _,
        )) = protocol::decode::<FromAgent>(&mut opener, message)
        else {
            self.dropped_messages += 1;
            return;
        };
        let elastic = agents.allocations.is_some();
        if elastic && !self.make_room_for_allocation_agent(&node, allocation) {
            return;
        }
        let Some(agents) = self.agents.as_mut() else {
            return;
        };
        // A pilot job's node is not known until its agent says hello.
        let joins = (agents.pilots.is_some() || elastic) && !agents.nodes.contains_key(&node);
        let known = agents.nodes.get(&node).copied();
        let Some(id) = known.or(joins.then_some(NodeId(agents.names.len() as u32))) else {
            eprintln!(
                "pmp scheduler: an agent said hello from node {node:?}, which is not one of the \
                 allocation's ({}); ignored",
                agents.names.join(", ")
            );
            return;
        };
        let already = agents.links.values().any(|l| l.node == id);
        if already || agents.gone.contains_key(&id) {
            return;
        }
        let admitted = admission::connection(&route)
            .is_some_and(|connection| agents.connections.admit(&connection));
        if !admitted {
            return;
        }
        self.salts.accept(&opener);
        if joins {
            agents.nodes.insert(node.clone(), id);
            agents.names.push(node.clone());
        }
        agents.links.insert(
            route.clone(),
            Link {
                node: id,
                opener,
                last_seen: Instant::now(),
            },
        );
        let _ = agents.outbox.send(Out::Connected {
            node: id,
            route,
            sealer: Box::new(sealer),
        });
        if agents.pilots.is_none() && !elastic && agents.links.len() == agents.names.len() {
            agents.remove_key_file();
        }
        // What the job holds on the node, as its agent says: a joining
        // node's share of the capacity.
        let joining = Node {
            name: node,
            cpus,
            gpus: Gpus::Counted(gpus.len() as u32),
            memory_mb,
        };
        if let (true, true, Some(number)) = (joins, elastic, allocation) {
            let joined = self.join_allocation_node(number, joining);
            debug_assert_eq!(joined, id, "the capacity numbers nodes as they join");
        } else if joins {
            let joined = self.join_pilot_node(joining);
            debug_assert_eq!(joined, id, "the capacity numbers nodes as they join");
        } else if let Some(mb) = memory_mb {
            with_comm!(self, |core, comm| core.learn_memory(&mut comm, id, mb));
        }
    }

    fn on_agent_said(&mut self, node: NodeId, header: FromAgent, frames: Vec<Bytes>) {
        // An agent speaks only for the workers started on its node.
        let its_own = |server: &Server, worker: WorkerId| {
            server
                .live
                .get(&worker)
                .is_some_and(|live| live.process.node() == Some(node))
        };
        match header {
            // `unpack` leaves no batch.
            FromAgent::Hello { .. } | FromAgent::Pong | FromAgent::Batch(_) => {}
            FromAgent::Relay { worker, message } => self.on_relayed(node, worker, message, frames),
            FromAgent::Printed { worker, stream } => {
                if its_own(self, worker) {
                    let text = frames.into_iter().next().unwrap_or_default();
                    self.on_printed(Printed {
                        worker,
                        stream,
                        text,
                    });
                }
            }
            FromAgent::Exited {
                worker,
                message,
                exit_code,
                signal,
                stderr_tail,
            } => {
                if its_own(self, worker) {
                    let reason = LostReason {
                        message,
                        exit_code,
                        signal,
                        stderr_tail,
                        job: None,
                    };
                    let exit = self
                        .pilot_exit(node, Exit { worker, reason })
                        .and_then(|exit| self.allocation_exit(node, exit));
                    if let Some(exit) = exit {
                        let _ = self.exits_tx.send(exit);
                    }
                }
            }
        }
    }

    /// Ping every agent; give up those that stopped answering or never
    /// connected.
    pub(super) fn ping_agents(&mut self) {
        let Some(agents) = self.agents.as_mut() else {
            return;
        };
        let now = Instant::now();
        let timeout = self.timing.heartbeat_timeout;
        let mut lost = Vec::new();
        for link in agents.links.values() {
            if now.duration_since(link.last_seen) > timeout {
                lost.push((
                    link.node,
                    format!(
                        "its agent stopped answering for {:.0} s (the node failed, or the \
                         agent was killed)",
                        timeout.as_secs_f64()
                    ),
                ));
            }
        }
        // One pass over the links, not one per node: a thousand agents ping
        // every heartbeat.
        let connected: std::collections::HashSet<NodeId> =
            agents.links.values().map(|link| link.node).collect();
        if now.duration_since(agents.started) > CONNECT_TIMEOUT {
            for node in (0..agents.names.len() as u32).map(NodeId) {
                if !connected.contains(&node) && !agents.gone.contains_key(&node) {
                    lost.push((
                        node,
                        format!(
                            "its agent did not connect within {} s",
                            CONNECT_TIMEOUT.as_secs()
                        ),
                    ));
                }
            }
        }
        for node in connected {
            agents.send(node, ToAgent::Ping);
        }
        for (node, why) in lost {
            self.node_lost(node, why);
        }
        self.on_pilot_reports();
        self.on_allocation_reports();
        with_comm!(self, |core, comm| core.allocations_tick(&mut comm, now));
    }

    /// The agents' step ended: every agent still counted is gone with it.
    pub(super) fn on_agent_step_exit(&mut self, exit: Exit) {
        let Some(agents) = self.agents.as_mut() else {
            return;
        };
        agents.step = None;
        let why = format!("the node agents' step ended: {}", exit.reason.message);
        for node in 0..agents.names.len() as u32 {
            self.node_lost(NodeId(node), why.clone());
        }
    }

    /// `node`'s agent is gone: each worker it ran is lost, named by node and
    /// cause, and nothing starts there any more.
    pub(super) fn node_lost(&mut self, node: NodeId, why: String) {
        self.node_lost_with_job(node, why, None);
    }

    /// `node_lost`, its workers' calls failed as `job`'s (its job ended).
    pub(super) fn node_lost_with_job(
        &mut self,
        node: NodeId,
        why: String,
        job: Option<crate::core::EndedJob>,
    ) {
        let Some(agents) = self.agents.as_mut() else {
            return;
        };
        if !agents.lose(node, why.clone()) {
            return;
        }
        self.kept.node_lost(node);
        let name = agents.node_name(node).to_string();
        let on_node: Vec<WorkerId> = self
            .live
            .iter()
            .filter(|(_, live)| live.process.node() == Some(node))
            .map(|(worker, _)| *worker)
            .collect();
        // Not held back for late messages as a process's exit is: their
        // node is gone, and the workers that fail to start there meanwhile
        // must not come first.
        for worker in on_node {
            let mut reason = LostReason::new(format!("node {name} was lost: {why}"));
            reason.job = job.clone().map(Box::new);
            let _ = self
                .internal_tx
                .send(Internal::Exited(Exit { worker, reason }));
        }
        with_comm!(self, |core, comm| core
            .node_lost(&mut comm, node, &name, &why));
    }
}
