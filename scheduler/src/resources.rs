//! What a task or worker asks for, and the accounting of what is free.

use std::num::{NonZeroU16, NonZeroU32};

/// Resources of one worker process (group of ranks), as the user writes them
/// in `resource_dict` or on the Executor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceRequest {
    pub cores: u32,
    pub threads_per_core: u32,
    pub gpus_per_core: u32,
    pub oversubscribe: bool,
    pub cwd: Option<String>,
    /// A boxed slice, not a Vec: 8 bytes less, so that `memory_mb` fits
    /// in the 64 bytes a request stays within (see the test).
    pub extra_args: Box<[String]>,
    /// `num_nodes`: the ranks spread over exactly this many nodes, as a
    /// step (or Flux job) of its own where it is more than one; None lets
    /// the scheduler choose (one node where one holds the call). 16 bits
    /// and `exclusive` fill the padding after `oversubscribe`: a request
    /// stays 64 bytes, and every queued call holds one (`node_count`).
    pub nodes: Option<NonZeroU16>,
    /// `exclusive`: the call's nodes run nothing else while it runs, and it
    /// is a step (or Flux job) of its own.
    pub exclusive: bool,
    /// `memory_max` in MB: the call's node keeps this much of its memory
    /// for it while it runs (a reservation pmp places by, not a limit it
    /// enforces: no cgroup of its own). None asks for none.
    pub memory_mb: Option<NonZeroU32>,
}

/// `memory_max` (GB, as executorlib counts it) in the MB the scheduler and
/// Slurm count: whole MB, as sbatch's `--mem=<n>M` takes it, at least 1.
pub fn memory_mb(gb: f64) -> NonZeroU32 {
    let mb = (gb * 1024.0).clamp(1.0, f64::from(u32::MAX)) as u32;
    NonZeroU32::new(mb).unwrap_or(NonZeroU32::MIN)
}

impl Default for ResourceRequest {
    fn default() -> Self {
        ResourceRequest {
            cores: 1,
            threads_per_core: 1,
            gpus_per_core: 0,
            oversubscribe: false,
            cwd: None,
            extra_args: Box::default(),
            nodes: None,
            exclusive: false,
            memory_mb: None,
        }
    }
}

#[cfg(test)]
impl ResourceRequest {
    /// The same ranks over `nodes` nodes (`num_nodes`), for tests.
    pub fn over(self, nodes: u16) -> ResourceRequest {
        ResourceRequest {
            nodes: NonZeroU16::new(nodes),
            ..self
        }
    }

    /// `cores` ranks of `threads` threads and `gpus` GPUs each, for tests.
    pub fn of(cores: u32, threads: u32, gpus: u32) -> ResourceRequest {
        ResourceRequest {
            cores,
            threads_per_core: threads,
            gpus_per_core: gpus,
            ..Default::default()
        }
    }
}

impl ResourceRequest {
    /// CPUs taken from the allocation: one per thread of every rank.
    pub fn cpus(&self) -> u32 {
        self.cores * self.threads_per_core
    }

    pub fn gpus(&self) -> u32 {
        self.cores * self.gpus_per_core
    }

    /// MB of memory kept for the call on its node; 0 where it asks none.
    pub fn memory(&self) -> u32 {
        self.memory_mb.map_or(0, NonZeroU32::get)
    }

    /// `num_nodes`, where the user gave it.
    pub fn node_count(&self) -> Option<u32> {
        self.nodes.map(|nodes| u32::from(nodes.get()))
    }

    /// The number of nodes the ranks are spread over, where the user said
    /// more than one (`num_nodes`).
    pub fn spread(&self) -> Option<u32> {
        self.node_count().filter(|&nodes| nodes > 1)
    }

    /// Whether only a step (or Flux job) of its own can run this call:
    /// ranks on several named nodes, nodes of its own, or launcher options.
    pub fn needs_own_step(&self) -> bool {
        self.spread().is_some() || self.exclusive || !self.extra_args.is_empty()
    }

    /// Ranks on each of the `num_nodes` nodes, as srun's block
    /// distribution lays them out: as even as they go, the first nodes one
    /// more (3 ranks on 2 nodes: 2 and 1).
    pub fn ranks_per_node(&self, nodes: u32) -> Vec<u32> {
        let (each, more) = (self.cores / nodes, self.cores % nodes);
        (0..nodes).map(|i| each + u32::from(i < more)).collect()
    }

