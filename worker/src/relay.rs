//! The node agent's relay between its workers and the scheduler: its one
//! encrypted connection carries all its node's workers' traffic
//! (`FromAgent::Relay`, `ToAgent::Relay`), and the workers talk to the
//! agent alone, on its local socket (`local_socket`), signed with a key of
//! the agent's: nothing a worker says leaves the node unencrypted, and the
//! scheduler holds one connection per node.
//!
//! On the local socket the agent plays the scheduler's part: each
//! connection's first message starts its session (`protocol::open_first`,
//! as the scheduler opens a worker's), and must be the Hello of a worker
//! this agent started and has not heard from yet; the worker is then bound
//! to that connection, whatever it says later. A message that does not
//! open is dropped unread, and counted. The agent never unpickles
//! anything: it opens headers, not payloads, and passes frames on as they
//! came (`Bytes`, never copied).
//!
//! The scheduler may send to a worker as soon as it saw its Hello, which
//! the agent forwards only once it bound the worker's connection, so a
//! message for a worker not connected yet is rare; it waits for it all the
//! same (`Link::waiting`), and goes with the worker if it exits first.
//!
//! A relayed `Run` gets the agent's kept buffers it names (`kept`), and
//! asks for its result on the socket (`shared_results: false`): the result
//! goes on to the scheduler through the agent anyway.
//!
//! The agent keeps its workers alive itself (`heartbeat`): the scheduler
//! pings the agent alone, and at each of its pings the agent pings each
//! connected worker on its session and gives up one not heard from for the
//! heartbeat limit. The workers' Pongs end here: a node's liveness crosses
//! the network as one message, not one per worker. A Ping the scheduler
//! sends a worker itself is relayed as any message (its Pong stays here
//! too).

use crate::kept::Kept;
use pmp_scheduler::admission;
use pmp_scheduler::auth::Key;
use pmp_scheduler::ids::WorkerId;
use pmp_scheduler::protocol::agent::{BufferHash, FromAgent, KeptFrame};
use pmp_scheduler::protocol::{self, FromWorker, ToWorker};
use pmp_scheduler::seal::{Opener, Protection, SaltsSeen, Sealer};
use pmp_scheduler::shared_memory::{self, Lent};
use pmp_scheduler::Bytes;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use zeromq::ZmqMessage;

/// How the workers' messages are protected on the local socket: it never
/// leaves the node, and only this user can reach its directory.
pub const LOCAL_WIRE: Protection = Protection::Signed;

/// A message for the scheduler; None asks the writer to flush and stop.
pub type Outgoing = UnboundedSender<Option<(FromAgent, Vec<Bytes>)>>;

/// Messages for the local socket, the route (a worker's connection) first.
pub type LocalOutgoing = UnboundedSender<ZmqMessage>;

/// Messages for a worker not connected yet, at most: the scheduler sends a
/// worker nothing before its Hello, which the agent forwards once the
/// worker is connected; more is a scheduler out of step.
const WAITING_MAX: usize = 64;

pub struct Relay {
    /// Its node's name, for what it says.
    node: String,
    key: Key,
    salts: SaltsSeen,
    links: HashMap<WorkerId, Link>,
    /// Connected workers, by the connection (route) their Hello came from.
    routes: HashMap<Bytes, WorkerId>,
    kept: Kept,
    to_scheduler: Outgoing,
    to_workers: LocalOutgoing,
    /// Admits and closes the local socket's connections (see `admission`).
    connections: zeromq::RouterSendHalf,
    /// Messages on the local socket dropped: they did not open, or did
    /// not admit their connection.
    dropped: u64,
}

/// A worker this agent started, until it exits.
#[derive(Default)]
struct Link {
    /// Its connection and session, once its Hello came.
    session: Option<Session>,
    /// What the scheduler sent it before it connected.
    waiting: Vec<(ToWorker, Vec<Bytes>)>,
    /// The agent's segments it maps (kept buffers of its `Run`s).
    lent: Vec<Lent>,
    /// Given up for its silence: it is being stopped.
    silent: bool,
}

struct Session {
    route: Bytes,
    sealer: Sealer,
    opener: Opener,
    /// Whether it said anything since the last heartbeat, and when a
    /// heartbeat last found it had: a message costs a flag, not a clock
    /// read.
    heard: bool,
    last_heard: Instant,
}

impl Session {
    /// Seal `message` for this worker and queue it on the local socket.
    fn send(&mut self, to_workers: &LocalOutgoing, message: &ToWorker, frames: Vec<Bytes>) {
        let wire = protocol::encode(&mut self.sealer, message, frames);
        let mut out = ZmqMessage::from(self.route.clone());
        for frame in wire {
            out.push_back(frame);
        }
        let _ = to_workers.send(out);
    }
}

