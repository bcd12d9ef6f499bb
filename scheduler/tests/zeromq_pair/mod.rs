//! What the tests of the patched ZeroMQ (vendor/zeromq) start from: a
//! ROUTER bound on loopback and a DEALER connected to it.

use zeromq::{DealerSocket, RouterSocket, Socket};

pub async fn connected() -> (RouterSocket, DealerSocket) {
    let mut router = RouterSocket::new();
    let endpoint = router.bind("tcp://127.0.0.1:0").await.expect("bind");
    let mut dealer = DealerSocket::new();
    dealer
        .connect(&endpoint.to_string())
        .await
        .expect("connect");
    (router, dealer)
}
