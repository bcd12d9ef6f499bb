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
        let buffer = shared_memory::frame(frame.len(), |segment| segment.copy_from_slice(&frame))
            .unwrap_or(frame);
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
