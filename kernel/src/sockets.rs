//! The connection file and the five sockets the kernel binds.

use jupyter_zmq_client::{
    create_kernel_control_connection, create_kernel_heartbeat_connection,
    create_kernel_iopub_xpub_connection, create_kernel_shell_connection,
    create_kernel_stdin_connection, ConnectionInfo, KernelControlConnection,
    KernelHeartbeatConnection, KernelIoPubXPubConnection, KernelShellConnection,
    KernelStdinConnection,
};
use ring::hmac;
use std::path::Path;

pub struct Sockets {
    pub shell: KernelShellConnection,
    pub control: KernelControlConnection,
    pub stdin: KernelStdinConnection,
    pub iopub: KernelIoPubXPubConnection,
    pub heartbeat: KernelHeartbeatConnection,
    /// The HMAC key from the connection file; `None` when it is empty.
    pub key: Option<hmac::Key>,
}

pub fn read_connection_file(path: &Path) -> Result<ConnectionInfo, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read connection file {}: {e}", path.display()))?;
    let info: ConnectionInfo = serde_json::from_str(&text)
        .map_err(|e| format!("connection file {} is not valid: {e}", path.display()))?;
    if !info.key.is_empty() && info.signature_scheme != "hmac-sha256" {
        return Err(format!(
            "connection file {} asks for signature scheme {:?}; pmp-kernel supports hmac-sha256",
            path.display(),
            info.signature_scheme
        ));
    }
    Ok(info)
}

impl Sockets {
    /// Bind every channel. IOPub is an XPUB socket so that subscriptions are
    /// seen (and welcomed, JEP 65).
    pub async fn bind(info: &ConnectionInfo, session: &str) -> Result<Sockets, String> {
        let what = |channel: &'static str| {
            move |e: jupyter_zmq_client::RuntimeError| {
                format!("cannot bind the {channel} socket: {e}")
            }
        };
        let shell = create_kernel_shell_connection(info, session)
            .await
            .map_err(what("shell"))?;
        let key = shell.mac.clone();
        Ok(Sockets {
            control: create_kernel_control_connection(info, session)
                .await
                .map_err(what("control"))?,
            stdin: create_kernel_stdin_connection(info, session)
                .await
                .map_err(what("stdin"))?,
            iopub: create_kernel_iopub_xpub_connection(info, session)
                .await
                .map_err(what("iopub"))?,
            heartbeat: create_kernel_heartbeat_connection(info)
                .await
                .map_err(what("heartbeat"))?,
            shell,
            key,
        })
    }
}
