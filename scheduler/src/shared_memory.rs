//! Large out-of-band buffers (numpy arrays) moved between the client and
//! workers on this host through shared memory instead of the socket.
//!
//! Arguments: the client copies such a buffer once, at submit, into a
//! segment: a memfd (an anonymous file in RAM) mapped into this process.
//! When the task goes to a worker on this host, its frame is sent empty and
//! the authenticated `Run` header names the segment instead (`SegmentRef`); the
//! worker opens it as `/proc/<our pid>/fd/<fd>`, maps it copy-on-write and
//! unpickles straight from the mapping. To a worker on another host the same
//! frame travels on the socket as before. A worker that cannot map a
//! segment (another pid namespace, no descriptor left) says so
//! (`FromWorker::CannotMap`) without running the task, and the scheduler
//! sends it that task again, and everything after, on the socket.
//!
//! Results, the other way round (`hand_over`): when the `Run` allows it, the
//! worker leaves its result's large buffers in segments of its own, names
//! them in its authenticated `Done`, and keeps them open until the scheduler has
//! mapped them (`ToWorker::Released`); then it closes them, and the
//! scheduler's mapping keeps the pages as long as the result is held.
//!
//! Why this is sound:
//! - The pickle itself, the only part that can run code, stays in the
//!   authenticated message (`seal`); a segment holds only raw buffer bytes, which pickle
//!   hands to the reconstructing class (numpy) as data. The header that
//!   names the segment is authenticated, so only its sender chooses what the other
//!   side maps, and it checks that the file is the one named (device and
//!   inode), not one of another process with the same pid elsewhere.
//! - Who can write a segment: the process that made it (it holds the fd),
//!   and whoever may open `/proc/<pid>/fd/<fd>`: the kernel allows that to
//!   processes that pass the ptrace read check on it: this uid (or root).
//!   They pass the very same check on a worker's `/proc/<pid>/environ`,
//!   which holds the executor's key (`PMP_KEY`: removing it from the
//!   process's environment does not erase it there), so they could sign any
//!   message anyway: the segment adds no one who can change what a worker
//!   computes or what the client receives.
//! - Nothing has a name: there is no file in /dev/shm to leak. The memory
//!   goes back to the system when the last process holding the fd or a
//!   mapping ends (client SIGKILLed, worker crashed, shutdown): nothing is
//!   left behind in any of those cases, by construction.
//! - The segment's size is sealed (`F_SEAL_SHRINK`), so a mapping can never
//!   fault past the end of the file (SIGBUS).
//!
//! Fresh tmpfs pages are faulted in and zeroed one by one, which costs more
//! than the copy itself (in a VM several times more), so an argument's
//! segment goes back to a small pool when neither this process (the task's
//! payload) nor any worker (`FromWorker::Released`) uses it any more, and
//! the next large buffer of a similar size is copied into it. A result's
//! segment is never reused: the client may hold the result for ever.
//!
//! Linux only; elsewhere `enabled` is false and every frame uses the socket.

use crate::protocol::{SegmentRef, SharedFrame};
use bytes::Bytes;
use std::sync::Arc;

/// Buffers from this size on go into shared memory.
pub const SHARED_FROM: usize = 1 << 20;

/// Whether large buffers go through shared memory: on Linux unless
/// `PMP_SHARED_MEMORY` is `0`, `false`, `no` or `off` in the client's
/// environment (read each time, so one process can try both ways).
pub fn enabled() -> bool {
    cfg!(target_os = "linux") && !crate::switched_off("PMP_SHARED_MEMORY")
}

/// A segment lent to a worker: it stays out of the pool while this lives.
pub struct Lent {
    id: u64,
    _segment: Arc<imp::Segment>,
}

