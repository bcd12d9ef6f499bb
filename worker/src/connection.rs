//! The worker's side of the wire: a DEALER socket on its own thread, one
//! session (`pmp_scheduler::seal`) per connection. Messages are opened here, before the main thread (and Python) sees them; pings
//! and retracts are answered here, while the main thread runs a task.
//!
//! What ends a task (its Done) and what the task prints are sent with
//! `Sender::send_now`, which returns once the message is written to the
//! connection: a task started right after (one sent ahead), or the one
//! printing, could crash the process, and what it sent must not be lost
//! with it. The sending thread writes to the connection itself when zeromq's
//! writer (on this thread) has nothing queued, which spares waking this
//! thread; otherwise it queues and waits for the writer's `WriteProgress`.

use crate::inbox::{Inbox, Message};
use crate::settings::Settings;
use crate::shared_frames;
use pmp_scheduler::auth::Key;
use pmp_scheduler::protocol::{self, FromWorker, ToWorker};
use pmp_scheduler::seal::{self, Sealer};
use pmp_scheduler::Bytes;
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use zeromq::{Socket, SocketRecv, WriteProgress, ZmqMessage};

/// A message for the scheduler, queued for the connection thread.
struct Queued {
    message: FromWorker,
    frames: Vec<Bytes>,
}

/// Messages for the scheduler; `None` asks the connection thread to flush and stop.
type Outgoing = UnboundedSender<Option<Queued>>;

/// The socket's sending side, shared by the connection thread (what is
/// queued) and the threads that use `Sender::send_now`.
struct Wire {
    /// The socket and the sealer together: messages are sealed in the order
    /// they are written, which the scheduler's replay check relies on.
    send_half: tokio::sync::Mutex<(zeromq::DealerSendHalf, Sealer)>,
    /// How far zeromq's writer has got (None only if not connected to one peer).
    progress: Option<Arc<WriteProgress>>,
}

impl Wire {
    /// Hand one message to the socket, after a Released for the shared
    /// segments unmapped by now (the last task's arguments), so that the
    /// scheduler can reuse them for the next task.
    async fn write(&self, mut message: FromWorker, mut frames: Vec<Bytes>) {
        let mut guard = self.send_half.lock().await;
        let (send_half, sealer) = &mut *guard;
        let segments = shared_frames::take_released();
        if !segments.is_empty() {
            let released = FromWorker::Released { segments };
            write_one(send_half, protocol::encode(sealer, &released, Vec::new())).await;
        }
        shared_frames::on_send(&mut message, &mut frames);
        write_one(send_half, protocol::encode(sealer, &message, frames)).await;
    }
}

async fn write_one(send_half: &mut zeromq::DealerSendHalf, wire: Vec<Bytes>) {
    if send_half.send_direct(zmq_message(wire)).await.is_err() {
        die(format_args!("lost the connection to the scheduler"));
    }
}

/// The connection thread's runtime and the wire, once connected.
type Connected = Arc<OnceLock<(tokio::runtime::Handle, Arc<Wire>)>>;

/// Sends to the scheduler, from any thread but the connection thread.
#[derive(Clone)]
pub struct Sender {
    outgoing: Outgoing,
    connected: Connected,
}

impl Sender {
    /// Queue the message for the connection thread.
    pub fn send(&self, message: FromWorker, frames: Vec<Bytes>) {
        let _ = self.outgoing.send(Some(Queued { message, frames }));
    }

    /// Send the message and return once it is written to the connection
    /// (before the socket is connected: queued, as by `send`).
    pub fn send_now(&self, message: FromWorker, frames: Vec<Bytes>) {
        self.send_written_later(message, frames).wait();
    }

    /// Send the message, and return what waits until it is written: the
    /// caller does other work meanwhile, and by the time it must be sure,
    /// the connection thread has usually written it.
    pub fn send_written_later(&self, message: FromWorker, frames: Vec<Bytes>) -> Written {
        let connected = self.connected.get();
        // Inside some tokio runtime (a task's own Rust extension calling
        // back into Python that prints), `block_on` would panic: queue it.
        let Some((runtime, wire)) =
            connected.filter(|_| tokio::runtime::Handle::try_current().is_err())
        else {
            self.send(message, frames);
            return Written(None);
        };
        // Written here unless zeromq's writer has something queued; the
        // connection thread drives the socket's I/O meanwhile.
        runtime.block_on(wire.write(message, frames));
        Written(wire.progress.clone().map(|progress| {
            let mark = progress.mark();
            (progress, mark)
        }))
    }
}

/// A message sent with `Sender::send_written_later`.
pub struct Written(Option<(Arc<WriteProgress>, u64)>);

impl Written {
    /// Wait until it is written to the connection.
    pub fn wait(self) {
        if let Some((progress, mark)) = self.0 {
            progress.wait_for(mark);
        }
    }
}

