//! The Slurm backend: each worker is one `srun` job step inside the
//! allocation the client runs in.

use super::mpi::MpiFlavor;
use super::{finish_command, Backend, WorkerEnvironment};
use crate::core::Launch;
use crate::ids::WorkerId;
use std::path::PathBuf;
use std::process::Command;

pub struct SlurmBackend {
    pub srun: PathBuf,
    /// The MPI in the worker's environment, if any: Open MPI needs PMIx from
    /// srun; MPICH works with the cluster's default (pmi2 on most sites).
    pub mpi: Option<MpiFlavor>,
}

impl SlurmBackend {
    /// srun's arguments before the worker program.
    pub fn arguments(&self, launch: &Launch) -> Vec<String> {
        let r = &launch.resources;
        let mut args = vec![
            "-Q".to_string(),
            "--input=none".to_string(),
            "--job-name=pmp-worker".to_string(),
            // A step gets exactly what it asks for, so several share the allocation.
            "--exact".to_string(),
            // One failing rank ends the step instead of leaving the others waiting.
            "--kill-on-bad-exit=1".to_string(),
            "-n".to_string(),
            r.cores.to_string(),
            format!("--cpus-per-task={}", r.threads_per_core),
        ];
        if r.gpus_per_core > 0 {
            args.push(format!("--gpus-per-task={}", r.gpus_per_core));
        }
        if r.oversubscribe {
            args.push("--oversubscribe".into());
        }
        if let Some(cwd) = &r.cwd {
            args.push("-D".into());
            args.push(cwd.clone());
        }
        if r.cores > 1 && self.mpi == Some(MpiFlavor::OpenMpi) {
            args.push("--mpi=pmix".into());
        }
        // The user's own arguments last, so they win over ours.
        args.extend(r.extra_args.iter().cloned());
        args
    }
}

impl Backend for SlurmBackend {
    fn command(
        &self,
        env: &WorkerEnvironment,
        worker: WorkerId,
        launch: &Launch,
    ) -> Result<Command, String> {
        let mut command = Command::new(&self.srun);
        command.args(self.arguments(launch)).arg(&env.program);
        // srun passes its environment to the step (--export=ALL) and takes
        // the working directory as -D.
        finish_command(&mut command, env, worker, launch, false)?;
        Ok(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::ResourceRequest;

    fn launch(resources: ResourceRequest) -> Launch {
        Launch {
            resources,
            gpus: vec![],
        }
    }

    #[test]
    fn a_step_asks_for_ranks_threads_gpus_cwd_and_the_users_arguments() {
        let backend = SlurmBackend {
            srun: "srun".into(),
            mpi: Some(MpiFlavor::OpenMpi),
        };
        let args = backend.arguments(&launch(ResourceRequest {
            cores: 2,
            threads_per_core: 3,
            gpus_per_core: 1,
            oversubscribe: true,
            cwd: Some("/scratch/run".into()),
            extra_args: vec!["--job-name=mine".into()],
        }));
        let joined = args.join(" ");
        assert!(joined.contains("-n 2 --cpus-per-task=3 --gpus-per-task=1 --oversubscribe -D /scratch/run --mpi=pmix"), "{joined}");
        assert_eq!(args.last().unwrap(), "--job-name=mine");
    }

    #[test]
    fn a_single_rank_step_has_no_gpu_mpi_or_oversubscribe_flags() {
        let backend = SlurmBackend {
            srun: "srun".into(),
            mpi: Some(MpiFlavor::Mpich),
        };
        let args = backend
            .arguments(&launch(ResourceRequest::default()))
            .join(" ");
        assert!(args.contains("-n 1 --cpus-per-task=1"), "{args}");
        for absent in ["--gpus-per-task", "--mpi", "--oversubscribe", "-D"] {
            assert!(!args.contains(absent), "{args}");
        }
    }
}