impl Lent {
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// Whether `share` could put any of `frames` in shared memory: callers skip
/// their preparations for the many messages with none that large.
pub fn has_large(frames: &[Bytes]) -> bool {
    frames.iter().any(|frame| frame.len() >= SHARED_FROM)
}

/// Send the frames of `frames` that live in segments through those segments:
/// each is replaced by an empty frame, described in the returned list, and
/// its segment kept in `lent` until the peer says it unmapped it (a worker's
/// `FromWorker::Released`): then it may be written again.
pub fn share(frames: &mut [Bytes], lent: &mut Vec<Lent>) -> Vec<SharedFrame> {
    share_frames(frames, lent, true)
}

/// `share` for a peer that keeps its mapping for as long as it likes (the
/// scheduler mapping a worker's result, which the client may hold): the
/// segment is kept in `lent` only until the peer has mapped it, and is
/// closed rather than written again.
pub fn hand_over(frames: &mut [Bytes], lent: &mut Vec<Lent>) -> Vec<SharedFrame> {
    share_frames(frames, lent, false)
}

fn share_frames(frames: &mut [Bytes], lent: &mut Vec<Lent>, reuse: bool) -> Vec<SharedFrame> {
    let mut shared = Vec::new();
    for (index, frame) in frames.iter_mut().enumerate() {
        if frame.len() < SHARED_FROM {
            continue;
        }
        let Some(segment) = imp::holding(frame) else {
            continue;
        };
        if !reuse {
            segment.never_reuse();
        }
        let reference = segment.reference(frame.len());
        lent.push(Lent {
            id: reference.id,
            _segment: segment,
        });
        *frame = Bytes::new();
        shared.push(SharedFrame {
            index: index as u32,
            segment: reference,
        });
    }
    shared
}

/// Why the shared frames of a message could not all be mapped.
#[derive(Debug)]
pub struct NotMapped {
    /// The segments of the message left unmapped (those before were mapped,
    /// and `unmapped` hears of them as usual once they are dropped).
    pub segments: Vec<u64>,
    pub reason: String,
}

/// The frames of a received message that wait in the sender's shared memory,
/// mapped (privately: copy-on-write) into their places in `frames`;
/// `unmapped(id)` hears when each mapping is gone.
pub fn attach(
    shared: &[SharedFrame],
    frames: &mut [Bytes],
    unmapped: fn(u64),
) -> Result<(), NotMapped> {
    for (i, item) in shared.iter().enumerate() {
        let mapped = match frames.get_mut(item.index as usize) {
            None => Err(format!(
                "shared frame {} is past the message's end",
                item.index
            )),
            Some(slot) => imp::map(&item.segment, unmapped).map(|bytes| *slot = bytes),
        };
        if let Err(reason) = mapped {
            return Err(NotMapped {
                segments: shared[i..].iter().map(|s| s.segment.id).collect(),
                reason,
            });
        }
    }
    Ok(())
}

/// The worker released segment `id` (one lending of it).
pub fn release(lent: &mut Vec<Lent>, id: u64) {
    if let Some(at) = lent.iter().position(|l| l.id == id) {
        lent.swap_remove(at);
    }
}

/// Close the segments kept for reuse (an executor shut down); those in use
/// close when their last user lets go.
pub fn drain_pool() {
    imp::drain_pool();
}

/// A frame of `len` bytes written by `fill` straight into a segment; None
/// when shared memory is off or no segment could be made (the caller uses
/// ordinary memory then).
pub fn frame(len: usize, fill: impl FnOnce(&mut [u8])) -> Option<Bytes> {
    if len < SHARED_FROM || !enabled() {
        return None;
    }
    imp::frame(len, fill, None)
}

/// A frame holding a copy of `source` in a segment, as `frame` makes one;
/// but where a segment still in use holds the very same bytes (the same
/// array passed to many calls), a frame of that segment instead of a new
/// copy. So a hundred calls sharing a 45 MB argument hold it once, and a
/// node agent gets it once (`content_hash` is worked out once per
/// segment). The same bytes are found by their length and a fingerprint of
/// a few samples, then checked whole: a match is always equal bytes, never
/// a likely one. Comparing costs a read of the buffer, a copy a read, a
/// write and fresh pages.
pub fn frame_of(source: &[u8]) -> Option<Bytes> {
    if source.len() < SHARED_FROM || !enabled() {
        return None;
    }
    let sample = imp::Sample::of(source);
    if let Some(same) = imp::same_bytes(&sample, source) {
        return Some(same);
    }
    imp::frame(
        source.len(),
        |target| target.copy_from_slice(source),
        Some(sample),
    )
}

/// The BLAKE3 hash of a frame that is a whole segment (`frame`,
/// `frame_of`), worked out once per segment however many frames share it;
/// None for other frames (the caller hashes them itself, if it must).
pub fn content_hash(frame: &Bytes) -> Option<[u8; 32]> {
    let segment = imp::holding(frame)?;
    Some(segment.content_hash(frame))
}

#[cfg(target_os = "linux")]
mod imp {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::raw::c_void;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, Weak};

