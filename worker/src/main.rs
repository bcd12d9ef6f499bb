//! pmp-worker: started by a backend, it connects back to the scheduler,
//! verifies every message, and runs tasks in an embedded CPython.
//!
//! Threads: the main thread initialises Python and runs tasks (CPython's main
//! thread, so signals and `threading.main_thread()` behave); a connection
//! thread owns the socket, answers heartbeats while a task runs, and exits the
//! process when the scheduler goes silent.

mod connection;
mod interpreter;
mod output;
mod pipes;
mod settings;
mod stored;

use pmp_scheduler::protocol::{FromWorker, Outcome, ToWorker};

fn main() {
    let settings = match settings::Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("pmp-worker: {e}");
            std::process::exit(2);
        }
    };
    if settings.rank > 0 {
        // Ranks above 0 never touch the network: they run what rank 0
        // broadcasts to them.
        let code = interpreter::follow(&settings);
        std::process::exit(code);
    }
    let connection = connection::Connection::open(&settings);
    let current_task = output::CurrentTask::default();
    let sink = output::OutputSink::new(connection.outgoing(), current_task.clone());
    let runtime = match interpreter::Runtime::start(&settings, sink) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pmp-worker: Python did not start: {e}");
            std::process::exit(3);
        }
    };
    let pipes = pipes::OutputPipes::find();
    connection.send(
        FromWorker::Hello {
            worker: pmp_scheduler::ids::WorkerId(settings.worker_id),
            pid: std::process::id(),
            host: settings::hostname(),
        },
        Vec::new(),
    );
    let mut stores = stored::Stores::default();
    while let Some((message, frames)) = connection.next() {
        match message {
            ToWorker::Init => {
                let (outcome, frames) = runtime.init(frames);
                connection.send(FromWorker::InitDone { outcome }, frames);
            }
            ToWorker::Run {
                task,
                function,
                call_frames,
                dependency_frames,
                store,
            } => {
                current_task.set(Some(task));
                let started = stored::now();
                let (outcome, frames) =
                    runtime.run(function, call_frames, &dependency_frames, frames);
                current_task.set(None);
                if let Some(target) = &store {
                    stores.record(target, started, outcome, &frames);
                }
                // What its subprocesses printed reaches the scheduler first.
                pipes.drain();
                connection.send(FromWorker::Done { task, outcome }, frames);
            }
            ToWorker::Shutdown => break,
            // Answered by the connection thread; never reaches here.
            ToWorker::Ping => {}
        }
    }
    runtime.close();
    connection.close();
    std::process::exit(0);
}

/// A task's outcome that Python could not even produce (pmp itself failed).
fn internal_error(message: String) -> (Outcome, Vec<pmp_scheduler::Bytes>) {
    eprintln!("pmp-worker: {message}");
    std::process::exit(4);
}
