//! Workers under a node agent: what they say comes relayed on its link
//! (`FromAgent::Relay`), checked to be one of its node's workers, and is
//! then handled as a worker's own connection's would be; what is for them
//! goes the same way (`ToAgent::Relay`).
//!
//! Large buffers cross the network once per node: a `Run`'s frame of
//! `SHARED_FROM` bytes or more goes to the node's agent once, as `Keep`
//! named by its BLAKE3 hash, ahead of the `Run` on the same link; every
//! `Run` to that node then sends the frame empty and names it in `kept`.
//! What each agent holds is counted here, up to a byte limit per node
//! (`PMP_AGENT_KEEP_BYTES`): the buffers used least recently are forgotten
//! first (`Forget`). An agent that does not hold a buffer a `Run` names
//! answers `CannotMap`, and the task goes again with its frames whole.

use super::agents::AgentWorker;
use super::comm::{SharedFrames, Wire, WorkerHandle};
use super::{AgentStats, Server};
use crate::core::Event;
use crate::ids::{NodeId, TaskId, WorkerId};
use crate::protocol::agent::{BufferHash, KeptFrame, ToAgent};
use crate::protocol::{FromWorker, ToWorker};
use crate::shared_memory::{self, SHARED_FROM};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};

/// The variable that sets how many bytes of kept buffers each node's
/// agent may hold.
pub const KEEP_BYTES_VARIABLE: &str = "PMP_AGENT_KEEP_BYTES";

/// What an agent may hold unless `PMP_AGENT_KEEP_BYTES` says otherwise:
/// many calls' large arguments, and little of a node's memory.
pub const DEFAULT_KEEP_BYTES: u64 = 2 << 30;

/// The byte limit from `PMP_AGENT_KEEP_BYTES`'s value, if set; 0 sends
/// every buffer with its `Run`.
pub fn keep_bytes(value: Option<&str>) -> Result<u64, String> {
    let Some(value) = value else {
        return Ok(DEFAULT_KEEP_BYTES);
    };
    value.trim().parse().map_err(|_| {
        format!(
            "{KEEP_BYTES_VARIABLE} is {value:?}: it must be a whole number of bytes, the most \
             each node's agent keeps of large arguments (0: none); unset it for the default, \
             {DEFAULT_KEEP_BYTES} (2 GiB)"
        )
    })
}

/// What every node's agent holds of large buffers, and each task's large
/// frames' hashes.
pub(super) struct KeptBuffers {
    limit: u64,
    nodes: HashMap<NodeId, NodeStore>,
    /// Hashed once per task, whichever node and however often its `Run`
    /// goes; dropped when the task ends (`task_ended`).
    hashes: HashMap<TaskId, Vec<FrameHash>>,
}

/// A large frame's hash, found again by its place counted from the end of
/// the `Run`'s frames (the function's pickle, first, is there only for a
/// worker that does not hold it yet) and its length.
#[derive(Clone, Copy)]
struct FrameHash {
    from_end: usize,
    len: usize,
    hash: BufferHash,
}

/// One agent's buffers, by hash and by when a `Run` last named them.
#[derive(Default)]
struct NodeStore {
    held: HashMap<BufferHash, Held>,
    by_use: BTreeMap<u64, BufferHash>,
    bytes: u64,
    clock: u64,
    /// How many `Keep`s it was sent, and their bytes.
    kept: u64,
    kept_bytes: u64,
}

struct Held {
    len: u64,
    used: u64,
}

impl KeptBuffers {
    pub(super) fn new(limit: u64) -> KeptBuffers {
        KeptBuffers {
            limit,
            nodes: HashMap::new(),
            hashes: HashMap::new(),
        }
    }