    /// Why `num_nodes` can never be honoured, where the allocation has
    /// `allocation_nodes` nodes (None where it is not known): every node
    /// needs a rank, and the nodes must be there.
    pub fn nodes_never_fit(&self, allocation_nodes: Option<u32>) -> Option<NeverFits> {
        let nodes = self.node_count()?;
        if nodes > self.cores {
            return Some(NeverFits::NodesAboveCores {
                nodes,
                cores: self.cores,
            });
        }
        allocation_nodes
            .filter(|&available| nodes > available)
            .map(|available| NeverFits::Nodes { nodes, available })
    }

    /// The first setting, by its `resource_dict` key, in which `other`
    /// asks for something else than this; None when they are the same.
    pub fn first_difference(&self, other: &ResourceRequest) -> Option<&'static str> {
        [
            ("cores", self.cores != other.cores),
            (
                "threads_per_core",
                self.threads_per_core != other.threads_per_core,
            ),
            ("gpus_per_core", self.gpus_per_core != other.gpus_per_core),
            ("oversubscribe", self.oversubscribe != other.oversubscribe),
            ("cwd", self.cwd != other.cwd),
            (
                "command_line_argument_lst",
                self.extra_args != other.extra_args,
            ),
            // A pool's workers, the only ones compared, run on one node
            // each: saying num_nodes=1 asks for nothing else.
            (
                "num_nodes",
                self.node_count().unwrap_or(1) != other.node_count().unwrap_or(1),
            ),
            ("exclusive", self.exclusive != other.exclusive),
            ("memory_max", self.memory_mb != other.memory_mb),
        ]
        .into_iter()
        .find_map(|(key, differs)| differs.then_some(key))
    }
}

/// The first control character (a newline, a tab, ...) in `text`, if any.
/// A value that reaches a job script or a command line holds none: a
/// newline in an `#SBATCH` line starts a line of its own, which the shell
/// runs, and ends the options there.
pub fn control_character(text: &str) -> Option<char> {
    text.chars().find(|c| c.is_control())
}

/// GPUs: of the whole allocation, its free part, or one worker's share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gpus {
    /// Device ids pmp hands out itself, as the worker's
    /// `CUDA_VISIBLE_DEVICES` (the local backend).
    Devices(Vec<String>),
    /// srun or flux pick the devices and set the variable; pmp only counts
    /// the allocation's GPUs so that no more run at once than it holds.
    Counted(u32),
}

impl Gpus {
    pub fn count(&self) -> u32 {
        match self {
            Gpus::Devices(ids) => u32::try_from(ids.len()).unwrap_or(u32::MAX),
            Gpus::Counted(n) => *n,
        }
    }

    /// The device ids a worker is to see; none where the launcher picks them.
    pub fn devices(&self) -> &[String] {
        match self {
            Gpus::Devices(ids) => ids,
            Gpus::Counted(_) => &[],
        }
    }

    /// Take `n` (or as many as there are) out of these.
    pub(crate) fn take(&mut self, n: u32) -> Gpus {
        match self {
            Gpus::Devices(free) => {
                let n = (n as usize).min(free.len());
                Gpus::Devices(free.drain(..n).collect())
            }
            Gpus::Counted(free) => {
                let n = n.min(*free);
                *free -= n;
                Gpus::Counted(n)
            }
        }
    }

    /// Return what `take` handed out.
    pub(crate) fn put_back(&mut self, taken: Gpus) {
        match (self, taken) {
            (Gpus::Devices(free), Gpus::Devices(ids)) => {
                free.extend(ids);
                free.sort();
            }
            (Gpus::Counted(free), Gpus::Counted(n)) => *free += n,
            (free, taken) => {
                unreachable!("{taken:?} returned to {free:?}: GPUs go back where they came from")
            }
        }
    }
}

