//! Storage for large frames (numpy arrays and other big buffers), tuned for
//! the two costs that dominate sending one: fresh memory is faulted in and
//! zeroed page by page, so it is asked for on 2 MiB pages, and the storage of
//! a frame that has been sent is recycled for the next one.

use bytes::Bytes;
#[cfg(target_os = "linux")]
use std::os::raw::c_void;
use std::sync::Mutex;

/// From this size on, a frame's storage is recycled (see `SPARE`).
const LARGE: usize = 4 << 20;

/// The storage of the last large frame, once nothing uses it any more. The
/// next large frame of a similar size is copied into it rather than into
/// fresh memory, whose every page the kernel must first fault in and zero
/// (in a VM, also back): a third of the time of submitting a 100 MB array.
/// One buffer at most is kept.
static SPARE: Mutex<Option<Vec<u8>>> = Mutex::new(None);

/// A large frame's storage; it goes back to `SPARE` when its last `Bytes` is
/// dropped (after sending, on the scheduler thread).
struct Recycled(Vec<u8>);

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let storage = std::mem::take(&mut self.0);
        if let Ok(mut spare) = SPARE.lock() {
            *spare = Some(storage);
        }
    }
}

/// The spare storage, if it fits `len` bytes without wasting more than half.
fn take_spare(len: usize) -> Option<Vec<u8>> {
    let mut spare = SPARE.lock().ok()?;
    let capacity = spare.as_ref()?.capacity();
    if capacity < len || capacity / 2 > len {
        return None;
    }
    let mut storage = spare.take()?;
    storage.clear();
    Some(storage)
}

/// A frame of `data`; large storage returns to `SPARE` once it is sent.
pub fn into_frame(data: Vec<u8>) -> Bytes {
    if data.capacity() >= LARGE {
        Bytes::from_owner(Recycled(data))
    } else {
        Bytes::from(data)
    }
}

/// An empty Vec with room for `len` bytes: a recycled one if there is one to
/// fit, else a new one; a new large one is backed by 2 MiB
/// pages where the kernel allows (transparent huge pages in "madvise" mode),
/// so copying a 100 MB array in costs about 50 page faults instead of 25,000,
/// each zeroing a page: most of that copy's time.
pub fn storage(len: usize) -> Vec<u8> {
    if len >= LARGE {
        if let Some(storage) = take_spare(len) {
            return storage;
        }
    }
    let data = Vec::with_capacity(len);
    // Transparent huge pages are Linux's; elsewhere the pages stay small.
    #[cfg(target_os = "linux")]
    advise_huge_pages(data.as_ptr() as usize, len);
    data
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(start: usize, len: usize) {
    const HUGE: usize = 2 << 20;
    if len < 2 * HUGE {
        return;
    }
    let aligned = start.next_multiple_of(HUGE);
    let advised = (start + len).saturating_sub(aligned) / HUGE * HUGE;
    // SAFETY: advice only, on whole pages inside the allocation, before
    // anything is written to it.
    unsafe {
        libc::madvise(aligned as *mut c_void, advised, libc::MADV_HUGEPAGE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test, as SPARE is shared by the whole process.
    #[test]
    fn the_storage_of_a_sent_frame_is_reused_for_the_next_of_a_similar_size() {
        let first = into_frame(vec![1u8; 3 * LARGE]);
        let address = first.as_ptr();
        // In use: never handed out again.
        let other = storage(3 * LARGE);
        assert_ne!(other.as_ptr(), address);
        drop(first);
        // Much smaller: new storage, and the spare is kept for a better fit.
        let smaller = storage(LARGE);
        assert_ne!(smaller.as_ptr(), address);
        let reused = storage(3 * LARGE - 10);
        assert_eq!(reused.as_ptr(), address);
        assert!(reused.is_empty() && reused.capacity() >= 3 * LARGE - 10);
        // Taken: the next one gets new storage.
        let next = storage(3 * LARGE);
        assert_ne!(next.as_ptr(), address);
        drop((other, smaller, reused, next));
        // Small frames are not recycled.
        drop(into_frame(vec![1u8; 100]));
        assert!(SPARE.lock().unwrap().is_none());
    }
}
