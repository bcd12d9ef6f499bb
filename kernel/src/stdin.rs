//! The stdin channel: `input()` in a cell becomes an `input_request` to the
//! frontend that sent the cell, and its `input_reply` comes back here.
//!
//! The frontend's shell and stdin sockets share one ZMQ identity, so an
//! `input_request` routed with the execute request's identities reaches
//! exactly that frontend.

use crate::wire::{json, Outgoing, Request, Signer};
use bytes::Bytes;
use jupyter_zmq_client::KernelStdinConnection;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::mpsc;
use zeromq::{SocketRecv, SocketSend};

#[derive(Debug)]
pub enum InputError {
    /// The frontend has no stdin socket connected (or went away).
    NoFrontend,
}

type Answer = std::sync::mpsc::Sender<Result<String, InputError>>;

struct Pending {
    message: Outgoing,
    answer: Answer,
}

/// Asks the frontend for input; used from the Python thread.
#[derive(Clone)]
pub struct Stdin {
    tx: mpsc::UnboundedSender<Pending>,
}

#[derive(Serialize)]
struct InputRequest<'a> {
    prompt: &'a str,
    password: bool,
}

#[derive(Deserialize)]
struct InputReply {
    #[serde(default)]
    value: String,
}

pub struct Receiver(mpsc::UnboundedReceiver<Pending>);

impl Stdin {
    pub fn channel() -> (Stdin, Receiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Stdin { tx }, Receiver(rx))
    }

    /// Send an `input_request` on behalf of `parent` (the execute request's
    /// identities and header). The answer arrives on the returned receiver.
    pub fn request(
        &self,
        parent_identities: Vec<Bytes>,
        parent_header: Bytes,
        prompt: &str,
        password: bool,
    ) -> std::sync::mpsc::Receiver<Result<String, InputError>> {
        let (answer, rx) = std::sync::mpsc::channel();
        let message = Outgoing {
            identities: parent_identities,
            msg_type: "input_request".into(),
            parent: parent_header,
            metadata: Bytes::from_static(b"{}"),
            content: json(&InputRequest { prompt, password }),
            buffers: Vec::new(),
        };
        if let Err(mpsc::error::SendError(pending)) = self.tx.send(Pending { message, answer }) {
            let _ = pending.answer.send(Err(InputError::NoFrontend));
        }
        rx
    }
}

/// Broker requests and replies until the kernel stops. One request is
/// outstanding at a time (the Python thread waits for its answer); a reply
/// with no request waiting (one the user abandoned with an interrupt) is
/// dropped.
pub async fn serve(mut socket: KernelStdinConnection, rx: Receiver, signer: Arc<Signer>) {
    let mut rx = rx.0;
    let mut waiting: Option<Answer> = None;
    loop {
        tokio::select! {
            pending = rx.recv() => {
                let Some(pending) = pending else { return };
                match socket.socket.send(signer.encode(pending.message)).await {
                    Ok(()) => waiting = Some(pending.answer),
                    Err(e) => {
                        log::debug!("input_request not delivered: {e}");
                        let _ = pending.answer.send(Err(InputError::NoFrontend));
                    }
                }
            }
            frames = socket.socket.recv() => {
                let frames = match frames {
                    Ok(frames) => frames,
                    Err(zeromq::ZmqError::NoMessage) => return,
                    Err(e) => {
                        log::debug!("stdin: {e}");
                        continue;
                    }
                };
                let request = match Request::decode(frames, signer.key()) {
                    Ok(request) => request,
                    Err(e) => {
                        log::warn!("dropped a message on stdin: {e}");
                        continue;
                    }
                };
                if request.msg_type != "input_reply" {
                    log::warn!("unexpected {} on stdin", request.msg_type);
                    continue;
                }
                let value = request.content_as::<InputReply>().map(|r| r.value).unwrap_or_default();
                if let Some(answer) = waiting.take() {
                    let _ = answer.send(Ok(value));
                }
            }
        }
    }
}
