//! The plan of an Executor's scheduler, made once from what the user gave
//! and what the backend knows: how many CPUs it may use (`max_cores`), how
//! many workers a block allocation keeps, which GPUs it hands out; and
//! every refusal of what could never run or what the backend cannot
//! honour, typed so that the client says it with the user's own key names.
//! Pure: the client probes the machine (environment variables, `nvidia-smi`,
//! `flux resource info`) and passes what it found in `Known`.

use crate::capacity::Capacity;
use crate::resources::{Gpus, NeverFits, ResourceRequest};

/// The least value of each count the user gives: the one rule the
/// client's argument checks and the scheduler's configuration share.
pub const MINIMUMS: [(&str, u32); 7] = [
    // Zero ranks or threads would start a worker that can run nothing.
    ("cores", 1),
    ("threads_per_core", 1),
    ("gpus_per_core", 0),
    ("max_workers", 1),
    ("max_cores", 1),
    ("restart_limit", 0),
    // A call runs on at least one node.
    ("num_nodes", 1),
];

/// The least value of the count `key` (see `MINIMUMS`).
pub fn minimum(key: &str) -> Option<u32> {
    MINIMUMS
        .iter()
        .find(|(name, _)| *name == key)
        .map(|(_, least)| *least)
}

/// Where workers run: which rules of placement apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Local,
    /// srun steps inside a Slurm allocation.
    Slurm,
    /// Pilot jobs from outside any allocation: one node agent per job, as
    /// few jobs as the partition's nodes hold the pool in
    /// (`launcher="step"`: one job per worker).
    SlurmPilots,
    Flux,
    /// Elastic allocations as `flux batch` jobs (`pmp.Allocation`): one
    /// node agent per node of each, as under pilots.
    FluxAllocations,
}

impl Backend {
    /// The name the user chose it by.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Slurm | Backend::SlurmPilots => "slurm",
            Backend::Flux | Backend::FluxAllocations => "flux",
        }
    }
}

/// How workers start inside a Slurm allocation or a Flux instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launcher {
    /// One node agent per node, started once by one srun step or flux job;
    /// each call's worker is forked on its node by that node's agent.
    Agent,
    /// One srun step or flux job per worker: Slurm's or Flux's accounting
    /// and binding for each.
    Step,
}

impl Launcher {
    /// Every launcher, as the user names it.
    pub const ALL: [Launcher; 2] = [Launcher::Agent, Launcher::Step];

    /// The name the user chooses it by.
    pub fn name(self) -> &'static str {
        match self {
            Launcher::Agent => "agent",
            Launcher::Step => "step",
        }
    }

    /// The launcher the user named `name`, if one is.
    pub fn named(name: &str) -> Option<Launcher> {
        Launcher::ALL.into_iter().find(|l| l.name() == name)
    }
}

/// How workers start on `backend`, where `in_allocation` says whether it
/// runs inside a Slurm allocation or a Flux instance and `wanted` is the
/// user's choice: agents where they can start (the local backend is one
/// agent on this host; pilot jobs run one per node), steps otherwise. A
/// choice given where there is no allocation to choose for is refused,
/// not ignored. Pilots with `Step` are one batch job per worker, whose
/// ranks srun may spread over nodes (a worker larger than any node).
pub fn launcher(
    backend: Backend,
    in_allocation: bool,
    wanted: Option<Launcher>,
) -> Result<Launcher, Refusal> {
    let inside = (in_allocation && matches!(backend, Backend::Slurm | Backend::Flux))
        || matches!(backend, Backend::SlurmPilots | Backend::FluxAllocations);
    match wanted {
        Some(launcher) if inside => Ok(launcher),
        Some(launcher) => Err(Refusal::LauncherUnused { launcher, backend }),
        None if inside || backend == Backend::Local => Ok(Launcher::Agent),
        None => Ok(Launcher::Step),
    }
}

