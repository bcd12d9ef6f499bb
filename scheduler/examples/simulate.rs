//! The scheduler at the scale of issue 24, without the machines: the real
//! scheduler server (the one a Python executor starts, through
//! `SchedulerHandle`) with `--agents` nodes of `--cores` cores, whose node
//! agents are stand-ins in this process: each a tokio task with its own
//! DEALER connection over loopback TCP, its session sealed with the
//! executor's key read from the agents' key file, as a real agent's. A
//! stand-in answers for each of its workers what a real worker would send:
//! Hello when started, Done with a small result frame for each Run (it never
//! unpickles anything), Pong, Kept, and its exit when stopped.
//!
//! Where the scheduler relays its workers' traffic through their agent
//! (`ToAgent::Relay`), a stand-in answers on its one connection, what it
//! read together answered as one batch (`protocol::batch`), as a real
//! agent's writer sends what its workers said meanwhile. Where it
//! hands a worker the workers' socket instead (`PMP_SCHEDULER` in its
//! Start), the stand-in opens a connection for that worker, as a real
//! worker does: two file descriptors per worker in this process, so the
//! scale is bounded by `ulimit -n`.
//!
//! It submits `--calls` no-op calls through the client's submit path,
//! keeping at most `--window` unfinished (by default two per worker: one
//! running and one sent ahead), waits for every result, and prints one
//! JSON line: `calls_per_s` (from the first submit to the last result),
//! `peak_rss_mb` (this process's VmHWM: the stand-ins and the submitting
//! client share the process, so it is an upper bound for the scheduler),
//! `held_bytes_per_call` (resident memory grown from the pool being ready to
//! the last result, per call: the scheduler keeps each finished call's
//! record while the client holds its Future, as here; an upper bound too),
//! `agents`, `cores`, `workers`, `calls`, `mode` and `wire` (`relay` or
//! `direct`), `pool_rss_mb` (resident memory once the pool is ready), and
//! `cpu_us_per_call`: the user and system CPU each part used over the
//! calls, per call (`scheduler`, `stand_ins`, `client`, `other`, `total`),
//! which other work on the machine changes far less than `calls_per_s`.
//!
//! `--heartbeat` sets the seconds between heartbeats (the timeout is ten of
//! them): 1 by default, as a Python executor's. The scheduler pings the
//! agents, one Ping a node each heartbeat, not the workers under them (a
//! real agent pings its own workers on its node; a stand-in has nothing to
//! ping), so the default heartbeat costs little at any number of cores.
//! Workers with their own connection (`wire` `direct`) are pinged one by
//! one, and their stand-ins answer.
//!
//! `--fresh` starts a worker per call (fork per call on a real node, which
//! a stand-in does not do) instead of the default pool of one single-core
//! worker per core.
//!
//! `cargo run --release -p pmp-scheduler --example simulate -- --agents 1000 --cores 128 --calls 1000000`

/// The allocator the scheduler has in a Python executor (`_pmp`'s).
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use pmp_scheduler::auth::Key;
use pmp_scheduler::backend::simulated::AgentsWanted;
use pmp_scheduler::capacity::Node;
use pmp_scheduler::core::{Allocation, Event, TaskSpec, WorkerState};
use pmp_scheduler::handle::{BackendChoice, Config, SchedulerHandle};
use pmp_scheduler::ids::{TaskId, WorkerId};
use pmp_scheduler::plan::Launcher;
use pmp_scheduler::protocol::agent::{FromAgent, ToAgent};
use pmp_scheduler::protocol::batch::{self, Batch};
use pmp_scheduler::protocol::{self, FromWorker, Outcome, Payload, ToWorker};
use pmp_scheduler::resources::{Gpus, ResourceRequest};
use pmp_scheduler::seal::{self, Protection, Sealer};
use pmp_scheduler::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::unbounded_channel;
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

