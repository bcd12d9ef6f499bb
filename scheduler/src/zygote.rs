//! Fresh workers without Python's start-up: a zygote (`pmp-worker` with
//! `PMP_ZYGOTE` set) has started Python and imported pmp's worker runtime
//! once, and forks a child for each fresh worker asked of it. The child is
//! what a spawned worker is (its own process group, dies with its parent
//! chain, the worker's variables and cwd, its stdout and stderr on pipes we
//! read); since it is the zygote's child, not ours, the zygote reaps it and
//! reports its wait status, which becomes the same `Exit` a spawned worker's
//! would. The messages are `protocol::zygote`; the worker side is in
//! pmp-worker's `zygote.rs`.
//!
//! Only what a zygote can reproduce goes through it: the local backend's
//! single-rank worker (the worker program, no arguments), with the
//! environment the zygote was started with. Everything else (MPI ranks, a
//! zygote that died or stopped answering, an environment changed since) is
//! spawned as before. The first fork waits for the zygote to be ready
//! (Python started, once per executor): spawning meanwhile would only share
//! the CPUs with it, for a worker that starts no sooner. Linux only:
//! elsewhere `start` gives none and every worker is spawned.

#[cfg(target_os = "linux")]
pub use linux::Zygote;

#[cfg(not(target_os = "linux"))]
pub use elsewhere::Zygote;

use crate::backend::WorkerEnvironment;
use crate::ids::WorkerId;
use crate::process::{self, Exit, PrintedSink, WorkerProcess};
use std::process::Command;
use tokio::sync::mpsc::UnboundedSender;

/// The zygote's descriptors for fork requests and exit reports: the
/// scheduler places its ends there, the worker's zygote mode reads them.
pub const REQUESTS_FD: std::os::fd::RawFd = 3;
pub const EXITS_FD: std::os::fd::RawFd = 4;

/// Zygotes may die (or be killed when they stop answering); a new one
/// replaces such a one this many times, then every worker is spawned.
const ZYGOTE_RESTARTS: u32 = 3;

/// The executor's zygote, where it has one: an executor that
/// starts a fresh worker per call on this machine.
pub struct Zygotes {
    current: Option<Zygote>,
    wanted: bool,
    restarts: u32,
}

impl Zygotes {
    /// Prestarted with the executor (when it runs fresh workers on this
    /// machine), not at the first call: it starts Python while the client
    /// is still preparing its first submit, and the first fork waits only
    /// for what is left of that start. An executor whose calls all turn out
    /// to be MPI workers keeps an idle zygote, one process, until shutdown.
    pub fn start(wanted: bool, environment: &WorkerEnvironment) -> Zygotes {
        Zygotes {
            current: if wanted {
                Zygote::start(environment)
            } else {
                None
            },
            wanted,
            restarts: 0,
        }
    }

    /// The zygote to ask, replacing one that died or whose environment is
    /// out of date (when it has no child).
    pub fn get(&mut self, environment: &WorkerEnvironment) -> Option<&mut Zygote> {
        if !self.wanted {
            return None;
        }
        let replace = match &self.current {
            Some(zygote) if zygote.is_gone() => {
                self.restarts = self.restarts.saturating_add(1);
                self.restarts <= ZYGOTE_RESTARTS
            }
            Some(zygote) => zygote.is_stale_and_idle(),
            None => false,
        };
        if replace {
            self.current = Zygote::start(environment);
        }
        self.current.as_mut()
    }

