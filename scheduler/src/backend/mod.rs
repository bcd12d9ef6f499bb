//! Backends turn "start worker N with these resources" into a command line.
//! The local backend starts processes (through mpiexec for MPI ranks); srun
//! and flux build their own commands.

pub mod allocation_jobs;
pub mod allocation_nodes;
pub mod flux;
mod flux_jobspec;
mod flux_options;
pub mod hostlist;
pub mod key_file;
pub mod local;
pub mod locate;
pub mod mpi;
pub mod pilot;
pub mod pilot_agents;
pub mod pilot_nodes;
pub mod simulated;
pub mod slurm;

use crate::auth::Key;
use crate::core::{Launch, LostReason};
use crate::ids::WorkerId;
use crate::seal::Protection;
use std::process::Command;

/// Everything a worker process needs to find its way back and run Python.
#[derive(Clone, Debug)]
pub struct WorkerEnvironment {
    pub program: std::path::PathBuf,
    pub address: String,
    pub key: Key,
    /// Where workers that a job system starts find the key.
    pub key_files: key_file::KeyFiles,
    pub python: String,
    pub sys_path: Vec<String>,
    pub heartbeat_timeout_s: f64,
    /// Whether the workers are a block-allocated pool: only then is a
    /// worker's id executorlib's `executorlib_worker_id` (a worker started
    /// for one call gets 0 there, as executorlib's do).
    pub block_allocation: bool,
}

/// The variables of every process that runs calls, a worker or a batch
/// job: the client's Python and its import path, and the thread counts.
pub fn python_variables(
    python: &str,
    sys_path: &[String],
    threads_per_core: u32,
) -> Vec<(String, String)> {
    let mut vars = interpreter_variables(python, sys_path);
    let threads = threads_per_core.to_string();
    vars.extend(
        THREAD_VARIABLES
            .iter()
            .map(|v| (v.to_string(), threads.clone())),
    );
    vars
}

/// Which Python pmp-worker embeds and the client's `sys.path` for it (the
/// zygote needs these alone: its forks get the rest per call).
pub fn interpreter_variables(python: &str, sys_path: &[String]) -> Vec<(String, String)> {
    vec![
        ("PMP_PYTHON".to_string(), python.to_string()),
        ("PMP_SYS_PATH".to_string(), sys_path.join("\u{1f}")),
    ]
}

#[cfg(test)]
impl WorkerEnvironment {
    /// What the backends' tests start: a worker in a virtualenv, reporting
    /// to a scheduler on another host.
    pub fn for_tests() -> WorkerEnvironment {
        WorkerEnvironment {
            program: "/venv/bin/pmp-worker".into(),
            address: "tcp://10.0.0.1:5555".into(),
            key: Key::from_bytes([0; crate::auth::KEY_LEN]),
            key_files: key_file::KeyFiles::default(),
            python: "/venv/bin/python".into(),
            sys_path: vec![],
            heartbeat_timeout_s: 10.0,
            block_allocation: false,
        }
    }
}

/// Thread-count variables set from `threads_per_core`, which the seed asked
/// users to set by hand.
pub const THREAD_VARIABLES: [&str; 5] = [
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
];

impl WorkerEnvironment {
    /// The variables every backend passes to a worker.
    pub fn variables(&self, worker: WorkerId, launch: &Launch) -> Vec<(String, String)> {
        let mut vars = vec![
            ("PMP_SCHEDULER".to_string(), self.address.clone()),
            ("PMP_WORKER_ID".to_string(), worker.0.to_string()),
            (
                "PMP_BLOCK_ALLOCATION".to_string(),
                u8::from(self.block_allocation).to_string(),
            ),
            // Where there is no parent-death signal, the worker watches it.
            ("PMP_CLIENT_PID".to_string(), std::process::id().to_string()),
            (
                "PMP_HEARTBEAT_TIMEOUT".to_string(),
                self.heartbeat_timeout_s.to_string(),
            ),
        ];
        vars.extend(python_variables(
            &self.python,
            &self.sys_path,
            launch.resources.threads_per_core,
        ));
        // Only devices pmp handed out itself (local backend); srun and flux
        // set CUDA_VISIBLE_DEVICES for the GPUs they pick.
        let devices = launch.gpus.devices();
        if !devices.is_empty() {
            vars.push(("CUDA_VISIBLE_DEVICES".to_string(), devices.join(",")));
        }
        vars
    }
}

/// What every backend adds to its launcher command: the worker's variables,
/// the key and how its messages are protected (`Backend::protection`), its
/// rank count, and its working directory (the launcher's own cwd unless
/// the launcher takes it as an argument, as srun's `-D` does). The client
/// refuses a cwd that is not a directory at submit; one removed since then
/// fails the worker's start with that reason, never runs it elsewhere.
pub fn finish_command(
    command: &mut Command,
    env: &WorkerEnvironment,
    worker: WorkerId,
    launch: &Launch,
    run_in_cwd: bool,
    protection: Protection,
) -> Result<(), String> {
    command.envs(env.variables(worker, launch));
    command.env(Protection::VARIABLE, protection.name());
    match protection {
        // A process of ours on this machine, which removes it from its
        // environment once read (the zygote passes it the same way).
        Protection::Signed => command.env("PMP_KEY", env.key.to_hex()),
        // A job system keeps and shows a job's environment.
        Protection::Encrypted => {
            command.env(key_file::VARIABLE, env.key_files.write(&env.key, worker)?)
        }
    };
    command.env("PMP_RANKS", launch.resources.cores.to_string());
    if let Some(cwd) = &launch.resources.cwd {
        if run_in_cwd {
            if !std::path::Path::new(cwd).is_dir() {
                return Err(format!("cwd {cwd:?} is not a directory (any more)"));
            }
            command.current_dir(cwd);
        }
    }
    Ok(())
}

