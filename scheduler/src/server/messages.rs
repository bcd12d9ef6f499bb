//! What workers send, on their own connection or relayed by their node's
//! agent (`relay`): sealed messages opened and handed to the core,
//! large frames mapped from or resent around shared memory, and what a
//! worker process prints, which belongs to the task it runs.

use super::comm::{Wire, WorkerHandle};
use super::Server;
use crate::admission;
use crate::core::{Comm, Event};
use crate::ids::{TaskId, WorkerId};
use crate::process::{self, Printed};
use crate::protocol::{self, DecodeError, FromWorker, Payload, Stream, ToWorker};
use crate::seal::{Opener, Sealer};

/// A new connection's session: its sending and receiving halves.
type Session = (Sealer, Opener);
use crate::shared_memory;
use bytes::Bytes;
use std::time::Instant;

impl Server {
    /// A message on the workers' socket, from a worker's own connection.
    pub(super) fn on_message(&mut self, mut message: Vec<Bytes>) {
        if message.is_empty() {
            return;
        }
        let route = message.remove(0);
        let (header, frames, session) = match self.open(&route, message) {
            Ok(opened) => opened,
            Err(e) => return self.unopened(&route, &e.to_string()),
        };
        let worker = match &header {
            FromWorker::Hello { worker, host, .. } => {
                let expected = session.is_some()
                    && self.live.get(worker).is_some_and(|live| {
                        !live.connected() && matches!(live.process, WorkerHandle::Here(_))
                    });
                if !expected {
                    return self.refuse(
                        &route,
                        "hello from a worker not started or already connected",
                    );
                }
                let admitted = admission::connection(&route)
                    .is_some_and(|connection| self.connections.admit(&connection));
                if !admitted {
                    // Timed out or displaced just now: the worker sees its
                    // connection close and exits, which is reported.
                    return self.drop_message(&route, "hello from a connection already closed");
                }
                let (sealer, opener) = session.expect("checked above");
                self.salts.accept(&opener);
                let live = self.live.get_mut(worker).expect("checked above");
                live.wire = Wire::Direct {
                    route: route.clone(),
                    sealer: Box::new(sealer),
                    opener: Box::new(opener),
                };
                live.shared.on = shared_memory::enabled() && *host == crate::host::name();
                self.routes.insert(route.clone(), *worker);
                *worker
            }
            _ => match self.routes.get(&route) {
                Some(worker) => *worker,
                None => return self.refuse(&route, "a first message that is not a hello"),
            },
        };
        self.on_worker_said(worker, header, frames);
    }

    /// What a worker said, on its own connection or relayed by its node's
    /// agent (`relay`), once that path checked it is the worker's: the one
    /// place a worker's message is acted on.
    pub(super) fn on_worker_said(
        &mut self,
        worker: WorkerId,
        header: FromWorker,
        mut frames: Vec<Bytes>,
    ) {
        if let Some(live) = self.live.get_mut(&worker) {
            live.last_seen = Instant::now();
            if let (
                FromWorker::Output {
                    stream: Stream::Stderr,
                    ..
                },
                Some(text),
            ) = (&header, frames.first())
            {
                process::keep_lines(&mut live.task_stderr, &String::from_utf8_lossy(text));
            }
        }
        if let FromWorker::Done { shared, .. } = &header {
            if !shared.is_empty() && !self.map_result(worker, shared, &mut frames) {
                return;
            }
        }
        if let FromWorker::Released { segments } = &header {
            if let Some(live) = self.live.get_mut(&worker) {
                for &id in segments {
                    shared_memory::release(&mut live.shared.lent, id);
                }
            }
            return;
        }
        if let FromWorker::CannotMap {
            task,
            segments,
            reason,
        } = &header
        {
            let relayed = self
                .live
                .get(&worker)
                .is_some_and(|live| matches!(live.wire, Wire::Relayed));
            return match relayed {
                true => self.resend_whole(worker, *task),
                false => self.send_unshared(worker, *task, segments, reason),
            };
        }
        if let (FromWorker::Done { .. } | FromWorker::Elsewhere { .. }, Some(live)) =
            (&header, self.live.get_mut(&worker))
        {
            live.shared.unshared = None;
            live.shared.kept.clear();
        }
        with_comm!(self, |core, comm| match header {
            FromWorker::Hello { pid, host, .. } => core.worker_hello(&mut comm, worker, pid, host),
            FromWorker::InitDone { outcome } => {
                core.worker_init_done(&mut comm, worker, outcome, Payload::new(frames))
            }
            FromWorker::Done {
                task,
                outcome,
                unstored,
                ..
            } => {
                if let Some(why) = unstored {
                    comm.emit(Event::Unstored { task, why });
                }
                let frames = frames.into_iter().map(detach_small).collect();
                core.task_done(&mut comm, worker, task, outcome, Payload::new(frames))
            }
            FromWorker::Elsewhere { task } => core.task_elsewhere(&mut comm, worker, task),
            FromWorker::Retracted { task } => core.task_retracted(&mut comm, worker, task),
            FromWorker::Kept { task } => core.task_kept(&mut comm, worker, task),
            FromWorker::Output { task, stream } => {
                if let Some(text) = frames.into_iter().next() {
                    core.task_output(&mut comm, worker, task, stream, text)
                }
            }
            FromWorker::Pong | FromWorker::Released { .. } | FromWorker::CannotMap { .. } => {}
        });
    }

