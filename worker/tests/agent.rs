//! pmp-worker as a node agent (`PMP_AGENT`), started for real and driven by
//! a stand-in scheduler: a ROUTER socket on loopback that opens the agent's
//! session from its Hello and speaks `protocol::agent` to it. The workers
//! it starts are real processes (a shell, and pmp-worker itself, forked by
//! the agent's zygote, which needs the Python pmp is installed in:
//! `PYO3_PYTHON`, else the one `install.sh` recorded in target/pmp-python).
//! Workers talk to the agent alone, on its local socket; the stand-in sees
//! their messages as the agent relays them (`FromAgent::Relay`), and sends
//! them real pickled calls (pickled by that Python, as pmp's client does).
//! Linux: processes are watched through /proc, and only Linux has zygotes.
#![cfg(target_os = "linux")]

use pmp_scheduler::auth::Key;
use pmp_scheduler::ids::TaskId;
use pmp_scheduler::ids::WorkerId;
use pmp_scheduler::protocol::agent::{FromAgent, KeptFrame, ToAgent};
use pmp_scheduler::protocol::batch::{self, Batch};
use pmp_scheduler::protocol::{self, FromWorker, FunctionRef, Outcome, Stream, ToWorker};
use pmp_scheduler::seal::{self, Opener, Protection, SaltsSeen, Sealer};
use pmp_scheduler::Bytes;
use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use zeromq::{RouterSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

/// Only bounds a test that would otherwise hang: what has not come by then
/// never will.
const PATIENCE: Duration = Duration::from_secs(60);

/// The heartbeat limit of agents that must outlive their test.
const LONG_SILENCE: &str = "120";

/// The heartbeat limit of an agent, or a worker, that must be kept alive
/// by heartbeats: the stand-in pings the agent every `TICK`.
const SHORT_SILENCE: &str = "2";
const TICK: Duration = Duration::from_millis(200);

fn python() -> String {
    if let Ok(python) = std::env::var("PYO3_PYTHON") {
        return python;
    }
    let recorded = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pmp-python");
    std::fs::read_to_string(&recorded)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| {
            panic!(
                "the agent's zygote needs the Python pmp is installed in: set PYO3_PYTHON or \
                 run ./install.sh (which writes {})",
                recorded.display()
            )
        })
}

fn worker_program() -> PathBuf {
    // As the agent sees itself (`current_exe`), so that the zygote can
    // reproduce a Start of it.
    std::fs::canonicalize(env!("CARGO_BIN_EXE_pmp-worker")).expect("pmp-worker is built")
}

/// A started agent, killed (with its workers, by their parent-death
/// signals) if its test ends before it does.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl AgentProcess {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Its exit code, once it exited by itself. Waits without blocking
    /// the test's runtime, whose tasks write what the scheduler sent.
    async fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.0.try_wait().expect("wait for the agent") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the agent did not exit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stderr(&mut self) -> String {
        use std::io::Read;
        let mut text = String::new();
        if let Some(mut stderr) = self.0.stderr.take() {
            let _ = stderr.read_to_string(&mut text);
        }
        text
    }
}

/// The stand-in scheduler.
struct Scheduler {
    socket: RouterSocket,
    address: String,
    key: Key,
    salts: SaltsSeen,
    /// The agent's connection and its session, once its Hello came.
    agent: Option<(Bytes, Sealer, Opener)>,
    /// Messages of other connections (workers), read while waiting for the
    /// agent's.
    others: VecDeque<(Bytes, Vec<Bytes>)>,
    /// The agent's messages read while waiting for a worker's.
    from_agent: VecDeque<(FromAgent, Vec<Bytes>)>,
    /// What the agent forwarded of its workers' output.
    printed: Vec<(WorkerId, Stream, String)>,
    /// Every message the agent relayed from its workers, in order.
    relayed: Vec<(WorkerId, FromWorker)>,
    /// The connections that sent anything: the agents', never a worker's.
    connections: HashSet<Bytes>,
    /// How many of the agent's messages were batches (`protocol::batch`).
    batches: usize,
    key_file: PathBuf,
}

impl Scheduler {
    async fn new() -> Scheduler {
        let mut socket = RouterSocket::new();
        let address = socket
            .bind("tcp://127.0.0.1:0")
            .await
            .expect("bind")
            .to_string();
        let key = Key::generate();
        let key_file = std::env::temp_dir().join(format!(
            "pmp-agent-test-{}-{}.key",
            std::process::id(),
            address.rsplit(':').next().unwrap_or("0")
        ));
        Scheduler {
            socket,
            address,
            key,
            salts: SaltsSeen::default(),
            agent: None,
            others: VecDeque::new(),
            from_agent: VecDeque::new(),
            printed: Vec::new(),
            relayed: Vec::new(),
            connections: HashSet::new(),
            batches: 0,
            key_file,
        }
    }

