//! The shell channel. The reader verifies each request and queues it, in
//! arrival order, for the Python thread, which publishes busy and idle when
//! it takes the request up (so statuses never interleave with a running
//! cell's). The one exception is kernel_info while nothing is queued: its
//! reply is static, so the reader answers it at once, even while Python is
//! still importing IPython (a frontend shows the kernel as ready on that
//! reply; a request that needs IPython still waits for it). The writer
//! sends replies.

use crate::iopub::Iopub;
use crate::lifecycle::Lifecycle;
use crate::subshells::Subshells;
use crate::wire::{Outgoing, Request, Signer};
use jupyter_zmq_client::{RouterRecvConnection, RouterSendConnection};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use zeromq::{SocketRecv, SocketSend};

/// Work for the Python thread, in the order it must be done.
pub enum Work {
    Request(Request),
    /// Queued after an error: execute requests ahead of it are aborted.
    StopAborting,
    /// Wake the Python thread so it notices that the kernel is shutting down.
    Wake,
    /// Stop serving once the requests queued ahead are answered: the
    /// subshell was deleted.
    Leave,
    /// Run this on the Python thread between requests (the debugger starts
    /// debugpy there, so that debugpy traces the thread that runs cells).
    Call(Box<dyn FnOnce() + Send>),
}

/// The Python thread's queue (a std channel: that thread waits on it with a
/// timeout, see `dispatch`).
pub type Queue = std::sync::mpsc::Sender<Work>;
pub type WorkReceiver = std::sync::mpsc::Receiver<Work>;

/// What the shell reader needs to answer kernel_info itself and to hand
/// subshells their requests.
pub struct Answerer {
    pub replies: Replies,
    pub iopub: Iopub,
    pub lifecycle: Arc<Lifecycle>,
    pub subshells: Arc<Subshells>,
}

impl Answerer {
    /// Hand a subshell's request to it; answer `request` here if it is a
    /// kernel_info request that would not overtake a queued one; gives it
    /// back otherwise (for the main shell's queue). Before Python has
    /// produced the reply this waits for it: a request that arrives
    /// meanwhile would have to wait for it in the queue as well.
    async fn answer(&self, request: Request) -> Option<Request> {
        let request = self.subshells.route(request, &self.replies, &self.iopub)?;
        if request.msg_type != "kernel_info_request" || !self.lifecycle.shell_idle() {
            return Some(request);
        }
        let info = self.lifecycle.kernel_info().await;
        self.iopub.status("busy", Some(&request.header));
        self.replies.send(request.reply(info));
        self.iopub.status("idle", Some(&request.header));
        None
    }
}

pub async fn read(mut socket: RouterRecvConnection, queue: Queue, answerer: Answerer) {
    loop {
        let frames = match socket.socket.recv().await {
            Ok(frames) => frames,
            Err(zeromq::ZmqError::NoMessage) => return,
            Err(e) => {
                log::debug!("shell: {e}");
                continue;
            }
        };
        match Request::decode(frames, &socket.mac) {
            Ok(request) => {
                let Some(request) = answerer.answer(request).await else {
                    continue;
                };
                answerer.lifecycle.queued();
                if queue.send(Work::Request(request)).is_err() {
                    return;
                }
            }
            Err(e) => log::warn!("dropped a message on shell: {e}"),
        }
    }
}

enum Item {
    Reply(Outgoing),
    /// Answered once every reply queued before it has been sent.
    Flush(oneshot::Sender<()>),
}

/// Sends replies to shell requests; cheap to clone.
#[derive(Clone)]
pub struct Replies {
    tx: mpsc::UnboundedSender<Item>,
}

pub struct Receiver(mpsc::UnboundedReceiver<Item>);

impl Replies {
    pub fn channel() -> (Replies, Receiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Replies { tx }, Receiver(rx))
    }

    pub fn send(&self, reply: Outgoing) {
        // Fails only once the writer stopped, at exit.
        let _ = self.tx.send(Item::Reply(reply));
    }

    /// Wait until every reply sent before this call has left.
    pub async fn flushed(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Item::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

pub async fn write(mut socket: RouterSendConnection, rx: Receiver, signer: Arc<Signer>) {
    let mut rx = rx.0;
    while let Some(item) = rx.recv().await {
        match item {
            Item::Reply(reply) => {
                if let Err(e) = socket.socket.send(signer.encode(reply)).await {
                    log::warn!("shell reply not delivered: {e}");
                }
            }
            Item::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}
