//! What the backend (or a batch job's script) told this worker, through its
//! environment, and which of its two modes that makes it run in.

use pmp_scheduler::auth::Key;
use pmp_scheduler::backend::key_file;
use pmp_scheduler::seal::Protection;
use pmp_scheduler::store::StoreError;
use std::path::PathBuf;
use std::time::Duration;

/// What the environment asks of this process.
pub enum Mode {
    /// Serve the scheduler at `PMP_SCHEDULER` until it says stop.
    Connected(Settings),
    /// Run the one call stored under `PMP_JOB_KEY` in the task store at
    /// `PMP_JOB_STORE`, then exit (`job`): set, with `PMP_SCHEDULER` unset,
    /// by a batch job's script.
    Job(JobSettings),
}

impl Mode {
    pub fn from_env() -> Result<Mode, String> {
        let job = std::env::var_os("PMP_JOB_STORE").is_some()
            || std::env::var_os("PMP_JOB_KEY").is_some();
        if job && std::env::var_os("PMP_SCHEDULER").is_none() {
            JobSettings::from_env().map(Mode::Job)
        } else {
            Settings::from_env().map(Mode::Connected)
        }
    }

    pub fn python(&self) -> &PythonSettings {
        match self {
            Mode::Connected(settings) => &settings.python,
            Mode::Job(settings) => &settings.python,
        }
    }
}

/// The embedded Python and this process's place among the worker's MPI
/// ranks: the same in both modes.
pub struct PythonSettings {
    /// The Python executable whose installation (and pmp) is embedded.
    pub executable: String,
    pub sys_path: Vec<String>,
    /// MPI ranks of this worker; rank 0 talks to the scheduler or the store,
    /// the others follow it through MPI.
    pub ranks: u32,
    pub rank: u32,
}

impl PythonSettings {
    /// What a zygote reads: the Python to start and the client's sys.path.
    #[cfg(target_os = "linux")]
    pub fn for_zygote() -> Result<Self, String> {
        Self::from_env(required)
    }

