//! The wire protocol between scheduler and workers, defined once for both sides.
//!
//! A message is a ZeroMQ multipart message:
//! `[seal (40 bytes)] [header (bincode)] [payload frames...]`, the header
//! and every payload frame encrypted and authenticated by the connection's
//! session (`seal`). Payload frames carry pickles and pickle-protocol-5 out-of-band buffers, which
//! travel as frames of their own so large arrays are never copied into one blob.

use crate::auth::Key;
use crate::ids::{TaskId, WorkerId};
use crate::seal::{OpenError, Opener, Protection, SaltsSeen, Sealer};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub mod batch;

/// A pickled object: the pickle itself, then its out-of-band buffers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Payload {
    pub frames: Vec<Bytes>,
}

impl Payload {
    pub fn new(frames: Vec<Bytes>) -> Payload {
        Payload { frames }
    }
}

/// How a task names its function: the function's pickle is sent once per worker
/// and cached there in a slot the scheduler chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FunctionRef {
    /// The function's pickle is the first payload frame; keep it in `slot`.
    Inline { slot: u32 },
    /// The worker already holds the function in `slot`.
    Cached { slot: u32 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToWorker {
    /// Run the block allocation's init function (the payload) and keep its dict.
    Init,
    /// Run a task. Frames: [function if Inline] [call payload: `call_frames`]
    /// then one payload per dependency, `dependency_frames[i]` frames each.
    Run {
        task: TaskId,
        function: FunctionRef,
        call_frames: u32,
        dependency_frames: Vec<u32>,
        /// Where the worker also writes the outcome: the task store.
        store: Option<StoreTarget>,
        /// Frames left empty on the wire because their bytes are in shared
        /// memory the worker maps (`shared_memory`); empty for other hosts.
        shared: Vec<SharedFrame>,
        /// Whether the worker may leave its result's large frames in its
        /// own shared memory (the scheduler is on its host).
        shared_results: bool,
    },
    Ping,
    /// The scheduler has mapped these segments of the worker's
    /// (`SegmentRef::id`, from a `Done`): the worker may close them.
    Released {
        segments: Vec<u64>,
    },
    /// Exit after the current task.
    Shutdown,
    /// Give back `task`, sent ahead of time behind the one running (the
    /// scheduler queues one task ahead on each pool worker), if it has not
    /// started: answered by `Retracted` or, once it has, by `Kept`.
    Retract {
        task: TaskId,
    },
}

/// A task whose outcome is kept in a task store (`cache_directory`): the
/// worker writes it there itself, so a large result is not copied through
/// the client to reach the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoreTarget {
    /// The store's directory, as the client named it (absolute).
    pub root: String,
    /// The entry's name: the call's `cache_key` or its content hash.
    pub key: String,
    /// The function's qualified name, for `get_cache_data`.
    pub function: String,
    /// When the client submitted the call, in seconds since the Unix epoch.
    pub submitted: f64,
}

/// A payload frame whose bytes wait in a shared-memory segment of the
/// scheduler's process instead of travelling on the socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedFrame {
    /// Which payload frame it stands for (that frame is sent empty).
    pub index: u32,
    pub segment: SegmentRef,
}