/// A setting one backend cannot honour: refused, never ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// Flux gives each rank a core of its own.
    Oversubscribe,
    /// Extra arguments for srun or flux run: the local backend starts
    /// workers itself.
    CommandLineArguments,
    /// `num_nodes` and `exclusive` choose nodes of an allocation: the
    /// local backend has this machine only.
    NumNodes,
    Exclusive,
    /// `memory_max` where nothing can keep it: a `flux run` job per
    /// worker (`launcher="step"`) has no memory option, and pmp knows no
    /// node's memory there to place by.
    MemoryMax,
}

impl Unsupported {
    /// The resource key of the setting.
    pub fn key(self) -> &'static str {
        match self {
            Unsupported::Oversubscribe => "oversubscribe",
            Unsupported::CommandLineArguments => "command_line_argument_lst",
            Unsupported::NumNodes => "num_nodes",
            Unsupported::Exclusive => "exclusive",
            Unsupported::MemoryMax => "memory_max",
        }
    }
}

/// Why an Executor or a call is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A count below its least value (`MINIMUMS`).
    TooSmall {
        key: &'static str,
        minimum: u32,
        value: u32,
    },
    /// Pilot jobs hold the pool's workers: their number must be given.
    PilotsNeedMaxWorkers,
    Unsupported {
        setting: Unsupported,
        backend: Backend,
    },
    /// A block-allocated pool runs every call on its workers as they were
    /// started: a call cannot ask for another `key` (honoured or refused,
    /// never ignored; the core refuses it too, as `NotThePools`).
    NotThePools { key: &'static str },
    /// A block-allocated worker is one process on one node, shared with
    /// the pool's others: it cannot honour `key` (`num_nodes` above one,
    /// or `exclusive`).
    PoolOnOneNode { key: &'static str },
    /// `workers` workers (1 for a call) can never run within `max_cores`
    /// CPUs and the GPUs there are.
    NeverFits { why: NeverFits, workers: u32 },
    /// `launcher` was given where it chooses nothing: on the local backend
    /// (workers start on this host), or with `backend` outside any
    /// allocation (each worker or call is a job of its own).
    LauncherUnused {
        launcher: Launcher,
        backend: Backend,
    },
    /// `workers` workers can never run within the `cpus` of the Slurm
    /// allocation, which srun steps cannot leave (even where `max_cores`
    /// allows it).
    OutsideAllocation {
        why: NeverFits,
        cpus: u32,
        workers: u32,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TooSmall {
                key,
                minimum,
                value,
            } => write!(f, "{key} must be >= {minimum}, got {value}"),
            Refusal::PilotsNeedMaxWorkers => {
                write!(
                    f,
                    "pilot jobs are sized for the pool's workers: their number is needed"
                )
            }
            Refusal::Unsupported { setting, backend } => write!(
                f,
                "the {} backend cannot honour {}",
                backend.name(),
                setting.key()
            ),
            Refusal::NotThePools { key } => write!(
                f,
                "every call runs on the pool's workers: a call cannot ask for another {key}"
            ),
            Refusal::PoolOnOneNode { key } => write!(
                f,
                "a block-allocated worker is one process on one node: it cannot honour {key}; \
                 without block allocation each such call is a step of its own"
            ),
            Refusal::NeverFits { why, .. } => why.fmt(f),
            Refusal::OutsideAllocation { why, cpus, .. } => {
                write!(f, "{why}, the Slurm allocation's {cpus} CPUs")
            }
            Refusal::LauncherUnused { launcher, backend } => {
                write!(
                    f,
                    "launcher='{}' chooses how srun or flux start workers inside an \
                     allocation; ",
                    launcher.name()
                )?;
                if *backend == Backend::Local {
                    write!(f, "the local backend starts them itself")?;
                } else {
                    write!(
                        f,
                        "outside one, each {} worker or call is a job of its own",
                        backend.name()
                    )?;
                }
                write!(f, ": drop launcher")
            }
        }
    }
}

