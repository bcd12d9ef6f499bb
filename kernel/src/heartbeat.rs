//! Heartbeat: echo every ping. Runs in its own task, never inside a
//! `select!`, because a REP socket must not be abandoned between its receive
//! and its send.

use jupyter_zmq_client::KernelHeartbeatConnection;
use zeromq::{SocketRecv, SocketSend};

pub async fn serve(mut heartbeat: KernelHeartbeatConnection) {
    loop {
        let ping = match heartbeat.socket.recv().await {
            Ok(ping) => ping,
            Err(zeromq::ZmqError::NoMessage) => return,
            Err(e) => {
                log::debug!("heartbeat: {e}");
                continue;
            }
        };
        if let Err(e) = heartbeat.socket.send(ping).await {
            log::debug!("heartbeat: {e}");
        }
    }
}
