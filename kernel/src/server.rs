//! Running a kernel: the socket side on a tokio runtime in its own thread,
//! the Python side on the process's main thread.
//!
//! Threads: main (Python: the main shell's requests, one at a time); one
//! per subshell (Python: that subshell's requests); "sockets" (tokio,
//! two workers: heartbeat, IOPub owner, shell reader and writer, control,
//! stdin broker, stream flusher); one reader per captured pipe. SIGINT is
//! blocked everywhere except on the Python thread (see `interrupt`).

use crate::debugger::Debugger;
use crate::iopub::Iopub;
use crate::lifecycle::Lifecycle;
use crate::python::streams::Streams;
use crate::shell::{Replies, Work};
use crate::sockets::{read_connection_file, Sockets};
use crate::stdin::Stdin;
use crate::subshells::Subshells;
use crate::wire::Signer;
use crate::{children, control, heartbeat, interrupt, iopub, python, shell, stdin};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long written text may wait before it is sent as a stream message.
const FLUSH_DELAY: Duration = Duration::from_millis(50);
/// How long the last messages get to leave before the process exits.
const WIRE_GRACE: Duration = Duration::from_millis(30);
/// How long a shutdown waits for the Python thread (atexit handlers).
const PYTHON_STOP_GRACE: Duration = Duration::from_secs(3);

pub fn run(connection_file: &Path, python: &Path) -> Result<(), String> {
    interrupt::block_in_this_thread();
    let info = read_connection_file(connection_file)?;

    let (iopub, iopub_rx) = Iopub::channel();
    let (stdin, stdin_rx) = Stdin::channel();
    let (replies, replies_rx) = Replies::channel();
    let (queue, work) = std::sync::mpsc::channel::<Work>();
    let lifecycle = Arc::new(Lifecycle::default());
    let streams = Streams::new();
    let subshells = Arc::new(Subshells::default());

    let socket_side = SocketSide {
        iopub: iopub.clone(),
        iopub_rx,
        stdin_rx,
        replies: replies.clone(),
        replies_rx,
        queue: queue.clone(),
        lifecycle: Arc::clone(&lifecycle),
        streams: Arc::clone(&streams),
        subshells: Arc::clone(&subshells),
    };
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("sockets".into())
        .spawn(move || run_sockets(info, socket_side, bound_tx))
        .map_err(|e| format!("cannot start the socket thread: {e}"))?;
    match bound_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err("the socket thread stopped during start-up".into()),
    }

    python::run(
        python,
        python::Links {
            iopub,
            stdin,
            replies,
            queue,
            work,
            lifecycle,
            streams,
            subshells,
        },
    );
    // The socket thread flushes what is left and exits the process.
    loop {
        std::thread::park();
    }
}

/// What the socket thread owns.
struct SocketSide {
    iopub: Iopub,
    iopub_rx: iopub::Receiver,
    stdin_rx: stdin::Receiver,
    replies: Replies,
    replies_rx: shell::Receiver,
    queue: shell::Queue,
    lifecycle: Arc<Lifecycle>,
    streams: Arc<Streams>,
    subshells: Arc<Subshells>,
}

/// The socket thread: bind, report whether that worked, serve until the
/// kernel stops, then end the process (without finalizing Python).
fn run_sockets(
    info: jupyter_zmq_client::ConnectionInfo,
    side: SocketSide,
    bound: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sockets")
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let served = runtime.block_on(async move {
        let session = uuid::Uuid::new_v4().to_string();
        match Sockets::bind(&info, &session).await {
            Ok(sockets) => {
                let _ = bound.send(Ok(()));
                let signer = Arc::new(Signer::new(sockets.key.clone(), session));
                serve(sockets, signer, side).await;
                true
            }
            Err(e) => {
                // The main thread reports it and exits.
                let _ = bound.send(Err(e));
                false
            }
        }
    });
    if served {
        std::process::exit(0);
    }
}

async fn serve(sockets: Sockets, signer: Arc<Signer>, side: SocketSide) {
    let SocketSide {
        iopub,
        iopub_rx,
        stdin_rx,
        replies,
        replies_rx,
        queue,
        lifecycle,
        streams,
        subshells,
    } = side;
    tokio::spawn(iopub::serve(sockets.iopub, iopub_rx, Arc::clone(&signer)));
    iopub.status("starting", None);
    tokio::spawn(heartbeat::serve(sockets.heartbeat));
    let (shell_send, shell_recv) = sockets.shell.split();
    let answerer = shell::Answerer {
        replies: replies.clone(),
        iopub: iopub.clone(),
        lifecycle: Arc::clone(&lifecycle),
        subshells: Arc::clone(&subshells),
    };
    tokio::spawn(shell::read(shell_recv, queue.clone(), answerer));
    tokio::spawn(shell::write(shell_send, replies_rx, Arc::clone(&signer)));
    tokio::spawn(stdin::serve(sockets.stdin, stdin_rx, Arc::clone(&signer)));
    tokio::spawn(flush_soon(streams));
    tokio::spawn(watch_parent(Arc::clone(&lifecycle)));

    let debugger = Debugger::new(iopub.clone(), queue.clone(), Arc::clone(&lifecycle));
    tokio::select! {
        () = control::serve(sockets.control, signer, iopub.clone(), Arc::clone(&lifecycle), subshells, debugger) => {}
        () = lifecycle.stop_requested() => {}
    }

    // Stop the Python thread before its next request; interrupt a running
    // cell so that it gets there.
    lifecycle.begin_stop();
    let _ = queue.send(Work::Wake);
    if lifecycle.is_busy() {
        interrupt::interrupt_python();
    }
    if tokio::time::timeout(PYTHON_STOP_GRACE, lifecycle.wait_python_stopped())
        .await
        .is_err()
    {
        log::warn!("Python did not stop within {PYTHON_STOP_GRACE:?}; exiting anyway");
    }
    children::terminate_all().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        replies.flushed().await;
        iopub.flushed().await;
    })
    .await;
    // zmq.rs hands each message to a per-peer writer task; give those a
    // moment to put the last replies and statuses on the wire.
    tokio::time::sleep(WIRE_GRACE).await;
}

/// Stop when the process that started the kernel is gone (jupyter_client
/// names itself in JPY_PARENT_PID), as ipykernel does: an orphaned kernel
/// would otherwise keep running, and keep its executors' workers alive.
async fn watch_parent(lifecycle: Arc<Lifecycle>) {
    let Some(parent) = std::env::var("JPY_PARENT_PID")
        .ok()
        .and_then(|pid| pid.parse::<libc::pid_t>().ok())
    else {
        return;
    };
    // SAFETY: getppid cannot fail.
    let ppid = || unsafe { libc::getppid() };
    // Started through a wrapper (a shell, `flux start`): nothing to watch.
    if ppid() != parent {
        return;
    }
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if ppid() != parent {
            log::warn!("the process that started the kernel ({parent}) is gone; stopping");
            lifecycle.request_stop();
            return;
        }
    }
}

/// Send buffered output shortly after it was written, so that output of a
/// long-running cell shows while it runs.
async fn flush_soon(streams: Arc<Streams>) {
    loop {
        streams.written.notified().await;
        tokio::time::sleep(FLUSH_DELAY).await;
        python::flush_streams();
    }
}
