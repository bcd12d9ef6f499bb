//! The scheduler's event loop: one thread, one current-thread tokio runtime.
//! It feeds the core with client commands, worker messages, process exits and
//! heartbeat ticks, and carries out what the core decides through `Comm`.
//! Nothing polls: every wake-up is an event.

use crate::admission;
use crate::auth::Key;
use crate::backend::{Backend, WorkerEnvironment};
use crate::core::{
    Comm, Core, Event, Launch, LostReason, SubmitError, TaskCounts, TaskSpec, WorkerInfo,
};
use crate::ids::{TaskId, WorkerId};
use crate::process::{self, Exit, Printed, PrintedSink};
use crate::protocol::{self, FromWorker, Payload, Stream, ToWorker};
use crate::shared_memory;
use crate::zygote::Zygotes;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

/// What the client (the Python Executor) asks of the scheduler.
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
    pub tasks: TaskCounts,
}

pub struct Timing {
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
}

/// How long a worker asked to stop may take before it is killed. Only idle
/// workers are asked, so this is the time Python takes to exit (atexit
/// handlers, flushing its streams), not time to finish a task.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// What reaches the event loop from workers, in the order it arrived: a
/// worker's messages and what its process printed share one queue, so output
/// read before a task's Done is handled before it.
enum Incoming {
    Message(Vec<Bytes>),
    Printed(Printed),
}

enum Internal {
    KillIfAlive(WorkerId),
    /// An exit held back for `LATE_MESSAGES`.
    Exited(Exit),
}

/// One thing that woke the event loop.
enum Wake {
    /// None: the client dropped its handle.
    Command(Option<Command>),
    Incoming(Incoming),
    Exit(Exit),
    Internal(Internal),
    Heartbeat,
}

/// At most this many events are handled between two scheduling passes, so a
/// client submitting without pause cannot hold back the pass for the
/// workers waiting on it.
const BATCH_MAX: usize = 256;

/// How long the exit of a worker that died mid-task is held back: what it
/// sent just before (its task's last output, which also goes into the
/// report) is on the socket but may not have been read yet.
const LATE_MESSAGES: Duration = Duration::from_millis(100);

struct Live {
    process: process::WorkerProcess,
    last_seen: Instant,
    /// The ZeroMQ routing id of the connection its signed Hello came from.
    route: Option<Bytes>,
    /// Why we killed it, which replaces "killed by signal 9" in the report.
    kill_reason: Option<String>,
    /// The last lines its tasks wrote to sys.stderr (sent as output, so not
    /// in the process's own stderr): part of the report if it dies.
    task_stderr: VecDeque<String>,
    /// Whether it maps large frames from our shared memory (it said hello
    /// from this host), and the segments it has not released yet.
    shared: SharedFrames,
}

#[derive(Default)]
struct SharedFrames {
    on: bool,
    lent: Vec<shared_memory::Lent>,
    /// The last `Run` sent with shared frames, as the core made it, until
    /// its task is done: what is sent again if the worker cannot map them.
    unshared: Option<(TaskId, ToWorker, Vec<Bytes>)>,
}

/// The effects of the core, carried out.
struct ServerComm<'a> {
    key: &'a Key,
    outgoing: &'a UnboundedSender<(Bytes, Vec<Bytes>)>,
    events: &'a std::sync::mpsc::Sender<Event>,
    backend: &'a dyn Backend,
    environment: &'a WorkerEnvironment,
    live: &'a mut HashMap<WorkerId, Live>,
    internal: &'a UnboundedSender<Internal>,
    printed: &'a PrintedSink,
    exits: &'a UnboundedSender<Exit>,
    zygotes: &'a mut Zygotes,
    cancels: &'a mut PendingCancels,
}

/// `cancel()` calls waiting for a worker to give their task back.
type PendingCancels = HashMap<TaskId, Vec<std::sync::mpsc::Sender<bool>>>;

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

