//! What the backend told this worker, through its environment.

use pmp_scheduler::auth::Key;
use std::time::Duration;

pub struct Settings {
    pub address: String,
    pub key: Key,
    pub worker_id: u32,
    pub python: String,
    pub sys_path: Vec<String>,
    pub heartbeat_timeout: Duration,
    /// MPI ranks of this worker; rank 0 talks to the scheduler, the others
    /// follow it through MPI.
    pub ranks: u32,
    pub rank: u32,
}

fn required(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| {
        format!("{name} is not set; pmp-worker is started by pmp's scheduler, not by hand")
    })
}

impl Settings {
    pub fn from_env() -> Result<Settings, String> {
        let key = Key::from_hex(&required("PMP_KEY")?)?;
        // The key must not reach the user's code or its subprocesses.
        // SAFETY: no other thread exists yet.
        unsafe { std::env::remove_var("PMP_KEY") };
        let worker_id = required("PMP_WORKER_ID")?
            .parse()
            .map_err(|e| format!("PMP_WORKER_ID: {e}"))?;
        let heartbeat_timeout = std::env::var("PMP_HEARTBEAT_TIMEOUT")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(10.0);
        Ok(Settings {
            address: required("PMP_SCHEDULER")?,
            key,
            worker_id,
            python: required("PMP_PYTHON")?,
            sys_path: std::env::var("PMP_SYS_PATH")
                .map(|s| {
                    s.split('\u{1f}')
                        .filter(|p| !p.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            heartbeat_timeout: Duration::from_secs_f64(heartbeat_timeout),
            ranks: std::env::var("PMP_RANKS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(1),
            rank: mpi_rank(),
        })
    }
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// This process's rank, from the variables the MPI launchers set (Hydra,
/// Open MPI, PMIx, Slurm, Flux); 0 outside MPI.
fn mpi_rank() -> u32 {
    [
        "PMI_RANK",
        "OMPI_COMM_WORLD_RANK",
        "PMIX_RANK",
        "SLURM_PROCID",
        "FLUX_TASK_RANK",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok()?.parse().ok())
    .unwrap_or(0)
}
