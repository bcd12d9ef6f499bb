//! Agent mode (`PMP_AGENT` set): the one long-lived process of an executor
//! on a node of an allocation (one srun step or flux job starts all of
//! them), which starts that node's workers, so that a call costs a fork on
//! its node instead of a job step. It never runs Python itself.
//!
//! Its settings come from its environment (`settings::AgentSettings`): the
//! scheduler's address, the key (from a file that all agents of the launch
//! read, so the scheduler removes it), the heartbeat limit, the Python of
//! its zygote. It connects to the scheduler
//! (one encrypted session, `seal`), says Hello with what its node offers
//! (`node`), and prestarts a zygote for its node. Its workers reach it on a
//! local socket of its own (`local_socket`), never the scheduler: it relays
//! their messages both ways on its one connection (`relay`), and keeps the
//! large buffers the scheduler sends once per node (`kept`). Then, for each
//! message (`protocol::agent`):
//! - `Start`: the worker's command, with the local socket's address, the
//!   agent's own key (`PMP_KEY`, which the worker removes from its
//!   environment once read, as local workers do), a signed wire and the
//!   GPUs it asks for (`node_gpus`) put over what the scheduler set, forked
//!   by the zygote where it can reproduce it, spawned otherwise
//!   (`Zygotes::start_worker`, the local backend's own rule). What it
//!   prints comes back as `Printed`, its end (or why it could not start) as
//!   `Exited`, after every message of its that the agent read.
//! - `Relay`, `Keep`, `Forget`: see `relay`.
//! - `Stop` and `Signal`: to the worker's process group.
//! - `Ping`: `Pong`, and a heartbeat for its workers: the scheduler pings
//!   agents, not the workers under them, so the agent pings each of its
//!   connected workers itself (once per the scheduler's heartbeat
//!   interval, as the scheduler pinged them) and stops one that answered
//!   nothing for the heartbeat limit, as `Stop` does, its `Exited` saying
//!   why (`relay::Relay::heartbeat`).
//! - `Batch`: each of its messages in order, as if sent alone; what the
//!   agent has ready for the scheduler goes the same way (`write`).
//! - `Shutdown`: every worker stopped, their `Exited` sent, exit. SIGTERM
//!   (Slurm or Flux ending the step) does the same.
//!
//! It dies with its client: when no message that opens has come for the
//! heartbeat limit (the scheduler pings more often), or the connection
//! cannot be read or written, it kills every worker's process group and
//! exits; its zygote and what that forked die with it (parent-death
//! signals). Nothing it says can panic (`say!`): its stdout and stderr may
//! be gone with the srun that started it. A message that does not open
//! (changed on the wire, replayed, not the executor's) is dropped unread.
//!
//! One thread: a current-thread tokio runtime, whose tasks read and write
//! the socket and watch the workers' processes; the main loop owns the
//! workers.

use crate::local_socket::PrivateDir;
use crate::node::Node;
use crate::node_gpus::NodeGpus;
use crate::relay::{self, Outgoing, Relay};
use crate::settings::AgentSettings;
use pmp_scheduler::admission;
use pmp_scheduler::auth::Key;
use pmp_scheduler::backend::{key_file, key_file::KeyFiles, WorkerEnvironment};
use pmp_scheduler::core::LostReason;
use pmp_scheduler::ids::WorkerId;
use pmp_scheduler::process::{self, Exit, Printed, PrintedSink, WorkerProcess};
use pmp_scheduler::protocol::agent::{FromAgent, ToAgent};
use pmp_scheduler::protocol::batch::{self, Batch};
use pmp_scheduler::protocol::{self, DecodeError};
use pmp_scheduler::seal::{self, Opener, Protection, Sealer};
use pmp_scheduler::zygote::Zygotes;
use pmp_scheduler::Bytes;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

/// The variable that makes pmp-worker a node agent.
pub const VARIABLE: &str = "PMP_AGENT";

/// How long, beyond the workers' own grace between SIGTERM and SIGKILL,
/// a shutdown waits for their exits to be reported.
const EXIT_REPORT_GRACE: Duration = Duration::from_secs(1);

/// How long a shutdown waits for its last messages to be written.
const FLUSH_GRACE: Duration = Duration::from_secs(1);

