//! Zygote mode (Linux, `PMP_ZYGOTE` set): Python is started and pmp's worker
//! runtime imported once, then the process waits for the scheduler to ask
//! for a fresh worker and forks one per request. A fresh worker so costs a
//! fork, not Python's start-up and imports.
//!
//! The zygote stays single-threaded (fork copies only the calling thread, so
//! nothing may hold a lock in another one): no connection thread, no tokio.
//! Its descriptors, set up by the scheduler (`pmp_scheduler::zygote`):
//! - fd 3, requests: a SOCK_SEQPACKET socket. Each request is one message,
//!   a `ForkRequest` (the worker's cwd and variables), with the write ends
//!   of its stdout and stderr pipes attached (SCM_RIGHTS). The answer is a
//!   `ForkAnswer`: the child's pid, or 0 when the fork failed. Before any
//!   answer, the zygote sends its own pid once it is ready.
//! - fd 4, exits: an `ExitReport` (pid, wait status) for each child reaped.
//!
//! The messages are defined once, in `pmp_scheduler::protocol::zygote`.
//! Between forks it imports the modules its workers reported they used, so
//! later workers start with them (`preload`).
//!
//! The child becomes what a spawned worker is: its own process group, killed
//! when the zygote dies (which is killed when the scheduler's thread dies),
//! the worker's variables and cwd set before any of its code runs, CPython's
//! after-fork handling done (`os.fork`), then connected mode as usual.
//!
//! What a forked worker's task started ends with it even when the worker is
//! killed and cannot end it itself (`descendants`): the zygote kills what is
//! left in the worker's process group before it reaps the worker, and, a
//! child subreaper, adopts the worker's other orphans (a session of their
//! own, a daemon) and kills them too.

use crate::descendants;
use crate::interpreter;
use crate::preload;
use crate::settings::PythonSettings;
use pyo3::prelude::*;
use std::collections::HashSet;
use std::ffi::OsString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStringExt;

use pmp_scheduler::protocol::zygote::{decode, encode, ExitReport, ForkAnswer, ForkRequest};
use pmp_scheduler::zygote::{EXITS_FD, REQUESTS_FD};
/// Largest request: the variables of one worker (a few hundred bytes).
const MOST_REQUEST: usize = 256 * 1024;

/// Whether the scheduler started this process as a zygote.
pub fn requested() -> bool {
    std::env::var_os("PMP_ZYGOTE").is_some()
}

/// What the scheduler asked for: a worker with these variables, in this cwd,
/// printing into these pipes.
struct Request {
    cwd: Option<OsString>,
    variables: Vec<(String, String)>,
    stdout: RawFd,
    stderr: RawFd,
}