/// What every stand-in worker's call returns: a small pickle's worth.
const RESULT: &[u8] = b"\x80\x05N.";
/// How many directly connected stand-in workers may be between connecting
/// and their Hello being read at once, and how long each is given for
/// that: the workers' socket keeps at most `admission::MAX_WAITING`
/// unadmitted connections, closing the oldest, and a whole pool of
/// stand-ins connects far faster than real workers start.
const CONNECTING: usize = 64;
const ADMISSION_PAUSE: Duration = Duration::from_millis(20);
/// The host stand-in workers say they run on: not this one, so that the
/// scheduler sends them no shared memory.
const STAND_IN_HOST: &str = "stand-in";

struct Args {
    agents: u32,
    cores: u32,
    calls: u64,
    fresh: bool,
    window: Option<u64>,
    /// Seconds between heartbeats; the timeout is ten of them.
    heartbeat: u64,
}

const USAGE: &str = "usage: simulate [--agents N] [--cores C] [--calls M] [--window W] \
                     [--heartbeat SECONDS] [--fresh]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        agents: 4,
        cores: 4,
        calls: 2000,
        fresh: false,
        window: None,
        heartbeat: 1,
    };
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        if flag == "--fresh" {
            args.fresh = true;
            continue;
        }
        let value = words
            .next()
            .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))?;
        let number = |min: u64| -> Result<u64, String> {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| *n >= min)
                .ok_or_else(|| {
                    format!("{flag} is {value:?}: a whole number of at least {min} is expected")
                })
        };
        let small = |n: u64| -> Result<u32, String> {
            u32::try_from(n).map_err(|_| format!("{flag} is {n}: at most {} is allowed", u32::MAX))
        };
        match flag.as_str() {
            "--agents" => args.agents = small(number(1)?)?,
            "--cores" => args.cores = small(number(1)?)?,
            "--calls" => args.calls = number(1)?,
            "--window" => args.window = Some(number(1)?),
            "--heartbeat" => args.heartbeat = number(1)?,
            _ => return Err(format!("{flag} is not an option; {USAGE}")),
        }
    }
    if u64::from(args.agents) * u64::from(args.cores) > u64::from(u32::MAX) {
        return Err("--agents times --cores is more workers than a pool can have".into());
    }
    Ok(args)
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("simulate: {e}");
        std::process::exit(2);
    });
    match simulate(&args) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("simulate: {e}");
            std::process::exit(1);
        }
    }
    // The stand-ins' thread and what the scheduler left are not waited for.
    std::process::exit(0);
}