    /// The agent's command, its key in a file of the user's alone, with
    /// none of the job system's variables unless `variables` sets them.
    fn agent_command(&self, variables: &[(&str, &str)]) -> Command {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.key_file)
            .expect("write the key file");
        file.write_all(self.key.to_hex().as_bytes()).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_pmp-worker"));
        for name in [
            "SLURMD_NODENAME",
            "SLURM_CPUS_ON_NODE",
            "SLURM_MEM_PER_NODE",
            "SLURM_MEM_PER_CPU",
            "CUDA_VISIBLE_DEVICES",
        ] {
            command.env_remove(name);
        }
        command
            .env("PMP_AGENT", "1")
            .env("PMP_SCHEDULER", &self.address)
            .env("PMP_KEY_FILE", &self.key_file)
            .env("PMP_HEARTBEAT_TIMEOUT", LONG_SILENCE)
            .env("PMP_PYTHON", python())
            .env("PMP_SYS_PATH", "")
            .env_remove("PMP_KEY")
            .envs(variables.iter().copied())
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        command
    }

    fn start_agent(&self, variables: &[(&str, &str)]) -> AgentProcess {
        AgentProcess(
            self.agent_command(variables)
                .spawn()
                .expect("start the agent"),
        )
    }

    async fn receive(&mut self) -> (Bytes, Vec<Bytes>) {
        let message = tokio::time::timeout(PATIENCE, self.socket.recv())
            .await
            .expect("a message within the patience")
            .expect("the socket receives");
        let mut frames = message.into_vec();
        let route = frames.remove(0);
        self.connections.insert(route.clone());
        (route, frames)
    }

    /// The agent's next message; the first must be its Hello, which opens
    /// its session.
    async fn next(&mut self) -> (FromAgent, Vec<Bytes>) {
        if let Some(message) = self.from_agent.pop_front() {
            return message;
        }
        loop {
            let (route, frames) = self.receive().await;
            match &mut self.agent {
                Some((agent, _, opener)) if *agent == route => {
                    let (message, frames) =
                        protocol::decode(opener, frames).expect("the agent's message opens");
                    self.unpack(message, frames);
                    return self.from_agent.pop_front().expect("a batch holds messages");
                }
                Some(_) => self.others.push_back((route, frames)),
                None => {
                    let (sealer, mut opener) = self
                        .salts
                        .session(&self.key, Protection::Encrypted, &frames)
                        .expect("the agent's first message starts an encrypted session");
                    let (hello, frames) = protocol::decode::<FromAgent>(&mut opener, frames)
                        .expect("the agent's first message opens");
                    assert!(matches!(hello, FromAgent::Hello { .. }), "{hello:?}");
                    self.salts.accept(&opener);
                    self.agent = Some((route, sealer, opener));
                    return (hello, frames);
                }
            }
        }
    }

    /// Queue an opened message of the agent's, a batch's one by one, and
    /// keep what it relays.
    fn unpack(&mut self, message: FromAgent, frames: Vec<Bytes>) {
        if matches!(message, FromAgent::Batch(_)) {
            self.batches += 1;
        }
        let messages = batch::unpack(message, frames).expect("the agent's batch unpacks");
        for (message, frames) in messages {
            if let FromAgent::Relay { worker, message } = &message {
                self.relayed.push((*worker, message.clone()));
            }
            self.from_agent.push_back((message, frames));
        }
    }

    /// The agent's next message other than what it forwards of its
    /// workers' output, which is kept in `printed`.
    async fn next_unprinted(&mut self) -> FromAgent {
        self.next_unprinted_with_frames().await.0
    }

    /// `next_unprinted`, with the message's payload frames.
    async fn next_unprinted_with_frames(&mut self) -> (FromAgent, Vec<Bytes>) {
        loop {
            match self.next().await {
                (FromAgent::Printed { worker, stream }, frames) => {
                    let text = String::from_utf8_lossy(&frames[0]).into_owned();
                    self.printed.push((worker, stream, text));
                }
                message => return message,
            }
        }
    }

    /// The next message the agent relays from one of its workers, with
    /// its frames; anything else but output is unexpected.
    async fn next_relayed(&mut self) -> (WorkerId, FromWorker, Vec<Bytes>) {
        match self.next_unprinted_with_frames().await {
            (FromAgent::Relay { worker, message }, frames) => (worker, message, frames),
            (other, _) => panic!("expected a relayed message: {other:?}"),
        }
    }

    /// `worker`'s Hello, relayed by the agent.
    async fn relayed_hello(&mut self, worker: WorkerId) -> FromWorker {
        let (from, hello, _) = self.next_relayed().await;
        assert_eq!(from, worker);
        assert!(
            matches!(hello, FromWorker::Hello { worker: w, .. } if w == worker),
            "{hello:?}"
        );
        hello
    }

    /// The first `n` lines `worker` prints to stdout.
    async fn lines(&mut self, worker: WorkerId, n: usize) -> Vec<String> {
        loop {
            let printed = self.printed_by(worker, Stream::Stdout);
            if printed.matches('\n').count() >= n {
                return printed.lines().take(n).map(String::from).collect();
            }
            match self.next().await {
                (FromAgent::Printed { worker, stream }, frames) => {
                    let text = String::from_utf8_lossy(&frames[0]).into_owned();
                    self.printed.push((worker, stream, text));
                }
                (message, _) => panic!("expected output of worker {}: {message:?}", worker.0),
            }
        }
    }

    /// What `worker` printed to `stream` so far.
    fn printed_by(&self, worker: WorkerId, stream: Stream) -> String {
        self.printed
            .iter()
            .filter(|(w, s, _)| *w == worker && *s == stream)
            .map(|(_, _, text)| text.as_str())
            .collect()
    }

    /// `worker`'s Exited, once it came.
    async fn until_exited(&mut self, worker: WorkerId) -> FromAgent {
        loop {
            let message = self.next_unprinted().await;
            if matches!(&message, FromAgent::Exited { worker: w, .. } if *w == worker) {
                return message;
            }
        }
    }

    /// The first line `worker` prints to stdout (while no other message
    /// than output is expected).
    async fn first_line(&mut self, worker: WorkerId) -> String {
        loop {
            if let Some((line, _)) = self.printed_by(worker, Stream::Stdout).split_once('\n') {
                return line.to_string();
            }
            match self.next().await {
                (FromAgent::Printed { worker, stream }, frames) => {
                    let text = String::from_utf8_lossy(&frames[0]).into_owned();
                    self.printed.push((worker, stream, text));
                }
                (message, _) => panic!("expected output of worker {}: {message:?}", worker.0),
            }
        }
    }

    async fn send(&mut self, message: &ToAgent) {
        self.send_with(message, Vec::new()).await;
    }

    async fn send_with(&mut self, message: &ToAgent, frames: Vec<Bytes>) {
        let (_, sealer, _) = self.agent.as_mut().expect("the agent said hello");
        let wire = protocol::encode(sealer, message, frames);
        self.send_wire(wire).await;
    }

    fn seal(&mut self, message: &ToAgent) -> Vec<Bytes> {
        let (_, sealer, _) = self.agent.as_mut().expect("the agent said hello");
        protocol::encode(sealer, message, Vec::new())
    }

    async fn send_wire(&mut self, wire: Vec<Bytes>) {
        let (route, _, _) = self.agent.as_ref().expect("the agent said hello");
        let mut message = ZmqMessage::from(route.clone());
        for frame in wire {
            message.push_back(frame);
        }
        self.socket.send(message).await.expect("send to the agent");
    }

    /// The first message of another connection than the first agent's
    /// (a worker's, another agent's), which starts an encrypted session:
    /// the connection's route and session, and that message to open.
    async fn first_of_a_new_connection(&mut self) -> (Bytes, Sealer, Opener, Vec<Bytes>) {
        let (route, frames) = match self.others.pop_front() {
            Some(message) => message,
            None => loop {
                let (route, frames) = self.receive().await;
                match &mut self.agent {
                    Some((agent, _, opener)) if *agent == route => {
                        let (message, frames) =
                            protocol::decode(opener, frames).expect("the agent's message opens");
                        self.unpack(message, frames);
                    }
                    _ => break (route, frames),
                }
            },
        };
        let (sealer, opener) = self
            .salts
            .session(&self.key, Protection::Encrypted, &frames)
            .expect("a new connection's first message starts an encrypted session");
        self.salts.accept(&opener);
        (route, sealer, opener, frames)
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.key_file);
    }
}

