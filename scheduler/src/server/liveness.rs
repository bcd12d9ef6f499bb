//! Whether workers live: a process exit is handed to the core (held back
//! briefly when the worker was busy, so that its last messages are read
//! first), and a connected worker that stops answering heartbeats is killed.
//!
//! Only workers with their own connection are pinged. A worker under a node
//! agent lives as long as its agent: the agent pings its node's workers on
//! its local socket and stops one that stops answering (reporting it as
//! `Exited`), and the scheduler pings the agents alone (`ping_agents`), one
//! message a node, not one a worker, whatever the node's cores.

use super::comm::Wire;
use super::{Internal, Server};
use crate::process::{self, Exit};
use crate::protocol::ToWorker;
use std::time::{Duration, Instant};

/// How long the exit of a worker that died mid-task is held back: what it
/// sent just before (its task's last output, which also goes into the
/// report) is on the socket but may not have been read yet.
const LATE_MESSAGES: Duration = Duration::from_millis(100);

impl Server {
    pub(super) fn on_exit(&mut self, exit: Exit, held_back: bool) {
        let connected = self
            .live
            .get(&exit.worker)
            .is_some_and(|live| live.connected());
        if !held_back && connected && self.core.is_busy(exit.worker) {
            let internal = self.internal_tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(LATE_MESSAGES).await;
                let _ = internal.send(Internal::Exited(exit));
            });
            return;
        }
        let mut reason = exit.reason;
        if let Some(live) = self.live.remove(&exit.worker) {
            if let Wire::Direct { route, .. } = &live.wire {
                self.routes.remove(route);
            }
            if let Some(why) = live.kill_reason {
                reason.message = format!("{} ({why})", reason.message);
            }
            if !live.task_stderr.is_empty() {
                // What its task printed first, then what the process wrote.
                let mut lines = live.task_stderr;
                process::keep_lines(&mut lines, &reason.stderr_tail);
                reason.stderr_tail = Vec::from(lines).join("\n");
            }
        }
        with_comm!(self, |core, comm| core.worker_lost(
            &mut comm,
            exit.worker,
            reason
        ));
    }

    pub(super) fn on_heartbeat(&mut self) {
        let now = Instant::now();
        let timeout = self.timing.heartbeat_timeout;
        for live in self.live.values_mut() {
            // A worker still starting Python has not said hello; the time it
            // takes is not held against it. One under an agent is its
            // agent's to ping.
            if !matches!(live.wire, Wire::Direct { .. }) || live.kill_reason.is_some() {
                continue;
            }
            if now.duration_since(live.last_seen) > timeout {
                live.kill_reason = Some(process::unanswered_heartbeats(timeout));
                live.process.stop();
            } else {
                live.send(&self.outgoing, ToWorker::Ping, Vec::new());
            }
        }
    }
}