/// Why a request can never run in an allocation, typed so that the client
/// can say it in the user's own terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NeverFits {
    /// `cores` x `threads_per_core` CPUs are more than the allocation's `cpus`.
    Cpus {
        cores: u32,
        threads_per_core: u32,
        cpus: u32,
    },
    Gpus {
        requested: u32,
        available: u32,
    },
    /// A block allocation of `workers` workers of `cpus_each` CPUs holds
    /// them all at once, which is more than the allocation's `cpus`.
    Pool {
        workers: u32,
        cpus_each: u32,
        cpus: u32,
    },
    /// The allocation's nodes hold the request's `cpus` and `gpus` only
    /// together, and with this backend a call's ranks run on one node: the
    /// largest has `node_cpus` CPUs, the one with the most GPUs
    /// `node_gpus`. (Where the backend starts a step across nodes, such a
    /// call spans them instead: `capacity::Capacity::with_spans`.)
    SeveralNodes {
        cpus: u32,
        gpus: u32,
        node_cpus: u32,
        node_gpus: u32,
    },
    /// A call spanning nodes has whole ranks on each (`threads_per_core`
    /// CPUs and `gpus_per_core` GPUs of one node), and the allocation's
    /// nodes hold only `ranks` such ranks together, fewer than `cores`,
    /// though their CPUs and GPUs add up to enough.
    Ranks {
        cores: u32,
        threads_per_core: u32,
        gpus_per_core: u32,
        ranks: u32,
    },
    /// `memory_max` keeps `requested` MB on one node (on each, for a
    /// call across nodes), and the largest node has `node_mb`.
    Memory {
        requested: u32,
        node_mb: u32,
    },
    /// `num_nodes` is more than the allocation's `available` nodes.
    Nodes {
        nodes: u32,
        available: u32,
    },
    /// `num_nodes` is more than `cores`: a node without a rank of the call.
    NodesAboveCores {
        nodes: u32,
        cores: u32,
    },
    /// `num_nodes` puts up to `ranks` ranks on a node, and no `nodes` of
    /// the allocation's nodes hold that many each (`node_ranks` on the
    /// `nodes`-th largest).
    PerNode {
        nodes: u32,
        ranks: u32,
        node_ranks: u32,
    },
}

impl std::fmt::Display for NeverFits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NeverFits::Cpus {
                cores,
                threads_per_core,
                cpus,
            } => write!(
                f,
                "{cores} cores x {threads_per_core} threads_per_core can never fit in {cpus} CPUs"
            ),
            NeverFits::Gpus {
                requested,
                available,
            } => write!(
                f,
                "{requested} GPU(s) requested but the allocation has {available}"
            ),
            NeverFits::Pool {
                workers,
                cpus_each,
                cpus,
            } => write!(
                f,
                "{workers} workers of {cpus_each} CPUs each can never fit in {cpus} CPUs"
            ),
            NeverFits::SeveralNodes {
                cpus,
                gpus,
                node_cpus,
                node_gpus,
            } => write!(
                f,
                "{cpus} CPUs and {gpus} GPU(s) fit on no single node of the allocation (the \
                 largest has {node_cpus} CPUs, the most GPUs on one node are {node_gpus}); all \
                 ranks of a call run on one node: ask for at most that many cores x \
                 threads_per_core and GPUs"
            ),
            NeverFits::Ranks {
                cores,
                threads_per_core,
                gpus_per_core,
                ranks,
            } => write!(
                f,
                "{cores} cores of {threads_per_core} threads_per_core and {gpus_per_core} \
                 GPU(s) each can never fit: each rank runs on one node, and the allocation's \
                 nodes hold only {ranks} such ranks together; ask for fewer cores, threads or \
                 GPUs per core"
            ),
            NeverFits::Memory { requested, node_mb } => write!(
                f,
                "resource_dict key 'memory_max' asks for {} GB on one node, more than the \
                 {} GB of the allocation's largest node (what the job system gives it): ask \
                 for at most that much, or for an allocation with more memory per node (pmp \
                 keeps this much free for the call while it runs; it does not limit what \
                 the call uses)",
                gb(*requested),
                gb(*node_mb)
            ),
            NeverFits::Nodes { nodes, available } => write!(
                f,
                "num_nodes={nodes} is more than the allocation's {available} nodes; ask for at \
                 most {available}"
            ),
            NeverFits::NodesAboveCores { nodes, cores } => write!(
                f,
                "num_nodes={nodes} with {cores} cores leaves a node without a rank: every node \
                 of a call runs at least one; ask for at most {cores} nodes, or more cores"
            ),
            NeverFits::PerNode {
                nodes,
                ranks,
                node_ranks,
            } => write!(
                f,
                "num_nodes={nodes} puts {ranks} ranks on a node, but the allocation has no \
                 {nodes} nodes that hold {ranks} such ranks each (at most {node_ranks}); ask \
                 for more nodes or fewer cores"
            ),
        }
    }
}