/// Where a worker on the scheduler's host finds a frame's bytes: file
/// descriptor `fd` of process `pid` (Linux: `/proc/<pid>/fd/<fd>`, a
/// memfd), which must be the file `device`:`inode` — a check that it is
/// the scheduler's segment and not another process's that has the same pid
/// in another pid namespace. The frame is its first `len` bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRef {
    /// Named again in `FromWorker::Released` once the worker unmapped it.
    pub id: u64,
    pub pid: u32,
    pub fd: i32,
    pub device: u64,
    pub inode: u64,
    pub len: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The payload is the pickled return value.
    Returned,
    /// The payload is the pickled exception (with its remote traceback).
    Raised,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromWorker {
    /// Sent once Python is up and the worker can take tasks, as the first
    /// message of its connection (its session's). The scheduler routes to
    /// a worker by the connection its Hello came from, never
    /// by an identity the peer chose.
    Hello {
        worker: WorkerId,
        pid: u32,
        host: String,
    },
    /// The init function ran; `Raised` carries its exception.
    InitDone {
        outcome: Outcome,
    },
    Done {
        task: TaskId,
        outcome: Outcome,
        /// Result frames left in the worker's shared memory (see
        /// `ToWorker::Run::shared_results`).
        shared: Vec<SharedFrame>,
        /// Why the outcome of a task with a `StoreTarget` is not in the store
        /// (the disk is full, the store read-only): the client warns.
        unstored: Option<String>,
    },
    /// The task's store key is being run by another live process (its lock
    /// is held): the worker did not run it, and the client waits for the
    /// other run's entry instead.
    Elsewhere {
        task: TaskId,
    },
    /// Text the running task wrote to `sys.stdout` or `sys.stderr`; the
    /// payload is one UTF-8 frame. Sent before the task's `Done`.
    Output {
        task: TaskId,
        stream: Stream,
    },
    Pong,
    /// The worker could not map the shared frames of `task`'s `Run` (it did
    /// not run it): `segments` are those it did not map, `reason` says why.
    /// The scheduler sends it that task again, and everything after, on the
    /// socket.
    CannotMap {
        task: TaskId,
        segments: Vec<u64>,
        reason: String,
    },
    /// The worker no longer maps these shared segments (`SegmentRef::id`):
    /// the scheduler may write them again. Sent before the next message.
    Released {
        segments: Vec<u64>,
    },
    /// `task` was taken out of the worker's queue: it will not run here.
    Retracted {
        task: TaskId,
    },
    /// `task` had started (or ended) when its `Retract` arrived: it runs
    /// here, and its `Done` comes as usual.
    Kept {
        task: TaskId,
    },
}

/// Which of a task's streams a piece of output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    Unopened(OpenError),
    BadHeader(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Unopened(e) => write!(f, "{e}"),
            DecodeError::BadHeader(e) => write!(f, "header does not decode: {e}"),
        }
    }
}

/// Encode and seal `header` + `frames` into the frames of one ZeroMQ message.
pub fn encode<H: Serialize>(sealer: &mut Sealer, header: &H, frames: Vec<Bytes>) -> Vec<Bytes> {
    let mut body = Vec::with_capacity(frames.len() + 1);
    body.push(Bytes::from(
        bincode::serialize(header).expect("headers always serialize"),
    ));
    body.extend(frames);
    sealer.seal(body)
}

/// Open, then decode. Nothing in the frames has been looked at unless
/// every one of them opened.
pub fn decode<H: for<'de> Deserialize<'de>>(
    opener: &mut Opener,
    message: Vec<Bytes>,
) -> Result<(H, Vec<Bytes>), DecodeError> {
    let mut message = opener.open(message).map_err(DecodeError::Unopened)?;
    let header =
        bincode::deserialize(&message[0]).map_err(|e| DecodeError::BadHeader(e.to_string()))?;
    message.remove(0);
    Ok((header, message))
}

/// Open the first message of a new connection with the session it starts
/// (`SaltsSeen::session`): its header, its payload frames, and the
/// session's sending and receiving halves. The salt counts as seen only
/// once the caller has checked that the message admits its connection
/// (a worker's expected Hello) and calls `SaltsSeen::accept`.
pub fn open_first<H: for<'de> Deserialize<'de>>(
    salts: &SaltsSeen,
    key: &Key,
    protection: Protection,
    message: Vec<Bytes>,
) -> Result<(H, Vec<Bytes>, Sealer, Opener), DecodeError> {
    let (sealer, mut opener) = salts
        .session(key, protection, &message)
        .map_err(DecodeError::Unopened)?;
    let (header, frames) = decode(&mut opener, message)?;
    Ok((header, frames, sealer, opener))
}

