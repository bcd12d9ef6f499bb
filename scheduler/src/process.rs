//! Starting worker processes and watching them until they exit.
//!
//! Each worker runs in its own process group (so the kernel's Ctrl-C does not
//! reach it and a kill reaches its children too) and dies with the thread that
//! started it (PR_SET_PDEATHSIG), so no worker outlives its scheduler. On
//! Linux, what is left in its group when it exits is killed.

use crate::backend::ExitExplainer;
use crate::core::LostReason;
use crate::ids::WorkerId;
use crate::protocol::Stream;
use bytes::Bytes;
use std::collections::VecDeque;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc::UnboundedSender;

/// Lines of a worker's stderr kept for the message of a worker that died.
const STDERR_TAIL_LINES: usize = 20;

pub struct Exit {
    pub worker: WorkerId,
    pub reason: LostReason,
}

/// What a worker process wrote to its stdout or stderr file descriptor:
/// subprocesses, C code, the launcher (srun, mpiexec), Python between tasks.
pub struct Printed {
    pub worker: WorkerId,
    pub stream: Stream,
    pub text: Bytes,
}

/// Where `Printed` goes: the server, which gives it to the task the worker
/// runs, or else writes it to our own stdout/stderr.
pub type PrintedSink = Arc<dyn Fn(Printed) + Send + Sync>;

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

/// Start `command` as worker `worker`; what it prints goes to `printed`, its
/// exit to `exits`.
pub fn spawn(
    mut command: Command,
    worker: WorkerId,
    printed: PrintedSink,
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
            // Linux kills the worker when the scheduler's thread dies; on
            // macOS the worker watches the client's pid itself (PMP_CLIENT_PID).
            #[cfg(target_os = "linux")]
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = tokio::process::Command::from(command).spawn()?;
    let pid = child.id().expect("a just-spawned child has a pid");
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let status = async move {
        // What its tasks left in its group (the worker crashed, or a task
        // called os._exit) goes with it; killed between its exit and its
        // reaping, while its pid cannot be reused as another group's id.
        #[cfg(target_os = "linux")]
        if exited(pid).await {
            signal_group(pid, libc::SIGKILL);
        }
        child
            .wait()
            .await
            .map_err(|e| format!("waiting for worker pid {pid} failed: {e}"))
    };
    Ok(watch(worker, pid, stdout, stderr, status, printed, exits))
}

/// Wait until our child `pid` has exited, without reaping it; false when
/// that cannot be watched (a kernel without pidfd_open, before 5.3).
#[cfg(target_os = "linux")]
async fn exited(pid: u32) -> bool {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: pidfd_open returns a new descriptor, which we then own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: a descriptor just opened, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // A pidfd becomes readable when its process exits.
    // SAFETY: the OwnedFd is a valid pidfd, owned by the AsyncFd from here
    // on and closed only when it drops.
    match unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    } {
        Ok(fd) => fd.readable().await.is_ok(),
        Err(_) => false,
    }
}

/// A sender of exits that runs `explain` on the first one (on a blocking
/// thread: it may ask the job system) before passing it on to `exits`.
pub fn explained_exits(
    exits: UnboundedSender<Exit>,
    explain: ExitExplainer,
) -> UnboundedSender<Exit> {
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Exit>();
    tokio::spawn(async move {
        let Some(exit) = receiver.recv().await else {
            return;
        };
        let worker = exit.worker;
        let plain = exit.reason.clone();
        let exit = tokio::task::spawn_blocking(move || {
            let mut exit = exit;
            explain(&mut exit.reason);
            exit
        })
        .await
        // The explanation failed (or the runtime is ending): the plain exit.
        .unwrap_or(Exit {
            worker,
            reason: plain,
        });
        let _ = exits.send(exit);
    });
    sender
}

/// How a worker ended, or why that cannot be known.
pub type WaitStatus = Result<std::process::ExitStatus, String>;

