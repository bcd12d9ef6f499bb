//! The client's handle on a running scheduler: starts its thread, sends it
//! commands, and joins it at shutdown. The native Python module wraps this.

use crate::auth::Key;
use crate::backend::allocation_jobs::{AllocationJobs, AllocationRequest, AllocationSystem};
use crate::backend::flux::FluxBackend;
use crate::backend::local::LocalBackend;
use crate::backend::mpi::MpiLauncher;
use crate::backend::pilot::PilotBackend;
use crate::backend::pilot_agents::{PilotAgents, PilotJobs};
use crate::backend::pilot_nodes;
use crate::backend::slurm::SlurmBackend;
use crate::backend::{Backend, WorkerEnvironment};
use crate::capacity::{Capacity, Node, WHOLE_ALLOCATION};
use crate::core::allocations::AllocationPolicy;
use crate::core::{Allocation, Core, Event, QueueAhead, TaskSpec};
use crate::ids::TaskId;
use crate::plan::Launcher;
use crate::protocol::Payload;
use crate::resources::Gpus;
use crate::server::{self, Command, Snapshot, Timing};
use crate::shared_memory;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

/// Which program starts workers.
#[derive(Clone, Debug)]
pub enum BackendChoice {
    Local,
    /// `srun` steps inside a Slurm allocation.
    Slurm {
        srun: PathBuf,
    },
    /// `flux run` jobs inside a Flux instance.
    Flux {
        flux: PathBuf,
    },
    /// Pilot jobs from outside any allocation, all named `job_name`: one
    /// node agent per job (`launcher="agent"`, `pilot_agents`), or one
    /// `sbatch --wait` per block-allocated worker (`"step"`, `pilot`).
    SlurmPilots {
        sbatch: PathBuf,
        srun: PathBuf,
        job_name: String,
    },
    /// Elastic allocations as `flux batch` jobs, all named `job_name`, of
    /// the instance `flux` reaches (one the client is not a job of, or
    /// whose jobs it runs in instances of their own: `flux start`, a
    /// system instance).
    FluxAllocations {
        flux: PathBuf,
        job_name: String,
    },
    /// Only for `examples/simulate.rs`: `nodes` whose agents are the
    /// caller's stand-ins, told where to connect through `agents_wanted`
    /// (`backend::simulated`). Workers start only under them.
    Simulated {
        nodes: Vec<Node>,
        agents_wanted: std::sync::mpsc::Sender<crate::backend::simulated::AgentsWanted>,
    },
}

impl BackendChoice {
    /// The backend; `agents`: its workers start under node agents.
    fn build(self, tool_dirs: Vec<PathBuf>, agent_nodes: Option<&[String]>) -> Box<dyn Backend> {
        match self {
            BackendChoice::Local => Box::new(LocalBackend::new(tool_dirs)),
            BackendChoice::Slurm { srun } => Box::new(SlurmBackend {
                srun,
                agents: agent_nodes.is_some(),
                node_names: agent_nodes.map(<[String]>::to_vec).unwrap_or_default(),
                // Only the flavour matters: which --mpi the step needs.
                mpi: MpiLauncher::locate(&tool_dirs).ok().map(|m| m.flavor),
            }),
            BackendChoice::Flux { flux } => Box::new(FluxBackend::new(flux, agent_nodes.is_some())),
            BackendChoice::SlurmPilots {
                sbatch,
                srun,
                job_name,
            } => Box::new(PilotBackend {
                sbatch,
                srun,
                job_name,
                mpi: MpiLauncher::locate(&tool_dirs).ok().map(|m| m.flavor),
            }),
            BackendChoice::Simulated { agents_wanted, .. } => {
                Box::new(crate::backend::simulated::SimulatedBackend { agents_wanted })
            }
            // Every call starts under an allocation's agent.
            BackendChoice::FluxAllocations { .. } => Box::new(PilotAgents),
        }
    }
}

