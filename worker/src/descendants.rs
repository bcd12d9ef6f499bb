//! What a task starts ends with its worker (Linux): a plain child, one in a
//! session of its own, a double-forked daemon.
//!
//! The worker is a child subreaper (`PR_SET_CHILD_SUBREAPER`): a descendant
//! whose parent exits (a double-forked daemon, as soon as it is forked)
//! becomes the worker's child instead of init's, so every descendant is
//! found by following children down from the worker. `end_all` kills them all before
//! the worker exits: when it is told to stop, when its scheduler goes silent,
//! at the end of a batch job, and on SIGTERM (the scheduler's stop, Slurm's
//! end of a job, and the parent-death signal, which this module makes
//! SIGTERM so that a worker whose parent died also gets to do this).
//!
//! A worker killed outright (SIGKILL, a crash) ends nothing itself: the
//! scheduler then kills its process group, and a zygote adopts and kills
//! what its forked worker left (`zygote`).
//!
//! Orphans adopted this way are reaped only when the worker ends: reaping
//! any child earlier would take exit statuses that the task's own
//! `subprocess` waits for. A daemon that exits meanwhile stays a zombie
//! until then.

/// Become the subreaper of everything a task starts, and end it all on SIGTERM.
#[cfg(target_os = "linux")]
pub fn take_charge() {
    // SAFETY: plain prctl calls on this process.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
        // Whoever armed the parent-death signal armed SIGKILL (the scheduler
        // or a zygote); SIGTERM reaches `on_sigterm`, which ends the
        // descendants first. A parent that died before this already killed us.
        if parent_death_signal() == Some(libc::SIGKILL) {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        }
    }
    on_sigterm::install();
}

#[cfg(not(target_os = "linux"))]
pub fn take_charge() {}

/// Kill every descendant and reap it; returns once none is left (or after
/// `MOST_WAIT`, for one stuck in the kernel).
#[cfg(target_os = "linux")]
pub fn end_all() {
    let deadline = std::time::Instant::now() + MOST_WAIT;
    loop {
        // Each round: the whole tree found now, all at once, so that a
        // process forking meanwhile is killed with its parent; what a dying
        // parent leaves becomes our child and is found by the next round.
        let tree = descendants_of(std::process::id() as libc::pid_t);
        for &pid in &tree {
            // SAFETY: plain syscall; each is our descendant, not reaped yet.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if !reap() && tree.is_empty() {
            return;
        }
        if std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[cfg(not(target_os = "linux"))]
pub fn end_all() {}

/// Longest `end_all` waits for killed processes to go: one in
/// uninterruptible sleep (a hung file system) must not keep the worker.
#[cfg(target_os = "linux")]
const MOST_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reap every child that has exited; false when there is no child at all.
#[cfg(target_os = "linux")]
fn reap() -> bool {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes one int.
        match unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } {
            0 => return true,
            pid if pid > 0 => continue,
            _ => return std::io::Error::last_os_error().raw_os_error() != Some(libc::ECHILD),
        }
    }
}

/// Every descendant of `root` (not itself), parents before their children.
#[cfg(target_os = "linux")]
pub fn descendants_of(root: libc::pid_t) -> Vec<libc::pid_t> {
    let mut found = Vec::new();
    let mut next = 0;
    let mut parent = root;
    loop {
        found.extend(children_of(parent));
        let Some(&pid) = found.get(next) else {
            return found;
        };
        parent = pid;
        next += 1;
    }
}

/// The children of `pid`, from each of its threads' `children` file (a
/// child belongs to the thread that forked it); from every process's parent
/// where the kernel has no such files (built without CONFIG_PROC_CHILDREN).
#[cfg(target_os = "linux")]
pub fn children_of(pid: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut children = Vec::new();
    for thread in threads.flatten() {
        match std::fs::read_to_string(thread.path().join("children")) {
            Ok(text) => children.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<libc::pid_t>().ok()),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return children_by_parent(pid),
            // The thread exited meanwhile.
            Err(_) => continue,
        }
    }
    children
}

/// The processes whose parent is `pid`, from each one's `/proc/<pid>/stat`.
#[cfg(target_os = "linux")]
fn children_by_parent(pid: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    processes
        .flatten()
        .filter_map(|entry| {
            let child: libc::pid_t = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            (ppid.parse() == Ok(pid)).then_some(child)
        })
        .collect()
}

#[cfg(target_os = "linux")]
fn parent_death_signal() -> Option<i32> {
    let mut signal: libc::c_int = 0;
    // SAFETY: PR_GET_PDEATHSIG writes one int.
    let got = unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut signal as *mut libc::c_int) };
    (got == 0).then_some(signal)
}

/// SIGTERM: end the descendants, then die of SIGTERM as if it had not been
/// caught (the scheduler reports the signal). The handler only wakes a
/// thread, which does the work outside signal context. A task that sets its
/// own SIGTERM handler replaces this one.
#[cfg(target_os = "linux")]
mod on_sigterm {
    use std::sync::atomic::{AtomicI32, Ordering};

    /// The write end of the pipe the handler wakes the thread through.
    static WAKE: AtomicI32 = AtomicI32::new(-1);

    pub fn install() {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors, which we then own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return;
        }
        let [read, write] = fds;
        WAKE.store(write, Ordering::SeqCst);
        let started = std::thread::Builder::new()
            .name("pmp-sigterm".into())
            .spawn(move || wait(read));
        if started.is_err() {
            return;
        }
        // SAFETY: a zeroed sigaction with a handler that only write()s,
        // which is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
        }
    }

    extern "C" fn handler(_signal: libc::c_int) {
        let byte = 1u8;
        // SAFETY: write(2) from a live byte; async-signal-safe.
        unsafe { libc::write(WAKE.load(Ordering::SeqCst), (&byte as *const u8).cast(), 1) };
    }

    fn wait(read: i32) {
        let mut byte = 0u8;
        loop {
            // SAFETY: reading one byte into a live buffer.
            let n = unsafe { libc::read(read, (&mut byte as *mut u8).cast(), 1) };
            if n == 1 {
                break;
            }
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        super::end_all();
        // SAFETY: back to the default action, then the signal again: the
        // process ends as killed by SIGTERM.
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            libc::kill(libc::getpid(), libc::SIGTERM);
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::{children_by_parent, children_of, descendants_of};

    #[test]
    fn a_child_and_its_child_are_found_with_or_without_children_files() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh starts");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().expect("piped")),
            &mut line,
        )
        .expect("the grandchild's pid");
        let grandchild: libc::pid_t = line.trim().parse().expect("a pid");
        let me = std::process::id() as libc::pid_t;
        let pid = child.id() as libc::pid_t;
        assert!(children_of(me).contains(&pid));
        assert!(children_by_parent(me).contains(&pid));
        assert_eq!(children_by_parent(pid), vec![grandchild]);
        let tree = descendants_of(me);
        let (at, below) = (
            tree.iter().position(|&p| p == pid),
            tree.iter().position(|&p| p == grandchild),
        );
        assert!(at < below && below.is_some(), "{tree:?}");
        // SAFETY: plain syscall on the grandchild, which sh reaps.
        unsafe { libc::kill(grandchild, libc::SIGKILL) };
        child.wait().expect("sh exits once its child is gone");
    }
}