    /// Start `command` as worker `worker`: forked by the zygote where it
    /// can reproduce it, spawned otherwise. What the local backend's
    /// scheduler and a node agent both do for each worker.
    pub fn start_worker(
        &mut self,
        environment: &WorkerEnvironment,
        command: Command,
        worker: WorkerId,
        printed: PrintedSink,
        exits: UnboundedSender<Exit>,
    ) -> std::io::Result<WorkerProcess> {
        let forked = self
            .get(environment)
            .and_then(|zygote| zygote.fork(&command, worker, printed.clone(), exits.clone()));
        match forked {
            Some(forked) => forked,
            None => process::spawn(command, worker, printed, exits),
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use crate::backend::WorkerEnvironment;
    use crate::ids::WorkerId;
    use crate::process::{self, Exit, PrintedSink, WorkerProcess};
    use crate::protocol::zygote::{decode, encode, ExitReport, ForkAnswer, ForkRequest};
    use std::collections::HashMap;
    use std::ffi::OsString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};
    use tokio::io::unix::AsyncFd;
    use tokio::sync::mpsc::UnboundedSender;
    use tokio::sync::oneshot;

    /// How long a fork (or the zygote's start, for the first) may take to be
    /// answered before the zygote is given up (it is stuck or gone) and the
    /// worker spawned instead.
    const ANSWER_TIMEOUT_S: libc::time_t = 10;

    use super::{EXITS_FD, REQUESTS_FD};

    pub struct Zygote {
        child: std::process::Child,
        program: std::path::PathBuf,
        requests: OwnedFd,
        /// Whether it said it is ready (its first message on `requests`).
        ready: bool,
        /// The environment it was started with, which its children have.
        environment: Vec<(OsString, OsString)>,
        state: Arc<Mutex<State>>,
    }

    /// What the exit reader (a task) shares with the forks.
    #[derive(Default)]
    struct State {
        gone: bool,
        /// Children whose exit is awaited, by pid.
        waiting: HashMap<i32, oneshot::Sender<i32>>,
        /// Exits reported before the fork's answer was read.
        early: HashMap<i32, i32>,
    }

    impl Zygote {
        /// Start a zygote for workers of `env`; None if it cannot start
        /// (then every worker is spawned, and says why it fails, if it does).
        /// Needs a tokio runtime. It dies with the calling thread.
        pub fn start(env: &WorkerEnvironment) -> Option<Zygote> {
            let (requests, their_requests) = seqpacket_pair().ok()?;
            let (exits, their_exits) = seqpacket_pair().ok()?;
            let mut command = Command::new(&env.program);
            command
                .env("PMP_ZYGOTE", "1")
                .envs(crate::backend::interpreter_variables(
                    &env.python,
                    &env.sys_path,
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
            let (theirs_r, theirs_e) = (their_requests.as_raw_fd(), their_exits.as_raw_fd());
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    // Above 4 first, so neither lands on the other's place.
                    let r = libc::fcntl(theirs_r, libc::F_DUPFD, 10);
                    let e = libc::fcntl(theirs_e, libc::F_DUPFD, 10);
                    if r < 0
                        || e < 0
                        || libc::dup2(r, REQUESTS_FD) < 0
                        || libc::dup2(e, EXITS_FD) < 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(r);
                    libc::close(e);
                    if libc::setpgid(0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let environment = current_environment();
            let child = command.spawn().ok()?;
            drop((their_requests, their_exits));
            set_answer_timeout(&requests);
            let state = Arc::new(Mutex::new(State::default()));
            set_nonblocking(&exits);
            // SAFETY: the OwnedFd is a valid socket, owned by the AsyncFd
            // from here on and closed only when it drops.
            let exits = unsafe { AsyncFd::register(exits) }.ok()?;
            tokio::spawn(read_exits(exits, state.clone()));
            Some(Zygote {
                child,
                program: env.program.clone(),
                requests,
                ready: false,
                environment,
                state,
            })
        }

        /// Whether it died (then a new one may be started).
        pub fn is_gone(&self) -> bool {
            self.state.lock().expect("zygote state").gone
        }

        /// Whether the environment changed since it started while it has no
        /// child: then a new zygote (with the new environment) loses nothing.
        pub fn is_stale_and_idle(&self) -> bool {
            self.state.lock().expect("zygote state").waiting.is_empty()
                && current_environment() != self.environment
        }

        /// Fork `command`'s worker, if this zygote can reproduce it; None
        /// when the caller must spawn it.
        pub fn fork(
            &mut self,
            command: &Command,
            worker: WorkerId,
            printed: PrintedSink,
            exits: UnboundedSender<Exit>,
        ) -> Option<std::io::Result<WorkerProcess>> {
            if self.is_gone() {
                return None;
            }
            if current_environment() != self.environment {
                return None;
            }
            let request = request_for(command, &self.program)?;
            if !self.ready {
                match receive_pid(&self.requests) {
                    Ok(pid) if pid as u32 == self.child.id() => self.ready = true,
                    _ => {
                        self.give_up();
                        return None;
                    }
                }
            }
            let (stdout, stdout_w) = pipe().ok()?;
            let (stderr, stderr_w) = pipe().ok()?;
            if send_with_fds(&self.requests, &encode(&request), &[&stdout_w, &stderr_w]).is_err() {
                self.give_up();
                return None;
            }
            drop((stdout_w, stderr_w));
            let pid = match receive_pid(&self.requests) {
                Ok(pid) if pid > 0 => pid,
                // The fork failed; spawning may still work.
                Ok(_) => return None,
                Err(_) => {
                    self.give_up();
                    return None;
                }
            };
            let (tx, rx) = oneshot::channel();
            {
                let mut state = self.state.lock().expect("zygote state");
                match state.early.remove(&pid) {
                    Some(status) => {
                        let _ = tx.send(status);
                    }
                    None => {
                        state.waiting.insert(pid, tx);
                    }
                }
            }
            let status = async move {
                rx.await
                    .map(std::process::ExitStatus::from_raw)
                    .map_err(|_| {
                        format!(
                            "worker process (pid {pid}) was lost: the zygote that forked it died \
                         (which kills its children)"
                        )
                    })
            };
            let opened = (|| -> std::io::Result<_> {
                Ok((
                    tokio::net::unix::pipe::Receiver::from_owned_fd(stdout)?,
                    tokio::net::unix::pipe::Receiver::from_owned_fd(stderr)?,
                ))
            })();
            Some(opened.map(|(stdout, stderr)| {
                process::watch(worker, pid as u32, stdout, stderr, status, printed, exits)
            }))
        }

        /// Kill a zygote that stopped answering; its children die with it.
        fn give_up(&mut self) {
            self.state.lock().expect("zygote state").gone = true;
            let _ = self.child.kill();
        }
    }

    impl Drop for Zygote {
        /// The zygote goes, and with it (parent-death signal) any child it
        /// still has; reaped here, so no zombie stays behind.
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The request that makes the zygote's child `command`'s process. None
    /// when the child would not be that process (another program,
    /// arguments, a removed variable, a name Python cannot set).
    fn request_for(command: &Command, program: &std::path::Path) -> Option<ForkRequest> {
        if command.get_program() != program.as_os_str() || command.get_args().len() > 0 {
            return None;
        }
        let mut variables = Vec::new();
        for (name, value) in command.get_envs() {
            let value = value?;
            if name.as_bytes().contains(&b'=') {
                return None;
            }
            variables.push((
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            ));
        }
        Some(ForkRequest {
            cwd: command
                .get_current_dir()
                .map(|cwd| cwd.as_os_str().as_bytes().to_vec()),
            variables,
        })
    }

    /// Exit reports: `(pid, status)`. When the zygote
    /// goes, the children still awaited are reported lost.
    async fn read_exits(exits: AsyncFd<OwnedFd>, state: Arc<Mutex<State>>) {
        loop {
            let Ok(mut guard) = exits.readable().await else {
                break;
            };
            let mut report = [0u8; ExitReport::LEN];
            let received = guard.try_io(|fd| {
                // SAFETY: receiving at most `report.len()` bytes into it.
                let n = unsafe {
                    libc::recv(fd.as_raw_fd(), report.as_mut_ptr().cast(), report.len(), 0)
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            let ExitReport { pid, status } = match received {
                Err(_would_block) => continue,
                Ok(Ok(ExitReport::LEN)) => match decode(&report) {
                    Ok(report) => report,
                    Err(_) => break,
                },
                Ok(_) => break,
            };
            let mut state = state.lock().expect("zygote state");
            if let Some(waiting) = state.waiting.remove(&pid) {
                let _ = waiting.send(status);
            } else {
                state.early.insert(pid, status);
            }
        }
        let mut state = state.lock().expect("zygote state");
        state.gone = true;
        state.waiting.clear();
    }

    fn current_environment() -> Vec<(OsString, OsString)> {
        let mut environment: Vec<_> = std::env::vars_os().collect();
        environment.sort();
        environment
    }

    fn seqpacket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
        let mut fds = [0; 2];
        // SAFETY: socketpair writes two descriptors, which we then own.
        unsafe {
            if libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
        }
    }

    /// A pipe: (read end, write end), both close-on-exec.
    fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors, which we then own.
        unsafe {
            if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
        }
    }

    fn set_answer_timeout(socket: &OwnedFd) {
        let timeout = libc::timeval {
            tv_sec: ANSWER_TIMEOUT_S,
            tv_usec: 0,
        };
        // SAFETY: setting a timeval option on our own socket.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
    }

    fn set_nonblocking(fd: &OwnedFd) {
        // SAFETY: fcntl flags on our own descriptor.
        unsafe {
            let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }

    /// One message with `fds` attached (SCM_RIGHTS).
    fn send_with_fds(socket: &OwnedFd, bytes: &[u8], fds: &[&OwnedFd]) -> std::io::Result<()> {
        let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        let payload = std::mem::size_of_val(raw.as_slice());
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE(payload as u32) } as usize;
        let mut control = vec![0u8; space];
        let mut iov = libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        };
        // SAFETY: a zeroed msghdr pointed at live buffers, its one control
        // message filled in within the space CMSG_SPACE gave.
        unsafe {
            let mut header: libc::msghdr = std::mem::zeroed();
            header.msg_iov = &mut iov;
            header.msg_iovlen = 1;
            header.msg_control = control.as_mut_ptr().cast();
            header.msg_controllen = space as _;
            let cmsg = libc::CMSG_FIRSTHDR(&header);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload as u32) as _;
            std::ptr::copy_nonoverlapping(
                raw.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                payload,
            );
            loop {
                let sent = libc::sendmsg(socket.as_raw_fd(), &header, libc::MSG_NOSIGNAL);
                if sent >= 0 {
                    return Ok(());
                }
                let error = std::io::Error::last_os_error();
                if error.kind() != std::io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }

    /// The zygote's answer to a request: the child's pid, or 0 (or its own
    /// pid, once ready).
    fn receive_pid(socket: &OwnedFd) -> std::io::Result<i32> {
        let mut answer = [0u8; ForkAnswer::LEN];
        loop {
            // SAFETY: receiving at most `answer.len()` bytes into it.
            let n = unsafe {
                libc::recv(
                    socket.as_raw_fd(),
                    answer.as_mut_ptr().cast(),
                    answer.len(),
                    0,
                )
            };
            if n == ForkAnswer::LEN as isize {
                return decode::<ForkAnswer>(&answer)
                    .map(|answer| answer.pid)
                    .map_err(std::io::Error::other);
            }
            let error = std::io::Error::last_os_error();
            if n < 0 && error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(if n < 0 {
                error
            } else {
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the zygote went away")
            });
        }
    }

    #[cfg(test)]
    mod tests {
        use super::request_for;
        use crate::backend::local::LocalBackend;
        use crate::backend::{Backend, WorkerEnvironment};
        use crate::core::Launch;
        use crate::ids::WorkerId;
        use crate::resources::{Gpus, ResourceRequest};

        fn launch(cores: u32, cwd: Option<&str>) -> Launch {
            Launch {
                resources: ResourceRequest {
                    cores,
                    threads_per_core: 2,
                    cwd: cwd.map(String::from),
                    ..Default::default()
                },
                placement: crate::capacity::Placement::Node(crate::ids::NodeId(0)),
                gpus: Gpus::Devices(vec!["1".into()]),
            }
        }

        #[test]
        fn a_local_single_rank_worker_becomes_its_cwd_and_variables() {
            let env = WorkerEnvironment::for_tests();
            let backend = LocalBackend::new(vec![]);
            let command = backend
                .command(&env, WorkerId(7), &launch(1, Some("/")))
                .unwrap();
            let request = request_for(&command, &env.program).expect("a zygote can fork it");
            assert_eq!(request.cwd.as_deref(), Some(&b"/"[..]));
            for (name, value) in [
                ("PMP_WORKER_ID", "7"),
                ("OMP_NUM_THREADS", "2"),
                ("CUDA_VISIBLE_DEVICES", "1"),
                ("PMP_RANKS", "1"),
            ] {
                assert!(
                    request
                        .variables
                        .iter()
                        .any(|(n, v)| n == name && v == value),
                    "{name}={value} in {:?}",
                    request.variables
                );
            }
        }

        #[test]
        fn other_programs_and_arguments_are_spawned() {
            let env = WorkerEnvironment::for_tests();
            let mut mpiexec = std::process::Command::new("/usr/bin/mpiexec");
            mpiexec.arg("-n").arg("2").arg(&env.program);
            assert!(request_for(&mpiexec, &env.program).is_none());
            let mut with_argument = std::process::Command::new(&env.program);
            with_argument.arg("--extra");
            assert!(request_for(&with_argument, &env.program).is_none());
            let mut removed = std::process::Command::new(&env.program);
            removed.env_remove("HOME");
            assert!(request_for(&removed, &env.program).is_none());
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod elsewhere {
    use crate::backend::WorkerEnvironment;
    use crate::ids::WorkerId;
    use crate::process::{Exit, PrintedSink, WorkerProcess};
    use std::process::Command;
    use tokio::sync::mpsc::UnboundedSender;

    /// No zygote outside Linux: without a parent-death signal, its children
    /// would have to watch the client from a thread, which a fork would not
    /// copy. Every worker is spawned.
    pub struct Zygote;

    impl Zygote {
        pub fn start(_env: &WorkerEnvironment) -> Option<Zygote> {
            None
        }

        pub fn is_gone(&self) -> bool {
            true
        }

        pub fn is_stale_and_idle(&self) -> bool {
            false
        }

        pub fn fork(
            &mut self,
            _command: &Command,
            _worker: WorkerId,
            _printed: PrintedSink,
            _exits: UnboundedSender<Exit>,
        ) -> Option<std::io::Result<WorkerProcess>> {
            None
        }
    }
}
