//! The shell channel. The reader verifies each request and queues it, in
//! arrival order, for the Python thread; it publishes nothing itself (busy and
//! idle are published when the Python thread takes a request up, so statuses
//! never interleave with a running cell's). The writer sends replies.

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
}

pub type Queue = mpsc::UnboundedSender<Work>;

pub async fn read(mut socket: RouterRecvConnection, queue: Queue) {
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