/// MB as the GB `memory_max` counts, in as few digits as say it.
fn gb(mb: u32) -> String {
    let gb = f64::from(mb) / 1024.0;
    let text = format!("{gb:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_a_difference_named_by_its_key() {
        let pool = ResourceRequest::of(1, 1, 0);
        assert_eq!(pool.first_difference(&pool.clone()), None);
        type Change = fn(&mut ResourceRequest);
        let changed: [(&str, Change); 9] = [
            ("cores", |r| r.cores = 2),
            ("threads_per_core", |r| r.threads_per_core = 2),
            ("gpus_per_core", |r| r.gpus_per_core = 1),
            ("oversubscribe", |r| r.oversubscribe = true),
            ("cwd", |r| r.cwd = Some("/elsewhere".into())),
            ("command_line_argument_lst", |r| {
                r.extra_args = vec!["-v".into()].into()
            }),
            ("num_nodes", |r| r.nodes = NonZeroU16::new(2)),
            ("exclusive", |r| r.exclusive = true),
            ("memory_max", |r| r.memory_mb = NonZeroU32::new(1024)),
        ];
        for (key, change) in changed {
            let mut other = pool.clone();
            change(&mut other);
            assert_eq!(pool.first_difference(&other), Some(key));
        }
        let one_node = ResourceRequest {
            nodes: NonZeroU16::new(1),
            ..pool.clone()
        };
        assert_eq!(pool.first_difference(&one_node), None);
    }

    #[test]
    fn a_request_stays_64_bytes_since_every_queued_call_holds_one() {
        assert!(std::mem::size_of::<ResourceRequest>() <= 64);
    }

    #[test]
    fn memory_max_is_whole_mb_and_at_least_one() {
        assert_eq!(memory_mb(0.5).get(), 512);
        assert_eq!(memory_mb(1.0 / 1024.0).get(), 1);
        assert_eq!(memory_mb(1e-9).get(), 1);
        assert_eq!(memory_mb(1e12).get(), u32::MAX);
    }

    #[test]
    fn ranks_spread_over_nodes_as_srun_blocks_them() {
        assert_eq!(ResourceRequest::of(2, 1, 0).ranks_per_node(2), [1, 1]);
        assert_eq!(ResourceRequest::of(3, 1, 0).ranks_per_node(2), [2, 1]);
        assert_eq!(ResourceRequest::of(7, 1, 0).ranks_per_node(3), [3, 2, 2]);
    }

    #[test]
    fn num_nodes_needs_a_rank_on_every_node_and_the_nodes_there() {
        let mut request = ResourceRequest::of(2, 1, 0);
        assert_eq!(request.nodes_never_fit(Some(2)), None, "no num_nodes given");
        request.nodes = NonZeroU16::new(2);
        assert_eq!(request.nodes_never_fit(Some(2)), None);
        assert_eq!(request.nodes_never_fit(None), None);
        assert_eq!(
            request.nodes_never_fit(Some(1)),
            Some(NeverFits::Nodes {
                nodes: 2,
                available: 1
            })
        );
        request.nodes = NonZeroU16::new(3);
        let why = request.nodes_never_fit(None).unwrap();
        assert_eq!(why, NeverFits::NodesAboveCores { nodes: 3, cores: 2 });
        assert!(why.to_string().starts_with("num_nodes=3 with 2 cores"));
    }

    #[test]
    fn control_characters_are_found_anywhere_in_a_value() {
        assert_eq!(control_character("debug"), None);
        assert_eq!(control_character("debug\n#SBATCH"), Some('\n'));
        assert_eq!(control_character("a\tb"), Some('\t'));
        assert_eq!(control_character("caf\u{e9}"), None);
    }
}