fn shell(worker: u32, script: &str) -> ToAgent {
    shell_with_gpus(worker, 0, script)
}

/// A worker's shell with `gpus` of its node's GPUs.
fn shell_with_gpus(worker: u32, gpus: u32, script: &str) -> ToAgent {
    ToAgent::Start {
        worker: WorkerId(worker),
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        variables: Vec::new(),
        cwd: None,
        gpus,
    }
}

/// A worker whose shell waits on a `sleep` in its group, and prints the
/// sleep's pid: a process that only a signal to the group reaches (the
/// shell alone has the parent-death signal).
const SLEEP_IN_GROUP: &str = "sleep 1000 & echo $!; wait";

/// Whether `pid` is gone (or a zombie no one reaps yet), waiting for it.
async fn gone(pid: u32) -> bool {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            // The state follows the command's closing parenthesis.
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z') =>
            {
                return true
            }
            Ok(_) if Instant::now() >= deadline => return false,
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn parent_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process exists");
    let after = stat.rsplit(')').next().unwrap_or("");
    after.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// CPUs this process may run on (the agent's count when the job system
/// says nothing).
fn affinity_cpus() -> u32 {
    // SAFETY: a zeroed cpu_set_t filled in by sched_getaffinity.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        libc::CPU_COUNT(&set) as u32
    }
}

#[tokio::test]
async fn its_hello_names_the_node_cpus_and_gpus_the_job_system_gave_it() {
    let mut scheduler = Scheduler::new().await;
    let mut agent = scheduler.start_agent(&[
        ("SLURMD_NODENAME", "node7"),
        ("SLURM_CPUS_ON_NODE", "5"),
        ("SLURM_MEM_PER_CPU", "300"),
        ("CUDA_VISIBLE_DEVICES", "1,3"),
        ("PMP_AGENT_ALLOCATION", "3"),
    ]);
    let (hello, _) = scheduler.next().await;
    assert_eq!(
        hello,
        FromAgent::Hello {
            node: "node7".into(),
            pid: agent.pid(),
            cpus: 5,
            gpus: vec!["1".into(), "3".into()],
            memory_mb: Some(5 * 300),
            allocation: Some(3),
        }
    );
    assert!(
        scheduler.key_file.exists(),
        "the agents of one launch share one key file, which the scheduler removes"
    );
    scheduler.send(&ToAgent::Shutdown).await;
    assert_eq!(agent.exit_code().await, Some(0), "{}", agent.stderr());
}

#[tokio::test]
async fn without_the_job_systems_word_its_hello_has_the_host_and_its_own_cpus() {
    let mut scheduler = Scheduler::new().await;
    let mut agent = scheduler.start_agent(&[("CUDA_VISIBLE_DEVICES", "NoDevFiles")]);
    let (hello, _) = scheduler.next().await;
    assert_eq!(
        hello,
        FromAgent::Hello {
            node: pmp_scheduler::host::name(),
            pid: agent.pid(),
            cpus: affinity_cpus(),
            gpus: Vec::new(),
            memory_mb: pmp_scheduler::memory::host(),
            allocation: None,
        }
    );
    scheduler.send(&ToAgent::Shutdown).await;
    assert_eq!(agent.exit_code().await, Some(0), "{}", agent.stderr());
}

#[tokio::test]
async fn a_started_command_is_printed_and_exits_with_its_code() {
    let mut scheduler = Scheduler::new().await;
    // The agent's place in its own launch (rank 1 of an srun step).
    let mut agent = scheduler.start_agent(&[
        ("SLURM_PROCID", "1"),
        ("PMI_RANK", "1"),
        ("PMIX_MCA_setting", "kept"),
    ]);
    scheduler.next().await;
    let cwd = std::env::temp_dir().canonicalize().unwrap();
    scheduler
        .send(&ToAgent::Start {
            worker: WorkerId(1),
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "echo hi >&2; echo \"cwd=$(pwd) x=$X wire=$PMP_WIRE \
                 agent=${PMP_AGENT-unset} file=${PMP_KEY_FILE-unset} \
                 rank=${SLURM_PROCID-unset},${PMI_RANK-unset} pmix=$PMIX_MCA_setting\"; \
                 echo \"$PMP_SCHEDULER $PMP_KEY\"; exit 3"
                    .into(),
            ],
            // The agent's own address, key and wire go over the scheduler's.
            variables: vec![
                ("X".into(), "given".into()),
                ("PMP_SCHEDULER".into(), scheduler.address.clone()),
                ("PMP_KEY_FILE".into(), "/nonexistent/key".into()),
                ("PMP_WIRE".into(), "encrypted".into()),
            ],
            cwd: Some(cwd.to_string_lossy().into_owned()),
            gpus: 0,
        })
        .await;
    let exited = scheduler.until_exited(WorkerId(1)).await;
    let FromAgent::Exited {
        exit_code,
        signal,
        stderr_tail,
        message,
        ..
    } = exited
    else {
        unreachable!()
    };
    assert_eq!((exit_code, signal), (Some(3), None));
    assert!(message.contains("exit code 3"), "{message}");
    assert_eq!(stderr_tail, "hi");
    assert_eq!(scheduler.printed_by(WorkerId(1), Stream::Stderr), "hi\n");
    let stdout = scheduler.printed_by(WorkerId(1), Stream::Stdout);
    let (first, second) = stdout.split_once('\n').unwrap();
    // The worker talks to the agent, signed with the agent's own key; the
    // agent's own variables stay with the agent, and so does its rank.
    assert_eq!(
        first,
        format!(
            "cwd={} x=given wire=signed agent=unset file=unset rank=unset,unset pmix=kept",
            cwd.display(),
        )
    );
    let (address, key) = second.trim_end().split_once(' ').unwrap();
    assert!(address.starts_with("ipc://"), "{address}");
    assert_eq!(key.len(), scheduler.key.to_hex().len(), "{key}");
    assert_ne!(key, scheduler.key.to_hex(), "not the executor's key");
    scheduler.send(&ToAgent::Shutdown).await;
    assert_eq!(agent.exit_code().await, Some(0), "{}", agent.stderr());
}

#[tokio::test]
async fn a_start_that_fails_is_reported_as_an_exit_with_the_reason() {
    let mut scheduler = Scheduler::new().await;
    let mut agent = scheduler.start_agent(&[]);
    scheduler.next().await;
    scheduler
        .send(&ToAgent::Start {
            worker: WorkerId(4),
            program: "/nonexistent/pmp-worker".into(),
            args: Vec::new(),
            variables: Vec::new(),
            cwd: None,
            gpus: 0,
        })
        .await;
    let exited = scheduler.until_exited(WorkerId(4)).await;
    let FromAgent::Exited { message, .. } = exited else {
        unreachable!()
    };
    assert!(message.starts_with("could not start worker: "), "{message}");
    scheduler.send(&ToAgent::Shutdown).await;
    assert_eq!(agent.exit_code().await, Some(0), "{}", agent.stderr());
}

