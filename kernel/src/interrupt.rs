//! Interrupts reach Python as a real SIGINT on the Python thread.
//!
//! SIGINT is blocked before any thread starts, so every thread inherits the
//! block; only the Python thread unblocks it. A signal sent to the process
//! (jupyter_client in signal mode, Ctrl-C in a terminal) therefore lands on
//! the Python thread, and an `interrupt_request` sends one there directly.
//! Delivered to that thread, the signal both marks Python's pending-signal
//! flag and wakes blocking calls (`time.sleep`, `select`) with EINTR, so busy
//! loops and sleeps stop alike. Setting the flag from another thread
//! (`PyErr_SetInterrupt`) is not enough: a busy loop would not notice it.

use std::sync::OnceLock;

static PYTHON_THREAD: OnceLock<libc::pthread_t> = OnceLock::new();

fn sigint_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set we pass them.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// Block SIGINT in the calling thread and every thread it starts later.
pub fn block_in_this_thread() {
    let set = sigint_set();
    // SAFETY: changes only this thread's signal mask.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Called on the Python thread first thing: interrupts go to this thread.
/// SIGINT stays blocked here until `accept_interrupts`, so one sent while
/// Python starts waits (and is then ignored) instead of killing the process
/// or breaking the start-up.
pub fn become_python_thread() {
    // SAFETY: pthread_self is always valid.
    let _ = PYTHON_THREAD.set(unsafe { libc::pthread_self() });
}

/// Unblock SIGINT on the Python thread, once Python handles it. Threads the
/// start-up created (IPython's history writer) keep it blocked.
pub fn accept_interrupts() {
    let set = sigint_set();
    // SAFETY: changes only this thread's signal mask.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
}

/// Send SIGINT to the Python thread. Harmless while it is idle: Python then
/// ignores SIGINT.
pub fn interrupt_python() -> bool {
    match PYTHON_THREAD.get() {
        // SAFETY: the Python thread lives until the process exits.
        Some(&thread) => unsafe { libc::pthread_kill(thread, libc::SIGINT) == 0 },
        None => false,
    }
}
