//! The patched ZeroMQ ROUTER (vendor/zeromq, `SocketOptions::admission`)
//! reads little from a peer it has not admitted: one small first message,
//! then nothing until it is admitted; it closes a peer that claims a larger
//! frame, one not admitted in time, and the oldest waiting one when too
//! many wait. Peers here are raw TCP connections speaking ZMTP by hand
//! (anyone can) and real DEALER sockets.

use bytes::Bytes;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zeromq::util::PeerIdentity;
use zeromq::{DealerSocket, RouterSocket, Socket, SocketOptions, SocketRecv, SocketSend};
use zeromq::{ZmqMessage, ZmqResult};

const FIRST_MESSAGE_MAX: usize = 4 << 10;
/// Only bounds a test that would otherwise hang: a connection still open
/// after this long fails it.
const PATIENCE: Duration = Duration::from_secs(60);

async fn bound(timeout: Duration, max_waiting: usize) -> (RouterSocket, String) {
    let mut options = SocketOptions::default();
    options.admission(FIRST_MESSAGE_MAX, timeout, max_waiting);
    let mut router = RouterSocket::with_options(options);
    let endpoint = router.bind("tcp://127.0.0.1:0").await.expect("bind");
    (router, endpoint.to_string())
}

async fn dealer(endpoint: &str) -> DealerSocket {
    let mut dealer = DealerSocket::new();
    dealer.connect(endpoint).await.expect("connect");
    dealer
}

/// A ZMTP 3.0 greeting (NULL mechanism) and a DEALER's READY command.
fn handshake() -> Vec<u8> {
    let mut bytes = vec![0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0x7f, 3, 0];
    bytes.extend_from_slice(&[b"NULL".as_slice(), &[0; 16]].concat());
    bytes.extend_from_slice(&[0; 32]);
    let mut body = b"\x05READY\x0bSocket-Type".to_vec();
    body.extend_from_slice(&6u32.to_be_bytes());
    body.extend_from_slice(b"DEALER");
    bytes.extend_from_slice(&[0x04, body.len() as u8]);
    bytes.extend_from_slice(&body);
    bytes
}

/// The header of a long frame claiming `len` bytes.
fn long_frame_header(len: u64) -> Vec<u8> {
    let mut header = vec![0x02];
    header.extend_from_slice(&len.to_be_bytes());
    header
}

async fn raw(endpoint: &str) -> TcpStream {
    let address = endpoint.trim_start_matches("tcp://");
    TcpStream::connect(address).await.expect("tcp connect")
}

/// Whether the other side closed the connection (reading what it sent, its
/// own greeting and READY, on the way).
async fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buffer = vec![0u8; 4096];
    let until_closed = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(PATIENCE, until_closed).await.is_ok()
}

/// Receive all the time, as an application does: a peer's connection is
/// read, and so closed, only while the router is asked for messages.
fn keep_receiving(mut router: RouterSocket) {
    tokio::spawn(async move { while router.recv().await.is_ok() {} });
}

fn routing_id(message: &ZmqMessage) -> PeerIdentity {
    PeerIdentity::try_from(message.get(0).expect("routing frame").clone()).expect("an id")
}

fn body(message: ZmqMessage) -> Vec<Bytes> {
    message.into_vec().split_off(1)
}

