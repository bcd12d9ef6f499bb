//! Typed identifiers, so a task id can never be passed where a worker id is meant.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// A task, numbered by the client (Python allocates ids so it can register the
/// Future before the scheduler can possibly report on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskId(pub u64);

/// A worker process (or, for MPI, one group of ranks), numbered by the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkerId(pub u32);

/// A node of the allocation, numbered by the order the scheduler was given
/// its nodes (`capacity::Capacity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub u32);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {}", self.0)
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker {}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}", self.0)
    }
}

/// A map keyed by ids (or by digests, already uniform): hashed with a
/// multiply and a rotate, not SipHash. The core looks a task up by its id
/// several times a call, and the map of a million held calls rehashes every
/// key each time it grows; SipHash's resistance to chosen keys buys nothing
/// here, where the keys are the client's own numbers and the scheduler's.
pub type IdMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// FxHash's step (as in rustc): fast for small integer keys, and spreading
/// consecutive ones over the high bits a hash table's control bytes use.
#[derive(Clone, Copy, Default)]
pub struct IdHasher {
    state: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.state = (self.state.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("eight bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_map_finds_what_it_holds_among_many_consecutive_ids() {
        let mut map: IdMap<TaskId, u64> = IdMap::default();
        for id in 0..100_000u64 {
            map.insert(TaskId(id), id * 3);
        }
        assert_eq!(map.len(), 100_000);
        assert!((0..100_000u64).all(|id| map[&TaskId(id)] == id * 3));
        assert_eq!(map.get(&TaskId(100_000)), None);
        let mut digests: IdMap<[u8; 32], u8> = IdMap::default();
        digests.insert([1; 32], 1);
        digests.insert([2; 32], 2);
        assert_eq!((digests[&[1; 32]], digests[&[2; 32]]), (1, 2));
    }
}