impl Relay {
    pub fn new(
        node: String,
        key: Key,
        to_scheduler: Outgoing,
        to_workers: LocalOutgoing,
        connections: zeromq::RouterSendHalf,
    ) -> Relay {
        Relay {
            node,
            key,
            salts: SaltsSeen::default(),
            links: HashMap::new(),
            routes: HashMap::new(),
            kept: Kept::default(),
            to_scheduler,
            to_workers,
            connections,
            dropped: 0,
        }
    }

    /// `worker` was started: its Hello is expected.
    pub fn started(&mut self, worker: WorkerId) {
        self.links.insert(worker, Link::default());
    }

    /// `worker` exited: what waited for it is dropped, and what it mapped
    /// is released. Returns whether it was given up for its silence.
    pub fn exited(&mut self, worker: WorkerId) -> bool {
        let Some(link) = self.links.remove(&worker) else {
            return false;
        };
        if let Some(session) = link.session {
            self.routes.remove(&session.route);
        }
        link.silent
    }

    /// A heartbeat: each connected worker is pinged, but those not heard
    /// from for `limit`, which are returned, once each, to be stopped. A
    /// worker still starting Python has not said hello: the time it takes
    /// is not held against it.
    pub fn heartbeat(&mut self, limit: Duration) -> Vec<WorkerId> {
        let now = Instant::now();
        let mut silent = Vec::new();
        for (&worker, link) in &mut self.links {
            let Some(session) = link.session.as_mut() else {
                continue;
            };
            if link.silent {
                continue;
            }
            if std::mem::take(&mut session.heard) {
                session.last_heard = now;
            } else if now.duration_since(session.last_heard) > limit {
                link.silent = true;
                silent.push(worker);
                continue;
            }
            session.send(&self.to_workers, &ToWorker::Ping, Vec::new());
        }
        silent
    }

    /// A message on the local socket, its route first.
    pub fn on_local(&mut self, mut message: Vec<Bytes>) {
        if message.len() < 2 {
            return;
        }
        let route = message.remove(0);
        if let Some(&worker) = self.routes.get(&route) {
            let link = self.links.get_mut(&worker).expect("routes are of links");
            let session = link.session.as_mut().expect("routed links are connected");
            match protocol::decode::<FromWorker>(&mut session.opener, message) {
                Ok((header, frames)) => {
                    session.heard = true;
                    self.on_worker_message(worker, header, frames);
                }
                Err(e) => self.dropped(&e),
            }
            return;
        }
        match protocol::open_first::<FromWorker>(&self.salts, &self.key, LOCAL_WIRE, message) {
            Ok((FromWorker::Hello { worker, pid, host }, frames, sealer, opener)) => {
                let expected = self
                    .links
                    .get(&worker)
                    .is_some_and(|link| link.session.is_none());
                if !expected {
                    return self.refuse(
                        &route,
                        &"a hello from a worker not started or already connected",
                    );
                }
                let admitted = admission::connection(&route)
                    .is_some_and(|connection| self.connections.admit(&connection));
                if !admitted {
                    // Closed meanwhile: the worker exits, which is reported.
                    return;
                }
                self.salts.accept(&opener);
                self.routes.insert(route.clone(), worker);
                let link = self.links.get_mut(&worker).expect("checked above");
                link.session = Some(Session {
                    route,
                    sealer,
                    opener,
                    heard: false,
                    last_heard: Instant::now(),
                });
                let hello = FromWorker::Hello { worker, pid, host };
                self.send(
                    FromAgent::Relay {
                        worker,
                        message: hello,
                    },
                    frames,
                );
                let waiting =
                    std::mem::take(&mut self.links.get_mut(&worker).expect("linked").waiting);
                for (message, frames) in waiting {
                    self.send_to_worker(worker, message, frames);
                }
            }
            Ok(_) => self.refuse(&route, &"a first message that is not a hello"),
            Err(e) => self.refuse(&route, &e),
        }
    }

