//! The worker's side of `pmp_scheduler::shared_memory`.
//!
//! Arguments: the frames of a `Run` that the scheduler left in its shared
//! memory are mapped here, copy-on-write (a task that changes its argument
//! in place changes its own copy of the pages it writes, never the
//! scheduler's segment, which may be sent again to a task run again after
//! its worker died), and the scheduler hears (`FromWorker::Released`) when
//! a mapping is gone, so it may reuse the segment.
//!
//! Results: when the `Run` asked for it (`shared_results`: the scheduler is
//! on this host), the large frames of its `Done` stay in this process's
//! segments, which are kept open until the scheduler has mapped them
//! (`ToWorker::Released`), then closed: the scheduler's mapping keeps their
//! pages for as long as the client holds the result.

use pmp_scheduler::protocol::{FromWorker, SharedFrame};
use pmp_scheduler::shared_memory::{self, Lent, NotMapped};
use pmp_scheduler::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Argument segments whose mapping is gone, not yet reported.
static RELEASED: Mutex<Vec<u64>> = Mutex::new(Vec::new());
/// Whether the task being run (the last `Run`) may return its result in
/// shared memory.
static SHARE_RESULT: AtomicBool = AtomicBool::new(false);
/// Result segments the scheduler has not mapped yet.
static HANDED_OVER: Mutex<Vec<Lent>> = Mutex::new(Vec::new());

fn unmapped(id: u64) {
    RELEASED.lock().unwrap_or_else(|e| e.into_inner()).push(id);
}

/// The argument segments unmapped since the last call.
pub fn take_released() -> Vec<u64> {
    std::mem::take(&mut *RELEASED.lock().unwrap_or_else(|e| e.into_inner()))
}

/// A `Run` arrived: map its shared frames into `frames`, and note whether
/// its result may go back the same way. Err: what could not be mapped, and
/// why (the scheduler then sends the task again on the socket).
pub fn on_run(
    shared: &[SharedFrame],
    shared_results: bool,
    frames: &mut [Bytes],
) -> Result<(), NotMapped> {
    SHARE_RESULT.store(shared_results, Ordering::Relaxed);
    shared_memory::attach(shared, frames, unmapped).inspect_err(|_| {
        SHARE_RESULT.store(false, Ordering::Relaxed);
    })
}

/// A message about to be sent: a `Done` of a task whose result may use
/// shared memory sends its large frames through it.
pub fn on_send(message: &mut FromWorker, frames: &mut [Bytes]) {
    if let FromWorker::Done { shared, .. } = message {
        if SHARE_RESULT.swap(false, Ordering::Relaxed) {
            let mut handed = HANDED_OVER.lock().unwrap_or_else(|e| e.into_inner());
            *shared = shared_memory::hand_over(frames, &mut handed);
        }
    }
}

/// The scheduler has mapped these result segments: close them.
pub fn mapped_by_scheduler(segments: &[u64]) {
    let mut handed = HANDED_OVER.lock().unwrap_or_else(|e| e.into_inner());
    for &id in segments {
        shared_memory::release(&mut handed, id);
    }
}
