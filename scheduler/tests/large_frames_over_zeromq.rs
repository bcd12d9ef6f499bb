//! The patched ZeroMQ decoder (vendor/zeromq) gives a large frame storage of
//! its own and reuses it for the next large frame once the first is dropped,
//! never while it is alive.

use bytes::Bytes;
use zeromq::{RouterSocket, SocketRecv, SocketSend, ZmqMessage};

mod zeromq_pair;

const BIG: usize = 16 << 20;

fn message(fill: u8) -> ZmqMessage {
    let mut message = ZmqMessage::from(Bytes::from_static(b"header"));
    message.push_back(Bytes::from(vec![fill; BIG]));
    message.push_back(Bytes::from_static(b"trailer"));
    message
}

/// The large frame of the next message, and the message's small frames.
async fn receive(router: &mut RouterSocket) -> (Bytes, Vec<Bytes>) {
    let mut frames = router.recv().await.expect("a message").into_vec();
    let big = frames.remove(2); // after the routing id and the header
    (big, frames)
}

#[tokio::test(flavor = "current_thread")]
async fn a_dropped_large_frames_storage_takes_the_next_and_a_live_one_is_never_reused() {
    let (mut router, mut dealer) = zeromq_pair::connected().await;

    dealer.send(message(1)).await.unwrap();
    let (first, small) = receive(&mut router).await;
    let first_address = first.as_ptr();

    // The first frame is still alive: the second must land elsewhere.
    dealer.send(message(2)).await.unwrap();
    let (second, _) = receive(&mut router).await;
    assert_ne!(second.as_ptr(), first_address);
    assert!(
        first.iter().all(|&b| b == 1),
        "the live frame was overwritten"
    );
    assert!(second.iter().all(|&b| b == 2));
    let second_address = second.as_ptr();

    // Dropped (the small frames of its message may live on): reused.
    drop(second);
    dealer.send(message(3)).await.unwrap();
    let (third, _) = receive(&mut router).await;
    assert_eq!(third.as_ptr(), second_address);
    assert!(third.iter().all(|&b| b == 3));
    drop((first, small));
}
