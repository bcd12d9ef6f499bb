//! Workers under node agents, over real sockets: the test is each node's
//! agent (a DEALER on the agents' socket, speaking `protocol::agent`
//! sealed with a session of the executor's key, as `pmp-worker` in agent
//! mode does) and speaks for the workers it is asked to start, as the
//! agent relays them; it plays the client through the channels `handle`
//! uses. What is asserted is what the agent is sent and what the client
//! hears.

use super::*;
use crate::backend::{AgentStep, Backend};
use crate::capacity::{Capacity, Node};
use crate::core::{Allocation, Launch};
use crate::protocol::agent::{FromAgent, KeptFrame, ToAgent};
use crate::protocol::{self, batch, FromWorker, Outcome, ToWorker};
use crate::resources::{Gpus, ResourceRequest};
use crate::seal::{self, Opener, Sealer};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use zeromq::DealerSocket;

/// Only bounds a test that would otherwise hang: no message within this
/// long fails it.
const PATIENCE: Duration = Duration::from_secs(20);

const KEY: [u8; 32] = [9; 32];

/// Starts every worker under its node's agent; the agents' step is a
/// process that only waits, the test connecting in the agents' place.
struct StandInAgents {
    /// Where the agents connect, once the server bound it.
    address: Arc<Mutex<Option<String>>>,
}

impl Backend for StandInAgents {
    fn command(
        &self,
        _environment: &WorkerEnvironment,
        _worker: WorkerId,
        _launch: &Launch,
    ) -> Result<std::process::Command, String> {
        Err("every worker starts under an agent in these tests".into())
    }

    fn agent_step(&self, agents: &AgentStep) -> Option<Result<std::process::Command, String>> {
        *self.address.lock().unwrap() = Some(agents.address.to_string());
        let mut command = std::process::Command::new("sleep");
        command.arg("600");
        Some(Ok(command))
    }

    fn under_agent(&self, _launch: &Launch) -> bool {
        true
    }
}

/// A server on its own thread with `nodes` of one CPU each: with
/// `Some(n)`, a pool of `n` workers, else a fresh worker per call.
struct Client {
    commands: UnboundedSender<Command>,
    events: std::sync::mpsc::Receiver<Event>,
    agents_address: String,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    fn start(nodes: &[&str], pool: Option<u32>) -> Client {
        let timing = Timing {
            heartbeat_interval: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(600),
        };
        Client::start_with(nodes, pool, timing)
    }

    fn start_with(nodes: &[&str], pool: Option<u32>, timing: Timing) -> Client {
        Client::start_on(nodes, 1, pool, timing)
    }