pub struct Connection {
    incoming: Arc<Inbox>,
    sender: Sender,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Connection {
    /// Its thread connects when the first message is sent, which must be
    /// the Hello: the scheduler reads nothing else from a new connection.
    pub fn open(settings: &Settings, key: Key) -> Connection {
        let incoming = Arc::new(Inbox::default());
        let incoming_tx = incoming.clone();
        let (outgoing, outgoing_rx) = unbounded_channel();
        let address = settings.address.clone();
        let silence = settings.heartbeat_timeout;
        let protection = settings.protection;
        let sender = Sender {
            outgoing,
            connected: Connected::default(),
        };
        let connected = sender.connected.clone();
        let thread = std::thread::Builder::new()
            .name("pmp-connection".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime starts");
                runtime.block_on(serve(
                    address,
                    (key, protection),
                    silence,
                    incoming_tx,
                    outgoing_rx,
                    connected,
                ));
            })
            .expect("the connection thread starts");
        Connection {
            incoming,
            sender,
            thread: Some(thread),
        }
    }

    /// The next verified message for the main thread; None once the scheduler is gone.
    pub fn next(&self) -> Option<Message> {
        self.incoming.next()
    }

    /// A sender for other threads (a task's output).
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    pub fn send(&self, message: FromWorker, frames: Vec<Bytes>) {
        self.sender.send(message, frames);
    }

    /// See `Sender::send_now`.
    pub fn send_now(&self, message: FromWorker, frames: Vec<Bytes>) {
        self.sender.send_now(message, frames);
    }

    /// See `Sender::send_written_later`.
    pub fn send_written_later(&self, message: FromWorker, frames: Vec<Bytes>) -> Written {
        self.sender.send_written_later(message, frames)
    }

    /// Flush what is queued, then stop.
    pub fn close(mut self) {
        let _ = self.sender.outgoing.send(None);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    address: String,
    (key, protection): (Key, seal::Protection),
    silence: std::time::Duration,
    incoming: Arc<Inbox>,
    mut outgoing: tokio::sync::mpsc::UnboundedReceiver<Option<Queued>>,
    connected: Connected,
) {
    // Connect only once the first message, the Hello, is in hand: the
    // scheduler closes a connection that has not authenticated within
    // seconds, and Python can take longer than that to start.
    let hello = match outgoing.recv().await {
        Some(Some(hello)) => hello,
        _ => return incoming.close(),
    };
    let mut socket = zeromq::DealerSocket::new();
    if let Err(e) = socket.connect(&address).await {
        die(format_args!(
            "cannot connect to the scheduler at {address}: {e}"
        ));
    }
    let (send_half, mut recv_half) = socket.split();
    let (sealer, mut opener) = seal::connect(&key, protection);
    let wire = Arc::new(Wire {
        progress: send_half.write_progress(),
        send_half: tokio::sync::Mutex::new((send_half, sealer)),
    });
    let _ = connected.set((tokio::runtime::Handle::current(), wire.clone()));
    let (pong_tx, mut pong_rx) = unbounded_channel::<()>();
    // Answers the reader gives itself: refused and retracted Runs.
    let (refusal_tx, mut refusal_rx) = unbounded_channel::<FromWorker>();
    let inbox = incoming.clone();
    let reader = tokio::spawn(async move {
        loop {
            let message = match tokio::time::timeout(silence, recv_half.recv()).await {
                Ok(Ok(message)) => message,
                Ok(Err(_)) | Err(_) => {
                    // The scheduler died or its host went away: a worker
                    // never outlives its executor.
                    die(format_args!(
                        "no word from the scheduler for {:.0} s; exiting",
                        silence.as_secs_f64()
                    ));
                }
            };
            match protocol::decode::<ToWorker>(&mut opener, message.into_vec()) {
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
                Err(e) => say!("pmp-worker: dropped a message: {e}"),
            }
        }
    });
    wire.write(hello.message, hello.frames).await;
    loop {
        let queued = tokio::select! {
            next = outgoing.recv() => match next {
                Some(Some(item)) => item,
                _ => break,
            },
            Some(()) = pong_rx.recv() => Queued { message: FromWorker::Pong, frames: Vec::new() },
            Some(message) = refusal_rx.recv() => Queued { message, frames: Vec::new() },
        };
        wire.write(queued.message, queued.frames).await;
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

/// Say why, end what the tasks started and exit at once, whether or not the
/// message could be written.
fn die(message: std::fmt::Arguments) -> ! {
    say!("pmp-worker: {message}");
    crate::descendants::end_all();
    // SAFETY: immediate exit; Python may be mid-task on the main thread.
    unsafe { libc::_exit(70) }
}
