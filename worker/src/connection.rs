//! The worker's side of the wire: a DEALER socket on its own thread. Messages
//! are verified here, before the main thread (and Python) sees them; pings
//! and retracts are answered here, while the main thread runs a task.

use crate::inbox::{Inbox, Message};
use crate::settings::Settings;
use crate::shared_frames;
use pmp_scheduler::auth::Key;
use pmp_scheduler::protocol::{self, FromWorker, ToWorker};
use pmp_scheduler::Bytes;
use std::sync::{mpsc, Arc};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

/// A message for the scheduler; `written` hears once it is on the socket.
pub struct Queued {
    pub message: FromWorker,
    pub frames: Vec<Bytes>,
    pub written: Option<mpsc::Sender<()>>,
}

/// Messages for the scheduler; `None` asks the connection thread to flush and stop.
pub type Outgoing = UnboundedSender<Option<Queued>>;

/// Hears when a message sent with `Connection::send_tracked` is on the socket.
pub struct Written(mpsc::Receiver<()>);

impl Written {
    /// Wait for it; at once if the connection thread is gone.
    pub fn wait(self) {
        let _ = self.0.recv();
    }
}

pub struct Connection {
    incoming: Arc<Inbox>,
    outgoing: Outgoing,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Connection {
    pub fn open(settings: &Settings) -> Connection {
        let incoming = Arc::new(Inbox::default());
        let incoming_tx = incoming.clone();
        let (outgoing, outgoing_rx) = unbounded_channel();
        let address = settings.address.clone();
        let key = settings.key.clone();
        let silence = settings.heartbeat_timeout;
        let thread = std::thread::Builder::new()
            .name("pmp-connection".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime starts");
                runtime.block_on(serve(address, key, silence, incoming_tx, outgoing_rx));
            })
            .expect("the connection thread starts");
        Connection {
            incoming,
            outgoing,
            thread: Some(thread),
        }
    }

    /// The next verified message for the main thread; None once the scheduler is gone.
    pub fn next(&self) -> Option<Message> {
        self.incoming.next()
    }

    /// A sender for other threads (a task's output); same order as `send`.
    pub fn outgoing(&self) -> Outgoing {
        self.outgoing.clone()
    }

    pub fn send(&self, message: FromWorker, frames: Vec<Bytes>) {
        let _ = self.outgoing.send(Some(Queued {
            message,
            frames,
            written: None,
        }));
    }

    /// `send`, returning what hears once the message is on the socket.
    pub fn send_tracked(&self, message: FromWorker, frames: Vec<Bytes>) -> Written {
        let (written, on_socket) = mpsc::channel();
        let _ = self.outgoing.send(Some(Queued {
            message,
            frames,
            written: Some(written),
        }));
        Written(on_socket)
    }

    /// Flush what is queued, then stop.
    pub fn close(mut self) {
        let _ = self.outgoing.send(None);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    address: String,
    key: Key,
    silence: std::time::Duration,
    incoming: Arc<Inbox>,
    mut outgoing: tokio::sync::mpsc::UnboundedReceiver<Option<Queued>>,
) {
    let mut socket = zeromq::DealerSocket::new();
    if let Err(e) = socket.connect(&address).await {
        eprintln!("pmp-worker: cannot connect to the scheduler at {address}: {e}");
        die();
    }
    let (mut send_half, mut recv_half) = socket.split();
    let (pong_tx, mut pong_rx) = unbounded_channel::<()>();
    // Answers the reader gives itself: refused and retracted Runs.
    let (refusal_tx, mut refusal_rx) = unbounded_channel::<FromWorker>();
    let reader_key = key.clone();
    let inbox = incoming.clone();
    let reader = tokio::spawn(async move {
        loop {
            let message = match tokio::time::timeout(silence, recv_half.recv()).await {
                Ok(Ok(message)) => message,
                Ok(Err(_)) | Err(_) => {
                    // The scheduler died or its host went away: a worker
                    // never outlives its executor.
                    eprintln!(
                        "pmp-worker: no word from the scheduler for {:.0} s; exiting",
                        silence.as_secs_f64()
                    );
                    die();
                }
            };
            match protocol::decode::<ToWorker>(&reader_key, message.into_vec()) {
                Ok((ToWorker::Ping, _)) => {
                    let _ = pong_tx.send(());
                }
                Ok((message, mut frames)) => {
                    if let ToWorker::Released { segments } = &message {
                        shared_frames::mapped_by_scheduler(segments);
                        continue;
                    }
                    if let ToWorker::Retract { task } = message {
                        let answer = if incoming.take_run(task) {
                            FromWorker::Retracted { task }
                        } else {
                            FromWorker::Kept { task }
                        };
                        let _ = refusal_tx.send(answer);
                        continue;
                    }
                    if let ToWorker::Run {
                        task,
                        shared,
                        shared_results,
                        ..
                    } = &message
                    {
                        if let Err(e) = shared_frames::on_run(shared, *shared_results, &mut frames)
                        {
                            // Not run: the scheduler sends it again on the socket.
                            drop(frames);
                            let _ = refusal_tx.send(FromWorker::CannotMap {
                                task: *task,
                                segments: e.segments,
                                reason: e.reason,
                            });
                            continue;
                        }
                    }
                    incoming.push((message, frames));
                }
                Err(e) => eprintln!("pmp-worker: dropped a message: {e}"),
            }
        }
    });
    loop {
        let queued = tokio::select! {
            next = outgoing.recv() => match next {
                Some(Some(item)) => item,
                _ => break,
            },
            Some(()) = pong_rx.recv() => Queued { message: FromWorker::Pong, frames: Vec::new(), written: None },
            Some(message) = refusal_rx.recv() => Queued { message, frames: Vec::new(), written: None },
        };
        // Segments unmapped by now (the last task's arguments) are reported
        // before its Done, so the scheduler can reuse them for the next.
        let segments = shared_frames::take_released();
        if !segments.is_empty() {
            let wire = protocol::encode(&key, &FromWorker::Released { segments }, Vec::new());
            if send_half.send(zmq_message(wire)).await.is_err() {
                eprintln!("pmp-worker: lost the connection to the scheduler");
                die();
            }
        }
        let (mut message, mut frames) = (queued.message, queued.frames);
        shared_frames::on_send(&mut message, &mut frames);
        let wire = protocol::encode(&key, &message, frames);
        if send_half.send(zmq_message(wire)).await.is_err() {
            eprintln!("pmp-worker: lost the connection to the scheduler");
            die();
        }
        if let Some(written) = queued.written {
            let _ = written.send(());
        }
    }
    reader.abort();
    inbox.close();
}

fn zmq_message(wire: Vec<Bytes>) -> ZmqMessage {
    let mut message = ZmqMessage::from(wire[0].clone());
    for frame in wire.into_iter().skip(1) {
        message.push_back(frame);
    }
    message
}

fn die() -> ! {
    // SAFETY: immediate exit; Python may be mid-task on the main thread.
    unsafe { libc::_exit(70) }
}