    /// Empty the large frames of `task`'s `Run` to `agent`'s node that it
    /// holds, sending it first (`Keep`) those it does not hold yet; returns
    /// the frames emptied.
    fn keep(&mut self, agent: &AgentWorker, task: TaskId, frames: &mut [Bytes]) -> Vec<KeptFrame> {
        let hashes = self.hashes.entry(task).or_default();
        let store = self.nodes.entry(agent.node).or_default();
        // Buffers named from here on are this Run's: never evicted for it.
        let this_run = store.clock + 1;
        let count = frames.len();
        let mut kept = Vec::new();
        for (index, frame) in frames.iter_mut().enumerate() {
            if frame.len() < SHARED_FROM {
                continue;
            }
            let from_end = count - index;
            let hash = match hashes
                .iter()
                .find(|h| h.from_end == from_end && h.len == frame.len())
            {
                Some(known) => known.hash,
                None => {
                    // A frame in the client's shared memory is hashed once
                    // per segment, and calls given the same array share
                    // one (`shared_memory::frame_of`): 100 calls sharing
                    // 45 MB hash it once, not 100 times.
                    let hash = shared_memory::content_hash(frame)
                        .unwrap_or_else(|| *blake3::hash(frame).as_bytes());
                    hashes.push(FrameHash {
                        from_end,
                        len: frame.len(),
                        hash,
                    });
                    hash
                }
            };
            if store.hold(agent, hash, frame, this_run, self.limit) {
                kept.push(KeptFrame {
                    index: index as u32,
                    hash,
                });
                *frame = Bytes::new();
            }
        }
        kept
    }

    /// `node`'s agent did not hold these: they are sent again when named.
    /// A `Forget` for each, in case it holds some of them after all.
    fn forget(&mut self, agent: &AgentWorker, hashes: &[BufferHash]) {
        let Some(store) = self.nodes.get_mut(&agent.node) else {
            return;
        };
        for hash in hashes {
            if let Some(held) = store.held.remove(hash) {
                store.by_use.remove(&held.used);
                store.bytes -= held.len;
                agent.send(ToAgent::Forget { hash: *hash });
            }
        }
    }

    /// The node's agent is gone, and what it held with it.
    pub(super) fn node_lost(&mut self, node: NodeId) {
        if let Some(store) = self.nodes.get_mut(&node) {
            store.held.clear();
            store.by_use.clear();
            store.bytes = 0;
        }
    }

    /// A task that ended is sent no more: its hashes go.
    pub(super) fn task_ended(&mut self, event: &Event) {
        if self.hashes.is_empty() {
            return;
        }
        match event {
            Event::Finished { task, .. }
            | Event::Raised { task, .. }
            | Event::Lost { task, .. }
            | Event::Cancelled { task, .. }
            | Event::Elsewhere { task } => {
                self.hashes.remove(task);
            }
            _ => {}
        }
    }

    /// How many `Keep`s `node`'s agent was sent, and their bytes.
    pub(super) fn sent(&self, node: NodeId) -> (u64, u64) {
        self.nodes
            .get(&node)
            .map_or((0, 0), |store| (store.kept, store.kept_bytes))
    }
}

impl NodeStore {
    /// Make sure the agent holds `frame` as `hash`, the least recently used
    /// buffers forgotten to make room. False when it cannot (the frame, or
    /// this Run's own buffers, exceed the limit): the frame then goes with
    /// its Run.
    fn hold(
        &mut self,
        agent: &AgentWorker,
        hash: BufferHash,
        frame: &Bytes,
        this_run: u64,
        limit: u64,
    ) -> bool {
        self.clock += 1;
        if let Some(held) = self.held.get_mut(&hash) {
            self.by_use.remove(&held.used);
            held.used = self.clock;
            self.by_use.insert(self.clock, hash);
            return true;
        }
        let len = frame.len() as u64;
        if len > limit {
            return false;
        }
        while self.bytes + len > limit {
            let Some((&used, &oldest)) = self.by_use.first_key_value() else {
                break;
            };
            if used >= this_run {
                return false;
            }
            self.by_use.remove(&used);
            if let Some(gone) = self.held.remove(&oldest) {
                self.bytes -= gone.len;
            }
            agent.send(ToAgent::Forget { hash: oldest });
        }
        agent.send_with(ToAgent::Keep { hash }, vec![frame.clone()]);
        self.held.insert(
            hash,
            Held {
                len,
                used: self.clock,
            },
        );
        self.by_use.insert(self.clock, hash);
        self.bytes += len;
        self.kept += 1;
        self.kept_bytes += len;
        true
    }
}