/// What the user gave.
#[derive(Clone, Debug)]
pub struct Wanted {
    pub max_workers: Option<u32>,
    pub max_cores: Option<u32>,
    pub block_allocation: bool,
    /// One worker's resources: what a call gets unless it says otherwise.
    pub worker: ResourceRequest,
    /// Agents or steps, where the user chose (see `launcher`).
    pub launcher: Option<Launcher>,
}

/// What the backend knows of where it runs.
#[derive(Clone, Debug)]
pub struct Known {
    pub backend: Backend,
    /// Whether the client runs inside a Slurm allocation or a Flux
    /// instance, where node agents can start.
    pub in_allocation: bool,
    /// The CPUs the allocation holds, where it says (Slurm).
    pub allocation_cores: Option<u32>,
    /// The CPUs of the whole Slurm job, which srun steps cannot leave,
    /// where Slurm says it for the whole job (per node counts would refuse
    /// a multi-node job's valid requests).
    pub step_cpus: Option<u32>,
    /// This machine's CPUs.
    pub cpu_count: u32,
    /// The nodes of the Slurm allocation or Flux instance, where it says.
    pub nodes: Option<u32>,
    /// Device ids pmp hands out itself (local), or the allocation's count
    /// that srun or flux pick from. Pilots ask Slurm for their own: unused.
    pub gpus: Gpus,
}

/// The scheduler's numbers, and the rules that refuse what it could never
/// run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub backend: Backend,
    pub max_cores: u32,
    /// The user's bound on workers at once without block allocation.
    pub max_workers: Option<u32>,
    /// The pool's size under block allocation; 0 without (a fresh worker
    /// per call).
    pub workers: u32,
    /// One worker's resources: what a call gets unless it says otherwise.
    pub worker: ResourceRequest,
    pub gpus: Gpus,
    pub step_cpus: Option<u32>,
    pub launcher: Launcher,
    /// The allocation's nodes, where known (`num_nodes` is at most these).
    pub nodes: Option<u32>,
}

impl Plan {
    /// The plan for `wanted` where `known` says, or why the Executor is
    /// refused.
    pub fn make(wanted: &Wanted, known: Known) -> Result<Plan, Refusal> {
        let worker = &wanted.worker;
        let counts = [
            ("max_workers", wanted.max_workers),
            ("max_cores", wanted.max_cores),
            ("cores", Some(worker.cores)),
            ("threads_per_core", Some(worker.threads_per_core)),
        ];
        for (key, value) in counts {
            let minimum = minimum(key).unwrap_or(0);
            if let Some(value) = value.filter(|value| *value < minimum) {
                return Err(Refusal::TooSmall {
                    key,
                    minimum,
                    value,
                });
            }
        }
        if known.backend == Backend::SlurmPilots
            && wanted.block_allocation
            && wanted.max_workers.is_none()
        {
            return Err(Refusal::PilotsNeedMaxWorkers);
        }
        let launcher = launcher(known.backend, known.in_allocation, wanted.launcher)?;
        let threads = worker.cpus();
        let max_cores = match (wanted.max_cores, wanted.max_workers) {
            (Some(max_cores), _) => max_cores,
            (None, Some(workers)) => workers.saturating_mul(threads),
            // An allocation that says 0 says nothing.
            (None, None) => known
                .allocation_cores
                .filter(|cores| *cores > 0)
                .unwrap_or(known.cpu_count)
                .max(1),
        };
        let workers = if wanted.block_allocation {
            wanted
                .max_workers
                .unwrap_or_else(|| (max_cores / threads).max(1))
        } else {
            0
        };
        let gpus = match known.backend {
            // Each pilot asks Slurm for its own share.
            Backend::SlurmPilots => Gpus::Counted(worker.gpus().saturating_mul(workers)),
            _ => known.gpus,
        };
        let plan = Plan {
            backend: known.backend,
            max_cores,
            max_workers: wanted.max_workers,
            workers,
            worker: worker.clone(),
            gpus,
            step_cpus: known.step_cpus,
            launcher,
            nodes: known.nodes,
        };
        match plan.refuse(worker, workers.max(1)) {
            Some(refusal) => Err(refusal),
            None => Ok(plan),
        }
    }