/// Identity a worker reports for status displays: which process on which host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerPlace {
    pub worker: WorkerId,
    pub pid: u32,
    pub host: String,
}

/// The zygote's messages (`crate::zygote` sends them, pmp-worker's zygote
/// mode answers). Each is one SOCK_SEQPACKET message, bincode as the headers
/// above, unsigned: only the scheduler holds the other end of the socket.
/// - requests socket: the scheduler sends a `ForkRequest` (the child's
///   stdout and stderr pipes attached); the zygote answers a `ForkAnswer`,
///   and sends one unasked with its own pid once it is ready.
/// - exits socket: the zygote sends an `ExitReport` for each child reaped.
pub mod zygote {
    use serde::{de::DeserializeOwned, Deserialize, Serialize};

    /// Fork a worker with these variables, in this cwd (None: the zygote's).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ForkRequest {
        pub cwd: Option<Vec<u8>>,
        pub variables: Vec<(String, String)>,
    }

    /// The forked child's pid; 0 when the fork failed.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ForkAnswer {
        pub pid: i32,
    }

    /// A child the zygote reaped, with its wait status.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ExitReport {
        pub pid: i32,
        pub status: i32,
    }

    impl ForkAnswer {
        /// Its encoded size: what the scheduler reads.
        pub const LEN: usize = 4;
    }

    impl ExitReport {
        /// Its encoded size: what the scheduler reads.
        pub const LEN: usize = 8;
    }

    pub fn encode<M: Serialize>(message: &M) -> Vec<u8> {
        bincode::serialize(message).expect("zygote messages always serialize")
    }

    pub fn decode<M: DeserializeOwned>(bytes: &[u8]) -> Result<M, String> {
        bincode::deserialize(bytes).map_err(|e| format!("malformed zygote message: {e}"))
    }
}

/// The node agents' messages: `crate::agents` on the scheduler's side,
/// pmp-worker's agent mode (`PMP_AGENT`) on each node. Sealed like the
/// workers' (`encode`, `decode`), one session per agent connection, always
/// encrypted: an agent's connection leaves the scheduler's host.
///
/// An agent starts the workers of its node, reports what they print and
/// how they end, and relays their messages: its one connection carries the
/// traffic of all its node's workers (`Relay`), which talk to it on a local
/// socket of its own (a Unix socket in a private directory, signed with a
/// key of the agent's), never to the scheduler. So a node costs the
/// scheduler one connection and one session however many workers it runs,
/// and nothing a worker says leaves the node unencrypted.
///
/// Large buffers cross the network once per node: the scheduler sends a
/// buffer of `shared_memory::SHARED_FROM` bytes or more to an agent once
/// (`Keep`, named by its BLAKE3 hash), and a `Relay`ed `Run` that carries
/// it sends that frame empty and names it in `kept`; the agent holds it in
/// a memfd segment and names that segment in the `Run`'s `shared` list
/// before passing the `Run` on, so the worker maps it as it maps the
/// scheduler's segments on one host.
pub mod agent {
    use super::batch::{Batched, Entry};
    use super::{FromWorker, Stream, ToWorker};
    use crate::ids::WorkerId;
    use serde::{Deserialize, Serialize};

    /// A buffer's BLAKE3 hash: its name in an agent's store of kept buffers.
    pub type BufferHash = [u8; 32];

