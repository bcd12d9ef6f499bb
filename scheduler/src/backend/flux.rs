//! The Flux backend: each worker is one `flux run` job in the Flux instance
//! the client runs in (`srun flux start`, or a Flux-managed cluster).

use super::{finish_command, Backend, WorkerEnvironment};
use crate::core::Launch;
use crate::ids::WorkerId;
use std::path::PathBuf;
use std::process::Command;

pub struct FluxBackend {
    pub flux: PathBuf,
}

impl FluxBackend {
    /// `flux run`'s arguments before the worker program.
    pub fn arguments(&self, launch: &Launch) -> Vec<String> {
        let r = &launch.resources;
        let mut args = vec![
            "run".to_string(),
            "--job-name=pmp-worker".to_string(),
            "-n".to_string(),
            r.cores.to_string(),
            "-c".to_string(),
            r.threads_per_core.to_string(),
        ];
        if r.gpus_per_core > 0 {
            args.push("-g".into());
            args.push(r.gpus_per_core.to_string());
        }
        args.extend(r.extra_args.iter().cloned());
        args
    }
}

impl Backend for FluxBackend {
    fn command(
        &self,
        env: &WorkerEnvironment,
        worker: WorkerId,
        launch: &Launch,
    ) -> Result<Command, String> {
        if launch.resources.oversubscribe {
            return Err(
                "Flux does not oversubscribe: leave oversubscribe=False on the flux backend".into(),
            );
        }
        let mut command = Command::new(&self.flux);
        command.args(self.arguments(launch)).arg(&env.program);
        // `flux run` copies its environment into the job and runs it in its
        // own working directory; it picks the GPUs (-g) itself.
        finish_command(&mut command, env, worker, launch, true)?;
        Ok(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{Gpus, ResourceRequest};

    #[test]
    fn a_job_asks_for_tasks_cores_and_gpus() {
        let backend = FluxBackend {
            flux: "flux".into(),
        };
        let launch = Launch {
            resources: ResourceRequest {
                cores: 2,
                threads_per_core: 4,
                gpus_per_core: 1,
                ..Default::default()
            },
            gpus: Gpus::Counted(0),
        };
        assert_eq!(
            backend.arguments(&launch),
            vec![
                "run",
                "--job-name=pmp-worker",
                "-n",
                "2",
                "-c",
                "4",
                "-g",
                "1"
            ]
        );
        let env = WorkerEnvironment::for_tests();
        let command = backend.command(&env, WorkerId(0), &launch).unwrap();
        assert_eq!(command.get_program(), "flux");
        assert_eq!(command.get_args().last().unwrap(), "/venv/bin/pmp-worker");
    }

    #[test]
    fn flux_picks_the_devices_so_pmp_exports_none() {
        let backend = FluxBackend {
            flux: "flux".into(),
        };
        let launch = Launch {
            resources: ResourceRequest {
                gpus_per_core: 1,
                ..Default::default()
            },
            gpus: Gpus::Counted(1),
        };
        let env = WorkerEnvironment::for_tests();
        let command = backend.command(&env, WorkerId(0), &launch).unwrap();
        let args: Vec<_> = command.get_args().collect();
        assert!(args.windows(2).any(|w| w == ["-g", "1"]), "{args:?}");
        assert!(command
            .get_envs()
            .all(|(name, _)| name != "CUDA_VISIBLE_DEVICES"));
    }

    #[test]
    fn oversubscription_is_refused_with_a_reason() {
        let backend = FluxBackend {
            flux: "flux".into(),
        };
        let launch = Launch {
            resources: ResourceRequest {
                oversubscribe: true,
                ..Default::default()
            },
            gpus: Gpus::Counted(0),
        };
        let env = WorkerEnvironment::for_tests();
        assert!(backend
            .command(&env, WorkerId(0), &launch)
            .unwrap_err()
            .contains("oversubscribe"));
    }
}
