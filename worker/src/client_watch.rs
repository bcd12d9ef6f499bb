//! Where the kernel has no parent-death signal (macOS), the worker watches
//! the client process itself: when the client's pid exits (kqueue
//! `EVFILT_PROC` / `NOTE_EXIT`), it kills its own process group, so no
//! worker and none of its children outlives the client. On Linux the
//! scheduler sets `PR_SET_PDEATHSIG` when it starts the worker instead.

/// Start watching `PMP_CLIENT_PID`, if set.
#[cfg(target_os = "macos")]
pub fn start() {
    let Some(pid) = std::env::var("PMP_CLIENT_PID")
        .ok()
        .and_then(|p| p.parse::<libc::pid_t>().ok())
    else {
        return;
    };
    std::thread::Builder::new()
        .name("pmp-client-watch".into())
        .spawn(move || watch(pid))
        .ok();
}

#[cfg(target_os = "macos")]
fn watch(pid: libc::pid_t) {
    // SAFETY: a kqueue of our own, one change and one event, both zeroed
    // structs filled in full before use.
    unsafe {
        let queue = libc::kqueue();
        if queue < 0 {
            return;
        }
        let mut change: libc::kevent = std::mem::zeroed();
        change.ident = pid as libc::uintptr_t;
        change.filter = libc::EVFILT_PROC;
        change.flags = libc::EV_ADD | libc::EV_ONESHOT;
        change.fflags = libc::NOTE_EXIT;
        let mut event: libc::kevent = std::mem::zeroed();
        let armed = libc::kevent(queue, &change, 1, std::ptr::null_mut(), 0, std::ptr::null());
        if armed != 0 {
            // ESRCH: the client is gone already. Anything else: the
            // heartbeat limit still ends this worker.
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH) {
                return;
            }
        } else {
            while libc::kevent(queue, std::ptr::null(), 0, &mut event, 1, std::ptr::null()) < 0 {}
        }
        libc::killpg(libc::getpgrp(), libc::SIGKILL);
    }
}

/// Linux: the parent-death signal does this job (see the module comment).
#[cfg(not(target_os = "macos"))]
pub fn start() {}