fn simulate(args: &Args) -> Result<String, String> {
    let workers = args.agents * args.cores;
    let nodes: Vec<Node> = (0..args.agents)
        .map(|i| Node {
            name: format!("sim{i}"),
            cpus: args.cores,
            gpus: Gpus::Counted(0),
            memory_mb: None,
        })
        .collect();
    let names: Vec<String> = nodes.iter().map(|node| node.name.clone()).collect();
    let (wanted_tx, wanted_rx) = std::sync::mpsc::channel();
    let allocation = if args.fresh {
        Allocation::PerTask
    } else {
        Allocation::Block {
            workers,
            resources: ResourceRequest::default(),
        }
    };
    let config = Config {
        backend: BackendChoice::Simulated {
            nodes,
            agents_wanted: wanted_tx,
        },
        launcher: Launcher::Agent,
        worker_program: "pmp-worker".into(),
        python: "python3".into(),
        sys_path: Vec::new(),
        allocation,
        max_cpus: workers,
        max_workers: None,
        gpus: Gpus::Counted(0),
        init: None,
        bind_host: "127.0.0.1".into(),
        // A Python executor's by default (`native_engine.py`): 1 s, 10 s.
        heartbeat_interval: Duration::from_secs(args.heartbeat),
        heartbeat_timeout: Duration::from_secs(10 * args.heartbeat),
        tool_dirs: Vec::new(),
        elastic: None,
    };
    let (events_tx, events) = std::sync::mpsc::channel();
    let started = Instant::now();
    let mut handle = SchedulerHandle::start(config, events_tx)?;
    let AgentsWanted { address, key_file } = wanted_rx
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| "the scheduler never said where its agents connect".to_string())?;
    let key = std::fs::read_to_string(&key_file)
        .map_err(|e| format!("cannot read the agents' key file: {e}"))
        .and_then(|text| Key::from_hex(&text))?;
    let _ = std::fs::remove_file(&key_file);
    let relayed = Arc::new(AtomicBool::new(false));
    let stand_ins = {
        let relayed = relayed.clone();
        std::thread::Builder::new()
            .name("stand-in-agents".into())
            .spawn(move || run_stand_ins(names, address, key, relayed))
            .map_err(|e| format!("cannot start the stand-ins' thread: {e}"))?
    };
    if !args.fresh {
        wait_for_pool(&handle, workers, &stand_ins)?;
    }
    let pool_ready_s = started.elapsed().as_secs_f64();
    let memory_before = resident_kb("VmRSS");
    let cpu_before = thread_cpu();
    let window = args.window.unwrap_or(2 * u64::from(workers));
    let started = Instant::now();
    let (mut submitted, mut finished) = (0u64, 0u64);
    while finished < args.calls {
        while submitted < args.calls && submitted - finished < window {
            submitted += 1;
            handle.submit(no_op(submitted))?;
        }
        let event = events.recv_timeout(STUCK).map_err(|_| {
            format!(
                "no result for {} s; {finished} of {} calls came back",
                STUCK.as_secs(),
                args.calls
            )
        })?;
        match event {
            Event::Finished { .. } => finished += 1,
            Event::Running { .. } | Event::Output { .. } => {}
            other => return Err(format!("a call did not finish: {other:?}")),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_per_call(&cpu_before, &thread_cpu(), args.calls);
    let held = resident_kb("VmRSS").saturating_sub(memory_before) * 1024;
    handle.shutdown(false);
    handle.join();
    let line = serde_json::json!({
        "calls_per_s": (args.calls as f64 / elapsed).round(),
        "peak_rss_mb": (resident_kb("VmHWM") as f64 / 1024.0).round(),
        "held_bytes_per_call": (held as f64 / args.calls as f64).round(),
        "agents": args.agents,
        "cores": args.cores,
        "workers": if args.fresh { 0 } else { workers },
        "calls": finished,
        "mode": if args.fresh { "fresh" } else { "block" },
        "wire": if relayed.load(Ordering::Relaxed) { "relay" } else { "direct" },
        "heartbeat_s": args.heartbeat,
        "pool_ready_s": (pool_ready_s * 100.0).round() / 100.0,
        "pool_rss_mb": (memory_before as f64 / 1024.0).round(),
        "elapsed_s": (elapsed * 100.0).round() / 100.0,
        "cpu_us_per_call": cpu,
    });
    Ok(line.to_string())
}

/// A call as the client submits one: its pickles are any small bytes, since
/// no stand-in unpickles them.
fn no_op(id: u64) -> TaskSpec {
    TaskSpec {
        id: TaskId(id),
        function: Bytes::from_static(b"no-op function pickle"),
        call: Payload::new(vec![Bytes::from_static(b"no-op arguments pickle")]),
        dependencies: Vec::new(),
        resources: ResourceRequest::default(),
        store: None,
        restart_limit: 0,
        run_time_max: None,
    }
}

/// How long the pool may start, or the calls finish, without progress.
const STUCK: Duration = Duration::from_secs(60);

/// Wait until every pool worker said hello (the stand-ins connected and
/// answered their Starts).
fn wait_for_pool(
    handle: &SchedulerHandle,
    workers: u32,
    stand_ins: &std::thread::JoinHandle<()>,
) -> Result<(), String> {
    let (mut ready, mut progress) = (0, Instant::now());
    loop {
        let snapshot = handle
            .snapshot()
            .ok_or("the scheduler stopped while its pool started")?;
        let idle = snapshot
            .workers
            .iter()
            .filter(|w| w.state == WorkerState::Idle)
            .count();
        if idle == workers as usize {
            return Ok(());
        }
        if stand_ins.is_finished() {
            return Err("the stand-in agents ended before the pool was ready".into());
        }
        if idle > ready {
            (ready, progress) = (idle, Instant::now());
        } else if progress.elapsed() > STUCK {
            return Err(format!(
                "{idle} of {workers} workers ready, none more for {} s",
                STUCK.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// This process's `field` of /proc/self/status (VmRSS, VmHWM), in kB.
fn resident_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user and system) each thread of this process has used, by
/// thread name; the main thread (the submitting client) as `main`.
fn thread_cpu() -> HashMap<String, f64> {
    // SAFETY: sysconf only reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut by_name = HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_name;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `pid (name) state ...`: the name may hold spaces, so the fields
        // are counted from its closing parenthesis; utime and stime are
        // the 14th and 15th fields, the 12th and 13th after the name.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let main = task.file_name().to_str() == Some(&std::process::id().to_string());
        let name = if main {
            "main".to_string()
        } else {
            stat[open + 1..close].to_string()
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let field = |n: usize| fields.get(n).and_then(|f| f.parse::<f64>().ok());
        if let (Some(user), Some(system)) = (field(11), field(12)) {
            *by_name.entry(name).or_insert(0.0) += (user + system) / ticks;
        }
    }
    by_name
}

/// The CPU time per call each part of this process used from `before` to
/// `after`, in µs: the scheduler's thread, the stand-ins', the submitting
/// client's (the main thread) and the rest; what a loaded machine does not
/// change, unlike `calls_per_s`.
fn cpu_per_call(
    before: &HashMap<String, f64>,
    after: &HashMap<String, f64>,
    calls: u64,
) -> serde_json::Value {
    let mut parts: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
    for (name, seconds) in after {
        let used = seconds - before.get(name).copied().unwrap_or(0.0);
        let part = match name.as_str() {
            "pmp-scheduler" => "scheduler",
            "stand-in-agents" => "stand_ins",
            "main" => "client",
            _ => "other",
        };
        *parts.entry(part).or_insert(0.0) += used;
        *parts.entry("total").or_insert(0.0) += used;
    }
    let per_call = |seconds: f64| (seconds * 1e6 / calls as f64 * 10.0).round() / 10.0;
    parts
        .into_iter()
        .map(|(part, seconds)| (part.to_string(), serde_json::json!(per_call(seconds))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Every stand-in agent, on one thread of their own: the scheduler has its
/// own, as in a Python executor.
fn run_stand_ins(names: Vec<String>, address: String, key: Key, relayed: Arc<AtomicBool>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    runtime.block_on(async move {
        let connecting = Arc::new(tokio::sync::Semaphore::new(CONNECTING));
        let all_connected = Arc::new(tokio::sync::Barrier::new(names.len()));
        let agents: Vec<_> = names
            .into_iter()
            .map(|name| {
                let agent = stand_in_agent(
                    name,
                    address.clone(),
                    key.clone(),
                    relayed.clone(),
                    connecting.clone(),
                    all_connected.clone(),
                );
                // Said at once, not when its turn to be awaited comes: the
                // scheduler would only see its node go silent.
                tokio::spawn(async move {
                    if let Err(e) = agent.await {
                        eprintln!("simulate: a stand-in agent failed: {e}");
                        std::process::exit(1);
                    }
                })
            })
            .collect();
        for agent in agents {
            let _ = agent.await;
        }
    });
}

/// What reaches a stand-in agent: a message from the scheduler, or the end
/// of one of its directly connected workers.
enum Input {
    Scheduler(Vec<Bytes>),
    Exited(WorkerId),
}

/// One node's agent: its connection, and its workers' answers.
async fn stand_in_agent(
    node: String,
    address: String,
    key: Key,
    relayed: Arc<AtomicBool>,
    connecting: Arc<tokio::sync::Semaphore>,
    all_connected: Arc<tokio::sync::Barrier>,
) -> Result<(), String> {
    let mut socket = DealerSocket::new();
    socket
        .connect(&address)
        .await
        .map_err(|e| format!("{node} cannot connect to {address}: {e}"))?;
    // Every agent connected before the first Hello is read, as when the
    // scheduler is busy while one step starts them all: the most that
    // ever wait to be admitted at once.
    all_connected.wait().await;
    let (mut sealer, mut opener) = seal::connect(&key, Protection::Encrypted);
    let (mut send, mut recv) = socket.split();
    let hello = FromAgent::Hello {
        node: node.clone(),
        pid: std::process::id(),
        cpus: 0,
        gpus: Vec::new(),
        memory_mb: None,
        allocation: None,
    };
    send_sealed(&mut send, &mut sealer, &hello, Vec::new()).await?;
    let (inputs_tx, mut inputs) = unbounded_channel();
    let from_scheduler = inputs_tx.clone();
    tokio::spawn(async move {
        while let Ok(message) = recv.recv().await {
            if from_scheduler
                .send(Input::Scheduler(message.into_vec()))
                .is_err()
            {
                break;
            }
        }
    });
    let mut direct: HashMap<WorkerId, tokio::task::AbortHandle> = HashMap::new();
    let (mut batch, mut ready) = (Batch::default(), Vec::new());
    while let Some(first) = inputs.recv().await {
        // Everything already read is answered before anything is sent,
        // the answers batched as a real agent's writer batches them.
        let mut next = Some(first);
        while let Some(input) = next.take() {
            let message = match input {
                Input::Exited(worker) => {
                    if direct.remove(&worker).is_some() {
                        batch.add(exited(worker), Vec::new(), &mut ready);
                    }
                    next = inputs.try_recv().ok();
                    continue;
                }
                Input::Scheduler(message) => message,
            };
            let (header, frames) = protocol::decode::<ToAgent>(&mut opener, message)
                .map_err(|e| format!("{node}: a message from the scheduler does not open: {e}"))?;
            let messages = batch::unpack(header, frames)
                .map_err(|e| format!("{node}: a batch from the scheduler does not unpack: {e}"))?;
            for (header, _frames) in messages {
                let (answer, frames) = match header {
                    ToAgent::Ping => (FromAgent::Pong, Vec::new()),
                    ToAgent::Shutdown => return Ok(()),
                    ToAgent::Keep { .. }
                    | ToAgent::Forget { .. }
                    | ToAgent::Signal { .. }
                    | ToAgent::Batch(_) => continue,
                    ToAgent::Start {
                        worker, variables, ..
                    } => {
                        let workers_socket = variables
                            .iter()
                            .find(|(name, _)| name == "PMP_SCHEDULER")
                            .map(|(_, value)| value.clone());
                        match workers_socket {
                            Some(address) => {
                                let exits = inputs_tx.clone();
                                let key = key.clone();
                                let connecting = connecting.clone();
                                let task = tokio::spawn(async move {
                                    let answered =
                                        stand_in_worker(worker, &address, &key, &connecting).await;
                                    if let Err(e) = answered {
                                        eprintln!("simulate: stand-in worker {worker}: {e}");
                                    }
                                    let _ = exits.send(Input::Exited(worker));
                                });
                                direct.insert(worker, task.abort_handle());
                                continue;
                            }
                            None => {
                                relayed.store(true, Ordering::Relaxed);
                                let hello = FromWorker::Hello {
                                    worker,
                                    pid: std::process::id(),
                                    host: STAND_IN_HOST.into(),
                                };
                                (relay(worker, hello), Vec::new())
                            }
                        }
                    }
                    ToAgent::Stop { worker } => {
                        if let Some(task) = direct.remove(&worker) {
                            task.abort();
                        }
                        (exited(worker), Vec::new())
                    }
                    ToAgent::Relay {
                        worker, message, ..
                    } => match answer(message) {
                        Answer::Say(said, frames) => (relay(worker, said), frames),
                        Answer::Nothing => continue,
                        Answer::Exit => (exited(worker), Vec::new()),
                    },
                };
                batch.add(answer, frames, &mut ready);
            }
            next = inputs.try_recv().ok();
        }
        ready.extend(batch.take());
        for (answer, frames) in ready.drain(..) {
            send_sealed(&mut send, &mut sealer, &answer, frames).await?;
        }
    }
    Ok(())
}

fn relay(worker: WorkerId, message: FromWorker) -> FromAgent {
    FromAgent::Relay { worker, message }
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

/// What a worker does with a message from the scheduler.
enum Answer {
    Say(FromWorker, Vec<Bytes>),
    Nothing,
    Exit,
}

/// A real worker's answers, without running anything: every call returns
/// at once, so a task sent ahead has always started when asked back.
fn answer(message: ToWorker) -> Answer {
    match message {
        ToWorker::Run { task, .. } => Answer::Say(
            FromWorker::Done {
                task,
                outcome: Outcome::Returned,
                shared: Vec::new(),
                unstored: None,
            },
            vec![Bytes::from_static(RESULT)],
        ),
        ToWorker::Init => Answer::Say(
            FromWorker::InitDone {
                outcome: Outcome::Returned,
            },
            Vec::new(),
        ),
        ToWorker::Ping => Answer::Say(FromWorker::Pong, Vec::new()),
        ToWorker::Retract { task } => Answer::Say(FromWorker::Kept { task }, Vec::new()),
        ToWorker::Released { .. } => Answer::Nothing,
        ToWorker::Shutdown => Answer::Exit,
    }
}

/// A worker with a connection of its own to the workers' socket (the
/// scheduler does not relay), answering until told to exit.
async fn stand_in_worker(
    worker: WorkerId,
    address: &str,
    key: &Key,
    connecting: &tokio::sync::Semaphore,
) -> Result<(), String> {
    let permit = connecting.acquire().await.expect("never closed");
    let mut socket = DealerSocket::new();
    socket
        .connect(address)
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let (mut sealer, mut opener) = seal::connect(key, Protection::Encrypted);
    let (mut send, mut recv) = socket.split();
    let hello = FromWorker::Hello {
        worker,
        pid: std::process::id(),
        host: STAND_IN_HOST.into(),
    };
    send_sealed(&mut send, &mut sealer, &hello, Vec::new()).await?;
    tokio::time::sleep(ADMISSION_PAUSE).await;
    drop(permit);
    while let Ok(message) = recv.recv().await {
        let (header, _) = protocol::decode::<ToWorker>(&mut opener, message.into_vec())
            .map_err(|e| format!("a message from the scheduler does not open: {e}"))?;
        match answer(header) {
            Answer::Say(said, frames) => send_sealed(&mut send, &mut sealer, &said, frames).await?,
            Answer::Nothing => {}
            Answer::Exit => return Ok(()),
        }
    }
    Ok(())
}

async fn send_sealed<H: serde::Serialize>(
    send: &mut zeromq::DealerSendHalf,
    sealer: &mut Sealer,
    header: &H,
    frames: Vec<Bytes>,
) -> Result<(), String> {
    let mut wire = protocol::encode(sealer, header, frames).into_iter();
    let mut message = ZmqMessage::from(wire.next().expect("a sealed message has frames"));
    for frame in wire {
        message.push_back(frame);
    }
    send.send(message)
        .await
        .map_err(|e| format!("cannot send to the scheduler: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(agents: u32, cores: u32, calls: u64, fresh: bool) -> serde_json::Value {
        let args = Args {
            agents,
            cores,
            calls,
            fresh,
            window: None,
            heartbeat: 1,
        };
        let line = simulate(&args).expect("the simulation runs");
        serde_json::from_str(&line).expect("one JSON line")
    }

    fn tiny(fresh: bool) -> serde_json::Value {
        run(4, 4, 2000, fresh)
    }

    #[test]
    fn every_call_comes_back_from_a_pool_under_stand_in_agents() {
        let line = tiny(false);
        assert_eq!(line["calls"], 2000);
        assert_eq!(line["workers"], 16);
        assert_eq!(line["mode"], "block");
    }

    #[test]
    fn every_call_comes_back_from_fresh_workers_under_stand_in_agents() {
        let line = tiny(true);
        assert_eq!(line["calls"], 2000);
        assert_eq!(line["mode"], "fresh");
    }

    #[test]
    fn a_whole_allocation_of_agents_connecting_at_once_is_admitted() {
        // More than the workers' socket lets wait unadmitted
        // (`admission::MAX_WAITING`): the oldest were closed.
        let line = run(600, 1, 600, false);
        assert_eq!(line["calls"], 600);
        assert_eq!(line["workers"], 600);
    }
}