    /// Why `workers` workers of `request` could never run here, or what in
    /// it the backend cannot honour; None when they can run.
    pub fn refuse(&self, request: &ResourceRequest, workers: u32) -> Option<Refusal> {
        let unplaced = self.backend == Backend::Flux
            && self.launcher == Launcher::Step
            && request.memory_mb.is_some();
        let unsupported = unsupported(self.backend, request)
            .or(unplaced.then_some(Unsupported::MemoryMax))
            .map(|setting| Refusal::Unsupported {
                setting,
                backend: self.backend,
            });
        // Said before a pool's own rule: no setting of the pool would help.
        if let Some(refusal) = unsupported
            .clone()
            .filter(|_| request.nodes.is_some() || request.exclusive)
        {
            return Some(refusal);
        }
        if self.workers > 0 {
            let key = if request.spread().is_some() {
                Some("num_nodes")
            } else {
                request.exclusive.then_some("exclusive")
            };
            if let Some(key) = key {
                return Some(Refusal::PoolOnOneNode { key });
            }
        }
        if let Some(why) = request.nodes_never_fit(self.nodes) {
            return Some(Refusal::NeverFits { why, workers });
        }
        if self.workers > 0 {
            if let Some(key) = self.worker.first_difference(request) {
                return Some(Refusal::NotThePools { key });
            }
        }
        if unsupported.is_some() {
            return unsupported;
        }
        let within = |cpus| {
            Capacity::new(cpus, None, Gpus::Counted(self.gpus.count()))
                .pool_never_fits(request, workers)
        };
        // The allocation bounds CPUs only: its GPUs are `gpus` either way,
        // and too many of them are said as what asked for them.
        let outside = |cpus| {
            within(cpus)
                .filter(|why| !matches!(why, NeverFits::Gpus { .. }))
                .map(|why| Refusal::OutsideAllocation { why, cpus, workers })
        };
        // The tighter limit is the one named: the allocation where
        // max_cores does not ask for less (max_cores is the allocation's
        // CPUs by default there), so that the user hears that the
        // allocation holds no more, not that max_cores could be raised.
        let allocation_first = self.step_cpus.filter(|&cpus| cpus <= self.max_cores);
        if let Some(refusal) = allocation_first.and_then(outside) {
            return Some(refusal);
        }
        if let Some(why) = within(self.max_cores) {
            return Some(Refusal::NeverFits { why, workers });
        }
        outside(self.step_cpus?)
    }
}