/// The exit code of an agent that gave its scheduler up.
const GAVE_UP: i32 = 70;

pub fn requested() -> bool {
    std::env::var_os(VARIABLE).is_some()
}

/// Serve the scheduler until it says stop or goes away; never returns.
pub fn run() -> ! {
    // Before the settings remove the launch's variables (its task rank).
    let node = Node::this();
    // Before the runtime starts a thread: it edits the environment.
    let settings = match AgentSettings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            say!("pmp-worker agent: {e}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            say!("pmp-worker agent: cannot start its event loop: {e}");
            std::process::exit(2);
        }
    };
    let code = runtime.block_on(serve(settings, node));
    std::process::exit(code)
}

async fn serve(settings: AgentSettings, node: Node) -> i32 {
    let program = match std::env::current_exe() {
        Ok(program) => program,
        Err(e) => {
            say!("pmp-worker agent: cannot find its own program, which its zygote runs: {e}");
            return 2;
        }
    };
    let local_dir = match PrivateDir::create() {
        Ok(dir) => dir,
        Err(e) => {
            say!("pmp-worker agent: {e}");
            return 2;
        }
    };
    let local_address = local_dir.address();
    // The same limits as the scheduler's own worker socket: until a
    // worker's Hello admitted its connection, one small message.
    let mut local = admission::worker_socket();
    if let Err(e) = local.bind(&local_address).await {
        say!("pmp-worker agent: cannot listen for its workers at {local_address}: {e}");
        return 2;
    }
    let (local_send, local_recv) = local.split();
    let (local_in_tx, local_in) = unbounded_channel();
    tokio::spawn(read(local_recv, local_in_tx));
    let (local_out, local_out_rx) = unbounded_channel();
    tokio::spawn(write_local(local_send.clone(), local_out_rx));
    let local_key = Key::generate();
    let mut socket = zeromq::DealerSocket::new();
    if let Err(e) = socket.connect(&settings.address).await {
        say!(
            "pmp-worker agent: cannot connect to the scheduler at {}: {e}",
            settings.address
        );
        return 2;
    }
    let (send_half, recv_half) = socket.split();
    let (sealer, opener) = seal::connect(&settings.key, Protection::Encrypted);
    let (outgoing, outgoing_rx) = unbounded_channel();
    let writer = tokio::spawn(write(send_half, sealer, outgoing_rx));
    // First: the scheduler reads nothing else from a new connection.
    let hello = FromAgent::Hello {
        node: node.name.clone(),
        pid: std::process::id(),
        cpus: node.cpus,
        gpus: node.gpus.clone(),
        memory_mb: node.memory_mb,
        allocation: settings.allocation,
    };
    let _ = outgoing.send(Some((hello, Vec::new())));
    let (incoming_tx, incoming) = unbounded_channel();
    tokio::spawn(read(recv_half, incoming_tx));
    // The zygote needs only the program and the Python; the rest of a
    // worker's environment comes with each Start.
    let environment = WorkerEnvironment {
        program,
        address: local_address,
        key: local_key.clone(),
        key_files: KeyFiles::default(),
        python: settings.python.executable.clone(),
        sys_path: settings.python.sys_path.clone(),
        heartbeat_timeout_s: settings.heartbeat_timeout.as_secs_f64(),
        block_allocation: false,
    };
    // Prestarted: Python starts while the scheduler prepares the first call.
    let zygotes = Zygotes::start(true, &environment);
    let (exits_tx, exits) = unbounded_channel();
    let printed_out = outgoing.clone();
    let printed: PrintedSink = std::sync::Arc::new(move |p: Printed| {
        let message = FromAgent::Printed {
            worker: p.worker,
            stream: p.stream,
        };
        let _ = printed_out.send(Some((message, vec![p.text])));
    });
    let relay = Relay::new(
        node.name.clone(),
        local_key,
        outgoing.clone(),
        local_out,
        local_send,
    );
    let agent = Agent {
        node: node.name,
        gpus: NodeGpus::new(node.gpus),
        environment,
        relay,
        local_dir,
        zygotes,
        workers: HashMap::new(),
        outgoing,
        printed,
        exits: exits_tx,
        opener,
        unopened: 0,
        heartbeat_limit: settings.heartbeat_timeout,
    };
    agent.serve(incoming, local_in, exits, writer).await
}

