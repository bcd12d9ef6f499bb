//! The large buffers a node agent keeps for its workers (`ToAgent::Keep`),
//! so that each crosses the network once per node: a relayed `Run` names
//! them (`KeptFrame`) instead of carrying them, and the worker maps the
//! agent's copy as it maps the scheduler's segments on one host
//! (`shared_memory`, `shared_frames`).
//!
//! A buffer is kept in a segment of the agent's (a sealed memfd), lent to
//! each worker whose `Run` names it until that worker says it unmapped it
//! (`FromWorker::Released`) or exits. `Forget` drops the agent's own hold:
//! the segment closes (or goes back to the pool) once no worker maps it
//! either. Where no segment can be made (shared memory off, too many in
//! use) the buffer is kept in ordinary memory and goes to the worker on the
//! local socket: slower, never wrong.

use pmp_scheduler::protocol::agent::{BufferHash, KeptFrame};
use pmp_scheduler::protocol::SharedFrame;
use pmp_scheduler::shared_memory::{self, Lent};
use pmp_scheduler::Bytes;
use std::collections::HashMap;

#[derive(Default)]
pub struct Kept {
    buffers: HashMap<BufferHash, Bytes>,
}

impl Kept {
    /// Keep `frame` as buffer `hash`; Err (nothing kept) when its bytes
    /// are not the ones `hash` names.
    pub fn keep(&mut self, hash: BufferHash, frame: Bytes) -> Result<(), String> {
        let actual = blake3::hash(&frame);
        if actual.as_bytes() != &hash {
            return Err(format!(
                "a kept buffer of {} bytes does not match its hash ({} named, {} found)",
                frame.len(),
                short(&hash),
                short(actual.as_bytes())
            ));
        }
        let buffer = shared_memory::frame_of(&frame).unwrap_or(frame);
        self.buffers.insert(hash, buffer);
        Ok(())
    }

    /// Drop the agent's own hold on buffer `hash`; workers that map it
    /// keep their loan.
    pub fn forget(&mut self, hash: &BufferHash) {
        self.buffers.remove(hash);
    }

    /// Put the kept buffers that `kept` names into their (empty) places in
    /// `frames`, and lend those that live in segments to the worker
    /// (`lent`): their frames go empty again, described in the returned
    /// list for the `Run`'s `shared`. Err: a buffer not held here, or a
    /// place past the message's end; nothing is lent then.
    pub fn fill(
        &self,
        kept: &[KeptFrame],
        frames: &mut [Bytes],
        lent: &mut Vec<Lent>,
    ) -> Result<Vec<SharedFrame>, String> {
        for item in kept {
            if !self.buffers.contains_key(&item.hash) {
                return Err(format!(
                    "the node agent does not hold kept buffer {}",
                    short(&item.hash)
                ));
            }
            if item.index as usize >= frames.len() {
                return Err(format!(
                    "kept frame {} is past the message's end ({} frames)",
                    item.index,
                    frames.len()
                ));
            }
        }
        for item in kept {
            frames[item.index as usize] = self.buffers[&item.hash].clone();
        }
        Ok(shared_memory::share(frames, lent))
    }
}

/// A hash as it is said: its first bytes are enough to tell buffers apart.
fn short(hash: &[u8; 32]) -> String {
    hash[..6].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_kept_buffer_is_lent_from_a_segment_and_an_unknown_one_refused() {
        let buffer = Bytes::from(vec![7u8; shared_memory::SHARED_FROM + 3]);
        let hash = *blake3::hash(&buffer).as_bytes();
        let mut kept = Kept::default();
        let mut other = hash;
        other[0] ^= 1;
        let error = kept.keep(other, buffer.clone()).unwrap_err();
        assert!(error.contains("does not match its hash"), "{error}");
        kept.keep(hash, buffer.clone()).unwrap();
        let mut frames = vec![Bytes::from_static(b"pickle"), Bytes::new()];
        let mut lent = Vec::new();
        let item = |hash| vec![KeptFrame { index: 1, hash }];
        let shared = kept.fill(&item(hash), &mut frames, &mut lent).unwrap();
        assert_eq!(shared.len(), 1);
        assert_eq!(
            (shared[0].index, shared[0].segment.len),
            (1, buffer.len() as u64)
        );
        assert!(
            frames[1].is_empty(),
            "the frame goes empty: the worker maps it"
        );
        assert_eq!(lent.len(), 1);
        let mut mapped = vec![Bytes::new(), Bytes::new()];
        shared_memory::attach(&shared, &mut mapped, |_| {}).unwrap();
        assert_eq!(mapped[1], buffer);
        let error = kept.fill(&item(other), &mut frames, &mut lent).unwrap_err();
        assert!(error.contains("does not hold kept buffer"), "{error}");
        assert_eq!(lent.len(), 1, "nothing more lent");
    }
}