#[tokio::test]
async fn the_worker_program_is_forked_by_its_zygote_and_says_hello_through_the_agent() {
    let mut scheduler = Scheduler::new().await;
    // The agent of a second node: a worker that took the rank for its own
    // would wait for a rank 0 instead of connecting.
    let mut agent = scheduler.start_agent(&[("SLURM_PROCID", "1"), ("FLUX_TASK_RANK", "1")]);
    scheduler.next().await;
    let address = scheduler.address.clone();
    scheduler
        .send(&ToAgent::Start {
            worker: WorkerId(5),
            program: worker_program().to_string_lossy().into_owned(),
            args: Vec::new(),
            variables: vec![
                ("PMP_SCHEDULER".into(), address),
                ("PMP_WORKER_ID".into(), "5".into()),
                ("PMP_HEARTBEAT_TIMEOUT".into(), LONG_SILENCE.into()),
                ("PMP_RANKS".into(), "1".into()),
            ],
            cwd: None,
            gpus: 0,
        })
        .await;
    let FromWorker::Hello { pid, .. } = scheduler.relayed_hello(WorkerId(5)).await else {
        unreachable!()
    };
    let parent = parent_of(pid);
    assert_ne!(parent, agent.pid(), "forked by the zygote, not spawned");
    assert_eq!(parent_of(parent), agent.pid(), "the agent's zygote");
    scheduler
        .send(&ToAgent::Stop {
            worker: WorkerId(5),
        })
        .await;
    let exited = scheduler.until_exited(WorkerId(5)).await;
    let FromAgent::Exited {
        exit_code, signal, ..
    } = &exited
    else {
        unreachable!()
    };
    assert!(exit_code.is_some() || signal.is_some(), "{exited:?}");
    assert!(gone(pid).await);
    scheduler.send(&ToAgent::Shutdown).await;
    assert_eq!(agent.exit_code().await, Some(0), "{}", agent.stderr());
    assert_eq!(scheduler.connections.len(), 1, "the agent's alone");
}

#[tokio::test]
async fn a_signal_reaches_the_workers_whole_group() {
    let mut scheduler = Scheduler::new().await;
    let mut agent = scheduler.start_agent(&[]);
    scheduler.next().await;
    // The shell survives SIGTERM (its trap), the sleep it waits on does
    // not: only a signal to the group reaches it. Then the shell becomes a
    // sleep that SIGTERM ends.
    let script = "trap 'echo term' TERM; sleep 1000 & echo $!; wait; exec sleep 1000";
    scheduler.send(&shell(1, script)).await;
    scheduler.send(&shell(2, SLEEP_IN_GROUP)).await;
    let first: u32 = scheduler.first_line(WorkerId(1)).await.parse().unwrap();
    let second: u32 = scheduler.first_line(WorkerId(2)).await.parse().unwrap();
    scheduler
        .send(&ToAgent::Signal {
            worker: WorkerId(1),
            signal: libc::SIGTERM,
        })
        .await;
    assert!(gone(first).await, "the signal reaches the worker's group");
    assert!(!gone_now(second), "and no other worker's");
    scheduler
        .send(&ToAgent::Stop {
            worker: WorkerId(1),
        })
        .await;
    let exited = scheduler.until_exited(WorkerId(1)).await;
    assert!(
        matches!(
            exited,
            FromAgent::Exited {
                signal: Some(libc::SIGTERM),
                ..
            }
        ),
        "{exited:?}"
    );
    scheduler.send(&ToAgent::Shutdown).await;
    assert_eq!(agent.exit_code().await, Some(0), "{}", agent.stderr());
    assert!(gone(second).await, "a shutdown stops every worker");
}

#[tokio::test]
async fn a_stop_kills_a_worker_that_ignores_sigterm_after_its_grace() {
    let mut scheduler = Scheduler::new().await;
    let mut agent = scheduler.start_agent(&[]);
    scheduler.next().await;
    // The sleep inherits the ignored SIGTERM.
    scheduler
        .send(&shell(1, "trap '' TERM; sleep 1000 & echo $!; wait"))
        .await;
    let sleep: u32 = scheduler.first_line(WorkerId(1)).await.parse().unwrap();
    scheduler
        .send(&ToAgent::Stop {
            worker: WorkerId(1),
        })
        .await;
    let exited = scheduler.until_exited(WorkerId(1)).await;
    assert!(
        matches!(
            exited,
            FromAgent::Exited {
                signal: Some(libc::SIGKILL),
                ..
            }
        ),
        "{exited:?}"
    );
    assert!(gone(sleep).await);
    scheduler.send(&ToAgent::Shutdown).await;
    assert_eq!(agent.exit_code().await, Some(0), "{}", agent.stderr());
}

