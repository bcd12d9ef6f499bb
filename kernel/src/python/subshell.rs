//! The thread of one subshell (see `crate::subshells`): a `Dispatcher` of its
//! own serving its own queue, with the same kernel object as the main shell.
//! Python runs there as on the main shell's thread, minus signals: SIGINT
//! stays blocked (interrupts are the main shell's) and Python handles
//! signals on its main thread only.

use super::dispatch::{Dispatcher, Engine};
use super::host::Host;
use crate::iopub::Iopub;
use crate::lifecycle::Lifecycle;
use crate::shell::{Queue, Replies, WorkReceiver};
use crate::subshells::Launch;
use bytes::Bytes;
use pyo3::prelude::*;
use std::sync::Arc;

/// What every subshell's dispatcher shares with the main shell's.
pub struct Launcher {
    /// The kernel object, or why Python is unavailable. In an Arc: a new
    /// reference to it needs the GIL, which the socket task that launches a
    /// subshell must not wait for; the subshell's thread takes it.
    engine: Result<Arc<Py<PyAny>>, String>,
    kernel_info: Bytes,
    host: &'static Host,
    iopub: Iopub,
    replies: Replies,
    lifecycle: Arc<Lifecycle>,
}

impl Launcher {
    /// From the main shell's dispatcher, on the Python thread.
    pub fn new(main: &Dispatcher) -> Launcher {
        Launcher {
            engine: match &main.engine {
                Engine::Python(kernel) => Ok(Arc::new(Python::attach(|py| kernel.clone_ref(py)))),
                Engine::Unavailable(why) => Err(why.clone()),
            },
            kernel_info: main.kernel_info.clone(),
            host: main.host,
            iopub: main.iopub.clone(),
            replies: main.replies.clone(),
            lifecycle: Arc::clone(&main.lifecycle),
        }
    }
}

impl Launch for Launcher {
    fn launch(&self, id: &str, work: WorkReceiver, queue: Queue) -> Result<(), String> {
        let engine = self.engine.clone();
        let (kernel_info, host) = (self.kernel_info.clone(), self.host);
        let (iopub, replies) = (self.iopub.clone(), self.replies.clone());
        let lifecycle = Arc::clone(&self.lifecycle);
        std::thread::Builder::new()
            .name(format!("subshell-{}", &id[..id.len().min(8)]))
            .spawn(move || {
                host.enter_subshell_thread();
                let dispatcher = move |engine| {
                    Dispatcher::new(engine, kernel_info, host, iopub, replies, queue, lifecycle)
                        .in_subshell()
                };
                match engine {
                    // One Python thread state for the subshell's life (its
                    // thread id, its threading.local data), released while
                    // it waits for requests.
                    Ok(kernel) => Python::attach(|py| {
                        let mut dispatcher = dispatcher(Engine::Python(kernel.clone_ref(py)));
                        py.detach(move || dispatcher.serve(&work));
                    }),
                    // Python never started: every request is told why.
                    Err(why) => dispatcher(Engine::Unavailable(why)).serve(&work),
                }
            })
            .map(|_| ())
            .map_err(|e| format!("cannot start its thread: {e}"))
    }
}
