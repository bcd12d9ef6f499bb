//! Pilot jobs of one worker each (`launcher="step"`; the default is node
//! agents, `pilot_agents`): from outside any Slurm allocation, each
//! block-allocated worker is one batch job (`sbatch --wait`) running
//! `pmp-worker`, which connects back to the scheduler over the
//! authenticated transport like any worker.
//!
//! The local `sbatch --wait` process stands for the worker: it exits when
//! the job ends, which the scheduler sees as the worker's exit. A pilot ends
//! when the scheduler tells its worker to stop, or when the client is gone
//! (the worker hears nothing within the heartbeat limit), so no allocation
//! idles. All pilots of an executor share one job name, so the client can
//! scancel those still queued when it shuts down; each one's comment names
//! its worker (`pmp-worker-<id>`).
//!
//! `sbatch --wait` exits 1 whatever ended the job, so the exit of a pilot
//! that failed is explained by asking squeue: the job's id and Slurm's state
//! (CANCELLED, NODE_FAIL, TIMEOUT).

use super::mpi::MpiFlavor;
use super::{finish_command, Backend, ExitExplainer, WorkerEnvironment};
use crate::core::{Launch, LostReason};
use crate::ids::WorkerId;
use crate::jobs::request::{shell_quote, JobRequest};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct PilotBackend {
    pub sbatch: PathBuf,
    /// srun inside the job, for workers of several ranks.
    pub srun: PathBuf,
    pub job_name: String,
    pub mpi: Option<MpiFlavor>,
}

impl PilotBackend {
    /// sbatch's arguments; the job script is `--wrap`ped.
    pub fn arguments(
        &self,
        env: &WorkerEnvironment,
        worker: WorkerId,
        launch: &Launch,
    ) -> Vec<String> {
        let r = &launch.resources;
        let mut args = vec![
            "--wait".to_string(),
            "--quiet".to_string(),
            format!("--job-name={}", self.job_name),
            format!("--comment={}", comment(worker)),
            // What the worker prints goes back with its tasks; the job's own
            // output (Python failing to start) is worth nothing on disk.
            "--output=/dev/null".to_string(),
        ];
        // The options every Slurm job of pmp's has: one owner for them.
        args.extend(JobRequest::slurm_resources(
            r.cores,
            r.threads_per_core,
            r.gpus_per_core,
            r.cwd.as_deref(),
        ));
        args.extend(r.extra_args.iter().cloned());
        let program = shell_quote(&env.program.to_string_lossy());
        let script = if r.cores > 1 {
            let mpi = MpiFlavor::srun_option(self.mpi).map_or(String::new(), |o| format!(" {o}"));
            let srun = shell_quote(&self.srun.to_string_lossy());
            format!("exec {srun}{mpi} --ntasks={} {program}", r.cores)
        } else {
            format!("exec {program}")
        };
        args.push(format!("--wrap={script}"));
        args
    }
}

/// The comment that tells `worker`'s pilot from the executor's others.
fn comment(worker: WorkerId) -> String {
    format!("pmp-worker-{}", worker.0)
}

/// A pilot job as squeue shows it once it ended.
#[derive(Debug, PartialEq, Eq)]
struct EndedPilot {
    id: String,
    state: String,
}

/// The pilot with `comment` among the lines of `squeue -o %i|%k|%T`.
fn find_pilot(listing: &str, comment: &str) -> Option<EndedPilot> {
    listing.lines().find_map(|line| {
        let mut parts = line.trim().split('|');
        let (id, found, state) = (parts.next()?, parts.next()?, parts.next()?);
        (found == comment).then(|| EndedPilot {
            id: id.to_string(),
            state: state.to_string(),
        })
    })
}

/// Slurm's state of an ended job in words.
pub(crate) fn state_words(state: &str) -> &'static str {
    match state {
        "CANCELLED" => "it was cancelled (scancel, or an administrator)",
        "NODE_FAIL" => "its node failed",
        "TIMEOUT" => "it reached its time limit",
        "OUT_OF_MEMORY" => "it ran out of memory",
        "PREEMPTED" => "it was preempted",
        "BOOT_FAIL" => "its node failed to boot",
        "DEADLINE" => "it reached its deadline",
        "FAILED" => "its program failed",
        _ => "Slurm ended it",
    }
}