/// Whether `pid` is gone already (no waiting).
fn gone_now(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn a_message_changed_on_the_wire_is_dropped_unread() {
    let mut scheduler = Scheduler::new().await;
    let mut agent = scheduler.start_agent(&[]);
    scheduler.next().await;
    // A worker that would still run at the shutdown below, had this Start
    // been acted on: its Exited would be reported then.
    let mut forged = scheduler.seal(&shell(7, "sleep 1000"));
    let mut header = forged[1].to_vec();
    header[0] ^= 1;
    forged[1] = Bytes::from(header);
    scheduler.send_wire(forged).await;
    scheduler.send(&ToAgent::Ping).await;
    assert_eq!(scheduler.next().await.0, FromAgent::Pong);
    scheduler.send(&ToAgent::Shutdown).await;
    assert_eq!(agent.exit_code().await, Some(0));
    // Everything it sent before it exited: no word of worker 7.
    if let Ok(message) =
        tokio::time::timeout(Duration::from_millis(500), scheduler.socket.recv()).await
    {
        let mut frames = message.expect("receive").into_vec();
        frames.remove(0);
        let (_, _, opener) = scheduler.agent.as_mut().unwrap();
        let (message, _) = protocol::decode::<FromAgent>(opener, frames).unwrap();
        panic!("nothing was started, so nothing is reported: {message:?}");
    }
    let stderr = agent.stderr();
    assert!(
        stderr.contains("dropped a message that does not open"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_batch_is_acted_on_in_order_and_its_answers_come_back_as_one_batch() {
    let mut scheduler = Scheduler::new().await;
    let mut agent = scheduler.start_agent(&[]);
    scheduler.next().await;
    // Two Starts and two Pings as one message: both workers start (their
    // ends say so), and the two Pongs, made in one turn, come as one.
    let (mut pending, mut wire) = (Batch::default(), Vec::new());
    for message in [
        shell(1, "exit 3"),
        ToAgent::Ping,
        ToAgent::Ping,
        shell(2, "exit 4"),
    ] {
        pending.add(message, Vec::new(), &mut wire);
    }
    let (message, frames) = pending.take().expect("what was added");
    assert!(wire.is_empty() && matches!(message, ToAgent::Batch(_)));
    scheduler.send_with(&message, frames).await;
    assert_eq!(scheduler.next_unprinted().await, FromAgent::Pong);
    assert_eq!(scheduler.next_unprinted().await, FromAgent::Pong);
    assert_eq!(scheduler.batches, 1, "the two Pongs in one batch");
    let mut codes = Vec::new();
    while codes.len() < 2 {
        if let FromAgent::Exited {
            worker, exit_code, ..
        } = scheduler.next_unprinted().await
        {
            codes.push((worker.0, exit_code));
        }
    }
    codes.sort();
    assert_eq!(codes, [(1, Some(3)), (2, Some(4))]);
    scheduler.send(&ToAgent::Shutdown).await;
    assert_eq!(agent.exit_code().await, Some(0), "{}", agent.stderr());
}

#[tokio::test]
async fn without_word_from_the_scheduler_it_kills_its_workers_and_exits() {
    let mut scheduler = Scheduler::new().await;
    let mut agent = AgentProcess(
        scheduler
            .agent_command(&[("PMP_HEARTBEAT_TIMEOUT", "2")])
            .spawn()
            .unwrap(),
    );
    scheduler.next().await;
    let script = format!("echo $PMP_SCHEDULER; {SLEEP_IN_GROUP}");
    scheduler.send(&shell(1, &script)).await;
    let lines = scheduler.lines(WorkerId(1), 2).await;
    let dir = private_dir(&lines[0]);
    let sleep: u32 = lines[1].parse().unwrap();
    assert!(dir.is_dir());
    // No more messages: the agent goes, and its worker's group with it.
    assert_eq!(agent.exit_code().await, Some(70), "{}", agent.stderr());
    assert!(gone(sleep).await);
    assert!(agent.stderr().contains("no word from the scheduler"));
    assert!(!dir.exists(), "its workers' socket goes with it");
}

#[tokio::test]
async fn with_its_stdout_and_stderr_closed_it_still_goes_with_its_scheduler() {
    let mut scheduler = Scheduler::new().await;
    let (stdout, stderr) = (closed_pipe(), closed_pipe());
    let mut agent = AgentProcess(
        scheduler
            .agent_command(&[("PMP_HEARTBEAT_TIMEOUT", "2")])
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap(),
    );
    scheduler.next().await;
    scheduler.send(&shell(1, SLEEP_IN_GROUP)).await;
    let sleep: u32 = scheduler.first_line(WorkerId(1)).await.parse().unwrap();
    // Not a panic (101) on the message it cannot write.
    assert_eq!(agent.exit_code().await, Some(70));
    assert!(gone(sleep).await);
}

/// The write end of a pipe whose read end is closed: what an agent's
/// stderr is once the srun that read it is gone.
fn closed_pipe() -> Stdio {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors, which we then own.
    let (read, write) = unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    drop(read);
    Stdio::from(write)
}

#[tokio::test]
async fn sigterm_stops_its_workers_and_reports_them() {
    let mut scheduler = Scheduler::new().await;
    let mut agent = scheduler.start_agent(&[]);
    scheduler.next().await;
    scheduler.send(&shell(1, SLEEP_IN_GROUP)).await;
    let sleep: u32 = scheduler.first_line(WorkerId(1)).await.parse().unwrap();
    // SAFETY: plain syscall on our own child.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGTERM) };
    let exited = scheduler.until_exited(WorkerId(1)).await;
    assert!(
        matches!(
            exited,
            FromAgent::Exited {
                signal: Some(libc::SIGTERM),
                ..
            }
        ),
        "{exited:?}"
    );
    assert_eq!(agent.exit_code().await, Some(0), "{}", agent.stderr());
    assert!(gone(sleep).await);
}

#[tokio::test]
async fn an_agent_killed_outright_takes_its_zygote_and_all_its_workers_along() {
    let mut scheduler = Scheduler::new().await;
    let mut agent = scheduler.start_agent(&[]);
    scheduler.next().await;
    scheduler.send(&shell(1, "echo $$; exec sleep 1000")).await;
    let spawned: u32 = scheduler.first_line(WorkerId(1)).await.parse().unwrap();
    let address = scheduler.address.clone();
    scheduler
        .send(&ToAgent::Start {
            worker: WorkerId(2),
            program: worker_program().to_string_lossy().into_owned(),
            args: Vec::new(),
            variables: vec![
                ("PMP_SCHEDULER".into(), address),
                ("PMP_WORKER_ID".into(), "2".into()),
                ("PMP_HEARTBEAT_TIMEOUT".into(), LONG_SILENCE.into()),
            ],
            cwd: None,
            gpus: 0,
        })
        .await;
    let FromWorker::Hello { pid: forked, .. } = scheduler.relayed_hello(WorkerId(2)).await else {
        unreachable!()
    };
    let zygote = parent_of(forked);
    assert_eq!(parent_of(zygote), agent.pid());
    // Nothing of the agent's own runs after SIGKILL: the parent-death
    // signals it set up do it all.
    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    assert!(gone(spawned).await, "a spawned worker dies with its agent");
    assert!(gone(zygote).await, "so does its zygote");
    assert!(gone(forked).await, "and what the zygote forked");
}

/// Why the real Slurm cannot be used here, if it cannot; a Slurm that is
/// installed but not up fails the test instead (CI starts one).
fn slurm_missing() -> Option<&'static str> {
    let state = Command::new("sinfo").args(["-h", "-o", "%t"]).output();
    let Ok(state) = state else {
        return Some("Slurm is not installed (CI starts one with shared/ci/slurm-up.sh)");
    };
    let state = String::from_utf8_lossy(&state.stdout);
    assert!(
        ["idle", "mix", "alloc", "comp"]
            .iter()
            .any(|ok| state.contains(ok)),
        "the Slurm nodes are not usable: sinfo says {state:?}"
    );
    None
}

#[tokio::test]
async fn agents_of_one_srun_step_read_one_key_file_and_each_names_its_node() {
    if let Some(reason) = slurm_missing() {
        eprintln!("skipped: {reason}");
        return;
    }
    let mut scheduler = Scheduler::new().await;
    // One step for all nodes, so one environment and one key file: as the
    // scheduler starts them.
    let agent = scheduler.agent_command(&[]);
    let mut srun = Command::new("srun");
    srun.args([
        "-N",
        "2",
        "--ntasks-per-node=1",
        "--oversubscribe",
        "--export=ALL",
    ])
    .arg(agent.get_program())
    .stdin(Stdio::null())
    .stderr(Stdio::piped());
    for (name, value) in agent.get_envs() {
        match value {
            Some(value) => srun.env(name, value),
            None => srun.env_remove(name),
        };
    }
    let mut step = AgentProcess(srun.spawn().expect("srun starts"));
    let (first, _) = scheduler.next().await;
    let (route, mut sealer, mut opener, frames) = scheduler.first_of_a_new_connection().await;
    let (second, _) = protocol::decode::<FromAgent>(&mut opener, frames).expect("its Hello opens");
    let mut nodes: Vec<String> = [first, second]
        .into_iter()
        .map(|hello| match hello {
            FromAgent::Hello { node, .. } => node,
            other => panic!("an agent's first message is its Hello: {other:?}"),
        })
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["node1", "node2"]);
    scheduler.send(&ToAgent::Shutdown).await;
    let mut message = ZmqMessage::from(route);
    for frame in protocol::encode(&mut sealer, &ToAgent::Shutdown, Vec::new()) {
        message.push_back(frame);
    }
    scheduler.socket.send(message).await.unwrap();
    assert_eq!(step.exit_code().await, Some(0), "{}", step.stderr());
}

#[tokio::test]
async fn workers_get_distinct_gpus_of_the_node_and_give_them_back_when_they_exit() {
    let mut scheduler = Scheduler::new().await;
    let mut agent = scheduler.start_agent(&[("CUDA_VISIBLE_DEVICES", "0,1,2")]);
    scheduler.next().await;
    let script = "echo $CUDA_VISIBLE_DEVICES; exec sleep 1000";
    scheduler.send(&shell_with_gpus(1, 2, script)).await;
    assert_eq!(scheduler.first_line(WorkerId(1)).await, "0,1");
    scheduler.send(&shell_with_gpus(2, 2, script)).await;
    let exited = scheduler.until_exited(WorkerId(2)).await;
    let FromAgent::Exited { message, .. } = exited else {
        unreachable!()
    };
    assert!(
        message.starts_with("could not start worker: node ")
            && message.contains("asks for 2 GPUs, and 1 of this node's 3 are free"),
        "{message}"
    );
    scheduler.send(&shell_with_gpus(3, 1, script)).await;
    assert_eq!(scheduler.first_line(WorkerId(3)).await, "2");
    scheduler
        .send(&ToAgent::Stop {
            worker: WorkerId(1),
        })
        .await;
    scheduler.until_exited(WorkerId(1)).await;
    scheduler.send(&shell_with_gpus(4, 2, script)).await;
    assert_eq!(scheduler.first_line(WorkerId(4)).await, "0,1");
    scheduler.send(&ToAgent::Shutdown).await;
    assert_eq!(agent.exit_code().await, Some(0), "{}", agent.stderr());
}

/// The directory of an agent's local socket, from its address.
fn private_dir(address: &str) -> PathBuf {
    let socket = address
        .strip_prefix("ipc://")
        .unwrap_or_else(|| panic!("a worker's address is the agent's ipc socket: {address}"));
    Path::new(socket).parent().unwrap().to_path_buf()
}

/// A call pickled as pmp's client pickles one (protocol 5, large buffers
/// out of band), by the Python pmp is installed in.
struct PickledCall {
    function: Bytes,
    call: Vec<Bytes>,
    /// What the worker returns for it, pickled as pmp's worker pickles it.
    result: Vec<Bytes>,
}

/// The call `f(*args)` and its `expected` result, all three defined by the
/// Python code `setup`.
fn pickled_call(setup: &str) -> PickledCall {
    const SCRIPT: &str = r#"
import os, sys, cloudpickle
from pmp.client import serialize
out = sys.argv[1]
exec(sys.argv[2])
def put(name, frames):
    for i, frame in enumerate(frames):
        with open(os.path.join(out, f"{name}.{i}"), "wb") as file:
            file.write(frame)
put("function", [cloudpickle.dumps(f, protocol=5)])
put("call", serialize.dumps_call(args, {}, None))
put("result", serialize.dumps_result(expected))
"#;
    let out = std::env::temp_dir().join(format!(
        "pmp-agent-test-call-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir(&out).unwrap();
    let status = Command::new(python())
        .args(["-c", SCRIPT])
        .arg(&out)
        .arg(setup)
        .status()
        .expect("the Python pmp is installed in runs");
    assert!(status.success(), "pickling the call failed");
    let read = |name: &str| -> Vec<Bytes> {
        (0..)
            .map_while(|i| std::fs::read(out.join(format!("{name}.{i}"))).ok())
            .map(Bytes::from)
            .collect()
    };
    let call = PickledCall {
        function: read("function").remove(0),
        call: read("call"),
        result: read("result"),
    };
    let _ = std::fs::remove_dir_all(&out);
    call
}

/// Start the real worker program as worker `id`, its scheduler said to be
/// the stand-in (which the agent's own address replaces).
async fn start_worker(scheduler: &mut Scheduler, id: u32) {
    start_worker_with_limit(scheduler, id, LONG_SILENCE).await;
}

/// `start_worker`, the worker exiting after `silence` seconds with no word.
async fn start_worker_with_limit(scheduler: &mut Scheduler, id: u32, silence: &str) {
    let address = scheduler.address.clone();
    scheduler
        .send(&ToAgent::Start {
            worker: WorkerId(id),
            program: worker_program().to_string_lossy().into_owned(),
            args: Vec::new(),
            variables: vec![
                ("PMP_SCHEDULER".into(), address),
                ("PMP_WORKER_ID".into(), id.to_string()),
                ("PMP_HEARTBEAT_TIMEOUT".into(), silence.into()),
                ("PMP_RANKS".into(), "1".into()),
            ],
            cwd: None,
            gpus: 0,
        })
        .await;
}

/// A `Run` of task `task` for `call`: its function inline, then its frames.
fn run(task: u64, call: &PickledCall) -> (ToWorker, Vec<Bytes>) {
    let message = ToWorker::Run {
        task: TaskId(task),
        function: FunctionRef::Inline { slot: 0 },
        call_frames: call.call.len() as u32,
        dependency_frames: Vec::new(),
        store: None,
        shared: Vec::new(),
        shared_results: true,
    };
    let mut frames = vec![call.function.clone()];
    frames.extend(call.call.iter().cloned());
    (message, frames)
}

#[tokio::test]
async fn a_workers_call_goes_through_the_agent_and_its_exit_comes_after_its_done() {
    let call = pickled_call("def f(x, y): return f'{x}+{y}'\nargs = (2, 3)\nexpected = '2+3'");
    let mut scheduler = Scheduler::new().await;
    let mut agent = scheduler.start_agent(&[]);
    scheduler.next().await;
    start_worker(&mut scheduler, 5).await;
    scheduler.relayed_hello(WorkerId(5)).await;
    let (message, frames) = run(1, &call);
    let relay = |message| ToAgent::Relay {
        worker: WorkerId(5),
        message,
        kept: Vec::new(),
    };
    scheduler.send_with(&relay(message), frames).await;
    // Right behind the Run: the worker exits once it is done.
    scheduler.send(&relay(ToWorker::Shutdown)).await;
    let (worker, done, frames) = scheduler.next_relayed().await;
    assert_eq!(worker, WorkerId(5));
    assert!(
        matches!(
            &done,
            FromWorker::Done {
                task: TaskId(1),
                outcome: Outcome::Returned,
                ..
            }
        ),
        "{done:?}"
    );
    assert_eq!(
        frames, call.result,
        "the result, pickled as pmp's worker does"
    );
    let exited = scheduler.next_unprinted().await;
    assert!(
        matches!(
            exited,
            FromAgent::Exited {
                worker: WorkerId(5),
                exit_code: Some(0),
                ..
            }
        ),
        "after its Done, its exit: {exited:?}"
    );
    scheduler.send(&ToAgent::Shutdown).await;
    assert_eq!(agent.exit_code().await, Some(0), "{}", agent.stderr());
    assert_eq!(
        scheduler.connections.len(),
        1,
        "only the agent connects to the scheduler, never its worker"
    );
}

#[tokio::test]
async fn its_workers_live_on_its_own_pings_and_their_pongs_stay_on_the_node() {
    let call = pickled_call("def f(): return 'alive'\nargs = ()\nexpected = 'alive'");
    let mut scheduler = Scheduler::new().await;
    let mut agent = scheduler.start_agent(&[("PMP_HEARTBEAT_TIMEOUT", SHORT_SILENCE)]);
    scheduler.next().await;
    start_worker_with_limit(&mut scheduler, 5, SHORT_SILENCE).await;
    scheduler.relayed_hello(WorkerId(5)).await;
    // Three limits in which the scheduler pings the agent alone: the
    // worker, which exits after one limit with no word, lives on its
    // agent's pings, and its answers are not relayed.
    for _ in 0..30 {
        scheduler.send(&ToAgent::Ping).await;
        assert_eq!(scheduler.next_unprinted().await, FromAgent::Pong);
        tokio::time::sleep(TICK).await;
    }
    let (message, frames) = run(1, &call);
    let run = ToAgent::Relay {
        worker: WorkerId(5),
        message,
        kept: Vec::new(),
    };
    scheduler.send_with(&run, frames).await;
    let (worker, done, frames) = scheduler.next_relayed().await;
    assert_eq!(worker, WorkerId(5));
    assert!(matches!(done, FromWorker::Done { .. }), "{done:?}");
    assert_eq!(frames, call.result);
    scheduler.send(&ToAgent::Shutdown).await;
    assert_eq!(agent.exit_code().await, Some(0), "{}", agent.stderr());
    assert!(
        !scheduler
            .relayed
            .iter()
            .any(|(_, message)| matches!(message, FromWorker::Pong)),
        "{:?}",
        scheduler.relayed
    );
}

#[tokio::test]
async fn a_worker_that_stops_answering_is_stopped_by_its_agent_and_reported() {
    let mut scheduler = Scheduler::new().await;
    let mut agent = scheduler.start_agent(&[("PMP_HEARTBEAT_TIMEOUT", SHORT_SILENCE)]);
    scheduler.next().await;
    // The worker itself would wait long for word from its agent.
    start_worker(&mut scheduler, 5).await;
    let FromWorker::Hello { pid, .. } = scheduler.relayed_hello(WorkerId(5)).await else {
        unreachable!()
    };
    // Frozen, threads and all: it answers nothing.
    // SAFETY: plain syscall.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
    let deadline = Instant::now() + PATIENCE;
    let exited = loop {
        scheduler.send(&ToAgent::Ping).await;
        match scheduler.next_unprinted().await {
            FromAgent::Pong => {}
            exited @ FromAgent::Exited { .. } => break exited,
            other => panic!("a Pong or the worker's exit: {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "the agent never gave up its silent worker"
        );
        tokio::time::sleep(TICK).await;
    };
    let FromAgent::Exited {
        worker, message, ..
    } = &exited
    else {
        unreachable!()
    };
    assert_eq!(*worker, WorkerId(5));
    assert!(
        message.contains("it stopped answering heartbeats for 2 s"),
        "{message}"
    );
    assert!(gone(pid).await);
    scheduler.send(&ToAgent::Shutdown).await;
    assert_eq!(agent.exit_code().await, Some(0), "{}", agent.stderr());
}

/// A 2 MiB array argument, out of band in the call's pickle, and a
/// function that says its digest and whether its bytes are mapped from a
/// shared-memory segment (pmp's memfd) rather than received on a socket.
const LARGE_ARGUMENT: &str = r#"
import hashlib, numpy
args = (numpy.arange(2 << 20, dtype=numpy.uint8),)
def f(a):
    import hashlib
    address = a.__array_interface__["data"][0]
    mapped = ""
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split(None, 5)
            start, end = (int(x, 16) for x in parts[0].split("-"))
            if start <= address < end:
                mapped = parts[5].strip() if len(parts) > 5 else ""
    return hashlib.sha256(a.tobytes()).hexdigest(), "pmp-frame" in mapped
expected = (hashlib.sha256(args[0].tobytes()).hexdigest(), True)
"#;

#[tokio::test]
async fn a_kept_buffer_reaches_the_worker_through_the_agents_shared_memory() {
    let call = pickled_call(LARGE_ARGUMENT);
    assert_eq!(call.call.len(), 2, "the pickle, then the array's buffer");
    let buffer = call.call[1].clone();
    assert_eq!(buffer.len(), 2 << 20);
    let hash = *blake3::hash(&buffer).as_bytes();
    let mut scheduler = Scheduler::new().await;
    let mut agent = scheduler.start_agent(&[]);
    scheduler.next().await;
    start_worker(&mut scheduler, 3).await;
    scheduler.relayed_hello(WorkerId(3)).await;
    // Bytes that are not the hash's are not kept.
    let wrong = *blake3::hash(b"something else").as_bytes();
    scheduler
        .send_with(&ToAgent::Keep { hash: wrong }, vec![buffer.clone()])
        .await;
    scheduler
        .send_with(&ToAgent::Keep { hash }, vec![buffer.clone()])
        .await;
    // The frame crosses empty: the agent fills it.
    let (message, mut frames) = run(1, &call);
    frames[2] = Bytes::new();
    let kept = |hash| vec![KeptFrame { index: 2, hash }];
    let relay = |message, kept| ToAgent::Relay {
        worker: WorkerId(3),
        message,
        kept,
    };
    scheduler
        .send_with(&relay(message.clone(), kept(hash)), frames.clone())
        .await;
    let (_, done, result) = scheduler.next_relayed().await;
    assert!(
        matches!(
            &done,
            FromWorker::Done {
                task: TaskId(1),
                outcome: Outcome::Returned,
                ..
            }
        ),
        "{done:?}"
    );
    assert_eq!(
        result, call.result,
        "the array arrived whole, mapped from the agent's segment"
    );
    // Again: the worker says it unmapped the first one's segment, which
    // the agent keeps to itself.
    let (again, _) = run(2, &call);
    scheduler
        .send_with(&relay(again, kept(hash)), frames.clone())
        .await;
    let (_, done, result) = scheduler.next_relayed().await;
    assert!(
        matches!(
            &done,
            FromWorker::Done {
                task: TaskId(2),
                ..
            }
        ),
        "{done:?}"
    );
    assert_eq!(result, call.result);
    // A hash it does not hold (the one it refused to keep): the scheduler
    // hears it cannot be mapped, and the worker never sees the Run.
    scheduler
        .send_with(&relay(message, kept(wrong)), frames)
        .await;
    let (worker, cannot, _) = scheduler.next_relayed().await;
    assert_eq!(worker, WorkerId(3));
    let FromWorker::CannotMap {
        task,
        segments,
        reason,
    } = cannot
    else {
        panic!("expected CannotMap: {cannot:?}")
    };
    assert_eq!((task, segments), (TaskId(1), Vec::new()));
    assert!(reason.contains("does not hold kept buffer"), "{reason}");
    scheduler.send(&relay(ToWorker::Shutdown, Vec::new())).await;
    scheduler.until_exited(WorkerId(3)).await;
    scheduler.send(&ToAgent::Forget { hash }).await;
    scheduler.send(&ToAgent::Shutdown).await;
    assert_eq!(agent.exit_code().await, Some(0));
    let relayed: Vec<_> = scheduler.relayed.iter().map(|(_, m)| m.clone()).collect();
    assert!(
        !relayed
            .iter()
            .any(|m| matches!(m, FromWorker::Released { .. })),
        "{relayed:?}"
    );
    let stderr = agent.stderr();
    assert!(stderr.contains("does not match its hash"), "{stderr}");
}

/// Send `message` sealed with `key` on a new connection to `address`,
/// which stays open as long as the returned socket.
async fn send_on_local_socket(
    address: &str,
    key: &Key,
    message: &FromWorker,
) -> zeromq::DealerSocket {
    let mut socket = zeromq::DealerSocket::new();
    socket
        .connect(address)
        .await
        .expect("connect to the agent's socket");
    let (mut sealer, _) = seal::connect(key, Protection::Signed);
    let wire = protocol::encode(&mut sealer, message, Vec::new());
    let mut out = ZmqMessage::from(wire[0].clone());
    for frame in wire.into_iter().skip(1) {
        out.push_back(frame);
    }
    socket.send(out).await.expect("send to the agent");
    socket
}

#[tokio::test]
async fn on_its_local_socket_only_an_expected_hello_with_its_key_is_relayed() {
    let mut scheduler = Scheduler::new().await;
    let mut agent = scheduler.start_agent(&[]);
    scheduler.next().await;
    // A worker that never connects itself, and tells its address and key.
    scheduler
        .send(&shell(
            1,
            "echo \"$PMP_SCHEDULER $PMP_KEY\"; exec sleep 1000",
        ))
        .await;
    let line = scheduler.first_line(WorkerId(1)).await;
    let (address, key) = line.split_once(' ').unwrap();
    let key = Key::from_hex(key).unwrap();
    let dir = private_dir(address);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{}", dir.display());
    let hello = |worker, pid| FromWorker::Hello {
        worker: WorkerId(worker),
        pid,
        host: "here".into(),
    };
    // Forged (another key), then a worker it did not start, then worker 1.
    let _forged = send_on_local_socket(address, &Key::generate(), &hello(1, 111)).await;
    let _not_started = send_on_local_socket(address, &key, &hello(99, 222)).await;
    let _expected = send_on_local_socket(address, &key, &hello(1, 333)).await;
    let (worker, relayed, _) = scheduler.next_relayed().await;
    assert_eq!((worker, relayed), (WorkerId(1), hello(1, 333)));
    scheduler.send(&ToAgent::Shutdown).await;
    scheduler.until_exited(WorkerId(1)).await;
    assert_eq!(agent.exit_code().await, Some(0));
    assert_eq!(scheduler.relayed, vec![(WorkerId(1), hello(1, 333))]);
    let stderr = agent.stderr();
    assert!(
        stderr.contains("dropped a message on its local socket"),
        "{stderr}"
    );
    assert!(
        !dir.exists(),
        "its private directory goes when it shuts down"
    );
}

#[tokio::test]
async fn a_message_for_a_worker_not_connected_yet_waits_for_it() {
    let mut scheduler = Scheduler::new().await;
    let mut agent = scheduler.start_agent(&[]);
    scheduler.next().await;
    start_worker(&mut scheduler, 6).await;
    // Right behind its Start: the agent reads it long before the forked
    // worker can have connected. (Not a Ping: the agent keeps the
    // workers' Pongs.)
    scheduler
        .send(&ToAgent::Relay {
            worker: WorkerId(6),
            message: ToWorker::Retract { task: TaskId(1) },
            kept: Vec::new(),
        })
        .await;
    scheduler.relayed_hello(WorkerId(6)).await;
    let (worker, kept, _) = scheduler.next_relayed().await;
    assert_eq!(
        (worker, kept),
        (WorkerId(6), FromWorker::Kept { task: TaskId(1) })
    );
    scheduler.send(&ToAgent::Shutdown).await;
    assert_eq!(agent.exit_code().await, Some(0), "{}", agent.stderr());
}
