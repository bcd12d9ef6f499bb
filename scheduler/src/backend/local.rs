//! The local backend: one `pmp-worker` process per worker on this machine.

use super::{Backend, WorkerEnvironment};
use crate::core::Launch;
use crate::ids::WorkerId;
use std::process::Command;

pub struct LocalBackend;

impl Backend for LocalBackend {
    fn command(
        &self,
        env: &WorkerEnvironment,
        worker: WorkerId,
        launch: &Launch,
    ) -> Result<Command, String> {
        if launch.resources.cores > 1 {
            return Err(format!(
                "cores={} asks for an MPI-parallel worker, which the local backend cannot start yet; use cores=1",
                launch.resources.cores
            ));
        }
        let mut command = Command::new(&env.program);
        command.envs(env.variables(worker, launch));
        if let Some(cwd) = &launch.resources.cwd {
            std::fs::create_dir_all(cwd).map_err(|e| format!("cannot create cwd {cwd:?}: {e}"))?;
            command.current_dir(cwd);
        }
        Ok(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::ResourceRequest;

    fn env() -> WorkerEnvironment {
        WorkerEnvironment {
            program: "/bin/pmp-worker".into(),
            address: "tcp://127.0.0.1:5555".into(),
            key_hex: "00".into(),
            python: "/venv/bin/python".into(),
            sys_path: vec!["/a".into(), "/b".into()],
            heartbeat_timeout_s: 10.0,
            extra: vec![],
        }
    }

    #[test]
    fn threads_and_gpus_reach_the_environment_and_the_key_not_the_argv() {
        let launch = Launch {
            resources: ResourceRequest {
                threads_per_core: 3,
                ..Default::default()
            },
            gpus: vec!["0".into(), "2".into()],
        };
        let cmd = LocalBackend.command(&env(), WorkerId(4), &launch).unwrap();
        let vars: std::collections::HashMap<_, _> = cmd
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_str().unwrap().to_string(),
                    v.unwrap().to_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(vars["OMP_NUM_THREADS"], "3");
        assert_eq!(vars["MKL_NUM_THREADS"], "3");
        assert_eq!(vars["CUDA_VISIBLE_DEVICES"], "0,2");
        assert_eq!(vars["PMP_WORKER_ID"], "4");
        assert_eq!(
            cmd.get_args().count(),
            0,
            "nothing secret on the command line"
        );
    }

    #[test]
    fn cores_above_one_is_a_clear_error() {
        let launch = Launch {
            resources: ResourceRequest {
                cores: 2,
                ..Default::default()
            },
            gpus: vec![],
        };
        let err = LocalBackend
            .command(&env(), WorkerId(0), &launch)
            .unwrap_err();
        assert!(err.contains("cores=2"), "{err}");
    }
}
