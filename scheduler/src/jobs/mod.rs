//! Batch jobs from outside any allocation (a login node, a JupyterHub
//! outside Slurm or Flux): one job per call, which outlives the client.
//!
//! The task store carries everything: the client writes the call's input,
//! takes the key's lock and submits a job (`JobSystem::submit`) that runs
//! `pmp-worker` in job mode; the job reads its input from the store, runs
//! the call, writes its outcome there and releases the lock. One
//! `follower` per executor learns how its jobs go: it looks for their
//! entries (a stat each) and reads their logs as they grow, and asks the job
//! system for all of their states in one call every few seconds.
//!
//! Read in this order: `request` (what one job asks for, as sbatch and
//! flux submit options), `slurm` and `flux` (the job systems), `follower`,
//! `calls` (when each call may go, and how it ended).

pub mod calls;
pub(crate) mod command;
pub mod flux;
pub mod follower;
pub mod request;
pub mod slurm;
#[cfg(test)]
mod test_support;

pub use request::JobRequest;
use std::collections::HashMap;

/// A job's state as its job system said it, in Slurm's words for every job
/// system (PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT, CANCELLED, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct JobStatus {
    pub state: String,
    /// Why a pending job waits (Slurm's reason, or Flux's state).
    pub reason: String,
    pub nodes: String,
    /// When a running job started, seconds since the epoch.
    pub started: Option<f64>,
}

/// Why a job system did not take a job.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// A job it would depend on (`afterok`) already failed or was cancelled.
    DependencyRefused(String),
    Refused(String),
    /// A value that cannot reach a job script or command line as it is (a
    /// control character, a template without its command): the user's to fix.
    Invalid(String),
}

/// The states after which a job does nothing more (Slurm's words).
pub const ENDED: [&str; 10] = [
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "REVOKED",
];

pub fn ended(state: &str) -> bool {
    ENDED.contains(&state)
}

pub trait JobSystem: Send + Sync {
    /// "slurm" or "flux".
    fn name(&self) -> &'static str;

    /// Why this job system cannot honour `request`, if it cannot.
    fn refuse(&self, request: &JobRequest) -> Option<String>;

    /// Submit one call's job; its id.
    fn submit(&self, request: &JobRequest) -> Result<String, SubmitError>;

    /// Submit `script` as a batch job (sbatch, flux batch) with `args`
    /// before it and `env` added to what the job inherits (never the key:
    /// a job's environment is for others to see); the job's id, or what
    /// the job system said refusing it. Elastic allocations' jobs.
    fn submit_script(
        &self,
        args: &[String],
        script: &str,
        env: &[(String, String)],
    ) -> Result<String, String>;

    /// The states of the jobs it knows among `jobs`, in one call; None when
    /// it did not answer (a controller restarting), which says nothing about
    /// the jobs.
    fn states(&self, jobs: &[String]) -> Option<HashMap<String, JobStatus>>;

    /// This user's queued or running job named `name`, if any; Err when the
    /// job system did not answer.
    fn find(&self, name: &str) -> Result<Option<String>, String>;

    /// How a job it no longer lists ended, from its accounting: (state,
    /// exit code); None where there is no record.
    fn accounted(&self, job: &str) -> Option<(String, Option<i32>)>;

    /// When an ended job ended, seconds since the epoch.
    fn ended_at(&self, job: &str) -> Option<f64>;

    /// The exit code of an ended job.
    fn exit_code(&self, job: &str) -> Option<i32>;

    fn cancel(&self, jobs: &[String]);
}

/// The states of `jobs` asked for one at a time, for a job system whose
/// query for several fails as a whole when one id is unknown to it.
fn states_one_at_a_time(
    system: &dyn JobSystem,
    jobs: &[String],
) -> Option<HashMap<String, JobStatus>> {
    let mut states = HashMap::new();
    for job in jobs {
        states.extend(system.states(std::slice::from_ref(job))?);
    }
    Some(states)
}

/// Why no job is submitted for a call whose job a dead client may have
/// left queued: `query` did not say whether it is.
fn unanswered(query: &str, system: &str, name: &str, why: &str) -> String {
    format!(
        "{query} did not answer whether the job {name} is queued ({why}); a client that died \
         while submitting it may have left it queued, so none is submitted now: submit again \
         once {system} answers"
    )
}
