//! IOPub: one task owns the XPUB socket; everyone else publishes through a
//! channel into it, so messages leave in the order they were produced.
//!
//! The zmq.rs XPUB socket records a subscription only while someone is
//! receiving on it: if this task stopped reading subscriptions, every message
//! would be dropped silently. So it always waits on both.

use crate::wire::{json, Outgoing, Signer};
use bytes::Bytes;
use jupyter_zmq_client::{
    parse_subscription_message, KernelIoPubXPubConnection, SubscriptionEvent,
};
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use zeromq::{SocketRecv, SocketSend};

enum Item {
    Message(Outgoing),
    /// Answered once everything queued before it has been sent.
    Flush(oneshot::Sender<()>),
}

/// The publishing side, cheap to clone and usable from any thread.
#[derive(Clone)]
pub struct Iopub {
    tx: mpsc::UnboundedSender<Item>,
}

pub struct Receiver(mpsc::UnboundedReceiver<Item>);

#[derive(Serialize)]
struct Status {
    execution_state: &'static str,
}

#[derive(Serialize)]
struct Welcome<'a> {
    subscription: &'a str,
}

impl Iopub {
    pub fn channel() -> (Iopub, Receiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Iopub { tx }, Receiver(rx))
    }

    pub fn publish(&self, message: Outgoing) {
        // Fails only after the publisher stopped, at exit: nothing to do then.
        let _ = self.tx.send(Item::Message(message));
    }

    /// `busy`, `idle` or `starting`, attributed to `parent`.
    pub fn status(&self, state: &'static str, parent: Option<&Bytes>) {
        let content = json(&Status {
            execution_state: state,
        });
        self.publish(Outgoing::broadcast("status", parent, content));
    }

    /// Wait until every message published before this call has been sent.
    pub async fn flushed(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Item::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Publish until every `Iopub` handle is gone.
pub async fn serve(mut socket: KernelIoPubXPubConnection, rx: Receiver, signer: Arc<Signer>) {
    let mut rx = rx.0;
    let mut listening = true;
    loop {
        tokio::select! {
            biased;
            item = rx.recv() => match item {
                Some(Item::Message(message)) => send(&mut socket, &signer, message).await,
                Some(Item::Flush(done)) => {
                    let _ = done.send(());
                }
                None => break,
            },
            frames = socket.socket.recv(), if listening => match frames {
                Ok(frames) => {
                    if let Some(SubscriptionEvent::Subscribe(topic)) =
                        parse_subscription_message(&frames)
                    {
                        let content = json(&Welcome { subscription: &topic });
                        send(&mut socket, &signer, Outgoing::broadcast("iopub_welcome", None, content))
                            .await;
                    }
                }
                // A subscriber went away; the others are still there.
                Err(zeromq::ZmqError::NoMessage) => listening = false,
                Err(e) => log::debug!("iopub subscriber: {e}"),
            },
        }
    }
}

async fn send(socket: &mut KernelIoPubXPubConnection, signer: &Signer, mut message: Outgoing) {
    let topic = format!("kernel.{}.{}", signer.session(), message.msg_type);
    message.identities = vec![Bytes::from(topic)];
    if let Err(e) = socket.socket.send(signer.encode(message)).await {
        log::warn!("iopub send failed: {e}");
    }
}