/// Everything a scheduler is started with.
#[derive(Clone)]
pub struct Config {
    pub backend: BackendChoice,
    /// Node agents or a step per worker (the plan's choice).
    pub launcher: Launcher,
    pub worker_program: PathBuf,
    /// The interpreter whose environment workers run (`sys.executable`).
    pub python: String,
    pub sys_path: Vec<String>,
    pub allocation: Allocation,
    pub max_cpus: u32,
    pub max_workers: Option<u32>,
    /// The allocation's GPUs: device ids on the local backend, a count
    /// where srun or flux pick the devices.
    pub gpus: Gpus,
    pub init: Option<Payload>,
    pub bind_host: String,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// Where the Python environment keeps its programs (mpiexec from a wheel).
    pub tool_dirs: Vec<PathBuf>,
    /// Elastic allocations (`pmp.Allocation`) from outside any allocation:
    /// fresh workers in allocations asked for as calls wait.
    pub elastic: Option<AllocationRequest>,
}

/// The pilot jobs of `config`'s pool: as few one-node jobs as the nodes of
/// its partition (one `sinfo`, beside sbatch) hold its workers in.
fn pilot_jobs(
    backend: &BackendChoice,
    allocation: &Allocation,
    tool_dirs: &[PathBuf],
) -> Result<server::PilotStart, String> {
    let (
        BackendChoice::SlurmPilots {
            sbatch, job_name, ..
        },
        Allocation::Block { workers, resources },
    ) = (backend, allocation)
    else {
        return Err("pilot jobs hold a block-allocated pool: block_allocation=True".into());
    };
    let sinfo = sbatch.with_file_name("sinfo");
    let sinfo = if sinfo.is_file() {
        sinfo
    } else {
        "sinfo".into()
    };
    let partition = pilot_nodes::named_partition(&resources.extra_args);
    let shapes = pilot_nodes::ask(&sinfo, partition.as_deref())?;
    let jobs = PilotJobs::plan(
        sbatch.clone(),
        job_name.clone(),
        resources,
        *workers,
        &shapes,
    )?;
    Ok(server::PilotStart {
        jobs,
        tool_dirs: tool_dirs.to_vec(),
    })
}

/// The allocation jobs of `request`, whose nodes are the largest the job
/// system has: of its partition (else of any partition: sbatch then says
/// what is wrong with the partition, which the calls waiting hear), or of
/// the Flux instance (`flux resource R`).
fn allocation_jobs(
    backend: &BackendChoice,
    request: &AllocationRequest,
    tool_dirs: &[PathBuf],
) -> Result<server::AllocationStart, String> {
    let (system, job_name, shapes) = match backend {
        BackendChoice::SlurmPilots {
            sbatch, job_name, ..
        } => {
            request.check()?;
            let system = AllocationSystem::Slurm {
                sbatch: sbatch.clone(),
            };
            (system, job_name, slurm_node_shapes(sbatch, request)?)
        }
        BackendChoice::FluxAllocations { flux, job_name } => {
            request.check()?;
            let system = AllocationSystem::Flux { flux: flux.clone() };
            (system, job_name, flux_node_shapes(flux)?)
        }
        _ => {
            return Err(
                "Allocation(...) asks Slurm or Flux for allocations: backend='slurm' where no \
                 allocation holds the client, or backend='flux'"
                    .into(),
            )
        }
    };
    let shape = shapes
        .into_iter()
        .max_by_key(|shape| (shape.cpus, shape.gpus))
        .ok_or("the job system lists no node: it has none to allocate")?;
    Ok(server::AllocationStart {
        jobs: AllocationJobs {
            system,
            job_name: job_name.clone(),
            request: request.clone(),
            shape,
        },
        tool_dirs: tool_dirs.to_vec(),
    })
}

/// The nodes of `request`'s partition as sinfo (beside `sbatch`) says them.
fn slurm_node_shapes(
    sbatch: &std::path::Path,
    request: &AllocationRequest,
) -> Result<Vec<pilot_nodes::NodeShape>, String> {
    let sinfo = sbatch.with_file_name("sinfo");
    let sinfo = if sinfo.is_file() {
        sinfo
    } else {
        "sinfo".into()
    };
    // A partition sinfo does not list is sbatch's to refuse, in its words,
    // which the calls waiting then fail with (and submitting pauses).
    match pilot_nodes::ask(&sinfo, request.partition.as_deref()) {
        Ok(shapes) if !shapes.is_empty() => Ok(shapes),
        _ => pilot_nodes::ask(&sinfo, None),
    }
}

