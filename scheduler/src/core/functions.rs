//! The function pickles of tasks not yet sent, stored once per distinct
//! function.

use crate::ids::IdMap;
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// One copy of each distinct function pickle among the unsent tasks: a loop
/// submitting the same function 100,000 times stores it once.
#[derive(Default)]
pub(super) struct FunctionStore {
    by_digest: IdMap<[u8; 32], (Bytes, u32)>,
}

impl FunctionStore {
    /// Keep `function` (or count one more user of the copy already kept);
    /// returns its digest, which names it in the workers' caches, and the copy.
    pub(super) fn intern(&mut self, function: Bytes) -> ([u8; 32], Bytes) {
        let digest: [u8; 32] = Sha256::digest(&function).into();
        let entry = self.by_digest.entry(digest).or_insert((function, 0));
        entry.1 += 1;
        (digest, entry.0.clone())
    }

    /// One user fewer: a task was sent or failed. The last one drops the copy.
    pub(super) fn release(&mut self, digest: &[u8; 32]) {
        if let Some(entry) = self.by_digest.get_mut(digest) {
            entry.1 -= 1;
            if entry.1 == 0 {
                self.by_digest.remove(digest);
            }
        }
    }
}

#[cfg(test)]
impl FunctionStore {
    pub(super) fn by_digest_is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}