struct Agent {
    /// Its node's name, for what it says.
    node: String,
    gpus: NodeGpus,
    /// What its workers are started with: the local socket's address and
    /// the agent's own key.
    environment: WorkerEnvironment,
    relay: Relay,
    /// Where the local socket is; removed when the agent exits.
    local_dir: PrivateDir,
    zygotes: Zygotes,
    workers: HashMap<WorkerId, WorkerProcess>,
    outgoing: Outgoing,
    printed: PrintedSink,
    exits: UnboundedSender<Exit>,
    opener: Opener,
    /// Messages dropped because they did not open.
    unopened: u64,
    /// How long the scheduler, or a worker, may stay silent before the
    /// agent gives it up.
    heartbeat_limit: Duration,
}

impl Agent {
    /// The main loop; returns the agent's exit code.
    async fn serve(
        mut self,
        mut incoming: UnboundedReceiver<Vec<Bytes>>,
        mut local: UnboundedReceiver<Vec<Bytes>>,
        mut exits: UnboundedReceiver<Exit>,
        mut writer: tokio::task::JoinHandle<()>,
    ) -> i32 {
        let silence = self.heartbeat_limit;
        let mut deadline = Instant::now() + silence;
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            tokio::select! {
                message = incoming.recv() => {
                    let Some(message) = message else {
                        self.die(format_args!("lost the connection to the scheduler"));
                    };
                    let messages = match protocol::decode::<ToAgent>(&mut self.opener, message) {
                        Ok((message, frames)) => batch::unpack(message, frames)
                            .map_err(DecodeError::BadHeader),
                        Err(e) => Err(e),
                    };
                    match messages {
                        Ok(messages) => {
                            deadline = Instant::now() + silence;
                            for (message, frames) in messages {
                                if let ToAgent::Shutdown = message {
                                    return self.shutdown(local, exits, writer).await;
                                }
                                self.on_message(message, frames);
                            }
                        }
                        Err(e) => self.unopened(e),
                    }
                }
                Some(message) = local.recv() => self.relay.on_local(message),
                Some(exit) = exits.recv() => self.exited_after(exit, &mut local),
                () = tokio::time::sleep_until(deadline) => self.die(format_args!(
                    "no word from the scheduler for {:.0} s",
                    silence.as_secs_f64()
                )),
                _ = &mut writer => self.die(format_args!("cannot write to the scheduler")),
                () = sigterm(&mut terminate) => {
                    say!("pmp-worker agent on {}: SIGTERM; stopping its workers", self.node);
                    return self.shutdown(local, exits, writer).await;
                }
            }
        }
    }

    fn on_message(&mut self, message: ToAgent, frames: Vec<Bytes>) {
        match message {
            ToAgent::Start {
                worker,
                program,
                args,
                variables,
                cwd,
                gpus,
            } => self.start(worker, program, args, variables, cwd, gpus),
            ToAgent::Stop { worker } => {
                if let Some(process) = self.workers.get(&worker) {
                    process.stop();
                }
            }
            ToAgent::Signal { worker, signal } => {
                if let Some(process) = self.workers.get(&worker) {
                    process.signal(signal);
                }
            }
            ToAgent::Ping => {
                self.send(FromAgent::Pong, Vec::new());
                self.heartbeat();
            }
            ToAgent::Shutdown => unreachable!("handled by the main loop"),
            ToAgent::Batch(_) => unreachable!("unpacked by the main loop"),
            ToAgent::Relay {
                worker,
                message,
                kept,
            } => self.relay.relay(worker, message, kept, frames),
            ToAgent::Keep { hash } => self.relay.keep(hash, frames),
            ToAgent::Forget { hash } => self.relay.forget(&hash),
        }
    }

    fn start(
        &mut self,
        worker: WorkerId,
        program: String,
        args: Vec<String>,
        variables: Vec<(String, String)>,
        cwd: Option<String>,
        gpus: u32,
    ) {
        if self.workers.contains_key(&worker) {
            // Only a scheduler out of step with its agent sends this; the
            // running worker's own Exited is still to come.
            say!(
                "pmp-worker agent on {}: worker {} is already running here; its second start \
                 is ignored",
                self.node,
                worker.0
            );
            return;
        }
        let could_not = |worker, why: String| Exit {
            worker,
            reason: LostReason::new(format!("could not start worker: {why}")),
        };
        let mut command = std::process::Command::new(program);
        // A key file the scheduler named would be the executor's key, which
        // the worker would read before `PMP_KEY` (the agent's own, below).
        // Left out, not removed: a zygote forks no command that removes a
        // variable, and the agent's own environment has none.
        let variables = variables
            .into_iter()
            .filter(|(name, _)| name != key_file::VARIABLE);
        command.args(args).envs(variables);
        // After the variables: the agent alone knows which ids are free.
        match self.gpus.take(worker, gpus) {
            // A call that asked for none sees none, as in an srun step
            // with `--gres=none`: the node's GPUs are other calls'.
            Ok(ids) if ids.is_empty() && self.gpus.any() => {
                command.env("CUDA_VISIBLE_DEVICES", "");
            }
            Ok(ids) if ids.is_empty() => {}
            Ok(ids) => {
                command.env("CUDA_VISIBLE_DEVICES", ids.join(","));
            }
            Err(why) => {
                return self.exited(could_not(worker, format!("node {}: {why}", self.node)))
            }
        }
        // Over what the scheduler set: the worker talks to this agent
        // alone, signed with the agent's key.
        command
            .env("PMP_SCHEDULER", &self.environment.address)
            .env("PMP_KEY", self.environment.key.to_hex())
            .env(Protection::VARIABLE, relay::LOCAL_WIRE.name());
        if let Some(cwd) = cwd {
            if !std::path::Path::new(&cwd).is_dir() {
                let why = format!("cwd {cwd:?} is not a directory on node {}", self.node);
                return self.exited(could_not(worker, why));
            }
            command.current_dir(cwd);
        }
        let started = self.zygotes.start_worker(
            &self.environment,
            command,
            worker,
            self.printed.clone(),
            self.exits.clone(),
        );
        match started {
            Ok(process) => {
                self.workers.insert(worker, process);
                self.relay.started(worker);
            }
            Err(e) => self.exited(could_not(worker, e.to_string())),
        }
    }

    /// Ping the workers; stop those that stopped answering.
    fn heartbeat(&mut self) {
        for worker in self.relay.heartbeat(self.heartbeat_limit) {
            if let Some(process) = self.workers.get(&worker) {
                process.stop();
            }
        }
    }

    /// `exited`, once every message of the worker's that the local socket
    /// read is relayed: the scheduler expects a worker's last Done before
    /// its end. What the socket has read waits in `local`; what the worker
    /// wrote before it ended has been read by then, as the socket is read
    /// whenever it is readable and an exit is seen only once the worker's
    /// output pipes closed (`process::watch`, after its wait status).
    fn exited_after(&mut self, exit: Exit, local: &mut UnboundedReceiver<Vec<Bytes>>) {
        while let Ok(message) = local.try_recv() {
            self.relay.on_local(message);
        }
        self.exited(exit);
    }

    /// Report a worker's end and forget it; its GPUs are free again.
    fn exited(&mut self, exit: Exit) {
        self.workers.remove(&exit.worker);
        let silent = self.relay.exited(exit.worker);
        self.gpus.give_back(exit.worker);
        let LostReason {
            mut message,
            exit_code,
            signal,
            stderr_tail,
            ..
        } = exit.reason;
        if silent {
            // In place of a bare "killed by signal 9", as the scheduler
            // says of the workers it stops.
            let why = process::unanswered_heartbeats(self.heartbeat_limit);
            message = format!("{message} ({why})");
        }
        let exited = FromAgent::Exited {
            worker: exit.worker,
            message,
            exit_code,
            signal,
            stderr_tail,
        };
        self.send(exited, Vec::new());
    }

    fn send(&self, message: FromAgent, frames: Vec<Bytes>) {
        let _ = self.outgoing.send(Some((message, frames)));
    }

    /// A message that did not open is never acted on; the first is said,
    /// the others counted (a flood must not fill the log).
    fn unopened(&mut self, e: DecodeError) {
        self.unopened += 1;
        if self.unopened == 1 {
            say!(
                "pmp-worker agent on {}: dropped a message that does not open ({e}); \
                 more are counted, not said",
                self.node
            );
        }
    }

    /// Stop every worker, report their exits (those that take longer than
    /// their grace are killed and reported by the scheduler's own watch of
    /// this agent), flush, and exit.
    async fn shutdown(
        mut self,
        mut local: UnboundedReceiver<Vec<Bytes>>,
        mut exits: UnboundedReceiver<Exit>,
        writer: tokio::task::JoinHandle<()>,
    ) -> i32 {
        for process in self.workers.values() {
            process.stop();
        }
        let deadline = Instant::now() + process::TERM_GRACE + EXIT_REPORT_GRACE;
        while !self.workers.is_empty() {
            match tokio::time::timeout_at(deadline, exits.recv()).await {
                Ok(Some(exit)) => self.exited_after(exit, &mut local),
                _ => break,
            }
        }
        self.kill_all();
        self.say_unopened();
        let _ = self.outgoing.send(None);
        let _ = tokio::time::timeout(FLUSH_GRACE, writer).await;
        0
    }

    fn kill_all(&self) {
        for process in self.workers.values() {
            process.signal(libc::SIGKILL);
        }
    }

    fn say_unopened(&self) {
        self.relay.say_dropped();
        if self.unopened > 1 {
            say!(
                "pmp-worker agent on {}: dropped {} messages that did not open",
                self.node,
                self.unopened
            );
        }
    }

    /// Give the scheduler up: kill every worker's group and exit at once.
    fn die(&self, why: std::fmt::Arguments) -> ! {
        say!(
            "pmp-worker agent on {}: {why}; killing its workers and exiting",
            self.node
        );
        self.kill_all();
        self.say_unopened();
        // `exit` runs no destructor.
        self.local_dir.remove();
        std::process::exit(GAVE_UP)
    }
}