/// Send `message` to a worker under `agent` through it: a `Run`'s large
/// frames as buffers the agent keeps, the `Run` as it was kept in `shared`
/// in case the agent turns out not to hold them.
pub(super) fn send(
    agent: &AgentWorker,
    kept: &mut KeptBuffers,
    shared: &mut SharedFrames,
    message: ToWorker,
    mut frames: Vec<Bytes>,
) {
    let task = match &message {
        ToWorker::Run { task, .. } if kept.limit > 0 => *task,
        _ => return agent.relay(message, Vec::new(), frames),
    };
    if !crate::shared_memory::has_large(&frames) {
        return agent.relay(message, Vec::new(), frames);
    }
    let whole = frames.clone();
    let named = kept.keep(agent, task, &mut frames);
    if named.is_empty() {
        return agent.relay(message, named, whole);
    }
    shared.kept = named.iter().map(|frame| frame.hash).collect();
    shared.unshared = Some((task, message.clone(), whole));
    agent.relay(message, named, frames);
}

impl AgentWorker {
    /// Pass `message` and its frames on to the worker through its agent.
    pub(super) fn relay(&self, message: ToWorker, kept: Vec<KeptFrame>, frames: Vec<Bytes>) {
        self.send_with(
            ToAgent::Relay {
                worker: self.worker,
                message,
                kept,
            },
            frames,
        );
    }
}

impl Server {
    /// A message `node`'s agent relayed from `worker`: dropped unless the
    /// worker was started on that node. Its Hello binds it to the agent's
    /// link, on the node the agent is.
    pub(super) fn on_relayed(
        &mut self,
        node: NodeId,
        worker: WorkerId,
        mut message: FromWorker,
        frames: Vec<Bytes>,
    ) {
        let Some(agents) = self.agents.as_ref() else {
            return;
        };
        let Some(live) = self
            .live
            .get_mut(&worker)
            .filter(|live| live.process.node() == Some(node))
        else {
            let from = agents.node_name(node).to_string();
            return self.drop_message(
                from.as_bytes(),
                "a relayed message for a worker not started on that node",
            );
        };
        match (&mut message, live.connected()) {
            (FromWorker::Hello { .. }, true) => {
                return self.drop_from(worker, "a second hello through its agent");
            }
            (FromWorker::Hello { host, .. }, false) => {
                live.wire = Wire::Relayed;
                *host = agents.node_name(node).to_string();
            }
            (_, true) => {}
            (_, false) => return self.drop_from(worker, "a first message that is not a hello"),
        }
        self.on_worker_said(worker, message, frames);
    }

    /// A relayed worker's agent did not hold a buffer `task`'s `Run` named:
    /// the `Run` goes again whole, and the buffers it named are sent again
    /// when named next.
    pub(super) fn resend_whole(&mut self, worker: WorkerId, task: TaskId) {
        let Some(live) = self.live.get_mut(&worker) else {
            return;
        };
        let named = std::mem::take(&mut live.shared.kept);
        match (live.shared.unshared.take(), &live.process) {
            (Some((sent, message, frames)), WorkerHandle::Agent(agent)) if sent == task => {
                self.kept.forget(agent, &named);
                agent.relay(message, Vec::new(), frames);
            }
            _ => self.drop_from(worker, "cannot-map for a task not sent with kept frames"),
        }
    }