    /// A payload frame of a relayed `Run` that is sent empty because the
    /// agent keeps its bytes (`ToAgent::Keep`).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct KeptFrame {
        /// Which payload frame of the `Run` it stands for.
        pub index: u32,
        pub hash: BufferHash,
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub enum ToAgent {
        /// Start worker `worker` as this command: forked by the node's
        /// zygote where it can reproduce it (the worker program without
        /// arguments), spawned otherwise (mpiexec for several ranks). The
        /// variables hold no key: the agent adds its own. Its output comes
        /// back as `Printed`, its end as `Exited` (also when it could not
        /// start).
        Start {
            worker: WorkerId,
            program: String,
            args: Vec<String>,
            variables: Vec<(String, String)>,
            cwd: Option<String>,
            /// How many of the node's GPUs it gets: the agent picks which
            /// (it alone knows the ids its node's step was given) and sets
            /// `CUDA_VISIBLE_DEVICES`; they are free again once it exited.
            gpus: u32,
        },
        /// End the worker's process group: SIGTERM, then SIGKILL after a
        /// grace. Its `Exited` follows.
        Stop {
            worker: WorkerId,
        },
        /// Send `signal` to the worker's process group now.
        Signal {
            worker: WorkerId,
            signal: i32,
        },
        Ping,
        /// End every worker and exit.
        Shutdown,
        /// Pass `message` on to worker `worker` of this node, with the
        /// payload frames that follow this header; `kept` frames are sent
        /// empty and filled from the agent's kept buffers (only in a `Run`,
        /// whose `shared` the agent extends with its segments).
        Relay {
            worker: WorkerId,
            message: ToWorker,
            kept: Vec<KeptFrame>,
        },
        /// Keep the one payload frame that follows as buffer `hash`, for
        /// the `Run`s that name it in `kept`, until `Forget`.
        Keep {
            hash: BufferHash,
        },
        /// The scheduler will name `hash` in no further `Run`: the agent
        /// drops it once no worker maps it any more.
        Forget {
            hash: BufferHash,
        },
        /// Several of the above, in order, their payload frames end to end
        /// in the one frame that follows (`batch`).
        Batch(Vec<Entry<ToAgent>>),
    }

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub enum FromAgent {
        /// The first message of its connection: its node's name (Slurm's
        /// or Flux's, which tell apart nodes that share a host name), its
        /// pid, the CPUs it may use and the GPU device ids it may hand out,
        /// and the MB of memory the job system gives the allocation there
        /// (`memory::this_node`; None where nothing says: calls are then
        /// placed there on CPUs and GPUs alone, and none is refused for
        /// memory). No serde default: bincode headers are positional, so a
        /// Hello without the field would not decode anyway; the agent and
        /// the scheduler come from one install. `allocation`: the elastic
        /// allocation whose job started it (`allocation_jobs::VARIABLE`).
        Hello {
            node: String,
            pid: u32,
            cpus: u32,
            gpus: Vec<String>,
            memory_mb: Option<u32>,
            allocation: Option<u32>,
        },
        /// What a worker's process wrote to its stdout or stderr; the
        /// payload is one frame of its bytes.
        Printed {
            worker: WorkerId,
            stream: Stream,
        },
        /// A worker's process ended (or never started), as the local
        /// backend reports it (`core::LostReason`'s fields).
        Exited {
            worker: WorkerId,
            message: String,
            exit_code: Option<i32>,
            signal: Option<i32>,
            stderr_tail: String,
        },
        Pong,
        /// What worker `worker` of this node sent (opened and checked by the
        /// agent on its local socket), with the payload frames that follow
        /// this header. Its `Hello` comes this way too.
        Relay {
            worker: WorkerId,
            message: FromWorker,
        },
        /// Several of the above, in order, their payload frames end to end
        /// in the one frame that follows (`batch`).
        Batch(Vec<Entry<FromAgent>>),
    }

    impl Batched for ToAgent {
        fn batch(entries: Vec<Entry<ToAgent>>) -> ToAgent {
            ToAgent::Batch(entries)
        }
        fn entries(self) -> Result<Vec<Entry<ToAgent>>, ToAgent> {
            match self {
                ToAgent::Batch(entries) => Ok(entries),
                other => Err(other),
            }
        }
    }

