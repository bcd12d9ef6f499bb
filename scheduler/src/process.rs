//! Starting worker processes and watching them until they exit.
//!
//! Each worker runs in its own process group (so the kernel's Ctrl-C does not
//! reach it and a kill reaches its children too) and dies with the thread that
//! started it (PR_SET_PDEATHSIG), so no worker outlives its scheduler.

use crate::core::LostReason;
use crate::ids::WorkerId;
use std::collections::VecDeque;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc::UnboundedSender;

/// Lines of a worker's stderr kept for the message of a worker that died.
const STDERR_TAIL_LINES: usize = 20;

pub struct Exit {
    pub worker: WorkerId,
    pub reason: LostReason,
}

/// A started worker: its process group, and whether its output is still
/// worth forwarding.
pub struct WorkerProcess {
    /// The pid, which is also the process group id.
    pub pid: u32,
    quiet: Arc<AtomicBool>,
}

impl WorkerProcess {
    /// End the whole process group: SIGTERM first, because srun and `flux
    /// run` pass it on to the step's tasks on the compute node while a
    /// SIGKILL would leave those running; SIGKILL after `TERM_GRACE`. What the
    /// group prints from now on (srun's "STEP CANCELLED", "task 0: Killed")
    /// is about our own stop, so it is no longer forwarded. Needs a tokio
    /// runtime.
    pub fn stop(&self) {
        self.signal(libc::SIGTERM);
        let pid = self.pid;
        tokio::spawn(async move {
            tokio::time::sleep(TERM_GRACE).await;
            signal_group(pid, libc::SIGKILL);
        });
    }

    /// Send `signal` to the group, no longer forwarding its output.
    pub fn signal(&self, signal: i32) {
        self.quiet.store(true, Ordering::SeqCst);
        signal_group(self.pid, signal);
    }
}

/// Start `command` as worker `worker`; reports its exit on `exits`.
pub fn spawn(
    mut command: Command,
    worker: WorkerId,
    exits: UnboundedSender<Exit>,
) -> std::io::Result<WorkerProcess> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = tokio::process::Command::from(command).spawn()?;
    let pid = child.id().expect("a just-spawned child has a pid");
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let quiet = Arc::new(AtomicBool::new(false));
    let (quiet_out, quiet_err) = (quiet.clone(), quiet.clone());
    tokio::spawn(async move {
        let forward_out = tokio::spawn(forward(stdout, 1, false, quiet_out));
        let tail = tokio::spawn(forward(stderr, 2, true, quiet_err));
        let status = child.wait().await;
        // A grandchild may keep the pipes open: do not wait for them forever.
        let grace = std::time::Duration::from_millis(300);
        let stderr_tail = match tokio::time::timeout(grace, tail).await {
            Ok(Ok(lines)) => lines.into_iter().collect::<Vec<_>>().join("\n"),
            _ => String::new(),
        };
        forward_out.abort();
        let reason = match status {
            Ok(status) => describe_exit(pid, status, stderr_tail),
            Err(e) => LostReason::new(format!("waiting for worker pid {pid} failed: {e}")),
        };
        let _ = exits.send(Exit { worker, reason });
    });
    Ok(WorkerProcess { pid, quiet })
}

/// How long a worker's group has between SIGTERM and SIGKILL.
pub const TERM_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

fn signal_group(pid: u32, signal: i32) {
    // SAFETY: plain syscall; a negative pid addresses the group.
    unsafe {
        libc::kill(-(pid as i32), signal);
    }
}

fn describe_exit(pid: u32, status: std::process::ExitStatus, stderr_tail: String) -> LostReason {
    let mut reason = LostReason::new(String::new());
    reason.message = if let Some(code) = status.code() {
        reason.exit_code = Some(code);
        format!("worker process (pid {pid}) exited with exit code {code}")
    } else if let Some(signal) = status.signal() {
        reason.signal = Some(signal);
        format!(
            "worker process (pid {pid}) was killed by signal {signal} ({})",
            signal_name(signal)
        )
    } else {
        format!("worker process (pid {pid}) ended: {status}")
    };
    reason.stderr_tail = stderr_tail;
    reason
}

pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGKILL => "SIGKILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPIPE => "SIGPIPE",
        _ => "unknown signal",
    }
}

/// Append the lines of `text` to `tail`, keeping the last `STDERR_TAIL_LINES`.
pub fn keep_lines(tail: &mut VecDeque<String>, text: &str) {
    for line in text.lines() {
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.to_string());
    }
}

/// Copy a worker's output, whole lines at a time, to our own fd `fd` (the
/// kernel captures it into the notebook); with `keep_tail`, keep its last lines.
async fn forward(
    stream: impl AsyncRead + Unpin,
    fd: i32,
    keep_tail: bool,
    quiet: Arc<AtomicBool>,
) -> VecDeque<String> {
    let mut lines = BufReader::new(stream);
    let mut tail = VecDeque::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if !quiet.load(Ordering::SeqCst) {
                    write_fd(fd, &line);
                }
                if keep_tail {
                    keep_lines(&mut tail, &String::from_utf8_lossy(&line));
                }
            }
        }
    }
    tail
}

fn write_fd(fd: i32, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: writing a valid slice to a file descriptor.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        bytes = &bytes[n as usize..];
    }
}
