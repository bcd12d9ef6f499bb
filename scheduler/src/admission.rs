//! Who may talk to the scheduler's socket, and how much before proving that
//! it holds the key. Anyone on the host can connect to the port; a worker
//! connects when its sealed Hello is ready and sends it first. Until the
//! server has verified that Hello and admitted the connection, the socket
//! (vendor/zeromq, `src/admission.rs`) reads one message of at most
//! `FIRST_MESSAGE_MAX` bytes from it and nothing more, closes it if it is
//! not admitted within `TIMEOUT`, and keeps at most `MAX_WAITING` such
//! connections (the oldest goes): a peer without the key can neither make
//! the scheduler buffer a large frame nor use up its file descriptors, and
//! a worker that connects amid a flood of idle connections still gets in.

use bytes::Bytes;
use std::time::Duration;
use zeromq::util::PeerIdentity;
use zeromq::Socket;

/// A Hello with its seal (`seal`) is under 400 bytes (its host name is at most
/// 255); the socket's handshake counts too.
pub const FIRST_MESSAGE_MAX: usize = 4 << 10;
/// A worker sends its Hello right after connecting; this leaves room for a
/// scheduler busy with something else (a large argument to sign) meanwhile.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Workers wait here only between connecting and their Hello being read,
/// so a whole pool starting at once fits; and a flood of idle connections
/// holds at most this many descriptors.
pub const MAX_WAITING: usize = 256;

/// The socket workers connect to.
pub fn worker_socket() -> zeromq::RouterSocket {
    let mut options = zeromq::SocketOptions::default();
    options.admission(FIRST_MESSAGE_MAX, TIMEOUT, MAX_WAITING);
    zeromq::RouterSocket::with_options(options)
}

/// The socket node agents connect to: as the workers', except that every
/// agent of the allocation may wait to be admitted at once. One step
/// starts them all within a second or so, and a thousand connecting
/// before the first Hello is read would otherwise see the oldest closed.
pub fn agents_socket(nodes: usize) -> zeromq::RouterSocket {
    let mut options = zeromq::SocketOptions::default();
    options.admission(FIRST_MESSAGE_MAX, TIMEOUT, MAX_WAITING.max(nodes));
    zeromq::RouterSocket::with_options(options)
}

/// The connection a message came from, as the socket names it (the routing
/// frame it put in front of the message).
pub fn connection(route: &Bytes) -> Option<PeerIdentity> {
    PeerIdentity::try_from(route.clone()).ok()
}