    impl Batched for FromAgent {
        fn batch(entries: Vec<Entry<FromAgent>>) -> FromAgent {
            FromAgent::Batch(entries)
        }
        fn entries(self) -> Result<Vec<Entry<FromAgent>>, FromAgent> {
            match self {
                FromAgent::Batch(entries) => Ok(entries),
                other => Err(other),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Key;
    use crate::seal;

    /// A worker's session and the scheduler's, its Hello opened.
    fn sessions() -> ((Sealer, Opener), (Sealer, Opener)) {
        let key = Key::generate();
        let (mut worker_out, worker_in) = seal::connect(&key, seal::Protection::Encrypted);
        let hello = FromWorker::Hello {
            worker: WorkerId(0),
            pid: 1,
            host: "node1".into(),
        };
        let wire = encode(&mut worker_out, &hello, Vec::new());
        let salts = seal::SaltsSeen::default();
        let (back, _, scheduler_out, scheduler_in) =
            open_first::<FromWorker>(&salts, &key, seal::Protection::Encrypted, wire).unwrap();
        assert_eq!(back, hello);
        ((worker_out, worker_in), (scheduler_out, scheduler_in))
    }

    #[test]
    fn round_trip_keeps_header_and_frames() {
        let ((_, mut worker_in), (mut scheduler_out, _)) = sessions();
        let msg = ToWorker::Run {
            task: TaskId(7),
            function: FunctionRef::Inline { slot: 2 },
            call_frames: 1,
            dependency_frames: vec![2],
            store: Some(StoreTarget {
                root: "/scratch/store".into(),
                key: "k".into(),
                function: "f".into(),
                submitted: 1.5,
            }),
            shared: vec![SharedFrame {
                index: 1,
                segment: SegmentRef {
                    id: 3,
                    pid: 4,
                    fd: 5,
                    device: 6,
                    inode: 7,
                    len: 8,
                },
            }],
            shared_results: true,
        };
        let frames = vec![Bytes::from_static(b"f"), Bytes::from_static(b"c")];
        let wire = encode(&mut scheduler_out, &msg, frames.clone());
        let (back, payload): (ToWorker, _) = decode(&mut worker_in, wire).unwrap();
        assert_eq!(back, msg);
        assert_eq!(payload, frames);
    }

    #[test]
    fn tampered_or_unsealed_messages_are_rejected() {
        let ((mut worker_out, _), (_, mut scheduler_in)) = sessions();
        let mut wire = encode(
            &mut worker_out,
            &FromWorker::Pong,
            vec![Bytes::from_static(b"x")],
        );
        let mut changed = wire[2].to_vec();
        changed[0] ^= 1;
        wire[2] = Bytes::from(changed);
        assert_eq!(
            decode::<FromWorker>(&mut scheduler_in, wire).unwrap_err(),
            DecodeError::Unopened(OpenError::Forged)
        );
        let unsealed = vec![Bytes::from_static(b"header"), Bytes::from_static(b"pickle")];
        assert_eq!(
            decode::<FromWorker>(&mut scheduler_in, unsealed).unwrap_err(),
            DecodeError::Unopened(OpenError::NotThisSession)
        );
        assert_eq!(
            decode::<FromWorker>(&mut scheduler_in, vec![Bytes::new()]).unwrap_err(),
            DecodeError::Unopened(OpenError::TooShort)
        );
    }

    #[test]
    fn zygote_messages_round_trip_at_the_sizes_read_for_them() {
        use zygote::{decode, encode, ExitReport, ForkAnswer, ForkRequest};
        let request = ForkRequest {
            cwd: Some(b"/tmp/work".to_vec()),
            variables: vec![("EXTRA".into(), "a=b".into()), ("EMPTY".into(), "".into())],
        };
        assert_eq!(decode::<ForkRequest>(&encode(&request)), Ok(request));
        let answer = ForkAnswer { pid: 4242 };
        assert_eq!(encode(&answer).len(), ForkAnswer::LEN);
        assert_eq!(decode::<ForkAnswer>(&encode(&answer)), Ok(answer));
        let report = ExitReport { pid: 7, status: 9 };
        assert_eq!(encode(&report).len(), ExitReport::LEN);
        assert_eq!(decode::<ExitReport>(&encode(&report)), Ok(report));
        assert!(decode::<ForkRequest>(b"\x01").is_err());
    }
}