    /// `nodes` of `cpus` each.
    fn start_on(nodes: &[&str], cpus: u32, pool: Option<u32>, timing: Timing) -> Client {
        let names: Vec<String> = nodes.iter().map(|name| name.to_string()).collect();
        let capacity = Capacity::of_nodes(
            names
                .iter()
                .map(|name| Node {
                    name: name.clone(),
                    cpus,
                    gpus: Gpus::Counted(0),
                    memory_mb: None,
                })
                .collect(),
            None,
        );
        let allocation = match pool {
            Some(workers) => Allocation::Block {
                workers,
                resources: ResourceRequest::default(),
            },
            None => Allocation::PerTask,
        };
        let core = Core::new(allocation, capacity, None);
        let (commands, commands_rx) = unbounded_channel();
        let (events_tx, events) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let address = Arc::new(Mutex::new(None));
        let backend = Box::new(StandInAgents {
            address: address.clone(),
        });
        let agent_nodes = AgentNodes {
            names,
            tool_dirs: Vec::new(),
            keep_bytes: relay::DEFAULT_KEEP_BYTES,
            pilots: None,
            allocations: None,
        };
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(run(
                core,
                Key::from_bytes(KEY),
                backend,
                WorkerEnvironment::for_tests(),
                timing,
                "127.0.0.1".into(),
                Some(agent_nodes),
                commands_rx,
                events_tx,
                ready_tx,
            ));
        });
        ready_rx.recv().unwrap().unwrap();
        let agents_address = address.lock().unwrap().clone().unwrap();
        Client {
            commands,
            events,
            agents_address,
            thread: Some(thread),
        }
    }

    /// Submit a call whose arguments are `frames` after a small pickle.
    fn submit(&self, id: u64, frames: &[Bytes]) {
        let mut call = vec![Bytes::from_static(b"args")];
        call.extend(frames.iter().cloned());
        let spec = TaskSpec {
            id: TaskId(id),
            function: Bytes::from_static(b"fn"),
            call: Payload::new(call),
            dependencies: Vec::new(),
            resources: ResourceRequest::default(),
            store: None,
            restart_limit: 0,
            run_time_max: None,
        };
        self.commands.send(Command::Submit(spec)).unwrap();
    }

    /// The result of `task`, which must finish.
    fn result(&self, task: u64) -> Payload {
        loop {
            match self
                .events
                .recv_timeout(PATIENCE)
                .expect("an event in time")
            {
                Event::Finished { task: t, result } if t == TaskId(task) => return result,
                Event::Finished { task: t, result } => panic!("{t} finished with {result:?}"),
                Event::Lost { task, reason } => panic!("{task} lost: {reason:?}"),
                _ => {}
            }
        }
    }

    fn info(&self) -> Snapshot {
        let (reply, answer) = std::sync::mpsc::channel();
        self.commands.send(Command::Info(reply)).unwrap();
        answer.recv().unwrap()
    }

    fn kept(&self) -> Vec<(String, u64)> {
        let agents = self.info().agents;
        agents.into_iter().map(|a| (a.node, a.kept)).collect()
    }

    /// Connect as `node`'s agent.
    async fn agent(&self, node: &str) -> StandInAgent {
        let mut socket = DealerSocket::new();
        socket.connect(&self.agents_address).await.unwrap();
        let (sealer, opener) = seal::connect(&Key::from_bytes(KEY), seal::Protection::Encrypted);
        let mut agent = StandInAgent {
            socket,
            sealer,
            opener,
            unread: VecDeque::new(),
        };
        agent
            .send(
                FromAgent::Hello {
                    node: node.into(),
                    pid: 1,
                    cpus: 1,
                    gpus: Vec::new(),
                    memory_mb: None,
                    allocation: None,
                },
                Vec::new(),
            )
            .await;
        agent
    }

    /// Shut down, the agents ending their workers when told, and wait for
    /// the server to end.
    fn finish(mut self, agents: impl IntoIterator<Item = StandInAgent>) {
        for agent in agents {
            tokio::spawn(agent.end_workers());
        }
        let _ = self.commands.send(Command::Shutdown {
            cancel_futures: true,
        });
        drop(self.commands);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

/// The test's side of a node agent's connection.
struct StandInAgent {
    socket: DealerSocket,
    sealer: Sealer,
    opener: Opener,
    /// The rest of the last batch read.
    unread: VecDeque<(ToAgent, Vec<Bytes>)>,
}

impl StandInAgent {
    async fn send(&mut self, message: FromAgent, frames: Vec<Bytes>) {
        let wire = protocol::encode(&mut self.sealer, &message, frames);
        let mut message = ZmqMessage::from(wire[0].clone());
        for frame in wire.into_iter().skip(1) {
            message.push_back(frame);
        }
        self.socket.send(message).await.unwrap();
    }

    /// Say `message` for `worker`, as its agent relays it.
    async fn relay(&mut self, worker: WorkerId, message: FromWorker, frames: Vec<Bytes>) {
        self.send(FromAgent::Relay { worker, message }, frames)
            .await;
    }

    /// The next message as it came, a batch whole.
    async fn next_sealed(&mut self) -> (ToAgent, Vec<Bytes>) {
        assert!(self.unread.is_empty(), "a batch is being read");
        let message = tokio::time::timeout(PATIENCE, self.socket.recv())
            .await
            .expect("a message in time")
            .unwrap();
        protocol::decode::<ToAgent>(&mut self.opener, message.into_vec()).unwrap()
    }

    /// The next message, whatever it is; a batch's one by one.
    async fn next(&mut self) -> (ToAgent, Vec<Bytes>) {
        if let Some(message) = self.unread.pop_front() {
            return message;
        }
        let message = tokio::time::timeout(PATIENCE, self.socket.recv())
            .await
            .expect("a message in time")
            .unwrap();
        let (header, frames) =
            protocol::decode::<ToAgent>(&mut self.opener, message.into_vec()).unwrap();
        self.unread = batch::unpack(header, frames).unwrap().into();
        self.unread.pop_front().expect("a batch holds messages")
    }

    /// The next message other than a heartbeat, its own or a worker's.
    async fn receive(&mut self) -> (ToAgent, Vec<Bytes>) {
        loop {
            let (header, frames) = self.next().await;
            match header {
                ToAgent::Ping
                | ToAgent::Relay {
                    message: ToWorker::Ping,
                    ..
                } => {}
                _ => return (header, frames),
            }
        }
    }

    /// The worker it is asked to start, which then says hello through it.
    async fn start_worker(&mut self) -> WorkerId {
        let (ToAgent::Start { worker, .. }, _) = self.receive().await else {
            panic!("a Start first");
        };
        let hello = FromWorker::Hello {
            worker,
            pid: 4242,
            host: "the-worker-says".into(),
        };
        self.relay(worker, hello, Vec::new()).await;
        worker
    }

    /// The next relayed `Run`: to whom, its task, what it names as kept,
    /// and its frames as they came.
    async fn run(&mut self) -> (WorkerId, TaskId, Vec<KeptFrame>, Vec<Bytes>) {
        match self.receive().await {
            (
                ToAgent::Relay {
                    worker,
                    message: ToWorker::Run { task, .. },
                    kept,
                },
                frames,
            ) => (worker, task, kept, frames),
            other => panic!("a relayed Run, not {other:?}"),
        }
    }

    /// A worker whose call is done is told to exit; it does.
    async fn end_worker(&mut self, worker: WorkerId) {
        let (told, _) = self.receive().await;
        assert_eq!(
            told,
            ToAgent::Relay {
                worker,
                message: ToWorker::Shutdown,
                kept: Vec::new()
            }
        );
        self.send(exited(worker), Vec::new()).await;
    }

    /// Report each worker's exit once it is told to end, until the agent
    /// is told to.
    async fn end_workers(mut self) {
        loop {
            let worker = match self.receive().await {
                (ToAgent::Shutdown, _) => return,
                (ToAgent::Stop { worker }, _)
                | (
                    ToAgent::Relay {
                        worker,
                        message: ToWorker::Shutdown,
                        ..
                    },
                    _,
                ) => worker,
                _ => continue,
            };
            self.send(exited(worker), Vec::new()).await;
        }
    }

    async fn done(&mut self, worker: WorkerId, task: TaskId, result: &'static [u8]) {
        let done = FromWorker::Done {
            task,
            outcome: Outcome::Returned,
            shared: Vec::new(),
            unstored: None,
        };
        self.relay(worker, done, vec![Bytes::from_static(result)])
            .await;
    }
}

fn exited(worker: WorkerId) -> FromAgent {
    FromAgent::Exited {
        worker,
        message: "exited with code 0".into(),
        exit_code: Some(0),
        signal: None,
        stderr_tail: String::new(),
    }
}

/// A buffer large enough to be kept (`SHARED_FROM`): 2 MiB, a fresh copy
/// each time, as each call pickles its own arguments.
fn large() -> Bytes {
    Bytes::from(vec![7u8; 2 << 20])
}

fn hash_of(frame: &Bytes) -> [u8; 32] {
    *blake3::hash(frame).as_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_worker_says_hello_runs_and_exits_through_its_agent() {
    let client = Client::start(&["node1"], Some(1));
    let mut agent = client.agent("node1").await;
    let worker = agent.start_worker().await;
    client.submit(1, &[]);
    let (to, task, kept, frames) = agent.run().await;
    assert_eq!((to, task), (worker, TaskId(1)));
    assert!(kept.is_empty());
    assert_eq!(
        frames,
        [Bytes::from_static(b"fn"), Bytes::from_static(b"args")]
    );
    agent.done(worker, task, b"result").await;
    assert_eq!(
        client.result(1),
        Payload::new(vec![Bytes::from_static(b"result")])
    );
    // Its Hello placed it on the agent's node, whatever host it named.
    let info = client.info();
    assert_eq!(info.workers[0].host.as_deref(), Some("node1"));
    // Its exit, reported by the agent, is handled: the pool starts another.
    agent
        .send(
            FromAgent::Exited {
                worker,
                message: "exited with code 1".into(),
                exit_code: Some(1),
                signal: None,
                stderr_tail: String::new(),
            },
            Vec::new(),
        )
        .await;
    let replacement = agent.start_worker().await;
    assert_ne!(replacement, worker);
    client.finish([agent]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_argument_goes_to_a_node_once_and_later_runs_name_it() {
    let client = Client::start(&["node1"], Some(1));
    let mut agent = client.agent("node1").await;
    let worker = agent.start_worker().await;
    let hash = hash_of(&large());
    client.submit(1, &[large()]);
    let (keep, frames) = agent.receive().await;
    assert_eq!(keep, ToAgent::Keep { hash });
    assert_eq!(frames, [large()]);
    let (_, task, kept, frames) = agent.run().await;
    assert_eq!(kept, [KeptFrame { index: 2, hash }]);
    assert!(frames[2].is_empty(), "the kept frame crossed empty");
    agent.done(worker, task, b"one").await;
    client.result(1);
    // The same bytes again, as another call pickles them: named, not sent.
    client.submit(2, &[large()]);
    let (_, task, kept, frames) = agent.run().await;
    assert_eq!(task, TaskId(2));
    assert_eq!(
        kept,
        [KeptFrame { index: 1, hash }],
        "the function is cached"
    );
    assert!(frames[1].is_empty());
    agent.done(worker, task, b"two").await;
    client.result(2);
    assert_eq!(client.kept(), [("node1".to_string(), 1)]);
    client.finish([agent]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_is_sent_a_large_argument_once() {
    let client = Client::start(&["node1", "node2"], None);
    let mut agents = [client.agent("node1").await, client.agent("node2").await];
    let hash = hash_of(&large());
    // Two calls at a time on two nodes of one CPU: one on each, twice.
    for round in 0..2 {
        client.submit(2 * round + 1, &[large()]);
        client.submit(2 * round + 2, &[large()]);
        for agent in agents.iter_mut() {
            let worker = agent.start_worker().await;
            if round == 0 {
                assert_eq!(agent.receive().await.0, ToAgent::Keep { hash });
            }
            let (to, task, kept, _) = agent.run().await;
            assert_eq!(to, worker);
            assert_eq!(kept.len(), 1);
            agent.done(worker, task, b"ok").await;
            client.result(task.0);
            agent.end_worker(worker).await;
        }
    }
    assert_eq!(
        client.kept(),
        [("node1".to_string(), 1), ("node2".to_string(), 1)]
    );
    client.finish(agents);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_naming_a_buffer_its_agent_lacks_is_sent_again_whole() {
    let client = Client::start(&["node1"], Some(1));
    let mut agent = client.agent("node1").await;
    let worker = agent.start_worker().await;
    let hash = hash_of(&large());
    client.submit(1, &[large()]);
    assert_eq!(agent.receive().await.0, ToAgent::Keep { hash });
    let (_, task, kept, _) = agent.run().await;
    assert_eq!(kept.len(), 1);
    // The agent lost the buffer (it did not match its hash, say).
    let cannot = FromWorker::CannotMap {
        task,
        segments: Vec::new(),
        reason: "no kept buffer of that hash".into(),
    };
    agent.relay(worker, cannot, Vec::new()).await;
    assert_eq!(agent.receive().await.0, ToAgent::Forget { hash });
    let (_, again, kept, frames) = agent.run().await;
    assert_eq!(again, task);
    assert!(kept.is_empty(), "nothing named");
    assert_eq!(frames[2], large(), "the argument is in the Run itself");
    agent.done(worker, task, b"whole").await;
    assert_eq!(
        client.result(1),
        Payload::new(vec![Bytes::from_static(b"whole")])
    );
    // Forgotten, so kept again when next needed.
    client.submit(2, &[large()]);
    assert_eq!(agent.receive().await.0, ToAgent::Keep { hash });
    let (_, _, kept, _) = agent.run().await;
    assert_eq!(kept.len(), 1);
    client.finish([agent]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_speak_for_another_nodes_worker() {
    let client = Client::start(&["node1", "node2"], None);
    let mut agents = [client.agent("node1").await, client.agent("node2").await];
    client.submit(1, &[]);
    client.submit(2, &[]);
    let workers = [
        agents[0].start_worker().await,
        agents[1].start_worker().await,
    ];
    let (_, first, ..) = agents[0].run().await;
    let (_, second, ..) = agents[1].run().await;
    // node2's agent claims node1's worker finished; then its own does.
    agents[1].done(workers[0], first, b"forged").await;
    agents[1].done(workers[1], second, b"ok").await;
    // Its messages are read in order: the forged one came before this.
    assert_eq!(
        client.result(second.0),
        Payload::new(vec![Bytes::from_static(b"ok")])
    );
    agents[0].done(workers[0], first, b"right").await;
    assert_eq!(
        client.result(first.0),
        Payload::new(vec![Bytes::from_static(b"right")])
    );
    client.finish(agents);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_agent_is_pinged_and_its_idle_worker_outlives_the_heartbeat_limit() {
    let timing = Timing {
        heartbeat_interval: Duration::from_millis(100),
        heartbeat_timeout: Duration::from_secs(1),
    };
    let client = Client::start_with(&["node1"], Some(1), timing);
    let mut agent = client.agent("node1").await;
    let worker = agent.start_worker().await;
    // Forty heartbeats, four limits: the agent answers its own pings, and
    // its worker, left to it, says nothing.
    for _ in 0..40 {
        match agent.next().await {
            (ToAgent::Ping, _) => agent.send(FromAgent::Pong, Vec::new()).await,
            other => panic!("only the agent is pinged, its idle worker left alone: {other:?}"),
        }
    }
    client.submit(1, &[]);
    let (to, task, ..) = agent.run().await;
    assert_eq!(to, worker, "the same worker, never given up");
    agent.done(worker, task, b"alive").await;
    assert_eq!(
        client.result(1),
        Payload::new(vec![Bytes::from_static(b"alive")])
    );
    client.finish([agent]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_turn_makes_for_an_agent_comes_as_one_batch_and_its_batches_are_read() {
    let timing = Timing {
        heartbeat_interval: Duration::from_secs(30),
        heartbeat_timeout: Duration::from_secs(600),
    };
    let client = Client::start_on(&["node1"], 3, Some(3), timing);
    let mut agent = client.agent("node1").await;
    // The pool's three Starts, made together: one sealed message.
    let (header, frames) = agent.next_sealed().await;
    assert!(
        matches!(&header, ToAgent::Batch(entries) if entries.len() == 3),
        "{header:?}"
    );
    let workers: Vec<WorkerId> = batch::unpack(header, frames)
        .unwrap()
        .into_iter()
        .map(|message| match message {
            (ToAgent::Start { worker, .. }, _) => worker,
            other => panic!("a Start: {other:?}"),
        })
        .collect();
    // Their Hellos as one batch of the agent's, each read in its place.
    let (mut hellos, mut sent) = (batch::Batch::default(), Vec::new());
    for &worker in &workers {
        let hello = FromWorker::Hello {
            worker,
            pid: 4242,
            host: "the-worker-says".into(),
        };
        hellos.add(
            FromAgent::Relay {
                worker,
                message: hello,
            },
            Vec::new(),
            &mut sent,
        );
    }
    let (hellos, frames) = hellos.take().unwrap();
    assert!(sent.is_empty() && matches!(hellos, FromAgent::Batch(_)));
    agent.send(hellos, frames).await;
    for task in 1..=3 {
        client.submit(task, &[]);
    }
    let mut ran = Vec::new();
    for _ in 1..=3 {
        let (worker, task, ..) = agent.run().await;
        agent.done(worker, task, b"result").await;
        ran.push(worker);
    }
    ran.sort();
    assert_eq!(
        ran, workers,
        "each worker, known by its batched Hello, ran one"
    );
    for task in 1..=3 {
        assert_eq!(client.result(task).frames, [Bytes::from_static(b"result")]);
    }
    client.finish([agent]);
}
