//! The core as the server drives it: every call below is one batch of
//! events, after which the server makes its one scheduling pass. Tests that
//! want several events in one batch call `Core`'s own methods (through
//! `core.0`) and `schedule_if_needed` themselves.

use super::*;

pub(super) struct Driven(pub(super) Core);

impl std::ops::Deref for Driven {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.0
    }
}

impl std::ops::DerefMut for Driven {
    fn deref_mut(&mut self) -> &mut Core {
        &mut self.0
    }
}

/// Each forwards one event to the core, then runs the pass the server runs
/// before it waits again.
macro_rules! batch_of_one {
    ($(fn $name:ident(&mut self, comm $(, $arg:ident: $ty:ty)*) $(-> $ret:ty)?;)*) => {
        impl Driven {
            $(
                pub(super) fn $name(&mut self, comm: &mut Recorder $(, $arg: $ty)*) $(-> $ret)? {
                    let answer = self.0.$name(comm $(, $arg)*);
                    self.0.schedule_if_needed(comm);
                    answer
                }
            )*
        }
    };
}

batch_of_one! {
    fn start(&mut self, comm);
    fn submit(&mut self, comm, spec: TaskSpec) -> Result<(), SubmitError>;
    fn resolve_external_result(&mut self, comm, id: TaskId, result: Payload);
    fn resolve_external_error(&mut self, comm, id: TaskId, error: Option<Payload>);
    fn cancel(&mut self, comm, id: TaskId) -> Option<bool>;
    fn shutdown(&mut self, comm, cancel_futures: bool);
    fn resize_pool(&mut self, comm, workers: u32) -> Result<(), String>;
    fn worker_hello(&mut self, comm, worker: WorkerId, pid: u32, host: String);
    fn worker_init_done(&mut self, comm, worker: WorkerId, outcome: Outcome, error: Payload);
    fn task_done(&mut self, comm, worker: WorkerId, task: TaskId, outcome: Outcome, payload: Payload);
    fn task_output(&mut self, comm, worker: WorkerId, task: TaskId, stream: Stream, text: Bytes);
    fn task_retracted(&mut self, comm, worker: WorkerId, task: TaskId);
    fn task_kept(&mut self, comm, worker: WorkerId, task: TaskId);
    fn worker_lost(&mut self, comm, worker: WorkerId, reason: LostReason);
    fn learn_memory(&mut self, comm, node: crate::ids::NodeId, mb: u32);
}
