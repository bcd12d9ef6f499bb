//! The worker's side of the task store: a task with a `StoreTarget` has its
//! outcome written to the store by the worker that computed it, so a large
//! result reaches the store without a trip through the client. A batch job
//! (`job`) writes its call's entry the same way.

use pmp_scheduler::protocol::{Outcome, StoreTarget};
use pmp_scheduler::store::{Entry, Meta, State, Store};
use pmp_scheduler::Bytes;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch: store times are compared across hosts.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Stores opened so far: opening reads the key file, once per store.
#[derive(Default)]
pub struct Stores {
    open: HashMap<PathBuf, Store>,
}

impl Stores {
    fn open(&mut self, root: &str) -> Result<&Store, String> {
        let root = PathBuf::from(root);
        match self.open.entry(root.clone()) {
            std::collections::hash_map::Entry::Occupied(known) => Ok(known.into_mut()),
            std::collections::hash_map::Entry::Vacant(slot) => match Store::open(&root) {
                Ok(store) => Ok(slot.insert(store)),
                Err(e) => Err(format!("cannot open the task store: {e}")),
            },
        }
    }

    /// Take the lock on the task's key before running it, so that a key runs
    /// once at a time across processes and hosts (a stale lock of a dead
    /// process on this host is taken over). False: another live run holds
    /// it. Taken here, not in the client's submit(), because creating a file
    /// costs about 0.5 ms on common file systems. A store that cannot be
    /// used does not stop the task: it runs, unstored.
    pub fn claim(&mut self, target: &StoreTarget) -> bool {
        let owner = pmp_scheduler::store::LockOwner::this_process(false).text();
        // Its `record` tells the client why nothing was stored.
        let Ok(store) = self.open(&target.root) else {
            return true;
        };
        let claimed = store.claim(&target.key, &owner).unwrap_or_else(|e| {
            say!("pmp-worker: cannot lock {}: {e}", target.key);
            true
        });
        // A run that ended after the client looked is as good as one that
        // holds the lock: its entry is there to be read.
        let done_meanwhile = claimed
            && matches!(store.read(&target.key), Ok(Some(e)) if e.meta.state == State::Done);
        if done_meanwhile {
            let _ = store.unlock(&target.key);
            return false;
        }
        claimed
    }

    /// Write one task's outcome; returns why it is not stored, if it is not.
    /// A store that cannot be written loses only the stored copy: the result
    /// still goes to the client, which warns with that reason.
    pub fn record(
        &mut self,
        target: &StoreTarget,
        started: f64,
        outcome: Outcome,
        frames: &[Bytes],
    ) -> Option<String> {
        let store = match self.open(&target.root) {
            Ok(store) => store,
            Err(why) => return Some(why),
        };
        let entry = outcome_entry(
            target.function.clone(),
            target.submitted,
            started,
            outcome,
            frames.to_vec(),
        );
        let unstored = store
            .write(&target.key, &entry)
            .err()
            .map(|e| e.to_string());
        // After the entry: whoever sees the lock gone finds the entry.
        if let Err(e) = store.unlock(&target.key) {
            say!("pmp-worker: cannot unlock {}: {e}", target.key);
        }
        unstored
    }
}

/// The entry of a call's outcome as this worker writes it, once the call
/// started at `started` has ended now.
pub fn outcome_entry(
    function: String,
    submitted: f64,
    started: f64,
    outcome: Outcome,
    frames: Vec<Bytes>,
) -> Entry {
    Entry {
        meta: Meta {
            function,
            state: match outcome {
                Outcome::Returned => State::Done,
                Outcome::Raised => State::Failed,
            },
            submitted,
            started,
            finished: now(),
            host: pmp_scheduler::host::name(),
            pid: std::process::id(),
        },
        frames,
    }
}