    /// What an opened message of `worker` asks: segments of the agent's
    /// that it no longer maps are released here; the rest goes on.
    fn on_worker_message(&mut self, worker: WorkerId, header: FromWorker, frames: Vec<Bytes>) {
        let header = match header {
            // The answer to the agent's own Ping (`heartbeat`).
            FromWorker::Pong => return,
            FromWorker::Released { segments } => {
                let theirs = self.release(worker, segments);
                if theirs.is_empty() {
                    return;
                }
                FromWorker::Released { segments: theirs }
            }
            // The scheduler resends the task whole: it need not hear of
            // the agent's segments.
            FromWorker::CannotMap {
                task,
                segments,
                reason,
            } => FromWorker::CannotMap {
                task,
                segments: self.release(worker, segments),
                reason,
            },
            other => other,
        };
        self.send(
            FromAgent::Relay {
                worker,
                message: header,
            },
            frames,
        );
    }

    /// Release the agent's segments among `segments` that `worker` held;
    /// the others (the scheduler's) are returned.
    fn release(&mut self, worker: WorkerId, mut segments: Vec<u64>) -> Vec<u64> {
        let Some(link) = self.links.get_mut(&worker) else {
            return segments;
        };
        segments.retain(|&id| {
            let ours = link.lent.iter().any(|lent| lent.id() == id);
            if ours {
                shared_memory::release(&mut link.lent, id);
            }
            !ours
        });
        segments
    }

    /// The scheduler's message for `worker` (`ToAgent::Relay`).
    pub fn relay(
        &mut self,
        worker: WorkerId,
        mut message: ToWorker,
        kept: Vec<KeptFrame>,
        mut frames: Vec<Bytes>,
    ) {
        let Some(link) = self.links.get_mut(&worker) else {
            // It exited: its Exited is on its way to the scheduler.
            return;
        };
        if let ToWorker::Run {
            task,
            shared,
            shared_results,
            ..
        } = &mut message
        {
            *shared_results = false;
            if !kept.is_empty() {
                match self.kept.fill(&kept, &mut frames, &mut link.lent) {
                    Ok(lent) => shared.extend(lent),
                    Err(reason) => {
                        let cannot = FromWorker::CannotMap {
                            task: *task,
                            segments: Vec::new(),
                            reason,
                        };
                        return self.send(
                            FromAgent::Relay {
                                worker,
                                message: cannot,
                            },
                            Vec::new(),
                        );
                    }
                }
            }
        }
        self.send_to_worker(worker, message, frames);
    }

    /// Seal `message` for `worker`'s session and send it; it waits if the
    /// worker is not connected yet.
    fn send_to_worker(&mut self, worker: WorkerId, message: ToWorker, frames: Vec<Bytes>) {
        let Some(link) = self.links.get_mut(&worker) else {
            return;
        };
        let Some(session) = link.session.as_mut() else {
            if link.waiting.len() < WAITING_MAX {
                link.waiting.push((message, frames));
            } else {
                say!(
                    "pmp-worker agent on {}: more than {WAITING_MAX} messages for worker {}, \
                     which has not connected yet; dropped one",
                    self.node,
                    worker.0
                );
            }
            return;
        };
        session.send(&self.to_workers, &message, frames);
    }

    /// Keep a buffer for the `Run`s that will name it.
    pub fn keep(&mut self, hash: BufferHash, frames: Vec<Bytes>) {
        let [frame]: [Bytes; 1] = match frames.try_into() {
            Ok(one) => one,
            Err(frames) => {
                return say!(
                    "pmp-worker agent on {}: a Keep with {} frames instead of one: dropped",
                    self.node,
                    frames.len()
                )
            }
        };
        if let Err(e) = self.kept.keep(hash, frame) {
            say!("pmp-worker agent on {}: {e}: dropped", self.node);
        }
    }

    pub fn forget(&mut self, hash: &BufferHash) {
        self.kept.forget(hash);
    }

    fn send(&self, message: FromAgent, frames: Vec<Bytes>) {
        let _ = self.to_scheduler.send(Some((message, frames)));
    }

    /// A connection whose first message does not admit it is closed: it
    /// could not send anything more that would be read.
    fn refuse(&mut self, route: &Bytes, why: &dyn std::fmt::Display) {
        if let Some(connection) = admission::connection(route) {
            self.connections.disconnect(&connection);
        }
        self.dropped(why);
    }

    /// The first message dropped is said, the others counted (a flood
    /// must not fill the log).
    fn dropped(&mut self, why: &dyn std::fmt::Display) {
        self.dropped += 1;
        if self.dropped == 1 {
            say!(
                "pmp-worker agent on {}: dropped a message on its local socket: {why}; more \
                 are counted, not said",
                self.node
            );
        }
    }

    /// Said once the agent exits.
    pub fn say_dropped(&self) {
        if self.dropped > 1 {
            say!(
                "pmp-worker agent on {}: dropped {} messages on its local socket",
                self.node,
                self.dropped
            );
        }
    }
}