/// Serve requests until the scheduler closes its end. Returns only in a
/// forked child, ready to run as a connected worker.
pub fn run(python: &PythonSettings) {
    if let Err(e) = interpreter::prepare(python) {
        say!("pmp-worker zygote: Python did not start: {e}");
        std::process::exit(3);
    }
    let signals = ChildSignals::block();
    let reports = match preload::Reports::open() {
        Ok(reports) => reports,
        Err(e) => {
            say!("pmp-worker zygote: {e}");
            std::process::exit(3);
        }
    };
    let zygote = std::process::id() as libc::pid_t;
    // SAFETY: plain prctl on this process.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    // The workers forked and not reaped yet; any other child is an orphan
    // one of them left.
    let mut workers = HashSet::new();
    reply(zygote);
    loop {
        let mut polled = [
            libc::pollfd {
                fd: REQUESTS_FD,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: signals.fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: reports.fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: three valid pollfd structs.
        if unsafe { libc::poll(polled.as_mut_ptr(), 3, -1) } < 0 {
            continue; // EINTR
        }
        if polled[1].revents != 0 {
            signals.drain();
            reap_children(&mut workers);
        }
        if polled[2].revents != 0 {
            // Between forks, so every worker forked after has it.
            reports.take();
        }
        if polled[0].revents == 0 {
            continue;
        }
        let Some(request) = receive() else {
            // The scheduler is gone: so are we, and with us (parent-death
            // signal) every child still running.
            std::process::exit(0);
        };
        match fork_python() {
            Ok(0) => {
                reports.become_child();
                become_worker(request, zygote, &signals);
                return;
            }
            Ok(pid) => {
                workers.insert(pid);
                // Its own group before the scheduler hears its pid, so a
                // stop sent at once reaches it (the child sets it too).
                // SAFETY: plain syscall on our own child.
                unsafe { libc::setpgid(pid, pid) };
                reply(pid);
                close(request.stdout);
                close(request.stderr);
            }
            Err(e) => {
                say!("pmp-worker zygote: fork failed: {e}");
                reply(0);
                close(request.stdout);
                close(request.stderr);
            }
        }
    }
}

/// `os.fork()`: CPython's own before- and after-fork handling (its locks,
/// its thread states, `os.register_at_fork` hooks such as `random`'s
/// reseeding) in both processes.
fn fork_python() -> Result<libc::pid_t, String> {
    Python::attach(|py| {
        py.import("os")
            .and_then(|os| os.call_method0("fork"))
            .and_then(|pid| pid.extract::<libc::pid_t>())
            .map_err(|e| e.to_string())
    })
}

/// The child's set-up, before any of the worker's code runs.
fn become_worker(request: Request, zygote: libc::pid_t, signals: &ChildSignals) {
    close(REQUESTS_FD);
    close(EXITS_FD);
    signals.restore();
    // SAFETY: plain syscalls on our own process and descriptors.
    unsafe {
        libc::setpgid(0, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != zygote {
            // The zygote died before the death signal was armed.
            libc::_exit(70);
        }
        libc::dup2(request.stdout, 1);
        libc::dup2(request.stderr, 2);
    }
    close(request.stdout);
    close(request.stderr);
    if let Some(cwd) = &request.cwd {
        if let Err(e) = std::env::set_current_dir(cwd) {
            say!("pmp-worker: cannot change to cwd {cwd:?}: {e}");
            std::process::exit(2);
        }
    }
    // Python's os.environ was read when the zygote started: set each
    // variable there (which sets it in the process too), so that the call's
    // code and the libraries it loads (OMP_NUM_THREADS, CUDA_VISIBLE_DEVICES)
    // see the worker's values. The key is set in the process only, and
    // removed from it once read (`Settings::from_env`), as for a spawned worker.
    let set = Python::attach(|py| -> PyResult<()> {
        let environ = py.import("os")?.getattr("environ")?;
        environ.call_method1("pop", ("PMP_ZYGOTE", py.None()))?;
        for (name, value) in &request.variables {
            if name != "PMP_KEY" {
                environ.set_item(name, value)?;
            }
        }
        Ok(())
    });
    if let Err(e) = set {
        say!("pmp-worker: setting the worker's environment failed: {e}");
        std::process::exit(2);
    }
    if let Some((_, key)) = request.variables.iter().find(|(name, _)| name == "PMP_KEY") {
        // SAFETY: this process has one thread (a fork's child).
        unsafe { std::env::set_var("PMP_KEY", key) };
    }
    if let Err(e) = preload::after_fork() {
        say!("pmp-worker: {e}");
        std::process::exit(2);
    }
}

/// Receive one request; None once the scheduler closed its end.
fn receive() -> Option<Request> {
    let mut buffer = vec![0u8; MOST_REQUEST];
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE((2 * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut control = vec![0u8; space];
    loop {
        let mut iov = libc::iovec {
            iov_base: buffer.as_mut_ptr().cast(),
            iov_len: buffer.len(),
        };
        // SAFETY: msghdr zeroed, then pointed at live buffers.
        let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
        header.msg_iov = &mut iov;
        header.msg_iovlen = 1;
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = control.len() as _;
        // SAFETY: recvmsg into the buffers above.
        let n = unsafe { libc::recvmsg(REQUESTS_FD, &mut header, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return None;
        }
        if n == 0 {
            return None;
        }
        let fds = received_fds(&header);
        if fds.len() != 2 {
            // Only the scheduler holds the other end: this does not happen.
            fds.into_iter().for_each(close);
            reply(0);
            continue;
        }
        match parse(&buffer[..n as usize], fds[0], fds[1]) {
            Ok(request) => return Some(request),
            Err(e) => {
                // Only the scheduler writes here: a pmp-worker of another
                // version than the scheduler's could do this.
                say!("pmp-worker zygote: {e}");
                fds.into_iter().for_each(close);
                reply(0);
            }
        }
    }
}

fn received_fds(header: &libc::msghdr) -> Vec<RawFd> {
    let mut fds = Vec::new();
    // SAFETY: walking the control messages recvmsg filled in.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    fds.push(data.add(i).read_unaligned());
                }
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
    }
    fds
}

fn parse(bytes: &[u8], stdout: RawFd, stderr: RawFd) -> Result<Request, String> {
    let ForkRequest { cwd, variables } = decode(bytes)?;
    Ok(Request {
        cwd: cwd.map(OsString::from_vec),
        variables,
        stdout,
        stderr,
    })
}

fn reply(pid: libc::pid_t) {
    let bytes = encode(&ForkAnswer { pid });
    // SAFETY: sending from a live buffer.
    unsafe {
        libc::send(
            REQUESTS_FD,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_NOSIGNAL,
        )
    };
}

fn send_exit_report(pid: libc::pid_t, status: i32) {
    let bytes = encode(&ExitReport { pid, status });
    // SAFETY: sending from a live buffer.
    unsafe {
        libc::send(
            EXITS_FD,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_NOSIGNAL,
        )
    };
}

fn reap_children(workers: &mut HashSet<libc::pid_t>) {
    let mut reaped = false;
    while let Some(pid) = exited_child() {
        if workers.remove(&pid) {
            // What its task left in its group, while the worker's pid (a
            // zombie until reaped) cannot be reused as another group's id.
            // SAFETY: plain syscall; a negative pid addresses the group.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            send_exit_report(pid, reap(pid));
        } else {
            reap(pid);
        }
        reaped = true;
    }
    if !reaped {
        return;
    }
    // A worker's orphans became our children when it died; killing them
    // makes theirs ours in turn, ended when their parents are reaped here.
    for orphan in descendants::children_of(std::process::id() as libc::pid_t) {
        if !workers.contains(&orphan) {
            // SAFETY: plain syscall on our own child, not reaped yet.
            unsafe { libc::kill(orphan, libc::SIGKILL) };
        }
    }
}

/// A child that has exited, left unreaped (its pid stays ours).
fn exited_child() -> Option<libc::pid_t> {
    // SAFETY: waitid fills the zeroed siginfo; si_pid reads the field it set.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        if libc::waitid(libc::P_ALL, 0, &mut info, flags) != 0 {
            return None;
        }
        let pid = info.si_pid();
        (pid > 0).then_some(pid)
    }
}

/// Reap `pid`; its wait status.
fn reap(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waitpid writes one int; `pid` has exited, so this returns at once.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
    {}
    status
}

fn close(fd: RawFd) {
    // SAFETY: closing a descriptor this process owns.
    unsafe { libc::close(fd) };
}

/// SIGCHLD, blocked and read through a signalfd, so one poll waits for both
/// requests and exits with no signal handler (and nothing async-signal-unsafe).
struct ChildSignals {
    fd: RawFd,
    mask: libc::sigset_t,
}

impl ChildSignals {
    fn block() -> ChildSignals {
        // SAFETY: a zeroed sigset filled by sigemptyset/sigaddset; signalfd
        // on it.
        unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut mask);
            libc::sigaddset(&mut mask, libc::SIGCHLD);
            libc::sigprocmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut());
            let fd = libc::signalfd(-1, &mask, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                say!(
                    "pmp-worker zygote: signalfd failed: {}",
                    std::io::Error::last_os_error()
                );
                std::process::exit(3);
            }
            ChildSignals { fd, mask }
        }
    }

    fn drain(&self) {
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        // SAFETY: reading whole siginfo structs into a buffer of that size.
        while unsafe { libc::read(self.fd, info.as_mut_ptr().cast(), info.len()) } > 0 {}
    }

    /// In the child: SIGCHLD as a spawned process has it (subprocess relies on it).
    fn restore(&self) {
        close(self.fd);
        // SAFETY: unblocking the signal blocked in `block`.
        unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &self.mask, std::ptr::null_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use super::parse;
    use pmp_scheduler::protocol::zygote::{encode, ForkRequest};

    #[test]
    fn a_request_gives_the_cwd_variables_and_pipes_of_the_child() {
        let sent = ForkRequest {
            cwd: Some(b"/tmp/work".to_vec()),
            variables: vec![
                ("PMP_WORKER_ID".into(), "3".into()),
                ("EXTRA".into(), "a=b".into()),
            ],
        };
        let request = parse(&encode(&sent), 10, 11).unwrap();
        assert_eq!(
            request.cwd.as_deref(),
            Some(std::ffi::OsStr::new("/tmp/work"))
        );
        assert_eq!(request.variables, sent.variables);
        assert_eq!((request.stdout, request.stderr), (10, 11));
    }

    #[test]
    fn no_cwd_leaves_the_zygotes_and_a_malformed_request_is_refused() {
        let sent = ForkRequest {
            cwd: None,
            variables: vec![("A".into(), "1".into())],
        };
        assert!(parse(&encode(&sent), 10, 11).unwrap().cwd.is_none());
        assert!(parse(b"/tmp\0A=1", 10, 11)
            .err()
            .is_some_and(|e| e.contains("malformed zygote message")));
    }
}