/// Forward a started worker's output and report its exit: `status` is its
/// wait status, or why it cannot be had. Shared by spawned workers and those
/// a zygote forks.
pub fn watch(
    worker: WorkerId,
    pid: u32,
    stdout: impl AsyncRead + Unpin + Send + 'static,
    stderr: impl AsyncRead + Unpin + Send + 'static,
    status: impl std::future::Future<Output = WaitStatus> + Send + 'static,
    printed: PrintedSink,
    exits: UnboundedSender<Exit>,
) -> WorkerProcess {
    let quiet = Arc::new(AtomicBool::new(false));
    let out = Forward {
        worker,
        stream: Stream::Stdout,
        printed: printed.clone(),
        quiet: quiet.clone(),
    };
    let err = Forward {
        worker,
        stream: Stream::Stderr,
        printed,
        quiet: quiet.clone(),
    };
    tokio::spawn(async move {
        let forward_out = tokio::spawn(out.run(stdout));
        let tail = tokio::spawn(err.run(stderr));
        let status = status.await;
        // A grandchild may keep the pipes open: do not wait for them forever.
        let grace = std::time::Duration::from_millis(300);
        let stderr_tail = match tokio::time::timeout(grace, tail).await {
            Ok(Ok(lines)) => lines.into_iter().collect::<Vec<_>>().join("\n"),
            _ => String::new(),
        };
        forward_out.abort();
        let reason = match status {
            Ok(status) => describe_exit(pid, status, stderr_tail),
            Err(message) => {
                let mut reason = LostReason::new(message);
                reason.stderr_tail = stderr_tail;
                reason
            }
        };
        let _ = exits.send(Exit { worker, reason });
    });
    WorkerProcess { pid, quiet }
}

/// Why a worker that stopped answering heartbeats for `limit` was stopped,
/// added to its exit's message: the scheduler says it of the workers it
/// pings, a node agent of its node's.
pub fn unanswered_heartbeats(limit: std::time::Duration) -> String {
    format!(
        "it stopped answering heartbeats for {:.0} s",
        limit.as_secs_f64()
    )
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

/// Most a single read takes from a worker's pipe: a flood travels in
/// chunks of this size, not a message per line.
const READ_CHUNK: usize = 64 * 1024;

/// Passes on one of a worker's output pipes, keeping the last lines of
/// stderr for the report of a worker that dies.
struct Forward {
    worker: WorkerId,
    stream: Stream,
    printed: PrintedSink,
    quiet: Arc<AtomicBool>,
}

impl Forward {
    /// Whatever a read returns goes on at once, without waiting for the end
    /// of a line: a worker drains its pipes before it reports a task done, so
    /// everything read before that report belongs to the task.
    async fn run(self, mut pipe: impl AsyncRead + Unpin) -> VecDeque<String> {
        let mut tail = VecDeque::new();
        let mut buffer = Vec::with_capacity(READ_CHUNK);
        loop {
            let kept = buffer.len();
            buffer.resize(kept + READ_CHUNK, 0);
            let n = match pipe.read(&mut buffer[kept..]).await {
                Ok(0) | Err(_) => 0,
                Ok(n) => n,
            };
            buffer.truncate(kept + n);
            let end = if n == 0 {
                buffer.len()
            } else {
                complete_utf8(&buffer)
            };
            if end > 0 {
                let rest = buffer.split_off(end);
                let text = Bytes::from(std::mem::replace(&mut buffer, rest));
                if self.stream == Stream::Stderr {
                    keep_lines(&mut tail, &String::from_utf8_lossy(&text));
                }
                if !self.quiet.load(Ordering::SeqCst) {
                    (self.printed)(Printed {
                        worker: self.worker,
                        stream: self.stream,
                        text,
                    });
                }
            }
            if n == 0 {
                return tail;
            }
        }
    }
}

/// How much of `bytes` can go on without cutting a UTF-8 character in two:
/// all of it, less an incomplete sequence at the end. Bytes that are not
/// UTF-8 at all go on as they are.
pub(crate) fn complete_utf8(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Err(e) if e.error_len().is_none() && bytes.len() - e.valid_up_to() < 4 => e.valid_up_to(),
        _ => bytes.len(),
    }
}

/// Write `bytes` to our own stdout or stderr (the kernel captures them into
/// the notebook).
pub fn write_to_own(stream: Stream, bytes: &[u8]) {
    write_fd(
        match stream {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        },
        bytes,
    )
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

#[cfg(test)]
mod tests {
    use super::complete_utf8;

    #[test]
    fn a_character_cut_by_a_read_waits_for_its_other_bytes() {
        let text = "grüß".as_bytes();
        assert_eq!(complete_utf8(text), text.len());
        // "ß" is two bytes; the read ended after the first.
        assert_eq!(complete_utf8(&text[..text.len() - 1]), text.len() - 2);
        assert_eq!(complete_utf8(b""), 0);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_not_held_back() {
        assert_eq!(complete_utf8(b"ok \xff\xfe"), 5);
        assert_eq!(complete_utf8(b"\xff"), 1);
    }
}