/// The next SIGTERM; never, where its handler could not be installed.
async fn sigterm(terminate: &mut Option<tokio::signal::unix::Signal>) {
    match terminate {
        Some(signal) => {
            if signal.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Pass on what comes from the scheduler (or, on the local socket, from the
/// workers); returns when the connection fails.
async fn read<S: SocketRecv>(mut socket: S, incoming: UnboundedSender<Vec<Bytes>>) {
    while let Ok(message) = socket.recv().await {
        if incoming.send(message.into_vec()).is_err() {
            return;
        }
    }
}

/// Seal and send what is queued, in order (the scheduler's replay check
/// relies on it), everything already queued as batches (`protocol::batch`):
/// what the workers said meanwhile costs one sealed message, not one each.
/// Returns when a message cannot be sent, or once flushed after a None.
async fn write(
    mut socket: zeromq::DealerSendHalf,
    mut sealer: Sealer,
    mut queue: UnboundedReceiver<Option<(FromAgent, Vec<Bytes>)>>,
) {
    let (mut batch, mut ready) = (Batch::default(), Vec::new());
    let mut open = true;
    while open {
        let Some(first) = queue.recv().await else {
            break;
        };
        let mut next = Some(first);
        while let Some(queued) = next.take() {
            match queued {
                Some((message, frames)) => batch.add(message, frames, &mut ready),
                None => open = false,
            }
            next = if open { queue.try_recv().ok() } else { None };
        }
        ready.extend(batch.take());
        for (message, frames) in ready.drain(..) {
            let wire = protocol::encode(&mut sealer, &message, frames);
            if socket.send(zmq_message(wire)).await.is_err() {
                return;
            }
        }
    }
    // Queued is not written: wait (off this thread, which runs the writer
    // of the connection) until it is.
    if let Some(progress) = socket.write_progress() {
        let mark = progress.mark();
        let _ = tokio::task::spawn_blocking(move || progress.wait_for(mark)).await;
    }
}

/// Send what the relay sealed for the workers; a message for a worker gone
/// meanwhile is dropped (its exit is reported anyway).
async fn write_local(mut socket: zeromq::RouterSendHalf, mut queue: UnboundedReceiver<ZmqMessage>) {
    while let Some(message) = queue.recv().await {
        let _ = socket.send(message).await;
    }
}

fn zmq_message(wire: Vec<Bytes>) -> ZmqMessage {
    let mut message = ZmqMessage::from(wire[0].clone());
    for frame in wire.into_iter().skip(1) {
        message.push_back(frame);
    }
    message
}