    fn from_env(required: impl Fn(&str) -> Result<String, String>) -> Result<Self, String> {
        Ok(PythonSettings {
            executable: required("PMP_PYTHON")?,
            sys_path: std::env::var("PMP_SYS_PATH")
                .map(|s| {
                    s.split('\u{1f}')
                        .filter(|p| !p.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            ranks: std::env::var("PMP_RANKS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(1),
            rank: mpi_rank(),
        })
    }
}

pub struct Settings {
    pub address: String,
    pub key: KeySource,
    /// What protects the messages, as the scheduler said.
    pub protection: Protection,
    pub worker_id: u32,
    pub heartbeat_timeout: Duration,
    pub python: PythonSettings,
}

fn required(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| {
        format!("{name} is not set; pmp-worker is started by pmp's scheduler, not by hand")
    })
}

/// Where the executor's key is (see `pmp_scheduler::backend::key_file`).
pub enum KeySource {
    /// Given in `PMP_KEY` by a local scheduler, and removed from the
    /// environment at once.
    Given(Key),
    /// In a file of its own that a job system's worker reads when it
    /// connects (its rank 0 alone), and removes.
    File(PathBuf),
}

impl KeySource {
    /// The key; its file, which this worker alone reads, is removed.
    pub fn read(&self) -> Result<Key, String> {
        let key = self.read_shared()?;
        if let KeySource::File(path) = self {
            let _ = std::fs::remove_file(path);
        }
        Ok(key)
    }

    /// The key, its file left in place: the node agents of one launch
    /// share it (one srun step or flux job, so one environment), and the
    /// first to remove it would lock out the others. The scheduler removes
    /// it once they all said hello.
    fn read_shared(&self) -> Result<Key, String> {
        match self {
            KeySource::Given(key) => Ok(key.clone()),
            KeySource::File(path) => read_key_file(path),
        }
    }
}

/// The key in `path`, which must be this user's and no one else's: a file
/// others could read (or plant) is not trusted.
fn read_key_file(path: &std::path::Path) -> Result<Key, String> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let failed = |e: &dyn std::fmt::Display| {
        format!(
            "cannot read the executor's key from {} ({e}); the scheduler writes it under \
             ~/.pmp/keys, which this node must share with the client's",
            path.display()
        )
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| failed(&e))?;
    let meta = file.metadata().map_err(|e| failed(&e))?;
    // SAFETY: geteuid has no preconditions.
    if meta.uid() != unsafe { libc::geteuid() } || meta.mode() & 0o077 != 0 {
        return Err(failed(&format_args!(
            "it is not this user's alone: mode {:o}, owner {}",
            meta.mode() & 0o777,
            meta.uid()
        )));
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(|e| failed(&e))?;
    Key::from_hex(&text).map_err(|e| failed(&e))
}

impl KeySource {
    /// `PMP_KEY_FILE`'s file, else `PMP_KEY`, which is removed from the
    /// environment at once: the key must not reach the user's code or its
    /// subprocesses. Called before any other thread exists.
    fn from_env() -> Result<KeySource, String> {
        let key = match std::env::var_os(key_file::VARIABLE) {
            Some(path) => KeySource::File(PathBuf::from(path)),
            None => KeySource::Given(Key::from_hex(&required("PMP_KEY")?)?),
        };
        // SAFETY: no other thread exists yet.
        unsafe { std::env::remove_var("PMP_KEY") };
        Ok(key)
    }
}

/// How long the scheduler may stay silent before this process gives it up.
fn heartbeat_timeout() -> Duration {
    let seconds = std::env::var("PMP_HEARTBEAT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(10.0);
    Duration::from_secs_f64(seconds)
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        let key = KeySource::from_env()?;
        let worker_id = required("PMP_WORKER_ID")?
            .parse()
            .map_err(|e| format!("PMP_WORKER_ID: {e}"))?;
        let address = required("PMP_SCHEDULER")?;
        // Unset: encrypted, as from anywhere that is not the scheduler's
        // machine (the scheduler refuses anything else from there anyway).
        let protection = match std::env::var(Protection::VARIABLE) {
            Ok(name) => Protection::from_name(&name)?,
            Err(_) => Protection::Encrypted,
        };
        Ok(Settings {
            address,
            key,
            protection,
            worker_id,
            heartbeat_timeout: heartbeat_timeout(),
            python: PythonSettings::from_env(required)?,
        })
    }
}

/// What a node agent (`agent`) is told: where its scheduler is, the key
/// (read at once; its file is the scheduler's to remove), how long the
/// scheduler may stay silent, and the Python its zygote starts.
pub struct AgentSettings {
    pub address: String,
    pub key: Key,
    pub heartbeat_timeout: Duration,
    pub python: PythonSettings,
    /// The elastic allocation whose job started it, said in its Hello.
    pub allocation: Option<u32>,
}

impl AgentSettings {
    /// Called before any other thread exists: it removes the variables
    /// that its workers (and its zygote, whose forks they are) must not
    /// inherit: those that would make them agents, hand them the key file,
    /// or make them tasks of the agents' own launch (the agent on the
    /// second node is rank 1 of its srun step; a worker that read that
    /// would wait for a rank 0 that is not there).
    pub fn from_env() -> Result<AgentSettings, String> {
        let address = required("PMP_SCHEDULER")?;
        let key = KeySource::from_env()?.read_shared()?;
        let launch = std::env::vars_os()
            .map(|(name, _)| name)
            .filter(|name| name.to_str().is_some_and(is_launch_variable));
        // Read by `Node::this` before (the agent's rank among them), and no
        // business of its workers.
        let names = pmp_scheduler::backend::flux::NODE_NAMES_VARIABLE;
        use pmp_scheduler::backend::allocation_jobs::{HOSTS_VARIABLE, RANKS_VARIABLE};
        let allocation_variable = pmp_scheduler::backend::allocation_jobs::VARIABLE;
        let allocation = match std::env::var(allocation_variable) {
            Ok(number) => Some(number.parse::<u32>().map_err(|_| {
                format!("{allocation_variable}={number:?} is not an allocation's number")
            })?),
            Err(_) => None,
        };
        let removed: Vec<_> = [
            key_file::VARIABLE.into(),
            crate::agent::VARIABLE.into(),
            names.into(),
            RANKS_VARIABLE.into(),
            HOSTS_VARIABLE.into(),
            allocation_variable.into(),
        ]
        .into_iter()
        .chain(launch)
        .collect();
        for name in removed {
            // SAFETY: no other thread exists yet.
            unsafe { std::env::remove_var(name) };
        }
        Ok(AgentSettings {
            address,
            key,
            heartbeat_timeout: heartbeat_timeout(),
            python: PythonSettings::from_env(required)?,
            allocation,
        })
    }
}

pub struct JobSettings {
    /// The task store's directory.
    pub store: PathBuf,
    /// The key of the call to run: its input's and its entry's name.
    pub key: String,
    pub python: PythonSettings,
}

impl JobSettings {
    fn from_env() -> Result<JobSettings, String> {
        let required = |name: &str| match std::env::var_os(name) {
            Some(value) if !value.is_empty() => value
                .into_string()
                .map_err(|value| format!("{name} is not UTF-8: {}", value.to_string_lossy())),
            _ => Err(format!(
                "{name} is not set; a batch job's pmp-worker needs PMP_JOB_STORE, \
                 PMP_JOB_KEY and PMP_PYTHON (pmp's batch backend sets them)"
            )),
        };
        let store = required("PMP_JOB_STORE")?;
        let key = required("PMP_JOB_KEY")?;
        if !pmp_scheduler::store::valid_key(&key) {
            return Err(format!("PMP_JOB_KEY: {}", StoreError::InvalidKey(key)));
        }
        Ok(JobSettings {
            store: PathBuf::from(store),
            key,
            python: PythonSettings::from_env(required)?,
        })
    }
}

/// Where the MPI launchers (Hydra, Open MPI, PMIx, Slurm, Flux) tell a
/// process its rank.
const RANK_VARIABLES: [&str; 5] = [
    "PMI_RANK",
    "OMPI_COMM_WORLD_RANK",
    "PMIX_RANK",
    "SLURM_PROCID",
    "FLUX_TASK_RANK",
];

/// This process's rank; 0 outside MPI.
fn mpi_rank() -> u32 {
    RANK_VARIABLES
        .iter()
        .find_map(|name| std::env::var(name).ok()?.parse().ok())
        .unwrap_or(0)
}

/// Whether `name` makes a process a task of the launch that started it:
/// its rank, its place on the node, the PMI or PMIx server of the launch
/// (not PMIx's settings, `PMIX_MCA_*`).
fn is_launch_variable(name: &str) -> bool {
    RANK_VARIABLES.contains(&name)
        || ["SLURM_LOCALID", "FLUX_TASK_LOCAL_ID"].contains(&name)
        || name.starts_with("PMI_")
        || (name.starts_with("PMIX_") && !name.starts_with("PMIX_MCA_"))
}
