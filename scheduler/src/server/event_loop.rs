//! The event loop: it waits for the next wake-up (a client command, a
//! worker's message or output, a process exit, a heartbeat tick), handles it
//! and whatever else is already queued, then makes the core's one
//! scheduling pass for that batch before it waits again.

use super::{Command, Incoming, Internal, Server, Snapshot};
use crate::core::{Event, SubmitError};
use crate::ids::TaskId;
use crate::process::Exit;
use tokio::sync::mpsc::UnboundedReceiver;

/// One thing that woke the event loop.
enum Wake {
    /// None: the client dropped its handle.
    Command(Option<Command>),
    Incoming(Incoming),
    Exit(Exit),
    Internal(Internal),
    /// The node agents' step ended.
    AgentStepExit(Exit),
    Heartbeat,
}

/// At most this many events are handled between two scheduling passes, so a
/// client submitting without pause cannot hold back the pass for the
/// workers waiting on it.
const BATCH_MAX: usize = 256;

impl Server {
    pub(super) async fn serve(
        &mut self,
        mut commands: UnboundedReceiver<Command>,
        mut incoming: UnboundedReceiver<Incoming>,
        mut internal: UnboundedReceiver<Internal>,
        mut exits: UnboundedReceiver<Exit>,
        mut step_exits: UnboundedReceiver<Exit>,
    ) {
        let mut heartbeat = tokio::time::interval(self.timing.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut client_gone = false;
        loop {
            // One scheduling pass for everything the last wake-up brought,
            // before waiting again: a task readied by it is sent now.
            with_comm!(self, |core, comm| core.schedule_if_needed(&mut comm));
            // What the turn made for the client goes before the loop waits.
            self.events.flush();
            if self.core.is_finished() {
                break;
            }
            let first = tokio::select! {
                command = commands.recv(), if !client_gone => Wake::Command(command),
                Some(incoming) = incoming.recv() => Wake::Incoming(incoming),
                Some(exit) = exits.recv() => Wake::Exit(exit),
                Some(event) = internal.recv() => Wake::Internal(event),
                Some(exit) = step_exits.recv() => Wake::AgentStepExit(exit),
                _ = heartbeat.tick() => Wake::Heartbeat,
            };
            if matches!(first, Wake::Heartbeat) {
                // What agents and workers said before this tick is read
                // before their silence is judged: a backlog the scheduler
                // has not read yet (a whole window of results, when it is
                // the slowest part) is not their silence.
                while let Ok(queued) = incoming.try_recv() {
                    self.on_wake(Wake::Incoming(queued), &mut client_gone);
                }
            }
            self.on_wake(first, &mut client_gone);
            // The rest of the batch: what is already queued (a burst of
            // submissions, the messages read together from the socket).
            for _ in 1..BATCH_MAX {
                let queued = incoming
                    .try_recv()
                    .map(Wake::Incoming)
                    .or_else(|_| exits.try_recv().map(Wake::Exit))
                    .or_else(|_| internal.try_recv().map(Wake::Internal));
                let queued = match queued {
                    Ok(wake) => wake,
                    Err(_) if client_gone => break,
                    Err(_) => match commands.try_recv() {
                        Ok(command) => Wake::Command(Some(command)),
                        Err(_) => break,
                    },
                };
                self.on_wake(queued, &mut client_gone);
            }
        }
    }

    fn on_wake(&mut self, wake: Wake, client_gone: &mut bool) {
        match wake {
            Wake::Command(Some(command)) => self.on_command(command),
            Wake::Command(None) => {
                // The client dropped us without shutting down.
                *client_gone = true;
                with_comm!(self, |core, comm| core.shutdown(&mut comm, true));
                for live in self.live.values() {
                    live.process.stop();
                }
            }
            Wake::Incoming(Incoming::Message(message)) => self.on_message(message),
            Wake::Incoming(Incoming::Printed(printed)) => self.on_printed(printed),
            Wake::Incoming(Incoming::Agent(message)) => self.on_agent_message(message),
            Wake::AgentStepExit(exit) => self.on_agent_step_exit(exit),
            Wake::Exit(exit) => self.on_exit(exit, false),
            Wake::Internal(Internal::Exited(exit)) => self.on_exit(exit, true),
            Wake::Internal(Internal::AllocationAnswer { id, answer }) => {
                self.on_allocation_answer(id, answer)
            }
            Wake::Internal(Internal::KillIfAlive(worker)) => {
                if let Some(live) = self.live.get_mut(&worker) {
                    live.kill_reason
                        .get_or_insert_with(|| "did not exit when asked to stop".into());
                    live.process.stop();
                }
            }
            Wake::Heartbeat => {
                self.on_heartbeat();
                self.ping_agents();
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Submit(spec) => {
                let id = spec.id;
                if let Err(e) = with_comm!(self, |core, comm| core.submit(&mut comm, spec)) {
                    self.reject(id, e);
                }
            }
            Command::AddExternal(id) => {
                if let Err(e) = self.core.add_external(id) {
                    self.reject(id, e);
                }
            }
            Command::ResolveExternal { task, result } => {
                with_comm!(self, |core, comm| match result {
                    Ok(payload) => core.resolve_external_result(&mut comm, task, payload),
                    Err(error) => core.resolve_external_error(&mut comm, task, error),
                })
            }
            Command::Cancel(id, reply) => {
                match with_comm!(self, |core, comm| core.cancel(&mut comm, id)) {
                    Some(cancelled) => {
                        // The client hears of the task's end no later than
                        // of the cancel's answer.
                        self.events.flush();
                        let _ = reply.send(cancelled);
                    }
                    // Answered once the worker holding it ahead replies.
                    None => self.cancels.entry(id).or_default().push(reply),
                }
            }
            Command::Release(id) => self.core.release(id),
            Command::ResizePool(workers, reply) => {
                let resized = with_comm!(self, |core, comm| core.resize_pool(&mut comm, workers));
                self.events.flush();
                let _ = reply.send(resized);
            }
            Command::Info(reply) => {
                // A snapshot is never ahead of the events the client has.
                self.events.flush();
                let _ = reply.send(Snapshot {
                    workers: self.core.worker_infos(),
                    nodes: self.core.node_rows(),
                    tasks: self.core.task_counts(),
                    agents: self.agent_stats(),
                    allocations: self.allocation_rows(),
                });
            }
            Command::Shutdown { cancel_futures } => {
                with_comm!(self, |core, comm| core.shutdown(&mut comm, cancel_futures))
            }
        }
    }

    fn reject(&mut self, task: TaskId, error: SubmitError) {
        self.events.push(Event::Rejected { task, error });
    }
}