    /// How many buffers, and bytes, each node's agent was sent to keep.
    pub(super) fn agent_stats(&self) -> Vec<AgentStats> {
        let Some(agents) = self.agents.as_ref() else {
            return Vec::new();
        };
        (0u32..)
            .zip(agents.names())
            .map(|(node, name)| {
                let (kept, kept_bytes) = self.kept.sent(NodeId(node));
                AgentStats {
                    node: name.clone(),
                    kept,
                    kept_bytes,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::agents::Out;
    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

    fn agent() -> (AgentWorker, UnboundedReceiver<Out>) {
        let (outbox, sent) = unbounded_channel();
        let agent = AgentWorker {
            node: NodeId(0),
            worker: WorkerId(0),
            outbox,
        };
        (agent, sent)
    }

    /// What the agent was sent since last asked: Keep and Forget, by the
    /// first byte of the buffer they name.
    fn sent(outbox: &mut UnboundedReceiver<Out>, buffers: &[&Bytes]) -> Vec<String> {
        let name = |hash: &BufferHash| {
            let found = buffers.iter().find(|b| hash_of(b) == *hash).expect("known");
            found[0]
        };
        std::iter::from_fn(|| outbox.try_recv().ok())
            .map(|out| match out {
                Out::Message {
                    message: ToAgent::Keep { hash },
                    ..
                } => format!("keep {}", name(&hash)),
                Out::Message {
                    message: ToAgent::Forget { hash },
                    ..
                } => format!("forget {}", name(&hash)),
                _ => "something else".into(),
            })
            .collect()
    }

    fn hash_of(buffer: &Bytes) -> BufferHash {
        *blake3::hash(buffer).as_bytes()
    }

    fn buffer(byte: u8, mib: usize) -> Bytes {
        Bytes::from(vec![byte; mib << 20])
    }

    /// A Run's frames: a small pickle, then `buffers`; how many were kept.
    fn run(kept: &mut KeptBuffers, agent: &AgentWorker, task: u64, buffers: &[&Bytes]) -> usize {
        let mut frames = vec![Bytes::from_static(b"pickle")];
        frames.extend(buffers.iter().map(|b| (*b).clone()));
        let named = kept.keep(agent, TaskId(task), &mut frames);
        for frame in &named {
            assert!(frames[frame.index as usize].is_empty());
        }
        named.len()
    }

    #[test]
    fn the_least_recently_used_buffers_are_forgotten_to_stay_within_the_limit() {
        let (agent, mut outbox) = agent();
        let mut kept = KeptBuffers::new(5 << 20);
        let (a, b, c, d) = (buffer(1, 2), buffer(2, 2), buffer(3, 2), buffer(4, 6));
        let all = [&a, &b, &c, &d];
        assert_eq!(run(&mut kept, &agent, 1, &[&a]), 1);
        assert_eq!(run(&mut kept, &agent, 2, &[&b]), 1);
        assert_eq!(sent(&mut outbox, &all), ["keep 1", "keep 2"]);
        // Named again: nothing sent, and now the most recently used.
        assert_eq!(run(&mut kept, &agent, 3, &[&a]), 1);
        assert_eq!(run(&mut kept, &agent, 4, &[&c]), 1);
        assert_eq!(sent(&mut outbox, &all), ["forget 2", "keep 3"]);
        // Over the limit alone: it goes with its Run, nothing forgotten.
        assert_eq!(run(&mut kept, &agent, 5, &[&d]), 0);
        assert_eq!(sent(&mut outbox, &all), Vec::<String>::new());
        // A Run's own buffers are never forgotten for it: the one that
        // does not fit beside them goes with the Run.
        assert_eq!(run(&mut kept, &agent, 6, &[&b, &c, &a]), 2);
        assert_eq!(sent(&mut outbox, &all), ["forget 1", "keep 2"]);
        assert_eq!(kept.sent(NodeId(0)), (4, 8 << 20));
    }

    #[test]
    fn the_keep_limit_is_read_from_its_variable_or_defaults() {
        assert_eq!(keep_bytes(None), Ok(DEFAULT_KEEP_BYTES));
        assert_eq!(keep_bytes(Some("0")), Ok(0));
        assert_eq!(keep_bytes(Some(" 4096 ")), Ok(4096));
        let error = keep_bytes(Some("2G")).unwrap_err();
        assert!(
            error.contains("PMP_AGENT_KEEP_BYTES") && error.contains("\"2G\""),
            "{error}"
        );
    }
}