/// Ask squeue (given a few seconds: an exit waits on it) for the pilot of
/// `worker`, and name its job and state in `reason`.
fn explain(squeue: &Path, job_name: &str, worker: WorkerId, reason: &mut LostReason) {
    if reason.exit_code.is_none_or(|code| code == 0) {
        return; // a pilot told to stop, or one pmp killed: its reason says so
    }
    let Ok(mut child) = Command::new(squeue)
        .args(["-h", "-t", "all", "-o", "%i|%k|%T", "-n", job_name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return;
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while matches!(child.try_wait(), Ok(None)) {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut listing = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut out, &mut listing);
    }
    if let Some(pilot) = find_pilot(&listing, &comment(worker)) {
        reason.message = format!(
            "pilot job {} ended {}: {} ({})",
            pilot.id,
            pilot.state,
            state_words(&pilot.state),
            reason.message
        );
    }
}

impl Backend for PilotBackend {
    fn command(
        &self,
        env: &WorkerEnvironment,
        worker: WorkerId,
        launch: &Launch,
    ) -> Result<Command, String> {
        let mut command = Command::new(&self.sbatch);
        command.args(self.arguments(env, worker, launch));
        // sbatch exports its environment to the job (--export=ALL is the
        // default): the worker's variables travel that way, never as
        // arguments, which squeue and ps would show.
        finish_command(&mut command, env, worker, launch, false, self.protection())?;
        Ok(command)
    }

    fn exit_explainer(&self, worker: WorkerId) -> Option<ExitExplainer> {
        let squeue = self.sbatch.with_file_name("squeue");
        let squeue = if squeue.is_file() {
            squeue
        } else {
            PathBuf::from("squeue")
        };
        let job_name = self.job_name.clone();
        Some(Box::new(move |reason: &mut LostReason| {
            explain(&squeue, &job_name, worker, reason)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{Gpus, ResourceRequest};

    #[test]
    fn a_pilot_is_a_waited_batch_job_named_for_its_executor() {
        let backend = PilotBackend {
            sbatch: "sbatch".into(),
            srun: "/usr/bin/srun".into(),
            job_name: "pmp-pilot-ab12".into(),
            mpi: None,
        };
        let launch = Launch {
            resources: ResourceRequest {
                cores: 2,
                threads_per_core: 3,
                ..Default::default()
            },
            placement: crate::capacity::Placement::Node(crate::ids::NodeId(0)),
            gpus: Gpus::Counted(0),
        };
        let env = WorkerEnvironment::for_tests();
        let args = backend.arguments(&env, WorkerId(5), &launch);
        assert_eq!(
            &args[..4],
            [
                "--wait",
                "--quiet",
                "--job-name=pmp-pilot-ab12",
                "--comment=pmp-worker-5"
            ]
        );
        assert!(args.contains(&"--ntasks=2".to_string()));
        assert!(args.contains(&"--cpus-per-task=3".to_string()));
        assert_eq!(
            args.last().unwrap(),
            "--wrap=exec /usr/bin/srun --ntasks=2 /venv/bin/pmp-worker"
        );
        let command = backend.command(&env, WorkerId(1), &launch).unwrap();
        assert!(
            command
                .get_args()
                .all(|a| !a.to_string_lossy().contains("PMP_KEY")),
            "the key stays out of the command line"
        );
    }

    #[test]
    fn an_ended_pilot_is_found_by_its_workers_comment() {
        let listing = "12|pmp-worker-1|COMPLETED\n13|pmp-worker-10|CANCELLED\n";
        assert_eq!(
            find_pilot(listing, &comment(WorkerId(10))),
            Some(EndedPilot {
                id: "13".into(),
                state: "CANCELLED".into()
            })
        );
        assert_eq!(find_pilot(listing, &comment(WorkerId(2))), None);
    }
}
