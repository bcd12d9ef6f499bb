//! pmp-worker as a node agent (`PMP_AGENT`), started for real and driven by
//! a stand-in scheduler: a ROUTER socket on loopback that opens the agent's
//! session from its Hello and speaks `protocol::agent` to it. The workers
//! it starts are real processes (a shell, and pmp-worker itself, forked by
//! the agent's zygote, which needs the Python pmp is installed in:
//! `PYO3_PYTHON`, else the one `install.sh` recorded in target/pmp-python).
//! Linux: processes are watched through /proc, and only Linux has zygotes.
#![cfg(target_os = "linux")]

use pmp_scheduler::auth::Key;
use pmp_scheduler::ids::WorkerId;
use pmp_scheduler::protocol::agent::{FromAgent, ToAgent};
use pmp_scheduler::protocol::{self, FromWorker, Stream};
use pmp_scheduler::seal::{Opener, Protection, SaltsSeen, Sealer};
use pmp_scheduler::Bytes;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use zeromq::{RouterSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

/// Only bounds a test that would otherwise hang: what has not come by then
/// never will.
const PATIENCE: Duration = Duration::from_secs(60);

/// The heartbeat limit of agents that must outlive their test.
const LONG_SILENCE: &str = "120";

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
                    return protocol::decode(opener, frames).expect("the agent's message opens");
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

    /// The agent's next message other than what it forwards of its
    /// workers' output, which is kept in `printed`.
    async fn next_unprinted(&mut self) -> FromAgent {
        loop {
            match self.next().await {
                (FromAgent::Printed { worker, stream }, frames) => {
                    let text = String::from_utf8_lossy(&frames[0]).into_owned();
                    self.printed.push((worker, stream, text));
                }
                (message, _) => return message,
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
        let wire = self.seal(message);
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

    /// A worker's Hello, on a connection of its own, encrypted.
    async fn worker_hello(&mut self) -> FromWorker {
        let (_, _, mut opener, frames) = self.first_of_a_new_connection().await;
        protocol::decode(&mut opener, frames)
            .expect("the worker's Hello opens")
            .0
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
                        let message =
                            protocol::decode(opener, frames).expect("the agent's message opens");
                        self.from_agent.push_back(message);
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
        ("CUDA_VISIBLE_DEVICES", "1,3"),
    ]);
    let (hello, _) = scheduler.next().await;
    assert_eq!(
        hello,
        FromAgent::Hello {
            node: "node7".into(),
            pid: agent.pid(),
            cpus: 5,
            gpus: vec!["1".into(), "3".into()],
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
                "echo hi >&2; echo \"cwd=$(pwd) x=$X wire=$PMP_WIRE key=$PMP_KEY \
                 agent=${PMP_AGENT-unset} file=${PMP_KEY_FILE-unset} \
                 rank=${SLURM_PROCID-unset},${PMI_RANK-unset} pmix=$PMIX_MCA_setting\"; exit 3"
                    .into(),
            ],
            variables: vec![("X".into(), "given".into())],
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
    // The worker's own connection is encrypted with the executor's key;
    // the agent's own variables stay with the agent, and so does its rank.
    assert_eq!(
        stdout,
        format!(
            "cwd={} x=given wire=encrypted key={} agent=unset file=unset \
             rank=unset,unset pmix=kept\n",
            cwd.display(),
            scheduler.key.to_hex()
        )
    );
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
async fn the_worker_program_is_forked_by_its_zygote_and_connects_encrypted() {
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
    let hello = scheduler.worker_hello().await;
    let FromWorker::Hello { worker, pid, .. } = hello else {
        panic!("a worker's first message is its Hello: {hello:?}")
    };
    assert_eq!(worker, WorkerId(5));
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
async fn without_word_from_the_scheduler_it_kills_its_workers_and_exits() {
    let mut scheduler = Scheduler::new().await;
    let mut agent = AgentProcess(
        scheduler
            .agent_command(&[("PMP_HEARTBEAT_TIMEOUT", "2")])
            .spawn()
            .unwrap(),
    );
    scheduler.next().await;
    scheduler.send(&shell(1, SLEEP_IN_GROUP)).await;
    let sleep: u32 = scheduler.first_line(WorkerId(1)).await.parse().unwrap();
    // No more messages: the agent goes, and its worker's group with it.
    assert_eq!(agent.exit_code().await, Some(70), "{}", agent.stderr());
    assert!(gone(sleep).await);
    assert!(agent.stderr().contains("no word from the scheduler"));
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
    let FromWorker::Hello { pid: forked, .. } = scheduler.worker_hello().await else {
        panic!("a worker's first message is its Hello")
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
