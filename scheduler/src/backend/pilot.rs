//! Pilot jobs: from outside any Slurm allocation, each block-allocated worker
//! is one batch job (`sbatch --wait`) running `pmp-worker`, which connects
//! back to the scheduler over the authenticated transport like any worker.
//!
//! The local `sbatch --wait` process stands for the worker: it exits when
//! the job ends, which the scheduler sees as the worker's exit. A pilot ends
//! when the scheduler tells its worker to stop, or when the client is gone
//! (the worker hears nothing within the heartbeat limit), so no allocation
//! idles. All pilots of an executor share one job name, so the client can
//! scancel those still queued when it shuts down.

use super::mpi::MpiFlavor;
use super::{finish_command, Backend, WorkerEnvironment};
use crate::core::Launch;
use crate::ids::WorkerId;
use std::path::PathBuf;
use std::process::Command;

pub struct PilotBackend {
    pub sbatch: PathBuf,
    /// srun inside the job, for workers of several ranks.
    pub srun: PathBuf,
    pub job_name: String,
    pub mpi: Option<MpiFlavor>,
}

impl PilotBackend {
    /// sbatch's arguments; the job script is `--wrap`ped.
    pub fn arguments(&self, env: &WorkerEnvironment, launch: &Launch) -> Vec<String> {
        let r = &launch.resources;
        let mut args = vec![
            "--wait".to_string(),
            "--quiet".to_string(),
            format!("--job-name={}", self.job_name),
            format!("--ntasks={}", r.cores),
            format!("--cpus-per-task={}", r.threads_per_core),
            // What the worker prints goes back with its tasks; the job's own
            // output (Python failing to start) is worth nothing on disk.
            "--output=/dev/null".to_string(),
        ];
        if r.gpus_per_core > 0 {
            args.push(format!("--gpus-per-task={}", r.gpus_per_core));
        }
        if let Some(cwd) = &r.cwd {
            args.push(format!("--chdir={cwd}"));
        }
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

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

impl Backend for PilotBackend {
    fn command(
        &self,
        env: &WorkerEnvironment,
        worker: WorkerId,
        launch: &Launch,
    ) -> Result<Command, String> {
        let mut command = Command::new(&self.sbatch);
        command.args(self.arguments(env, launch));
        // sbatch exports its environment to the job (--export=ALL is the
        // default): the worker's variables travel that way, never as
        // arguments, which squeue and ps would show.
        finish_command(&mut command, env, worker, launch, false)?;
        Ok(command)
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
            gpus: Gpus::Counted(0),
        };
        let env = WorkerEnvironment::for_tests();
        let args = backend.arguments(&env, &launch);
        assert_eq!(
            &args[..3],
            ["--wait", "--quiet", "--job-name=pmp-pilot-ab12"]
        );
        assert!(args.contains(&"--ntasks=2".to_string()));
        assert!(args.contains(&"--cpus-per-task=3".to_string()));
        assert_eq!(
            args.last().unwrap(),
            "--wrap=exec '/usr/bin/srun' --ntasks=2 '/venv/bin/pmp-worker'"
        );
        let command = backend.command(&env, WorkerId(1), &launch).unwrap();
        assert!(
            command
                .get_args()
                .all(|a| !a.to_string_lossy().contains("PMP_KEY")),
            "the key stays out of the command line"
        );
    }
}
