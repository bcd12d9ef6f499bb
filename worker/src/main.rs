//! pmp-worker: started by a backend, it connects back to the scheduler,
//! opens every message (encrypted and authenticated), and runs tasks in an
//! embedded CPython. Started by a batch job instead (`PMP_JOB_STORE`, no `PMP_SCHEDULER`), it runs one call
//! from the task store and exits, with no network at all (`job`).
//!
//! Started as a zygote (`PMP_ZYGOTE`, Linux), it starts Python once and
//! forks a fresh worker for each request of the scheduler (`zygote`).
//!
//! Started as a node agent (`PMP_AGENT`, one per node of an allocation), it
//! never runs Python: it connects to the scheduler, says what its node
//! offers (`node`), and starts that node's workers as the scheduler asks,
//! forked by a zygote of its own, until the scheduler says stop or goes
//! silent (`agent`).
//!
//! Threads: the main thread initialises Python and runs tasks (CPython's main
//! thread, so signals and `threading.main_thread()` behave), taking them from
//! the `inbox` in order; a connection thread owns the socket, answers
//! heartbeats and retracts while a task runs, and exits the process when the
//! scheduler goes silent; on Linux, a thread ends what the tasks started
//! when SIGTERM comes (`descendants`), as every exit does.

// First, so that its `say!` is there for every module after it.
#[macro_use]
mod say;

mod agent;
#[cfg(target_os = "linux")]
mod blas_threads;
mod client_watch;
mod connection;
mod descendants;
mod inbox;
mod interpreter;
mod job;
mod kept;
mod local_socket;
mod node;
mod node_gpus;
mod output;
mod pipes;
#[cfg(target_os = "linux")]
mod preload;
mod relay;
mod settings;
mod shared_frames;
mod stored;
#[cfg(target_os = "linux")]
mod zygote;

use pmp_scheduler::protocol::{FromWorker, Outcome, ToWorker};
use settings::{Mode, Settings};

fn main() {
    #[cfg(target_os = "linux")]
    if zygote::requested() {
        match settings::PythonSettings::for_zygote() {
            // Returns in each forked child, which goes on as a fresh worker.
            Ok(python) => zygote::run(&python),
            Err(e) => {
                say!("pmp-worker zygote: {e}");
                std::process::exit(2);
            }
        }
    }
    if agent::requested() {
        agent::run();
    }
    descendants::take_charge();
    client_watch::start();
    let mode = match Mode::from_env() {
        Ok(mode) => mode,
        Err(e) => {
            say!("pmp-worker: {e}");
            std::process::exit(2);
        }
    };
    if mode.python().rank > 0 {
        // Ranks above 0 never touch the network or the store: they run what
        // rank 0 broadcasts to them.
        let code = interpreter::follow(mode.python());
        exit(code);
    }
    match mode {
        Mode::Connected(settings) => serve(&settings),
        Mode::Job(settings) => exit(job::run(&settings)),
    }
}

/// Exit once what the tasks started has ended (`descendants`).
fn exit(code: i32) -> ! {
    descendants::end_all();
    std::process::exit(code);
}

/// Connected mode: run what the scheduler sends until it says stop or goes away.
fn serve(settings: &Settings) -> ! {
    let key = match settings.key.read() {
        Ok(key) => key,
        Err(e) => {
            say!("pmp-worker: {e}");
            std::process::exit(2);
        }
    };
    let connection = connection::Connection::open(settings, key);
    let current_task = output::CurrentTask::default();
    let sink = output::OutputSink::new(connection.sender(), current_task.clone());
    let runtime = match interpreter::Runtime::start(&settings.python, Some(sink)) {
        Ok(runtime) => runtime,
        Err(e) => {
            say!("pmp-worker: Python did not start: {e}");
            std::process::exit(3);
        }
    };
    let pipes = pipes::OutputPipes::find();
    connection.send(
        FromWorker::Hello {
            worker: pmp_scheduler::ids::WorkerId(settings.worker_id),
            pid: std::process::id(),
            host: pmp_scheduler::host::name(),
        },
        Vec::new(),
    );
    let mut stores = stored::Stores::default();
    // The last task's Done until it is written: a task sent ahead (so here
    // already) could crash the process, and the Done of the one before
    // must not be lost with it.
    let mut last_done: Option<connection::Written> = None;
    while let Some((message, frames)) = connection.next() {
        if let Some(done) = last_done.take() {
            done.wait();
        }
        match message {
            ToWorker::Init => {
                let (outcome, frames) = runtime.init(frames).unwrap_or_else(internal_error);
                connection.send_now(FromWorker::InitDone { outcome }, frames);
            }
            ToWorker::Run {
                task,
                function,
                call_frames,
                dependency_frames,
                store,
                ..
            } => {
                if let Some(target) = &store {
                    if !stores.claim(target) {
                        connection.send_now(FromWorker::Elsewhere { task }, Vec::new());
                        continue;
                    }
                }
                current_task.set(Some(task));
                let started = stored::now();
                let (outcome, frames) = runtime
                    .run(function, call_frames, &dependency_frames, frames)
                    .unwrap_or_else(internal_error);
                current_task.set(None);
                let unstored = store
                    .as_ref()
                    .and_then(|target| stores.record(target, started, outcome, &frames));
                // What its subprocesses printed reaches the scheduler first.
                pipes.drain();
                let done = FromWorker::Done {
                    task,
                    outcome,
                    shared: Vec::new(),
                    unstored,
                };
                last_done = Some(connection.send_written_later(done, frames));
            }
            ToWorker::Shutdown => break,
            // Handled by the connection thread; never reach here.
            ToWorker::Ping | ToWorker::Released { .. } | ToWorker::Retract { .. } => {}
        }
    }
    // Before the farewell, while Python is still up: a zygote imports what
    // this worker used for the next ones.
    #[cfg(target_os = "linux")]
    preload::report_imports();
    runtime.close();
    connection.close();
    exit(0);
}

/// A task's outcome that Python could not even produce (pmp itself failed).
fn internal_error(message: String) -> (Outcome, Vec<pmp_scheduler::Bytes>) {
    say!("pmp-worker: {message}");
    exit(4);
}