/// The setting of `request` that `backend` cannot honour, if any.
pub fn unsupported(backend: Backend, request: &ResourceRequest) -> Option<Unsupported> {
    match backend {
        Backend::Flux if request.oversubscribe => Some(Unsupported::Oversubscribe),
        Backend::Local if !request.extra_args.is_empty() => Some(Unsupported::CommandLineArguments),
        Backend::Local if request.nodes.is_some() => Some(Unsupported::NumNodes),
        Backend::Local if request.exclusive => Some(Unsupported::Exclusive),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(cores: u32, threads: u32, gpus: u32) -> ResourceRequest {
        ResourceRequest::of(cores, threads, gpus)
    }

    fn wanted(max_workers: Option<u32>, max_cores: Option<u32>, block: bool) -> Wanted {
        Wanted {
            max_workers,
            max_cores,
            block_allocation: block,
            worker: worker(1, 1, 0),
            launcher: None,
        }
    }

    fn local(cpu_count: u32) -> Known {
        Known {
            backend: Backend::Local,
            in_allocation: false,
            allocation_cores: None,
            step_cpus: None,
            cpu_count,
            nodes: None,
            gpus: Gpus::Devices(vec![]),
        }
    }

    fn slurm(allocation_cores: u32, step_cpus: Option<u32>, gpus: u32) -> Known {
        Known {
            backend: Backend::Slurm,
            in_allocation: true,
            allocation_cores: Some(allocation_cores),
            step_cpus,
            cpu_count: 64,
            nodes: Some(2),
            gpus: Gpus::Counted(gpus),
        }
    }

    #[test]
    fn max_cores_is_given_else_the_workers_threads_else_the_allocation_else_the_machine() {
        let plan = |wanted: Wanted, known| Plan::make(&wanted, known).unwrap().max_cores;
        assert_eq!(plan(wanted(Some(2), Some(3), false), local(8)), 3);
        let mut two_by_two = wanted(Some(3), None, false);
        two_by_two.worker = worker(2, 2, 0);
        assert_eq!(plan(two_by_two, local(8)), 12);
        assert_eq!(plan(wanted(None, None, false), slurm(6, None, 0)), 6);
        assert_eq!(plan(wanted(None, None, false), local(8)), 8);
        assert_eq!(plan(wanted(None, None, false), slurm(0, None, 0)), 64);
        assert_eq!(plan(wanted(None, None, false), local(0)), 1);
    }

    #[test]
    fn a_pool_has_max_workers_workers_else_as_many_as_max_cores_holds_and_at_least_one() {
        let workers = |wanted: Wanted| Plan::make(&wanted, local(8)).unwrap().workers;
        assert_eq!(workers(wanted(Some(3), None, true)), 3);
        assert_eq!(workers(wanted(None, None, true)), 8);
        let mut big = wanted(None, Some(7), true);
        big.worker = worker(2, 2, 0);
        assert_eq!(workers(big), 1, "7 CPUs hold one worker of 4");
        let mut over = wanted(None, Some(3), true);
        over.worker = worker(4, 1, 0);
        over.worker.oversubscribe = true;
        assert_eq!(workers(over), 1, "never none");
        assert_eq!(workers(wanted(Some(3), None, false)), 0, "no pool");
    }

    #[test]
    fn pilots_need_max_workers_and_count_each_ones_gpus() {
        let pilots = Known {
            backend: Backend::SlurmPilots,
            in_allocation: false,
            ..slurm(0, None, 0)
        };
        let mut pool = wanted(None, None, true);
        pool.worker = worker(2, 1, 1);
        assert_eq!(
            Plan::make(&pool, pilots.clone()),
            Err(Refusal::PilotsNeedMaxWorkers)
        );
        pool.max_workers = Some(3);
        let plan = Plan::make(&pool, pilots).unwrap();
        assert_eq!((plan.gpus, plan.max_cores), (Gpus::Counted(6), 6));
    }

    #[test]
    fn gpus_are_the_devices_or_the_allocations_count() {
        let devices = Gpus::Devices(vec!["0".into(), "1".into()]);
        let known = Known {
            gpus: devices.clone(),
            ..local(4)
        };
        let plan = Plan::make(&wanted(None, None, false), known).unwrap();
        assert_eq!(plan.gpus, devices);
        let plan = Plan::make(&wanted(None, None, false), slurm(4, None, 3)).unwrap();
        assert_eq!(plan.gpus, Gpus::Counted(3));
    }

    #[test]
    fn a_pool_larger_than_max_cores_is_refused_unless_oversubscribed() {
        let refused = Plan::make(&wanted(Some(3), Some(2), true), local(8));
        assert_eq!(
            refused,
            Err(Refusal::NeverFits {
                why: NeverFits::Pool {
                    workers: 3,
                    cpus_each: 1,
                    cpus: 2
                },
                workers: 3
            })
        );
        let mut over = wanted(Some(3), Some(2), true);
        over.worker.oversubscribe = true;
        assert!(Plan::make(&over, local(8)).is_ok());
    }

    #[test]
    fn a_worker_needing_more_gpus_than_there_are_is_refused() {
        let mut gpu = wanted(Some(2), None, true);
        gpu.worker = worker(1, 1, 1);
        assert_eq!(
            Plan::make(&gpu, slurm(8, None, 1)),
            Err(Refusal::NeverFits {
                why: NeverFits::Gpus {
                    requested: 2,
                    available: 1
                },
                workers: 2
            })
        );
    }

    #[test]
    fn srun_steps_cannot_leave_the_slurm_allocation_whatever_max_cores_says() {
        let mut big = wanted(None, Some(16), false);
        big.worker = worker(8, 1, 0);
        assert_eq!(
            Plan::make(&big, slurm(4, Some(4), 0)),
            Err(Refusal::OutsideAllocation {
                why: NeverFits::Cpus {
                    cores: 8,
                    threads_per_core: 1,
                    cpus: 4
                },
                cpus: 4,
                workers: 1
            })
        );
        // max_cores left to its default, the allocation's CPUs, is not
        // what a call is told to raise.
        let mut call = wanted(None, None, false);
        call.worker = worker(9, 1, 0);
        assert!(matches!(
            Plan::make(&call, slurm(8, Some(8), 0)),
            Err(Refusal::OutsideAllocation { cpus: 8, .. })
        ));
        let mut gpus = wanted(None, None, false);
        gpus.worker = worker(1, 1, 3);
        assert!(matches!(
            Plan::make(&gpus, slurm(8, Some(8), 2)),
            Err(Refusal::NeverFits {
                why: NeverFits::Gpus { .. },
                ..
            })
        ));
        let mut lower = call.clone();
        lower.max_cores = Some(6);
        lower.worker = worker(7, 1, 0);
        assert!(
            matches!(
                Plan::make(&lower, slurm(8, Some(8), 0)),
                Err(Refusal::NeverFits { .. })
            ),
            "a max_cores below the allocation is what holds it back"
        );
        // Where Slurm counts one node only, a multi-node job's request stands.
        assert!(Plan::make(&big, slurm(4, None, 0)).is_ok());
        let plan = Plan::make(&wanted(None, Some(16), false), slurm(4, Some(4), 0)).unwrap();
        assert!(plan.refuse(&worker(4, 1, 0), 1).is_none());
        assert!(matches!(
            plan.refuse(&worker(2, 1, 0), 3),
            Some(Refusal::OutsideAllocation {
                why: NeverFits::Pool { .. },
                cpus: 4,
                workers: 3
            })
        ));
    }

    #[test]
    fn num_nodes_and_exclusive_are_refused_where_no_step_of_their_own_can_honour_them() {
        let spread = |cores, nodes| worker(cores, 1, 0).over(nodes);
        let exclusive = ResourceRequest {
            exclusive: true,
            ..worker(1, 1, 0)
        };
        let inside = Plan::make(&wanted(None, None, false), slurm(8, None, 0)).unwrap();
        assert_eq!(inside.refuse(&spread(2, 2), 1), None);
        assert_eq!(inside.refuse(&exclusive, 1), None);
        assert_eq!(
            inside.refuse(&spread(3, 3), 1),
            Some(Refusal::NeverFits {
                why: NeverFits::Nodes {
                    nodes: 3,
                    available: 2
                },
                workers: 1
            })
        );
        assert_eq!(
            inside.refuse(&spread(1, 2), 1),
            Some(Refusal::NeverFits {
                why: NeverFits::NodesAboveCores { nodes: 2, cores: 1 },
                workers: 1
            })
        );
        let local = Plan::make(&wanted(None, None, false), local(4)).unwrap();
        for (request, setting) in [
            (spread(1, 1), Unsupported::NumNodes),
            (exclusive.clone(), Unsupported::Exclusive),
        ] {
            assert_eq!(
                local.refuse(&request, 1),
                Some(Refusal::Unsupported {
                    setting,
                    backend: Backend::Local
                })
            );
        }
        let pool = Plan::make(&wanted(Some(2), None, true), slurm(8, None, 0)).unwrap();
        assert_eq!(
            pool.refuse(&spread(2, 2), 1),
            Some(Refusal::PoolOnOneNode { key: "num_nodes" })
        );
        assert_eq!(
            pool.refuse(&exclusive, 1),
            Some(Refusal::PoolOnOneNode { key: "exclusive" })
        );
        let mut spread_pool = wanted(Some(2), None, true);
        spread_pool.worker = spread(2, 2);
        assert_eq!(
            Plan::make(&spread_pool, slurm(8, None, 0)),
            Err(Refusal::PoolOnOneNode { key: "num_nodes" })
        );
    }

    #[test]
    fn settings_a_backend_cannot_honour_are_refused_for_the_executor_and_each_call() {
        let mut over = wanted(None, None, false);
        over.worker.oversubscribe = true;
        let flux = Known {
            backend: Backend::Flux,
            ..slurm(4, None, 0)
        };
        assert_eq!(
            Plan::make(&over, flux.clone()),
            Err(Refusal::Unsupported {
                setting: Unsupported::Oversubscribe,
                backend: Backend::Flux
            })
        );
        let plan = Plan::make(&wanted(None, None, false), flux).unwrap();
        let mut arguments = worker(1, 1, 0);
        arguments.extra_args = vec!["--exclusive".into()].into();
        assert!(plan.refuse(&arguments, 1).is_none(), "flux run takes them");
        let plan = Plan::make(&wanted(None, None, false), local(4)).unwrap();
        assert_eq!(
            plan.refuse(&arguments, 1),
            Some(Refusal::Unsupported {
                setting: Unsupported::CommandLineArguments,
                backend: Backend::Local
            })
        );
        assert_eq!(
            plan.refuse(&arguments, 1).unwrap().to_string(),
            "the local backend cannot honour command_line_argument_lst"
        );
        assert!(
            plan.refuse(&over.worker, 1).is_none(),
            "local oversubscribes"
        );
    }

    #[test]
    fn a_pools_calls_ask_for_its_workers_resources_or_are_refused() {
        let plan = Plan::make(&wanted(Some(2), None, true), local(4)).unwrap();
        assert!(plan.refuse(&worker(1, 1, 0), 1).is_none());
        assert_eq!(
            plan.refuse(&worker(1, 2, 0), 1),
            Some(Refusal::NotThePools {
                key: "threads_per_core"
            })
        );
        let mut elsewhere = worker(1, 1, 0);
        elsewhere.cwd = Some("/elsewhere".into());
        assert_eq!(
            plan.refuse(&elsewhere, 1),
            Some(Refusal::NotThePools { key: "cwd" })
        );
        let per_call = Plan::make(&wanted(Some(2), None, false), local(4)).unwrap();
        assert!(per_call.refuse(&worker(2, 1, 0), 1).is_none());
    }

    #[test]
    fn agents_where_they_can_start_unless_the_user_asks_for_steps() {
        let flux = Known {
            backend: Backend::Flux,
            ..slurm(4, None, 0)
        };
        for known in [slurm(4, None, 0), flux.clone()] {
            let plan = Plan::make(&wanted(None, None, false), known.clone()).unwrap();
            assert_eq!(plan.launcher, Launcher::Agent);
            let mut agents = wanted(None, None, false);
            agents.launcher = Some(Launcher::Agent);
            assert_eq!(
                Plan::make(&agents, known.clone()).unwrap().launcher,
                Launcher::Agent
            );
            let mut steps = wanted(None, None, true);
            steps.launcher = Some(Launcher::Step);
            assert_eq!(Plan::make(&steps, known).unwrap().launcher, Launcher::Step);
        }
        let local = Plan::make(&wanted(None, None, false), local(4)).unwrap();
        assert_eq!(local.launcher, Launcher::Agent, "one agent on this host");
        let pilots = Known {
            backend: Backend::SlurmPilots,
            in_allocation: false,
            ..slurm(0, None, 0)
        };
        let plan = Plan::make(&wanted(Some(2), None, true), pilots.clone()).unwrap();
        assert_eq!(
            plan.launcher,
            Launcher::Agent,
            "an agent per pilot job's node"
        );
        let mut one_job_each = wanted(Some(2), None, true);
        one_job_each.launcher = Some(Launcher::Step);
        let plan = Plan::make(&one_job_each, pilots).unwrap();
        assert_eq!(plan.launcher, Launcher::Step, "a pilot job per worker");
        let outside = Known {
            in_allocation: false,
            ..slurm(4, None, 0)
        };
        let plan = Plan::make(&wanted(None, None, false), outside).unwrap();
        assert_eq!(plan.launcher, Launcher::Step, "srun outside any allocation");
    }

    #[test]
    fn a_launcher_where_there_is_no_allocation_to_launch_in_is_refused() {
        let outside = Known {
            in_allocation: false,
            ..slurm(4, None, 0)
        };
        for (known, launcher, words) in [
            (
                local(4),
                Launcher::Agent,
                "the local backend starts them itself",
            ),
            (
                outside,
                Launcher::Agent,
                "outside one, each slurm worker or call",
            ),
        ] {
            let backend = known.backend;
            let mut given = wanted(Some(2), None, backend == Backend::SlurmPilots);
            given.launcher = Some(launcher);
            let refusal = Plan::make(&given, known).unwrap_err();
            assert_eq!(refusal, Refusal::LauncherUnused { launcher, backend });
            let message = refusal.to_string();
            assert!(message.contains(words), "{message}");
            assert!(
                message.starts_with(&format!("launcher='{}' chooses how srun", launcher.name())),
                "{message}"
            );
            assert!(message.ends_with(": drop launcher"), "{message}");
        }
    }

    #[test]
    fn memory_max_is_refused_only_where_flux_runs_a_job_per_worker() {
        let flux = Known {
            backend: Backend::Flux,
            ..slurm(4, None, 0)
        };
        let memory = ResourceRequest {
            memory_mb: std::num::NonZeroU32::new(512),
            ..worker(1, 1, 0)
        };
        let agents = Plan::make(&wanted(None, None, false), flux.clone()).unwrap();
        assert_eq!(agents.refuse(&memory, 1), None, "agents keep it on a node");
        let step = Wanted {
            launcher: Some(Launcher::Step),
            ..wanted(None, None, false)
        };
        let steps = Plan::make(&step, flux).unwrap();
        assert_eq!(
            steps.refuse(&memory, 1),
            Some(Refusal::Unsupported {
                setting: Unsupported::MemoryMax,
                backend: Backend::Flux
            })
        );
        let srun = Plan::make(&step, slurm(4, None, 0)).unwrap();
        assert_eq!(srun.refuse(&memory, 1), None, "srun takes --mem");
    }

    #[test]
    fn launchers_are_named_as_the_user_names_them() {
        for launcher in Launcher::ALL {
            assert_eq!(Launcher::named(launcher.name()), Some(launcher));
        }
        assert_eq!(Launcher::named("srun"), None);
    }

    #[test]
    fn every_count_has_one_minimum() {
        assert_eq!(
            Plan::make(&wanted(Some(0), None, true), local(4)),
            Err(Refusal::TooSmall {
                key: "max_workers",
                minimum: 1,
                value: 0
            }),
            "never a pool of none"
        );
        let mut no_ranks = wanted(None, None, false);
        no_ranks.worker.cores = 0;
        assert!(matches!(
            Plan::make(&no_ranks, local(4)),
            Err(Refusal::TooSmall { key: "cores", .. })
        ));
        assert_eq!(minimum("cores"), Some(1));
        assert_eq!(minimum("gpus_per_core"), Some(0));
        assert_eq!(minimum("corez"), None);
    }
}
