//! The local backend: one `pmp-worker` process per worker on this machine, or
//! `mpiexec -n N pmp-worker` for a worker of N MPI ranks.

use super::mpi::MpiLauncher;
use super::{finish_command, Backend, WorkerEnvironment};
use crate::core::Launch;
use crate::ids::WorkerId;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

pub struct LocalBackend {
    /// Where to look for mpiexec before PATH.
    mpi_dirs: Vec<PathBuf>,
    /// Found on first use: executors without MPI tasks never look.
    mpi: OnceLock<Result<MpiLauncher, String>>,
}

impl LocalBackend {
    pub fn new(mpi_dirs: Vec<PathBuf>) -> LocalBackend {
        LocalBackend {
            mpi_dirs,
            mpi: OnceLock::new(),
        }
    }
}

impl Backend for LocalBackend {
    fn command(
        &self,
        env: &WorkerEnvironment,
        worker: WorkerId,
        launch: &Launch,
    ) -> Result<Command, String> {
        let ranks = launch.resources.cores;
        let mut command = if ranks > 1 {
            let mpi = self
                .mpi
                .get_or_init(|| MpiLauncher::locate(&self.mpi_dirs))
                .as_ref()
                .map_err(Clone::clone)?;
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            // SAFETY: geteuid has no preconditions.
            let as_root = unsafe { libc::geteuid() } == 0;
            let mut command = Command::new(&mpi.program);
            command
                .args(mpi.arguments(ranks, launch.resources.oversubscribe, cpus, as_root))
                .arg(&env.program);
            command
        } else {
            Command::new(&env.program)
        };
        finish_command(&mut command, env, worker, launch, true, self.protection())?;
        Ok(command)
    }

    fn runs_workers_here(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{Gpus, ResourceRequest};

    fn env() -> WorkerEnvironment {
        WorkerEnvironment {
            program: "/bin/pmp-worker".into(),
            address: "tcp://127.0.0.1:5555".into(),
            key: crate::auth::Key::from_bytes([0; crate::auth::KEY_LEN]),
            key_files: Default::default(),
            python: "/venv/bin/python".into(),
            sys_path: vec!["/a".into(), "/b".into()],
            heartbeat_timeout_s: 10.0,
            block_allocation: false,
        }
    }

    #[test]
    fn threads_and_gpus_reach_the_environment_and_the_key_not_the_argv() {
        let launch = Launch {
            resources: ResourceRequest {
                threads_per_core: 3,
                ..Default::default()
            },
            placement: crate::capacity::Placement::Node(crate::ids::NodeId(0)),
            gpus: Gpus::Devices(vec!["0".into(), "2".into()]),
        };
        let cmd = LocalBackend::new(vec![])
            .command(&env(), WorkerId(4), &launch)
            .unwrap();
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
        // A worker for one call (env() is not a block allocation's).
        assert_eq!(vars["PMP_BLOCK_ALLOCATION"], "0");
        assert_eq!(
            cmd.get_args().count(),
            0,
            "nothing secret on the command line"
        );
    }

    #[test]
    fn a_missing_mpiexec_is_a_clear_error() {
        let launch = Launch {
            resources: ResourceRequest {
                cores: 2,
                ..Default::default()
            },
            placement: crate::capacity::Placement::Node(crate::ids::NodeId(0)),
            gpus: Gpus::Devices(vec![]),
        };
        let backend = LocalBackend::new(vec![]);
        backend
            .mpi
            .set(Err("mpiexec was not found: install an MPI".into()))
            .unwrap();
        let err = backend.command(&env(), WorkerId(0), &launch).unwrap_err();
        assert!(err.contains("mpiexec"), "{err}");
    }
}