/// The nodes of the Flux instance `flux` reaches, as its resource set says
/// them (the nodes that are up); a queue's are among them.
fn flux_node_shapes(flux: &std::path::Path) -> Result<Vec<pilot_nodes::NodeShape>, String> {
    let nodes = crate::backend::allocation_nodes::flux_instance_nodes(flux)?;
    Ok(nodes
        .into_iter()
        .map(|node| pilot_nodes::NodeShape {
            cpus: node.cpus,
            gpus: node.gpus.count(),
        })
        .collect())
}

/// Why an executor's scheduler did not start: what it was asked for can
/// never work (`Refused`, a ValueError to a Python user), or something
/// went wrong starting it (`Failed`).
#[derive(Debug, PartialEq, Eq)]
pub enum StartError {
    Refused(String),
    Failed(String),
}

impl From<String> for StartError {
    fn from(message: String) -> StartError {
        StartError::Failed(message)
    }
}

impl From<StartError> for String {
    fn from(error: StartError) -> String {
        match error {
            StartError::Refused(message) | StartError::Failed(message) => message,
        }
    }
}

pub struct SchedulerHandle {
    commands: UnboundedSender<Command>,
    thread: Option<JoinHandle<()>>,
    address: String,
}

impl SchedulerHandle {
    /// Start the scheduler thread; returns once its socket listens.
    pub fn start(
        config: Config,
        events: std::sync::mpsc::Sender<Event>,
    ) -> Result<SchedulerHandle, StartError> {
        let key = Key::generate();
        let environment = WorkerEnvironment {
            program: config.worker_program,
            address: String::new(),
            key: key.clone(),
            key_files: crate::backend::key_file::KeyFiles::default(),
            python: config.python,
            sys_path: config.sys_path,
            heartbeat_timeout_s: config.heartbeat_timeout.as_secs_f64(),
            block_allocation: matches!(config.allocation, Allocation::Block { .. }),
        };
        // Node agents place each call on a node of the allocation, so the
        // scheduler needs them one by one; otherwise one node: this
        // machine, or the allocation as one pool where srun or flux place
        // each worker in it.
        let agents = config.launcher == Launcher::Agent
            && matches!(
                config.backend,
                BackendChoice::Slurm { .. }
                    | BackendChoice::Flux { .. }
                    | BackendChoice::Simulated { .. }
            );
        let pilot_agents = config.launcher == Launcher::Agent
            && matches!(
                config.backend,
                BackendChoice::SlurmPilots { .. } | BackendChoice::FluxAllocations { .. }
            );
        let elastic = match (&config.elastic, pilot_agents) {
            (Some(request), true) => Some(allocation_jobs(
                &config.backend,
                request,
                &config.tool_dirs,
            )?),
            (Some(_), false) => {
                return Err(StartError::Refused(
                    "Allocation(...) runs calls under node agents: launcher='agent'".into(),
                ))
            }
            (None, _) => None,
        };
        // The agents' side, however they start: what they keep of large
        // buffers is the one setting read from the environment.
        let agent_nodes = |names, pilots, allocations| -> Result<server::AgentNodes, String> {
            Ok(server::AgentNodes {
                names,
                tool_dirs: config.tool_dirs.clone(),
                keep_bytes: server::keep_bytes(
                    std::env::var(server::KEEP_BYTES_VARIABLE).ok().as_deref(),
                )?,
                pilots,
                allocations,
            })
        };
        let (capacity, agent_nodes) = if let Some(start) = elastic {
            let nodes = agent_nodes(Vec::new(), None, Some(start))?;
            (Capacity::joining(config.max_workers), Some(nodes))
        } else if pilot_agents {
            let pilots = pilot_jobs(&config.backend, &config.allocation, &config.tool_dirs)?;
            let nodes = agent_nodes(Vec::new(), Some(pilots), None)?;
            (Capacity::joining(config.max_workers), Some(nodes))
        } else if agents {
            let nodes = crate::backend::allocation_nodes::discover(&config.backend)?;
            let names = nodes.iter().map(|node| node.name.clone()).collect();
            // A call larger than any node becomes an srun step or flux job
            // across them (`Backend::under_agent`), as before agents.
            let capacity = Capacity::of_nodes(nodes, config.max_workers)
                .with_max_cpus(config.max_cpus)
                .with_spans();
            (capacity, Some(agent_nodes(names, None, None)?))
        } else {
            let node = Node {
                name: match config.backend {
                    BackendChoice::Local => crate::host::name(),
                    _ => WHOLE_ALLOCATION.into(),
                },
                cpus: config.max_cpus,
                gpus: config.gpus,
                // The local backend's one node is this host; srun or flux
                // place steps in the allocation as a whole, which pmp does
                // not know the memory of.
                memory_mb: match config.backend {
                    BackendChoice::Local => crate::memory::host(),
                    _ => None,
                },
            };
            (Capacity::of_nodes(vec![node], config.max_workers), None)
        };
        let mut core = Core::new(config.allocation, capacity, config.init);
        if let Some(jobs) = agent_nodes
            .as_ref()
            .and_then(|nodes| nodes.allocations.as_ref())
            .map(|start| &start.jobs)
        {
            let policy = AllocationPolicy::new(jobs.request.settings(jobs.shape));
            // A pool's worker no node of the allocations could hold.
            core = core
                .with_allocations(policy, jobs.shape.cpus, std::time::Instant::now())
                .map_err(StartError::Refused)?;
        }
        if !crate::switched_off("PMP_QUEUE_AHEAD") {
            core.set_queue_ahead(Some(QueueAhead {
                shared_from: crate::shared_memory::SHARED_FROM,
            }));
        }
        let timing = Timing {
            heartbeat_interval: config.heartbeat_interval,
            heartbeat_timeout: config.heartbeat_timeout,
        };
        let (commands, commands_rx) = unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let bind_host = config.bind_host;
        let backend: Box<dyn Backend> = if pilot_agents {
            Box::new(PilotAgents)
        } else {
            config.backend.build(
                config.tool_dirs,
                agent_nodes.as_ref().map(|nodes| &nodes.names[..]),
            )
        };
        let thread = std::thread::Builder::new()
            .name("pmp-scheduler".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime starts");
                runtime.block_on(server::run(
                    core,
                    key,
                    backend,
                    environment,
                    timing,
                    bind_host,
                    agent_nodes,
                    commands_rx,
                    events,
                    ready_tx,
                ));
                drop(runtime);
                // What the executor kept for reuse does not outlive it.
                shared_memory::drain_pool();
            })
            .map_err(|e| format!("cannot start the scheduler thread: {e}"))?;
        let address = ready_rx
            .recv()
            .map_err(|_| "the scheduler thread ended while starting".to_string())??;
        Ok(SchedulerHandle {
            commands,
            thread: Some(thread),
            address,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    fn send(&self, command: Command) -> Result<(), String> {
        self.commands
            .send(command)
            .map_err(|_| "the scheduler has stopped".to_string())
    }

    pub fn submit(&self, spec: TaskSpec) -> Result<(), String> {
        self.send(Command::Submit(spec))
    }

    pub fn add_external(&self, task: TaskId) -> Result<(), String> {
        self.send(Command::AddExternal(task))
    }

    /// Deliver a foreign Future's outcome: a result, an exception, or `Err(None)` for cancelled.
    pub fn resolve_external(
        &self,
        task: TaskId,
        result: Result<Payload, Option<Payload>>,
    ) -> Result<(), String> {
        self.send(Command::ResolveExternal { task, result })
    }

    pub fn release(&self, task: TaskId) {
        let _ = self.send(Command::Release(task));
    }

    /// Cancel a task not yet sent to a worker; blocks for the scheduler's answer.
    pub fn cancel(&self, task: TaskId) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        self.send(Command::Cancel(task, tx)).is_ok() && rx.recv().unwrap_or(false)
    }

    /// Grow or shrink the block-allocated pool; blocks for the scheduler's answer.
    pub fn resize_pool(&self, workers: u32) -> Result<(), String> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.send(Command::ResizePool(workers, tx))?;
        rx.recv()
            .map_err(|_| "the scheduler has stopped".to_string())?
    }

    pub fn snapshot(&self) -> Option<Snapshot> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.send(Command::Info(tx)).ok()?;
        rx.recv().ok()
    }

    pub fn shutdown(&self, cancel_futures: bool) {
        let _ = self.send(Command::Shutdown { cancel_futures });
    }

    /// Wait until the scheduler has finished its work and every worker exited.
    pub fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
