//! The patched ZeroMQ dealer's `send_direct` (vendor/zeromq) writes from the
//! calling thread when the peer's writer task has nothing queued, and queues
//! otherwise: mixed with queued sends from the same thread, as pmp-worker's
//! main thread does it from outside the runtime, no message overtakes
//! another, and each counts as written once it is on the connection.

use bytes::Bytes;
use zeromq::{SocketRecv, SocketSend, ZmqMessage};

mod zeromq_pair;

const MESSAGES: u32 = 3000;

#[test]
fn direct_and_queued_sends_from_another_thread_arrive_in_order() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut router, dealer) = runtime.block_on(async {
        let (mut router, mut dealer) = zeromq_pair::connected().await;
        // The connection is up once the router has heard from the dealer.
        dealer.send(ZmqMessage::from("hello")).await.unwrap();
        router.recv().await.unwrap();
        (router, dealer)
    });
    let (mut send_half, _recv_half) = dealer.split();
    let progress = send_half.write_progress().expect("one connected peer");
    let handle = runtime.handle().clone();
    // As in pmp-worker: the runtime's own thread drives its I/O and reads,
    // another sends into it with Handle::block_on.
    let receiver = std::thread::spawn(move || {
        runtime.block_on(async move {
            let mut seen = Vec::new();
            while seen.len() < MESSAGES as usize {
                let message = router.recv().await.unwrap().into_vec();
                let n: u32 = std::str::from_utf8(&message[1]).unwrap().parse().unwrap();
                seen.push(n);
            }
            seen
        })
    });
    for n in 0..MESSAGES {
        let message = ZmqMessage::from(Bytes::from(n.to_string()));
        handle.block_on(async {
            // Bursts of queued sends, then direct ones that must wait their turn.
            if n % 7 < 3 {
                send_half.send(message).await.unwrap();
            } else {
                send_half.send_direct(message).await.unwrap();
            }
        });
        if n % 100 == 99 {
            progress.wait_for(progress.mark());
        }
    }
    progress.wait_for(progress.mark());
    let seen = receiver.join().unwrap();
    assert_eq!(seen, (0..MESSAGES).collect::<Vec<_>>());
}
