//! Exits held until a job watcher says why: under a pilot job or an
//! elastic allocation, scancel or a time limit ends the workers with their
//! node's agent, which reports them before squeue says the job is ending.
//! The job's id and state are what explains them, so a worker's exit
//! (other than a clean one) waits for the watcher's next reports; a node
//! whose job is ending is lost with those words, and the exits held for it
//! go with it. The others were a worker's own end, let go after a poll.

use crate::ids::NodeId;
use crate::process::Exit;
use std::time::{Duration, Instant};

/// The reports of the watcher that an exit is held for: a poll started
/// after the exit arrived says whether the job was ending then.
const HELD_REPORTS: u32 = 2;

/// How long an exit is held at most, while squeue does not answer.
const HELD_AT_MOST: Duration = Duration::from_secs(30);

struct Held {
    node: NodeId,
    exit: Exit,
    reports: u32,
    since: Instant,
}

#[derive(Default)]
pub(super) struct HeldExits {
    held: Vec<Held>,
}

impl HeldExits {
    /// Hold `exit` of a worker on `node`, unless it was clean (a worker
    /// told to stop), which is given back to go now.
    pub(super) fn hold(&mut self, node: NodeId, exit: Exit) -> Option<Exit> {
        if exit.reason.exit_code == Some(0) {
            return Some(exit);
        }
        self.held.push(Held {
            node,
            exit,
            reports: 0,
            since: Instant::now(),
        });
        None
    }

    /// The watcher reported: exits on nodes `ending` stay held (their
    /// node's loss will explain them); the others go after `HELD_REPORTS`.
    pub(super) fn after_report(&mut self, ending: impl Fn(NodeId) -> bool) -> Vec<Exit> {
        let mut release = Vec::new();
        for mut held in std::mem::take(&mut self.held) {
            held.reports += 1;
            if !ending(held.node) && held.reports >= HELD_REPORTS {
                release.push(held.exit);
            } else {
                self.held.push(held);
            }
        }
        release
    }

    /// No report came (squeue does not answer): what is held that long
    /// goes as it is.
    pub(super) fn stale(&mut self) -> Vec<Exit> {
        let (stale, held): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|held| held.since.elapsed() > HELD_AT_MOST);
        self.held = held;
        stale.into_iter().map(|held| held.exit).collect()
    }

    /// `node` was lost: its node's loss fails what its workers ran.
    pub(super) fn forget(&mut self, node: NodeId) {
        self.held.retain(|held| held.node != node);
    }
}