    /// Segments are made in whole multiples of this, so that buffers of
    /// about the same size fit each other's.
    const GRAIN: usize = 2 << 20;
    /// Free segments kept for reuse; more are closed.
    const POOL: usize = 2;
    /// Segments in use at once, at most: each holds a file descriptor in
    /// the client for as long as its task waits in the queue, and a client
    /// that queued thousands of calls must not run out of descriptors for
    /// everything else. Past this, large buffers use ordinary memory (and
    /// the socket).
    pub const IN_USE: usize = 128;

    /// A memfd mapped read-write into this process.
    struct Mapping {
        fd: OwnedFd,
        address: *mut u8,
        capacity: usize,
        device: u64,
        inode: u64,
    }

    // SAFETY: the mapping is plain memory owned by this value; who writes it
    // when is governed by `Segment` (only before it is first lent out).
    unsafe impl Send for Mapping {}
    unsafe impl Sync for Mapping {}

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: `address` is a mapping of `capacity` bytes made by
            // `Mapping::new`, unmapped once, here. The fd closes with `fd`.
            unsafe { libc::munmap(self.address.cast::<c_void>(), self.capacity) };
        }
    }

    impl Mapping {
        fn new(capacity: usize) -> std::io::Result<Mapping> {
            let name = c"pmp-frame";
            // SAFETY: plain system calls on a descriptor this function owns.
            unsafe {
                let raw =
                    libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING);
                if raw < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let fd = OwnedFd::from_raw_fd(raw);
                if libc::ftruncate(raw, capacity as libc::off_t) != 0
                    || libc::fcntl(
                        raw,
                        libc::F_ADD_SEALS,
                        libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
                    ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                let mut stat: libc::stat = std::mem::zeroed();
                if libc::fstat(raw, &mut stat) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let address = libc::mmap(
                    std::ptr::null_mut(),
                    capacity,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    raw,
                    0,
                );
                if address == libc::MAP_FAILED {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(Mapping {
                    fd,
                    address: address.cast::<u8>(),
                    capacity,
                    device: stat.st_dev,
                    inode: stat.st_ino,
                })
            }
        }
    }

    /// A mapping in use: by the frames of one payload, and by the workers
    /// it is lent to. When the last of them lets go it returns to the pool.
    pub struct Segment {
        mapping: Option<Mapping>,
        id: u64,
        /// Cleared once the segment is handed to a peer that unmaps it
        /// without saying so: it must then never be written again.
        reuse: AtomicBool,
        /// How `frame_of` finds it again, while it is in use.
        sample: Option<Sample>,
        /// Its bytes' BLAKE3 hash, once asked for (`content_hash`): the
        /// bytes never change while the segment is in use.
        hash: std::sync::OnceLock<[u8; 32]>,
    }

    /// A buffer's length and a fingerprint of a few slices of it: equal
    /// bytes have equal samples; unequal bytes usually do not, and a
    /// match is checked whole anyway.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct Sample {
        len: usize,
        fingerprint: [u8; 16],
    }

    impl Sample {
        /// 16 slices of 4 KiB spread over the buffer (64 KiB hashed, some
        /// 20 µs, whatever its size).
        pub fn of(bytes: &[u8]) -> Sample {
            const SLICES: usize = 16;
            const SLICE: usize = 4096;
            let mut hasher = blake3::Hasher::new();
            let last = bytes.len().saturating_sub(SLICE);
            for i in 0..SLICES {
                let start = last / (SLICES - 1) * i;
                hasher.update(&bytes[start..(start + SLICE).min(bytes.len())]);
            }
            let mut fingerprint = [0; 16];
            fingerprint.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
            Sample {
                len: bytes.len(),
                fingerprint,
            }
        }
    }

    impl Segment {
        pub fn never_reuse(&self) {
            self.reuse.store(false, Ordering::Relaxed);
        }

        /// `frame` is a frame of this segment (all of what it holds).
        pub fn content_hash(&self, frame: &Bytes) -> [u8; 32] {
            *self
                .hash
                .get_or_init(|| *blake3::hash(frame.as_ref()).as_bytes())
        }

        pub fn reference(&self, len: usize) -> SegmentRef {
            let mapping = self
                .mapping
                .as_ref()
                .expect("a segment in use has its mapping");
            SegmentRef {
                id: self.id,
                pid: std::process::id(),
                fd: mapping.fd.as_raw_fd(),
                device: mapping.device,
                inode: mapping.inode,
                len: len as u64,
            }
        }
    }

    impl Drop for Segment {
        fn drop(&mut self) {
            if let Some(mapping) = self.mapping.take() {
                let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
                state.in_use.remove(&(mapping.address as usize));
                if let Some(sample) = &self.sample {
                    // Unless a newer segment with the same sample took the
                    // entry over (its bytes differed from this one's).
                    if state
                        .by_sample
                        .get(sample)
                        .is_some_and(|w| w.strong_count() == 0)
                    {
                        state.by_sample.remove(sample);
                    }
                }
                if !self.reuse.load(Ordering::Relaxed) {
                    drop(state);
                    drop(mapping);
                    return;
                }
                state.free.push(mapping);
                if state.free.len() > POOL {
                    let oldest = state.free.remove(0);
                    drop(state);
                    drop(oldest);
                }
            }
        }
    }

    struct State {
        free: Vec<Mapping>,
        /// Segments in use, by their mapping's address: how `holding` finds
        /// a frame's segment (a `Bytes` does not say what owns it).
        in_use: BTreeMap<usize, Weak<Segment>>,
        /// Segments in use made by `frame_of`, by their bytes' sample.
        by_sample: BTreeMap<Sample, Weak<Segment>>,
        next_id: u64,
    }

    static STATE: Mutex<State> = Mutex::new(State {
        free: Vec::new(),
        in_use: BTreeMap::new(),
        by_sample: BTreeMap::new(),
        next_id: 1,
    });

    /// A frame of the segment in use that holds `source`'s bytes, if one does.
    pub fn same_bytes(sample: &Sample, source: &[u8]) -> Option<Bytes> {
        let segment = STATE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_sample
            .get(sample)?
            .upgrade()?;
        let owner = Owner {
            segment,
            len: source.len(),
        };
        // Compared outside the lock: a few milliseconds for tens of MB.
        (owner.as_ref() == source).then(|| Bytes::from_owner(owner))
    }

    /// What a frame in a segment holds on to.
    struct Owner {
        segment: Arc<Segment>,
        len: usize,
    }

    impl AsRef<[u8]> for Owner {
        fn as_ref(&self) -> &[u8] {
            let mapping = self.segment.mapping.as_ref().expect("in use");
            // SAFETY: `len` <= capacity bytes of a live mapping, written
            // before this owner was made and not written while it lives.
            unsafe { std::slice::from_raw_parts(mapping.address, self.len) }
        }
    }

    pub fn frame(
        len: usize,
        fill: impl FnOnce(&mut [u8]),
        sample: Option<Sample>,
    ) -> Option<Bytes> {
        if STATE.lock().unwrap_or_else(|e| e.into_inner()).in_use.len() >= IN_USE {
            return None;
        }
        let mapping = take_free(len).or_else(|| {
            Mapping::new(len.next_multiple_of(GRAIN))
                .map_err(|e| {
                    // Said once: the buffers still go, on the socket.
                    static SAID: AtomicBool = AtomicBool::new(false);
                    if !SAID.swap(true, Ordering::Relaxed) {
                        eprintln!(
                            "pmp: no shared memory for a {len}-byte buffer ({e}); large \
                             buffers go on the socket while this lasts"
                        );
                    }
                })
                .ok()
        })?;
        // SAFETY: a free mapping is used by no one: no frame, no worker.
        fill(unsafe { std::slice::from_raw_parts_mut(mapping.address, len) });
        let address = mapping.address as usize;
        let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
        let id = state.next_id;
        state.next_id += 1;
        let segment = Arc::new(Segment {
            mapping: Some(mapping),
            id,
            reuse: AtomicBool::new(true),
            sample,
            hash: std::sync::OnceLock::new(),
        });
        state.in_use.insert(address, Arc::downgrade(&segment));
        if let Some(sample) = sample {
            state.by_sample.insert(sample, Arc::downgrade(&segment));
        }
        drop(state);
        Some(Bytes::from_owner(Owner { segment, len }))
    }

    pub fn drain_pool() {
        let free = std::mem::take(&mut STATE.lock().unwrap_or_else(|e| e.into_inner()).free);
        drop(free);
    }

    /// The smallest free mapping that fits `len` bytes without wasting more
    /// than half of it.
    fn take_free(len: usize) -> Option<Mapping> {
        let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
        let best = state
            .free
            .iter()
            .enumerate()
            .filter(|(_, m)| m.capacity >= len && m.capacity / 2 <= len)
            .min_by_key(|(_, m)| m.capacity)
            .map(|(i, _)| i)?;
        Some(state.free.swap_remove(best))
    }

    /// The segment `frame` is the start of, if it is one of ours.
    pub fn holding(frame: &Bytes) -> Option<Arc<Segment>> {
        let state = STATE.lock().unwrap_or_else(|e| e.into_inner());
        let segment = state.in_use.get(&(frame.as_ptr() as usize))?.upgrade()?;
        let capacity = segment.mapping.as_ref()?.capacity;
        (frame.len() <= capacity).then_some(segment)
    }

    /// A private mapping of a peer's segment.
    struct Mapped {
        address: *mut u8,
        len: usize,
        id: u64,
        unmapped: fn(u64),
    }

    // SAFETY: plain memory owned by this value.
    unsafe impl Send for Mapped {}
    unsafe impl Sync for Mapped {}

    impl AsRef<[u8]> for Mapped {
        fn as_ref(&self) -> &[u8] {
            // SAFETY: a live mapping of `len` bytes.
            unsafe { std::slice::from_raw_parts(self.address, self.len) }
        }
    }

    impl Drop for Mapped {
        fn drop(&mut self) {
            // SAFETY: the mapping made in `map`, unmapped once, here.
            unsafe { libc::munmap(self.address.cast::<c_void>(), self.len) };
            (self.unmapped)(self.id);
        }
    }

    pub fn map(segment: &SegmentRef, unmapped: fn(u64)) -> Result<Bytes, String> {
        let path = format!("/proc/{}/fd/{}", segment.pid, segment.fd);
        let why = |what: String| {
            format!(
                "cannot map the shared memory {path} of process {}: {what}; set \
                 PMP_SHARED_MEMORY=0 in the client's environment to send large buffers \
                 on the socket",
                segment.pid
            )
        };
        let file = std::fs::File::open(&path).map_err(|e| why(e.to_string()))?;
        let meta = file.metadata().map_err(|e| why(e.to_string()))?;
        let len = segment.len as usize;
        if meta.dev() != segment.device || meta.ino() != segment.inode {
            return Err(why(
                "it is not the segment named (a process of another pid namespace?)".into(),
            ));
        }
        if meta.len() < segment.len || len == 0 {
            return Err(why(format!(
                "it holds {} bytes, not {}",
                meta.len(),
                segment.len
            )));
        }
        // SAFETY: a private mapping of `len` bytes of a file at least that
        // long whose size is sealed; the file may close once it is mapped.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(why(std::io::Error::last_os_error().to_string()));
        }
        Ok(Bytes::from_owner(Mapped {
            address: address.cast::<u8>(),
            len,
            id: segment.id,
            unmapped,
        }))
    }

    #[cfg(test)]
    pub fn free_count() -> usize {
        STATE.lock().unwrap().free.len()
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;

    /// Never made: `enabled` is false here.
    pub struct Segment;

    impl Segment {
        pub fn never_reuse(&self) {}

        pub fn reference(&self, _len: usize) -> SegmentRef {
            unreachable!("no segments without Linux")
        }
    }

    pub struct Sample;

    impl Sample {
        pub fn of(_bytes: &[u8]) -> Sample {
            Sample
        }
    }

    impl Segment {
        pub fn content_hash(&self, _frame: &Bytes) -> [u8; 32] {
            unreachable!("no segments without Linux")
        }
    }

    pub fn same_bytes(_sample: &Sample, _source: &[u8]) -> Option<Bytes> {
        None
    }

    pub fn frame(
        _len: usize,
        _fill: impl FnOnce(&mut [u8]),
        _sample: Option<Sample>,
    ) -> Option<Bytes> {
        None
    }

    pub fn holding(_frame: &Bytes) -> Option<Arc<Segment>> {
        None
    }

    pub fn drain_pool() {}

    pub fn map(_segment: &SegmentRef, _unmapped: fn(u64)) -> Result<Bytes, String> {
        Err("shared-memory frames need Linux".into())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    // One test: the pool is shared by the whole process.
    #[test]
    fn a_segment_is_lent_then_reused_once_frame_and_worker_let_go() {
        let len = 3 * SHARED_FROM + 5;
        let frame = frame(len, |data| data.fill(7)).expect("shared memory on Linux");
        assert_eq!(frame.len(), len);
        assert!(frame.iter().all(|&b| b == 7));
        let mut frames = vec![Bytes::from_static(b"pickle"), frame.clone()];
        let mut lent = Vec::new();
        let shared = share(&mut frames, &mut lent);
        assert_eq!(shared.len(), 1);
        assert_eq!(shared[0].index, 1);
        assert_eq!(shared[0].segment.len, len as u64);
        assert!(frames[1].is_empty() && frames[0] == Bytes::from_static(b"pickle"));
        // The fd is this process's memfd.
        let path = format!("/proc/self/fd/{}", shared[0].segment.fd);
        let target = std::fs::read_link(path).unwrap();
        assert!(target.to_string_lossy().starts_with("/memfd:pmp-frame"));
        let address = frame.as_ptr();
        let before = imp::free_count();
        drop((frame, frames));
        // Still lent to the worker: not free.
        assert_eq!(imp::free_count(), before);
        release(&mut lent, shared[0].segment.id);
        assert_eq!(imp::free_count(), before + 1);
        let again = super::frame(len - 100, |data| data.fill(1)).unwrap();
        assert_eq!(again.as_ptr(), address);
        // Small or ordinary frames are never shared.
        let mut small = vec![Bytes::from(vec![0u8; 100]), Bytes::from(vec![0u8; len])];
        assert!(share(&mut small, &mut lent).is_empty());
        drop(again);

        // Handed over (a worker's result): the peer maps it, and once it is
        // released the segment is closed, not reused; the mapping stays good.
        let result = super::frame(len, |data| data.fill(9)).unwrap();
        let mut frames = vec![result];
        let mut handed = Vec::new();
        let shared = hand_over(&mut frames, &mut handed);
        assert!(frames[0].is_empty());
        let mut received = vec![Bytes::new()];
        attach(&shared, &mut received, |_| {}).unwrap();
        let before = imp::free_count();
        release(&mut handed, shared[0].segment.id);
        assert_eq!(imp::free_count(), before);
        assert_eq!(received[0].len(), len);
        assert!(received[0].iter().all(|&b| b == 9));
        // A reference that names another file is refused.
        let other = super::frame(len, |data| data.fill(1)).unwrap();
        let mut frames = vec![other];
        let mut shared = share(&mut frames, &mut lent);
        shared[0].segment.inode += 1;
        let error = attach(&shared, &mut [Bytes::new()], |_| {}).unwrap_err();
        assert!(
            error.reason.contains("not the segment named"),
            "{}",
            error.reason
        );
        assert_eq!(error.segments, vec![shared[0].segment.id]);
        drop(frames);
        the_same_bytes_share_one_segment_and_one_hash_while_it_is_in_use();
    }

    fn the_same_bytes_share_one_segment_and_one_hash_while_it_is_in_use() {
        let len = 2 * SHARED_FROM + 3;
        let mut source: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let first = frame_of(&source).expect("shared memory on Linux");
        let second = frame_of(&source).unwrap();
        assert_eq!(
            first.as_ptr(),
            second.as_ptr(),
            "one segment for equal bytes"
        );
        let hash = content_hash(&first).unwrap();
        assert_eq!(hash, *blake3::hash(&source).as_bytes());
        assert_eq!(content_hash(&second), Some(hash));
        // One byte changed where no sample looks: equal samples, unequal
        // bytes, so a segment of its own.
        source[SHARED_FROM / 3 + 1] ^= 1;
        let changed = frame_of(&source).unwrap();
        assert_ne!(changed.as_ptr(), first.as_ptr());
        assert_eq!(changed.as_ref(), &source[..]);
        assert_ne!(content_hash(&changed), Some(hash));
        // Frames of other lengths, or in ordinary memory, are not found.
        assert!(frame_of(&source[..len - 1]).unwrap().as_ptr() != changed.as_ptr());
        assert_eq!(content_hash(&Bytes::from(source.clone())), None);
        // Once every frame of a segment is gone, equal bytes get a new copy.
        let address = changed.as_ptr();
        drop((first, second));
        source[SHARED_FROM / 3 + 1] ^= 1;
        let again = frame_of(&source).unwrap();
        assert_eq!(again.as_ref(), &source[..]);
        drop(changed);
        assert_ne!(again.as_ptr(), address);
        assert_eq!(frame_of(&source).unwrap().as_ptr(), again.as_ptr());
    }
}
