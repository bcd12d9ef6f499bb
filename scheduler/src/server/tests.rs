//! The server over real sockets and real processes: each worker is a real
//! process that only waits (`sh`, then `sleep`), the test speaks for it on
//! a real DEALER socket sealed with a session of the executor's key, and plays the
//! client through the channels `handle` uses. What is asserted is what the
//! client hears.

use super::*;
use crate::backend::Backend;
use crate::capacity::Capacity;
use crate::core::{Allocation, Launch, QueueAhead};
use crate::protocol::{self, FromWorker, Outcome, Stream, ToWorker};
use crate::resources::{Gpus, ResourceRequest};
use crate::seal::{self, Opener, Sealer};
use crate::shared_memory;
use std::path::PathBuf;
use zeromq::DealerSocket;

/// Only bounds a test that would otherwise hang: no event within this long
/// fails it.
const PATIENCE: Duration = Duration::from_secs(60);

/// Starts each worker as a process that writes its pid where the test
/// finds it, then waits; the test speaks for it.
struct Waiters {
    dir: PathBuf,
}

impl Backend for Waiters {
    fn command(
        &self,
        _environment: &WorkerEnvironment,
        worker: WorkerId,
        _launch: &Launch,
    ) -> Result<std::process::Command, String> {
        let mut command = std::process::Command::new("sh");
        command.arg("-c").arg(format!(
            "echo $$ > {}/{}.pid; exec sleep 600",
            self.dir.display(),
            worker.0
        ));
        Ok(command)
    }
}

