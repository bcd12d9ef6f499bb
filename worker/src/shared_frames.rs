//! The worker's side of `pmp_scheduler::shared_memory`: frames of a `Run`
//! that the scheduler left in its shared memory are mapped here, and the
//! scheduler hears (`FromWorker::Released`) when a mapping is gone, so it
//! may reuse the segment.
//!
//! A mapping is private (copy-on-write): a task that changes its argument
//! in place changes its own copy of the pages it writes, never the
//! scheduler's segment, which may be sent again (a task run again after its
//! worker died).

use pmp_scheduler::protocol::SharedFrame;
use pmp_scheduler::Bytes;
use std::sync::Mutex;

/// Segments whose mapping is gone, not yet reported to the scheduler.
static RELEASED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// The segments unmapped since the last call.
pub fn take_released() -> Vec<u64> {
    std::mem::take(&mut *RELEASED.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Put each shared frame's mapping in its place in `frames`; Err says why a
/// segment could not be mapped.
pub fn attach(shared: &[SharedFrame], frames: &mut [Bytes]) -> Result<(), String> {
    for item in shared {
        let slot = frames
            .get_mut(item.index as usize)
            .ok_or_else(|| format!("shared frame {} is past the message's end", item.index))?;
        *slot = imp::map(item)?;
    }
    Ok(())
}

#[cfg(target_os = "linux")]
mod imp {
    use super::*;
    use std::os::raw::c_void;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;

    /// A private mapping of a scheduler segment's first `len` bytes.
    struct Mapping {
        address: *mut u8,
        len: usize,
        id: u64,
    }

    // SAFETY: plain memory owned by this value.
    unsafe impl Send for Mapping {}
    unsafe impl Sync for Mapping {}

    impl AsRef<[u8]> for Mapping {
        fn as_ref(&self) -> &[u8] {
            // SAFETY: a live mapping of `len` bytes.
            unsafe { std::slice::from_raw_parts(self.address, self.len) }
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: the mapping made in `map`, unmapped once, here.
            unsafe { libc::munmap(self.address.cast::<c_void>(), self.len) };
            RELEASED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(self.id);
        }
    }

    pub fn map(item: &SharedFrame) -> Result<Bytes, String> {
        let segment = &item.segment;
        let path = format!("/proc/{}/fd/{}", segment.pid, segment.fd);
        let why = |what: String| {
            format!(
                "cannot map the scheduler's shared memory {path} (a task argument): {what}; \
                 set PMP_SHARED_MEMORY=0 in the client's environment to send it on the socket"
            )
        };
        let file = std::fs::File::open(&path).map_err(|e| why(e.to_string()))?;
        let meta = file.metadata().map_err(|e| why(e.to_string()))?;
        let len = segment.len as usize;
        if meta.dev() != segment.device || meta.ino() != segment.inode {
            return Err(why(
                "it is not the scheduler's segment (another pid namespace?)".into(),
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
        Ok(Bytes::from_owner(Mapping {
            address: address.cast::<u8>(),
            len,
            id: segment.id,
        }))
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;

    pub fn map(_item: &SharedFrame) -> Result<Bytes, String> {
        Err("shared-memory frames need Linux".into())
    }
}