/// Says more about a worker's exit than its process's status can: run on a
/// blocking thread once the process exited, it may rewrite the reason.
pub type ExitExplainer = Box<dyn FnOnce(&mut LostReason) + Send>;

pub trait Backend: Send {
    /// The command that starts `worker`; the caller adds stdio and process-group setup.
    fn command(
        &self,
        env: &WorkerEnvironment,
        worker: WorkerId,
        launch: &Launch,
    ) -> Result<Command, String>;

    /// Whether its workers run on this machine as the worker program
    /// itself (for single-rank workers), which a zygote can fork instead.
    fn runs_workers_here(&self) -> bool {
        false
    }

    /// What protects its workers' messages: signed on this machine's
    /// loopback, which others cannot read, encrypted from anywhere else
    /// (`seal`). Not for a backend to choose otherwise.
    fn protection(&self) -> Protection {
        if self.runs_workers_here() {
            Protection::Signed
        } else {
            Protection::Encrypted
        }
    }

    /// What explains `worker`'s exit beyond its process's status, if
    /// anything: a pilot's sbatch exits 1 whatever ended its job.
    fn exit_explainer(&self, _worker: WorkerId) -> Option<ExitExplainer> {
        None
    }

    /// The one command that starts a node agent on each of `nodes`
    /// (`launcher="agent"`), None where this backend starts no agents.
    fn agent_step(&self, _agents: &AgentStep) -> Option<Result<Command, String>> {
        None
    }

    /// Whether the agents connect by themselves, told where by `step`,
    /// instead of being started by `agent_step`: only the simulation's
    /// stand-in agents (`simulated`).
    fn agents_connect_by_themselves(&self, _step: &AgentStep) -> bool {
        false
    }

    /// Whether `launch`'s worker starts under its node's agent rather than
    /// as a step of its own (`command`): false where there are no agents,
    /// and for a worker that asks for the launcher's own options.
    fn under_agent(&self, _launch: &Launch) -> bool {
        false
    }
}

/// What the agents' step needs besides the workers' environment.
pub struct AgentStep<'a> {
    pub environment: &'a WorkerEnvironment,
    /// The socket agents connect to (not the workers').
    pub address: &'a str,
    /// The file every agent reads the executor's key from.
    pub key_file: &'a std::path::Path,
    /// The allocation's nodes, one agent each.
    pub nodes: &'a [String],
}

impl AgentStep<'_> {
    /// The variables of every agent: where to connect, the key's file, the
    /// heartbeat limit it dies by, and the Python its zygote starts.
    pub fn variables(&self) -> Vec<(String, String)> {
        let env = self.environment;
        let mut vars = vec![
            ("PMP_AGENT".to_string(), "1".to_string()),
            ("PMP_SCHEDULER".to_string(), self.address.to_string()),
            (
                key_file::VARIABLE.to_string(),
                self.key_file.display().to_string(),
            ),
            (
                "PMP_HEARTBEAT_TIMEOUT".to_string(),
                env.heartbeat_timeout_s.to_string(),
            ),
        ];
        vars.extend(interpreter_variables(&env.python, &env.sys_path));
        vars
    }
}

/// The variables that tell a worker how to reach the scheduler itself,
/// which a worker under an agent never does.
const SCHEDULERS_WAY: [&str; 4] = [
    "PMP_SCHEDULER",
    "PMP_KEY",
    key_file::VARIABLE,
    Protection::VARIABLE,
];

/// What keeps mpiexec's ranks on the agent's node: inside a Slurm job,
/// MPICH's and Open MPI's mpiexec would otherwise see the allocation and
/// start their ranks across its nodes through srun steps of their own.
const RANKS_ON_THIS_NODE: [(&str, &str); 5] = [
    ("HYDRA_LAUNCHER", "fork"),
    ("OMPI_MCA_plm", "^slurm"),
    ("OMPI_MCA_ras", "^slurm"),
    ("PRTE_MCA_plm", "^slurm"),
    ("PRTE_MCA_ras", "^slurm"),
];

/// The agent's `Start` for a worker whose command the local backend built
/// (the worker program, or mpiexec for ranks), less how it would reach the
/// scheduler (address, key, wire): the worker talks only to its agent,
/// which gives it its own local socket and key, and relays its messages.
pub fn agent_start(
    command: &Command,
    worker: WorkerId,
    launch: &Launch,
) -> crate::protocol::agent::ToAgent {
    let text = |s: &std::ffi::OsStr| s.to_string_lossy().into_owned();
    let mut variables: Vec<(String, String)> = command
        .get_envs()
        .filter_map(|(name, value)| Some((text(name), text(value?))))
        .filter(|(name, _)| !SCHEDULERS_WAY.contains(&name.as_str()))
        .collect();
    // What srun's --cpus-per-task would have said, which code sizing its
    // thread pools reads as often as OMP_NUM_THREADS.
    variables.push((
        "SLURM_CPUS_PER_TASK".to_string(),
        launch.resources.threads_per_core.to_string(),
    ));
    if launch.resources.cores > 1 {
        variables.extend(
            RANKS_ON_THIS_NODE
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string())),
        );
    }
    crate::protocol::agent::ToAgent::Start {
        worker,
        program: text(command.get_program()),
        args: command.get_args().map(text).collect(),
        variables,
        cwd: command.get_current_dir().map(|dir| text(dir.as_os_str())),
        gpus: launch.gpus.count(),
    }
}