/// A server on its own thread, as `handle` runs it, with the client's ends.
struct Client {
    commands: UnboundedSender<Command>,
    events: UnboundedReceiver<Event>,
    endpoint: String,
    key: [u8; 32],
    dir: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    fn start(name: &str, workers: u32, queue_ahead: bool, timing: Timing) -> Client {
        let dir = std::env::temp_dir().join(format!("pmp-server-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = [7u8; 32];
        let mut core = Core::new(
            Allocation::Block {
                workers,
                resources: ResourceRequest::default(),
            },
            Capacity::new(workers, None, Gpus::Counted(0)),
            None,
        );
        if queue_ahead {
            core.set_queue_ahead(Some(QueueAhead {
                shared_from: shared_memory::SHARED_FROM,
            }));
        }
        let (commands, commands_rx) = unbounded_channel();
        let (events_tx, events_rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let backend = Box::new(Waiters { dir: dir.clone() });
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(run(
                core,
                Key::from_bytes(key),
                backend,
                WorkerEnvironment::for_tests(),
                timing,
                "127.0.0.1".into(),
                None,
                commands_rx,
                events_tx,
                ready_tx,
            ));
        });
        let endpoint = ready_rx.recv().unwrap().unwrap();
        // The client's events arrive on a std channel (the Python side
        // blocks on it); forwarded, so that the test awaits them.
        let (events, forwarded) = unbounded_channel();
        std::thread::spawn(move || {
            while let Ok(event) = events_rx.recv() {
                if events.send(event).is_err() {
                    break;
                }
            }
        });
        Client {
            commands,
            events: forwarded,
            endpoint,
            key,
            dir,
            thread: Some(thread),
        }
    }

    fn submit(&self, id: u64) {
        let spec = TaskSpec {
            id: TaskId(id),
            function: Bytes::from_static(b"fn"),
            call: Payload::new(vec![Bytes::from_static(b"args")]),
            dependencies: Vec::new(),
            resources: ResourceRequest::default(),
            store: None,
            restart_limit: 0,
            run_time_max: None,
        };
        self.commands.send(Command::Submit(spec)).unwrap();
    }

    /// The next event the client hears.
    async fn event(&mut self) -> Event {
        tokio::time::timeout(PATIENCE, self.events.recv())
            .await
            .expect("an event in time")
            .expect("the server is running")
    }

    /// Events until one that `wanted` picks, which is returned.
    async fn until<T>(&mut self, mut wanted: impl FnMut(&Event) -> Option<T>) -> T {
        loop {
            let event = self.event().await;
            if let Some(found) = wanted(&event) {
                return found;
            }
        }
    }

    /// Speak for `worker` once its process runs: connect and say hello.
    async fn connect(&self, worker: u32) -> FakeWorker {
        let pid_file = self.dir.join(format!("{worker}.pid"));
        let pid = tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(pid) = std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|text| text.trim().parse().ok())
                {
                    break pid;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the worker's process started");
        let mut socket = DealerSocket::new();
        socket.connect(&self.endpoint).await.unwrap();
        let (sealer, opener) =
            seal::connect(&Key::from_bytes(self.key), seal::Protection::Encrypted);
        let mut fake = FakeWorker {
            socket,
            sealer,
            opener,
            pid,
            sent: Vec::new(),
        };
        fake.send(
            FromWorker::Hello {
                worker: WorkerId(worker),
                pid,
                host: "elsewhere".into(),
            },
            Vec::new(),
        )
        .await;
        fake
    }

    /// Shut down and wait for the server to end.
    fn finish(mut self) {
        let _ = self.commands.send(Command::Shutdown {
            cancel_futures: true,
        });
        drop(self.commands);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The test's side of a worker's connection.
struct FakeWorker {
    socket: DealerSocket,
    sealer: Sealer,
    opener: Opener,
    pid: u32,
    /// What it sent, as it went on the wire: for replays.
    sent: Vec<Vec<Bytes>>,
}

impl FakeWorker {
    async fn send(&mut self, message: FromWorker, frames: Vec<Bytes>) {
        let wire = protocol::encode(&mut self.sealer, &message, frames);
        self.sent.push(wire.clone());
        self.send_raw(wire).await;
    }

    /// Frames as they are, as a relay on the way could send them.
    async fn send_raw(&mut self, wire: Vec<Bytes>) {
        let mut message = ZmqMessage::from(wire[0].clone());
        for frame in wire.into_iter().skip(1) {
            message.push_back(frame);
        }
        self.socket.send(message).await.unwrap();
    }

    /// The next message other than a Ping (heartbeats are the server's).
    async fn receive(&mut self) -> ToWorker {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.socket.recv())
                .await
                .expect("a message in time")
                .unwrap();
            let (header, _) =
                protocol::decode::<ToWorker>(&mut self.opener, message.into_vec()).unwrap();
            if header != ToWorker::Ping {
                return header;
            }
        }
    }

    async fn pong(&mut self) {
        self.send(FromWorker::Pong, Vec::new()).await;
    }

    fn kill(&self) {
        // SAFETY: a plain kill of the process this test's backend started.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
    }
}

fn slow_heartbeat() -> Timing {
    Timing {
        heartbeat_interval: Duration::from_secs(30),
        heartbeat_timeout: Duration::from_secs(600),
    }
}

fn run_of(message: &ToWorker) -> Option<TaskId> {
    match message {
        ToWorker::Run { task, .. } => Some(*task),
        _ => None,
    }
}

#[tokio::test]
async fn a_worker_that_dies_mid_task_loses_its_task_with_what_it_printed_last() {
    let mut client = Client::start("dies", 1, false, slow_heartbeat());
    let mut worker = client.connect(0).await;
    client.submit(1);
    assert_eq!(run_of(&worker.receive().await), Some(TaskId(1)));
    // Its last words, then its death at once: the exit is held back
    // (`LATE_MESSAGES`) until they are read, so they are reported first
    // and are in the report.
    worker
        .send(
            FromWorker::Output {
                task: TaskId(1),
                stream: Stream::Stderr,
            },
            vec![Bytes::from_static(b"about to crash\n")],
        )
        .await;
    worker.kill();
    let mut output_first = false;
    let reason = client
        .until(|event| match event {
            Event::Output { task, .. } if *task == TaskId(1) => {
                output_first = true;
                None
            }
            Event::Lost { task, reason } if *task == TaskId(1) => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert!(output_first, "the output came before the loss");
    assert!(reason.stderr_tail.contains("about to crash"), "{reason:?}");
    assert_eq!(reason.signal, Some(libc::SIGKILL), "{reason:?}");
    client.finish();
}

#[tokio::test]
async fn a_result_sent_just_before_the_worker_exits_is_not_lost() {
    let mut client = Client::start("late", 1, false, slow_heartbeat());
    let mut worker = client.connect(0).await;
    client.submit(1);
    assert_eq!(run_of(&worker.receive().await), Some(TaskId(1)));
    // Much printed before the result: the server is still reading when the
    // exit is known.
    for _ in 0..200 {
        worker
            .send(
                FromWorker::Output {
                    task: TaskId(1),
                    stream: Stream::Stdout,
                },
                vec![Bytes::from_static(b"working\n")],
            )
            .await;
    }
    worker
        .send(
            FromWorker::Done {
                task: TaskId(1),
                outcome: Outcome::Returned,
                unstored: None,
                shared: Vec::new(),
            },
            vec![Bytes::from_static(b"result")],
        )
        .await;
    worker.kill();
    let finished = client
        .until(|event| match event {
            Event::Finished { task, result } => Some((*task, result.clone())),
            Event::Lost { task, reason } => panic!("{task} lost: {reason:?}"),
            _ => None,
        })
        .await;
    assert_eq!(
        finished,
        (TaskId(1), Payload::new(vec![Bytes::from_static(b"result")]))
    );
    client.finish();
}

#[tokio::test]
async fn a_worker_that_stops_answering_heartbeats_is_killed_and_its_task_lost() {
    let timing = Timing {
        heartbeat_interval: Duration::from_millis(50),
        heartbeat_timeout: Duration::from_millis(500),
    };
    let mut client = Client::start("heartbeat", 1, false, timing);
    let mut worker = client.connect(0).await;
    client.submit(1);
    assert_eq!(run_of(&worker.receive().await), Some(TaskId(1)));
    // Never a Pong: the worker is silent from here on.
    let reason = client
        .until(|event| match event {
            Event::Lost { task, reason } if *task == TaskId(1) => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert!(
        reason.message.contains("stopped answering heartbeats"),
        "{reason:?}"
    );
    client.finish();
}

#[tokio::test]
async fn a_cancel_is_answered_at_once_for_a_queued_task_and_by_the_worker_for_one_sent_ahead() {
    let mut client = Client::start("cancel", 1, true, slow_heartbeat());
    let mut worker = client.connect(0).await;
    for id in 1..=3 {
        client.submit(id);
    }
    assert_eq!(run_of(&worker.receive().await), Some(TaskId(1)));
    assert_eq!(
        run_of(&worker.receive().await),
        Some(TaskId(2)),
        "sent ahead"
    );
    let cancel = |id| {
        let (reply, answer) = std::sync::mpsc::channel();
        client
            .commands
            .send(Command::Cancel(TaskId(id), reply))
            .unwrap();
        answer
    };
    assert_eq!(cancel(3).recv(), Ok(true), "queued: cancelled at once");
    let ahead = cancel(2);
    assert_eq!(
        worker.receive().await,
        ToWorker::Retract { task: TaskId(2) }
    );
    assert!(
        ahead.try_recv().is_err(),
        "not answered before the worker is"
    );
    worker
        .send(FromWorker::Retracted { task: TaskId(2) }, Vec::new())
        .await;
    client
        .until(|event| match event {
            Event::Cancelled { task, .. } if *task == TaskId(2) => Some(()),
            _ => None,
        })
        .await;
    assert_eq!(ahead.recv(), Ok(true));
    worker.pong().await;
    client.finish();
}

fn done(task: u64) -> FromWorker {
    FromWorker::Done {
        task: TaskId(task),
        outcome: Outcome::Returned,
        unstored: None,
        shared: Vec::new(),
    }
}

#[tokio::test]
async fn a_message_changed_on_the_wire_stops_its_worker_and_fails_its_task_saying_why() {
    let mut client = Client::start("forged", 1, false, slow_heartbeat());
    let mut worker = client.connect(0).await;
    client.submit(1);
    assert_eq!(run_of(&worker.receive().await), Some(TaskId(1)));
    let mut forged = protocol::encode(
        &mut worker.sealer,
        &done(1),
        vec![Bytes::from_static(b"result")],
    );
    let mut result = forged[2].to_vec();
    result[0] ^= 1;
    forged[2] = Bytes::from(result);
    worker.send_raw(forged).await;
    let reason = client
        .until(|event| match event {
            Event::Finished { task, .. } => panic!("{task} finished with a changed result"),
            Event::Lost { task, reason } if *task == TaskId(1) => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert!(
        reason.message.contains("did not open") && reason.message.contains("tampered"),
        "{reason:?}"
    );
    client.finish();
}

#[tokio::test]
async fn a_replayed_message_stops_its_worker() {
    let mut client = Client::start("replay", 1, false, slow_heartbeat());
    let mut worker = client.connect(0).await;
    client.submit(1);
    assert_eq!(run_of(&worker.receive().await), Some(TaskId(1)));
    let hello = worker.sent[0].clone();
    worker.send_raw(hello).await;
    let reason = client
        .until(|event| match event {
            Event::Lost { task, reason } if *task == TaskId(1) => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert!(reason.message.contains("replayed"), "{reason:?}");
    client.finish();
}

#[tokio::test]
async fn a_connection_that_replays_another_ones_messages_is_not_admitted() {
    let mut client = Client::start("replayed", 2, false, slow_heartbeat());
    let mut worker = client.connect(0).await;
    client.submit(1);
    assert_eq!(run_of(&worker.receive().await), Some(TaskId(1)));
    worker.kill();
    // An eavesdropper's connection replays the worker's Hello and a Done
    // for its task: the Hello's salt was used, so neither is taken, and the
    // task is lost with its worker rather than finished with a replayed
    // result.
    let replayed_done = protocol::encode(
        &mut worker.sealer,
        &done(1),
        vec![Bytes::from_static(b"replayed")],
    );
    let mut socket = DealerSocket::new();
    socket.connect(&client.endpoint).await.unwrap();
    let mut stranger = FakeWorker {
        socket,
        sealer: seal::connect(&Key::generate(), seal::Protection::Encrypted).0,
        opener: seal::connect(&Key::generate(), seal::Protection::Encrypted).1,
        pid: 0,
        sent: Vec::new(),
    };
    stranger.send_raw(worker.sent[0].clone()).await;
    stranger.send_raw(replayed_done).await;
    client
        .until(|event| match event {
            Event::Finished { task, .. } => panic!("{task} finished with a replayed result"),
            Event::Lost { task, .. } if *task == TaskId(1) => Some(()),
            _ => None,
        })
        .await;
    client.finish();
}