impl Comm for ServerComm<'_> {
    fn start_worker(&mut self, worker: WorkerId, launch: &Launch) {
        let started = self
            .backend
            .command(self.environment, worker, launch)
            .and_then(|cmd| {
                let exits = match self.backend.exit_explainer(worker) {
                    Some(explain) => process::explained_exits(self.exits.clone(), explain),
                    None => self.exits.clone(),
                };
                let forked = self.zygotes.get(self.environment).and_then(|zygote| {
                    zygote.fork(&cmd, worker, self.printed.clone(), exits.clone())
                });
                match forked {
                    Some(forked) => forked,
                    None => process::spawn(cmd, worker, self.printed.clone(), exits),
                }
                .map_err(|e| e.to_string())
            });
        match started {
            Ok(process) => {
                self.live.insert(
                    worker,
                    Live {
                        process,
                        last_seen: Instant::now(),
                        route: None,
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
        if let Some(live) = self.live.get_mut(&worker).filter(|l| l.route.is_some()) {
            let route = live.route.clone().expect("checked");
            if live.shared.on && matches!(message, ToWorker::Run { .. }) {
                live.shared.unshared = share_run(&mut message, &mut frames, &mut live.shared.lent);
            }
            let wire = protocol::encode(self.key, &message, frames);
            let _ = self.outgoing.send((route, wire));
        }
    }

    fn stop_worker(&mut self, worker: WorkerId) {
        if let Some(live) = self.live.get_mut(&worker) {
            if live.route.is_none() {
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
        let _ = self.events.send(event);
    }

    fn cancel_answered(&mut self, task: TaskId, cancelled: bool) {
        for reply in self.cancels.remove(&task).unwrap_or_default() {
            let _ = reply.send(cancelled);
        }
    }
}

pub struct Server {
    core: Core,
    key: Key,
    backend: Box<dyn Backend>,
    environment: WorkerEnvironment,
    timing: Timing,
    live: HashMap<WorkerId, Live>,
    /// Which worker each connected route belongs to.
    routes: HashMap<Bytes, WorkerId>,
    /// Admits and closes connections (see `admission`).
    connections: zeromq::RouterSendHalf,
    events: std::sync::mpsc::Sender<Event>,
    outgoing: UnboundedSender<(Bytes, Vec<Bytes>)>,
    internal_tx: UnboundedSender<Internal>,
    printed: PrintedSink,
    exits_tx: UnboundedSender<Exit>,
    zygotes: Zygotes,
    cancels: PendingCancels,
    dropped_messages: u64,
}

macro_rules! with_comm {
    ($self:ident, |$core:ident, $comm:ident| $body:expr) => {{
        let mut $comm = ServerComm {
            key: &$self.key,
            outgoing: &$self.outgoing,
            events: &$self.events,
            backend: $self.backend.as_ref(),
            environment: &$self.environment,
            live: &mut $self.live,
            internal: &$self.internal_tx,
            printed: &$self.printed,
            exits: &$self.exits_tx,
            zygotes: &mut $self.zygotes,
            cancels: &mut $self.cancels,
        };
        let $core = &mut $self.core;
        $body
    }};
}

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
    let _ = ready.send(Ok(endpoint));
    let mut server = Server {
        core,
        key,
        backend,
        environment,
        timing,
        live: HashMap::new(),
        routes: HashMap::new(),
        connections,
        events,
        outgoing,
        internal_tx,
        printed,
        exits_tx,
        zygotes,
        cancels: HashMap::new(),
        dropped_messages: 0,
    };
    with_comm!(server, |core, comm| core.start(&mut comm));
    server.serve(commands, incoming, internal, exits).await;
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

impl Server {
    async fn serve(
        &mut self,
        mut commands: UnboundedReceiver<Command>,
        mut incoming: UnboundedReceiver<Incoming>,
        mut internal: UnboundedReceiver<Internal>,
        mut exits: UnboundedReceiver<Exit>,
    ) {
        let mut heartbeat = tokio::time::interval(self.timing.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut client_gone = false;
        loop {
            // One scheduling pass for everything the last wake-up brought,
            // before waiting again: a task readied by it is sent now.
            with_comm!(self, |core, comm| core.schedule_if_needed(&mut comm));
            if self.core.is_finished() {
                break;
            }
            let first = tokio::select! {
                command = commands.recv(), if !client_gone => Wake::Command(command),
                Some(incoming) = incoming.recv() => Wake::Incoming(incoming),
                Some(exit) = exits.recv() => Wake::Exit(exit),
                Some(event) = internal.recv() => Wake::Internal(event),
                _ = heartbeat.tick() => Wake::Heartbeat,
            };
            self.on_wake(first, &mut client_gone);
            // The rest of the batch: what is already queued (a burst of
            // submissions, the messages read together from the socket).
            for _ in 1..BATCH_MAX {
                let queued = incoming
                    .try_recv()
                    .map(Wake::Incoming)
                    .or_else(|_| exits.try_recv().map(Wake::Exit))
                    .or_else(|_| internal.try_recv().map(Wake::Internal));
                let queued = match queued {
                    Ok(wake) => wake,
                    Err(_) if client_gone => break,
                    Err(_) => match commands.try_recv() {
                        Ok(command) => Wake::Command(Some(command)),
                        Err(_) => break,
                    },
                };
                self.on_wake(queued, &mut client_gone);
            }
        }
    }

    fn on_wake(&mut self, wake: Wake, client_gone: &mut bool) {
        match wake {
            Wake::Command(Some(command)) => self.on_command(command),
            Wake::Command(None) => {
                // The client dropped us without shutting down.
                *client_gone = true;
                with_comm!(self, |core, comm| core.shutdown(&mut comm, true));
                for live in self.live.values() {
                    live.process.stop();
                }
            }
            Wake::Incoming(Incoming::Message(message)) => self.on_message(message),
            Wake::Incoming(Incoming::Printed(printed)) => self.on_printed(printed),
            Wake::Exit(exit) => self.on_exit(exit, false),
            Wake::Internal(Internal::Exited(exit)) => self.on_exit(exit, true),
            Wake::Internal(Internal::KillIfAlive(worker)) => {
                if let Some(live) = self.live.get_mut(&worker) {
                    live.kill_reason
                        .get_or_insert_with(|| "did not exit when asked to stop".into());
                    live.process.stop();
                }
            }
            Wake::Heartbeat => self.on_heartbeat(),
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Submit(spec) => {
                let id = spec.id;
                if let Err(e) = with_comm!(self, |core, comm| core.submit(&mut comm, spec)) {
                    self.reject(id, e);
                }
            }
            Command::AddExternal(id) => {
                if let Err(e) = self.core.add_external(id) {
                    self.reject(id, e);
                }
            }
            Command::ResolveExternal { task, result } => {
                with_comm!(self, |core, comm| match result {
                    Ok(payload) => core.resolve_external_result(&mut comm, task, payload),
                    Err(error) => core.resolve_external_error(&mut comm, task, error),
                })
            }
            Command::Cancel(id, reply) => {
                match with_comm!(self, |core, comm| core.cancel(&mut comm, id)) {
                    Some(cancelled) => {
                        let _ = reply.send(cancelled);
                    }
                    // Answered once the worker holding it ahead replies.
                    None => self.cancels.entry(id).or_default().push(reply),
                }
            }
            Command::Release(id) => self.core.release(id),
            Command::ResizePool(workers, reply) => {
                let resized = with_comm!(self, |core, comm| core.resize_pool(&mut comm, workers));
                let _ = reply.send(resized);
            }
            Command::Info(reply) => {
                let _ = reply.send(Snapshot {
                    workers: self.core.worker_infos(),
                    tasks: self.core.task_counts(),
                });
            }
            Command::Shutdown { cancel_futures } => {
                with_comm!(self, |core, comm| core.shutdown(&mut comm, cancel_futures))
            }
        }
    }

    fn reject(&mut self, task: TaskId, error: SubmitError) {
        let _ = self.events.send(Event::Rejected { task, error });
    }

    fn on_message(&mut self, mut message: Vec<Bytes>) {
        if message.is_empty() {
            return;
        }
        let route = message.remove(0);
        let (header, mut frames) = match protocol::decode::<FromWorker>(&self.key, message) {
            Ok(decoded) => decoded,
            Err(e) => return self.refuse(&route, &e.to_string()),
        };
        let worker = match &header {
            FromWorker::Hello { worker, host, .. } => {
                let expected = !self.routes.contains_key(&route)
                    && self
                        .live
                        .get(worker)
                        .is_some_and(|live| live.route.is_none());
                if !expected {
                    return self.refuse(
                        &route,
                        "hello from a worker not started or already connected",
                    );
                }
                let admitted = admission::connection(&route)
                    .is_some_and(|connection| self.connections.admit(&connection));
                if !admitted {
                    // Timed out or displaced just now: the worker sees its
                    // connection close and exits, which is reported.
                    return self.drop_message(&route, "hello from a connection already closed");
                }
                let live = self.live.get_mut(worker).expect("checked above");
                live.route = Some(route.clone());
                live.shared.on = shared_memory::enabled() && *host == crate::host::name();
                self.routes.insert(route.clone(), *worker);
                *worker
            }
            _ => match self.routes.get(&route) {
                Some(worker) => *worker,
                None => return self.refuse(&route, "signed, but from no connected worker"),
            },
        };
        if let Some(live) = self.live.get_mut(&worker) {
            live.last_seen = Instant::now();
            if let (
                FromWorker::Output {
                    stream: Stream::Stderr,
                    ..
                },
                Some(text),
            ) = (&header, frames.first())
            {
                process::keep_lines(&mut live.task_stderr, &String::from_utf8_lossy(text));
            }
        }
        if let FromWorker::Done { shared, .. } = &header {
            if !shared.is_empty() && !self.map_result(worker, &route, shared, &mut frames) {
                return;
            }
        }
        if let FromWorker::Released { segments } = &header {
            if let Some(live) = self.live.get_mut(&worker) {
                for &id in segments {
                    shared_memory::release(&mut live.shared.lent, id);
                }
            }
            return;
        }
        if let FromWorker::CannotMap {
            task,
            segments,
            reason,
        } = &header
        {
            return self.send_unshared(worker, &route, *task, segments, reason);
        }
        if let (FromWorker::Done { .. } | FromWorker::Elsewhere { .. }, Some(live)) =
            (&header, self.live.get_mut(&worker))
        {
            live.shared.unshared = None;
        }
        with_comm!(self, |core, comm| match header {
            FromWorker::Hello { pid, host, .. } => core.worker_hello(&mut comm, worker, pid, host),
            FromWorker::InitDone { outcome } => {
                core.worker_init_done(&mut comm, worker, outcome, Payload::new(frames))
            }
            FromWorker::Done {
                task,
                outcome,
                unstored,
                ..
            } => {
                if let Some(why) = unstored {
                    comm.emit(Event::Unstored { task, why });
                }
                let frames = frames.into_iter().map(detach_small).collect();
                core.task_done(&mut comm, worker, task, outcome, Payload::new(frames))
            }
            FromWorker::Elsewhere { task } => core.task_elsewhere(&mut comm, worker, task),
            FromWorker::Retracted { task } => core.task_retracted(&mut comm, worker, task),
            FromWorker::Kept { task } => core.task_kept(&mut comm, worker, task),
            FromWorker::Output { task, stream } => {
                if let Some(text) = frames.into_iter().next() {
                    core.task_output(&mut comm, worker, task, stream, text)
                }
            }
            FromWorker::Pong | FromWorker::Released { .. } | FromWorker::CannotMap { .. } => {}
        });
    }

    /// A worker could not map the shared frames of `task`: from now on it
    /// gets large frames on the socket, starting with that task's again.
    fn send_unshared(
        &mut self,
        worker: WorkerId,
        route: &Bytes,
        task: TaskId,
        segments: &[u64],
        reason: &str,
    ) {
        let Some(live) = self.live.get_mut(&worker) else {
            return;
        };
        for &id in segments {
            shared_memory::release(&mut live.shared.lent, id);
        }
        if live.shared.on {
            eprintln!(
                "pmp scheduler: worker {} cannot map shared memory, so large buffers go to it \
                 on the socket: {reason}",
                worker.0
            );
        }
        live.shared.on = false;
        match live.shared.unshared.take() {
            Some((sent, message, frames)) if sent == task => {
                let wire = protocol::encode(&self.key, &message, frames);
                let _ = self.outgoing.send((route.clone(), wire));
            }
            _ => self.drop_message(route, "cannot-map for a task not sent with shared frames"),
        }
    }

    /// Map the result frames a worker left in its shared memory and tell it
    /// it may close them. False when they cannot be mapped: the worker is
    /// stopped, and its task fails with the reason.
    fn map_result(
        &mut self,
        worker: WorkerId,
        route: &Bytes,
        shared: &[protocol::SharedFrame],
        frames: &mut [Bytes],
    ) -> bool {
        let mapped = shared_memory::attach(shared, frames, |_| {}).map_err(|e| e.reason);
        let segments = shared.iter().map(|s| s.segment.id).collect();
        let wire = protocol::encode(&self.key, &ToWorker::Released { segments }, Vec::new());
        let _ = self.outgoing.send((route.clone(), wire));
        match mapped {
            Ok(()) => true,
            Err(e) => {
                if let Some(live) = self.live.get_mut(&worker) {
                    live.kill_reason = Some(format!("its task's result was lost: {e}"));
                    live.process.stop();
                }
                false
            }
        }
    }

    /// What a worker process wrote to its file descriptors belongs to the
    /// task it runs; between tasks it goes to our own stdout/stderr.
    fn on_printed(&mut self, printed: Printed) {
        let Printed {
            worker,
            stream,
            text,
        } = printed;
        match self.core.running_task(worker) {
            Some(task) => {
                with_comm!(self, |core, comm| core
                    .task_output(&mut comm, worker, task, stream, text))
            }
            None => process::write_to_own(stream, &text),
        }
    }

    /// A message that does not admit its connection: dropped, and the
    /// connection closed unless a worker's Hello admitted it before (a
    /// connection not admitted sends nothing more that could be read).
    fn refuse(&mut self, route: &Bytes, why: &str) {
        if !self.routes.contains_key(route) {
            if let Some(connection) = admission::connection(route) {
                self.connections.disconnect(&connection);
            }
        }
        self.drop_message(route, why);
    }

    /// Unauthenticated or malformed messages are dropped, never decoded
    /// further; the log is rate-limited so a flood cannot fill the disk.
    fn drop_message(&mut self, routing: &[u8], why: &str) {
        self.dropped_messages += 1;
        let n = self.dropped_messages;
        if n <= 10 || n.is_power_of_two() {
            eprintln!(
                "pmp scheduler: dropped message #{n} from peer {:?}: {why}",
                String::from_utf8_lossy(routing)
            );
        }
    }

    fn on_exit(&mut self, exit: Exit, held_back: bool) {
        let connected = self
            .live
            .get(&exit.worker)
            .is_some_and(|live| live.route.is_some());
        if !held_back && connected && self.core.is_busy(exit.worker) {
            let internal = self.internal_tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(LATE_MESSAGES).await;
                let _ = internal.send(Internal::Exited(exit));
            });
            return;
        }
        let mut reason = exit.reason;
        if let Some(live) = self.live.remove(&exit.worker) {
            if let Some(route) = &live.route {
                self.routes.remove(route);
            }
            if let Some(why) = live.kill_reason {
                reason.message = format!("{} ({why})", reason.message);
            }
            if !live.task_stderr.is_empty() {
                // What its task printed first, then what the process wrote.
                let mut lines = live.task_stderr;
                process::keep_lines(&mut lines, &reason.stderr_tail);
                reason.stderr_tail = Vec::from(lines).join("\n");
            }
        }
        with_comm!(self, |core, comm| core.worker_lost(
            &mut comm,
            exit.worker,
            reason
        ));
    }

    fn on_heartbeat(&mut self) {
        let now = Instant::now();
        let timeout = self.timing.heartbeat_timeout;
        let mut ping = Vec::new();
        for live in self.live.values_mut() {
            // A worker still starting Python has no route yet; the time it
            // takes is not held against it.
            let Some(route) = &live.route else { continue };
            if live.kill_reason.is_some() {
                continue;
            }
            if now.duration_since(live.last_seen) > timeout {
                live.kill_reason = Some(format!(
                    "it stopped answering heartbeats for {:.0} s",
                    timeout.as_secs_f64()
                ));
                live.process.stop();
            } else {
                ping.push(route.clone());
            }
        }
        for route in ping {
            let wire = protocol::encode(&self.key, &ToWorker::Ping, Vec::new());
            let _ = self.outgoing.send((route, wire));
        }
    }
}

/// Frames up to this size are copied out of the buffer they were received in.
const DETACHED_MAX: usize = 64 << 10;

/// A received frame is a slice of the socket's read buffer, which holds the
/// messages that arrived together and lives as long as any slice of it. A
/// result is kept for as long as its Future lives (a later call may take it
/// as an argument): a small one gets storage of its own, so that 100,000
/// held results do not keep every read buffer they arrived in alive.
fn detach_small(frame: Bytes) -> Bytes {
    if frame.len() <= DETACHED_MAX {
        Bytes::copy_from_slice(&frame)
    } else {
        frame
    }
}