    /// Open a message with its connection's session; a new connection's
    /// first message starts one (returned, to be kept if it is a Hello
    /// that admits the connection).
    fn open(
        &mut self,
        route: &Bytes,
        message: Vec<Bytes>,
    ) -> Result<(FromWorker, Vec<Bytes>, Option<Session>), DecodeError> {
        let connected =
            self.routes
                .get(route)
                .and_then(|worker| match &mut self.live.get_mut(worker)?.wire {
                    Wire::Direct { opener, .. } => Some(opener),
                    _ => None,
                });
        if let Some(opener) = connected {
            let (header, frames) = protocol::decode(opener, message)?;
            return Ok((header, frames, None));
        }
        let (sealer, mut opener) = self
            .salts
            .session(&self.key, self.protection, &message)
            .map_err(DecodeError::Unopened)?;
        let (header, frames) = protocol::decode(&mut opener, message)?;
        Ok((header, frames, Some((sealer, opener))))
    }

    /// A worker could not map the shared frames of `task`: from now on it
    /// gets large frames on the socket, starting with that task's again.
    fn send_unshared(&mut self, worker: WorkerId, task: TaskId, segments: &[u64], reason: &str) {
        let Some(live) = self.live.get_mut(&worker) else {
            return;
        };
        for &id in segments {
            shared_memory::release(&mut live.shared.lent, id);
        }
        if live.shared.on {
            eprintln!(
                "pmp scheduler: worker {} cannot map shared memory, so large buffers go to it \
                 on the socket: {reason}",
                worker.0
            );
        }
        live.shared.on = false;
        match live.shared.unshared.take() {
            Some((sent, message, frames)) if sent == task => {
                live.send(&self.outgoing, message, frames)
            }
            _ => self.drop_from(worker, "cannot-map for a task not sent with shared frames"),
        }
    }

    /// Map the result frames a worker left in its shared memory and tell it
    /// it may close them. False when they cannot be mapped: the worker is
    /// stopped, and its task fails with the reason.
    fn map_result(
        &mut self,
        worker: WorkerId,
        shared: &[protocol::SharedFrame],
        frames: &mut [Bytes],
    ) -> bool {
        let Some(live) = self.live.get_mut(&worker) else {
            return false;
        };
        // A relayed worker's pid and file descriptors are its node's: the
        // agent asks it for its result on the wire (`shared_results`).
        let mapped = match live.wire {
            Wire::Direct { .. } => {
                shared_memory::attach(shared, frames, |_| {}).map_err(|e| e.reason)
            }
            _ => Err(
                "its node's agent passed on a result left in shared memory, which \
                      cannot be mapped from another node"
                    .to_string(),
            ),
        };
        if let Wire::Direct { .. } = live.wire {
            let segments = shared.iter().map(|s| s.segment.id).collect();
            live.send(&self.outgoing, ToWorker::Released { segments }, Vec::new());
        }
        match mapped {
            Ok(()) => true,
            Err(e) => {
                live.kill_reason = Some(format!("its task's result was lost: {e}"));
                live.process.stop();
                false
            }
        }
    }

    /// What a worker process wrote to its file descriptors belongs to the
    /// task it runs; between tasks it goes to our own stdout/stderr.
    pub(super) fn on_printed(&mut self, printed: Printed) {
        let Printed {
            worker,
            stream,
            text,
        } = printed;
        match self.core.running_task(worker) {
            Some(task) => {
                with_comm!(self, |core, comm| core
                    .task_output(&mut comm, worker, task, stream, text))
            }
            None => process::write_to_own(stream, &text),
        }
    }

    /// A message that did not open. From a worker's connection, it was
    /// changed on the way (or sent by another): the connection cannot be
    /// trusted, and waiting on it could wait for ever for a result that was
    /// dropped, so the worker is stopped and its task fails saying why.
    fn unopened(&mut self, route: &Bytes, why: &str) {
        let Some(worker) = self.routes.get(route).copied() else {
            return self.refuse(route, why);
        };
        self.drop_message(route, why);
        if let Some(live) = self.live.get_mut(&worker) {
            if live.kill_reason.is_none() {
                live.kill_reason = Some(format!(
                    "a message from it did not open ({why}): its connection was tampered with"
                ));
                live.process.stop();
            }
        }
    }

    /// A message that does not admit its connection: dropped, and the
    /// connection closed unless a worker's Hello admitted it before (a
    /// connection not admitted sends nothing more that could be read).
    fn refuse(&mut self, route: &Bytes, why: &str) {
        if !self.routes.contains_key(route) {
            if let Some(connection) = admission::connection(route) {
                self.connections.disconnect(&connection);
            }
        }
        self.drop_message(route, why);
    }

    /// A message from a connected worker that makes no sense, dropped.
    pub(super) fn drop_from(&mut self, worker: WorkerId, why: &str) {
        self.drop_message(format!("worker {}", worker.0).as_bytes(), why);
    }

    /// Messages that do not open or are malformed are dropped, never decoded
    /// further; the log is rate-limited so a flood cannot fill the disk.
    pub(super) fn drop_message(&mut self, routing: &[u8], why: &str) {
        self.dropped_messages += 1;
        let n = self.dropped_messages;
        if n <= 10 || n.is_power_of_two() {
            eprintln!(
                "pmp scheduler: dropped message #{n} from peer {:?}: {why}",
                String::from_utf8_lossy(routing)
            );
        }
    }
}

/// Frames up to this size are copied out of the buffer they were received in.
const DETACHED_MAX: usize = 64 << 10;

/// A received frame is a slice of the socket's read buffer, which holds the
/// messages that arrived together and lives as long as any slice of it. A
/// result is kept for as long as its Future lives (a later call may take it
/// as an argument): a small one gets storage of its own, so that 100,000
/// held results do not keep every read buffer they arrived in alive.
fn detach_small(frame: Bytes) -> Bytes {
    if frame.len() <= DETACHED_MAX {
        Bytes::copy_from_slice(&frame)
    } else {
        frame
    }
}
