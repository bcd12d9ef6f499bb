//! The control channel, answered here and never queued behind a running
//! cell: kernel_info, interrupt, shutdown, the subshell requests
//! (`subshells`) and the debugger's requests.

use crate::debugger::Debugger;
use crate::interrupt;
use crate::iopub::Iopub;
use crate::lifecycle::Lifecycle;
use crate::subshells::Subshells;
use crate::wire::{json, Outgoing, Request, Signer};
use bytes::Bytes;
use jupyter_zmq_client::KernelControlConnection;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use zeromq::{SocketRecv, SocketSend};

#[derive(Deserialize, Default)]
struct ShutdownRequest {
    #[serde(default)]
    restart: bool,
}

#[derive(Serialize)]
struct ShutdownReply {
    status: &'static str,
    restart: bool,
}

#[derive(Serialize)]
struct ErrorReply {
    status: &'static str,
    ename: &'static str,
    evalue: String,
    traceback: [String; 0],
}

/// A control reply that says `ename` and why (`evalue`), as ipykernel's.
pub fn error_reply(ename: &'static str, evalue: String) -> Bytes {
    json(&ErrorReply {
        status: "error",
        ename,
        evalue,
        traceback: [],
    })
}

pub fn unknown_request(msg_type: &str) -> Bytes {
    error_reply(
        "UnknownMessageType",
        format!("pmp-kernel does not handle {msg_type}"),
    )
}

pub fn shutdown_reply(request: &Request) -> Bytes {
    let restart = request
        .content_as::<ShutdownRequest>()
        .unwrap_or_default()
        .restart;
    json(&ShutdownReply {
        status: "ok",
        restart,
    })
}

/// Serve control requests until a shutdown request has been answered.
pub async fn serve(
    mut socket: KernelControlConnection,
    signer: Arc<Signer>,
    iopub: Iopub,
    lifecycle: Arc<Lifecycle>,
    subshells: Arc<Subshells>,
    mut debugger: Debugger,
) {
    loop {
        let frames = match socket.socket.recv().await {
            Ok(frames) => frames,
            Err(zeromq::ZmqError::NoMessage) => return,
            Err(e) => {
                log::debug!("control: {e}");
                continue;
            }
        };
        let request = match Request::decode(frames, signer.key()) {
            Ok(request) => request,
            Err(e) => {
                log::warn!("dropped a message on control: {e}");
                continue;
            }
        };
        iopub.status("busy", Some(&request.header));
        let mut stop = false;
        let content = match request.msg_type.as_str() {
            "kernel_info_request" => lifecycle.kernel_info().await,
            "interrupt_request" => {
                // Only the Python thread: child processes started by cells
                // include pmp's workers, which must survive an interrupt of
                // the cell waiting for them (ipykernel would signal its whole
                // process group).
                interrupt::interrupt_python();
                json(&serde_json::json!({"status": "ok"}))
            }
            "debug_request" => debugger.handle(&request).await,
            "shutdown_request" => {
                stop = true;
                shutdown_reply(&request)
            }
            other => match subshells.answer(&request).await {
                Some(content) => content,
                None => unknown_request(other),
            },
        };
        let reply = request.reply(content);
        if stop {
            // Other frontends learn of the shutdown on IOPub (as with ipykernel).
            let notice = Outgoing::broadcast(
                "shutdown_reply",
                Some(&request.header),
                reply.content.clone(),
            );
            iopub.publish(notice);
        }
        if let Err(e) = socket.socket.send(signer.encode(reply)).await {
            log::warn!("control reply not delivered: {e}");
        }
        iopub.status("idle", Some(&request.header));
        if stop {
            return;
        }
    }
}