#[tokio::test(flavor = "current_thread")]
async fn a_frame_header_claiming_gigabytes_closes_the_connection() {
    let (router, endpoint) = bound(Duration::from_secs(3600), 16).await;
    keep_receiving(router);
    let mut stream = raw(&endpoint).await;
    stream.write_all(&handshake()).await.unwrap();
    stream.write_all(&long_frame_header(3 << 30)).await.unwrap();
    // What follows the header may never be read; the write may fail once
    // the router has hung up.
    let _ = stream.write_all(&vec![7u8; 1 << 20]).await;
    assert!(
        closed_by_peer(&mut stream).await,
        "a peer not admitted announced a 3 GiB frame and stayed connected"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn small_frames_adding_up_past_the_limit_close_the_connection() {
    let (router, endpoint) = bound(Duration::from_secs(3600), 16).await;
    keep_receiving(router);
    let mut stream = raw(&endpoint).await;
    stream.write_all(&handshake()).await.unwrap();
    // Empty frames of one message that never ends: free on the wire, not in memory.
    let _ = stream.write_all(&[0x01, 0].repeat(100_000)).await;
    assert!(
        closed_by_peer(&mut stream).await,
        "a peer not admitted sent 100,000 frames and stayed connected"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn nothing_after_the_first_message_is_read_until_the_peer_is_admitted() {
    let (mut router, endpoint) = bound(Duration::from_secs(3600), 16).await;
    let mut early = dealer(&endpoint).await;
    early.send(ZmqMessage::from("hello")).await.unwrap();
    early.send(ZmqMessage::from("second")).await.unwrap();
    let first = router.recv().await.unwrap();
    let early_id = routing_id(&first);
    assert_eq!(body(first), vec![Bytes::from("hello")]);

    // Its second message waits, while another peer's first message comes.
    let mut late = dealer(&endpoint).await;
    late.send(ZmqMessage::from("other")).await.unwrap();
    let next = router.recv().await.unwrap();
    assert_ne!(routing_id(&next), early_id, "read past a first message");
    assert_eq!(body(next), vec![Bytes::from("other")]);

    assert!(router.admit(&early_id));
    let second = router.recv().await.unwrap();
    assert_eq!(routing_id(&second), early_id);
    assert_eq!(body(second), vec![Bytes::from("second")]);

    // Admitted, it may send frames of any size again.
    let big = Bytes::from(vec![9u8; 64 << 20]);
    let mut message = ZmqMessage::from("big");
    message.push_back(big.clone());
    early.send(message).await.unwrap();
    let received = router.recv().await.unwrap();
    assert_eq!(routing_id(&received), early_id);
    assert_eq!(body(received), vec![Bytes::from("big"), big]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_connection_not_admitted_in_time_is_closed() {
    let (mut router, endpoint) = bound(Duration::from_millis(300), 16).await;
    let mut silent = raw(&endpoint).await;
    let mut unanswered = raw(&endpoint).await;
    unanswered.write_all(&handshake()).await.unwrap();
    unanswered.write_all(&[0x00, 5]).await.unwrap();
    unanswered.write_all(b"hello").await.unwrap();
    let first = router.recv().await.unwrap();
    assert_eq!(body(first), vec![Bytes::from("hello")]);
    keep_receiving(router);
    assert!(closed_by_peer(&mut silent).await, "a silent peer stayed");
    assert!(
        closed_by_peer(&mut unanswered).await,
        "a peer never admitted stayed"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_oldest_waiting_connection_makes_room_and_refused_ones_are_closed() {
    let (mut router, endpoint) = bound(Duration::from_secs(3600), 4).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(raw(&endpoint).await);
    }
    let mut worker = dealer(&endpoint).await;
    worker.send(ZmqMessage::from("hello")).await.unwrap();
    let hello = router.recv().await.unwrap();
    let worker_id = routing_id(&hello);
    assert!(router.admit(&worker_id));
    assert!(
        closed_by_peer(&mut idle[0]).await,
        "the oldest idle connection was kept beyond the limit"
    );

    let mut refused = raw(&endpoint).await;
    refused.write_all(&handshake()).await.unwrap();
    refused.write_all(&[0x00, 6]).await.unwrap();
    refused.write_all(b"forged").await.unwrap();
    let forged = router.recv().await.unwrap();
    router.disconnect(&routing_id(&forged));
    assert!(closed_by_peer(&mut refused).await, "a refused peer stayed");

    // The admitted peer is neither displaced nor timed out.
    worker.send(ZmqMessage::from("still here")).await.unwrap();
    let message: ZmqResult<ZmqMessage> = router.recv().await;
    assert_eq!(body(message.unwrap()), vec![Bytes::from("still here")]);
}
