//! Pilot jobs of node agents (`launcher="agent"`, the default outside any
//! allocation): a block-allocated pool is as few one-node batch jobs as
//! the partition's nodes hold its workers in (`pilot_nodes`), each job's
//! script running one node agent, which forks that node's workers as in
//! an allocation. The scheduler does not know the nodes beforehand: each
//! joins when its agent connects (`server::pilots`).
//!
//! A job asks for what its workers need (`--cpus-per-task`, `--gres`), not
//! for its whole node (`--exclusive`): a pool of two workers leaves the
//! rest of its node to others, and the agent's Hello says what the job
//! holds there (SLURM_CPUS_ON_NODE, CUDA_VISIBLE_DEVICES), which is what
//! the scheduler fills. Its batch script starts the agent itself, no srun
//! step: the batch step already holds the job's CPUs and GPUs on its one
//! node, and Slurm ends it and everything it forked when the job ends.
//!
//! The agent finds the key in a private file under the home directory
//! (`key_file`), whose path travels in the job's environment as in an
//! allocation: never the key itself, in the script or the environment.

use super::pilot_nodes::{self, NodeShape};
use super::{Backend, WorkerEnvironment};
use crate::core::Launch;
use crate::ids::WorkerId;
use crate::jobs::request::shell_quote;
use crate::resources::ResourceRequest;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The backend of pilots' workers: every one starts under its node's agent.
pub struct PilotAgents;

impl Backend for PilotAgents {
    fn command(&self, _: &WorkerEnvironment, _: WorkerId, _: &Launch) -> Result<Command, String> {
        Err("a pilot job's workers start under its node agent".into())
    }

    fn under_agent(&self, _launch: &Launch) -> bool {
        true
    }
}

/// One pilot job: the workers it holds, and so the CPUs and GPUs it asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PilotJob {
    pub workers: u32,
    pub cpus: u32,
    pub gpus: u32,
}

/// An executor's pilot jobs, as they are to be submitted.
#[derive(Clone, Debug)]
pub struct PilotJobs {
    pub sbatch: PathBuf,
    /// One name for all of the executor's jobs, so that they can be
    /// found and cancelled together.
    pub job_name: String,
    /// The executor's own sbatch options (`command_line_argument_lst`).
    pub extra_args: Vec<String>,
    pub jobs: Vec<PilotJob>,
}

impl PilotJobs {
    /// The jobs that hold `workers` workers of `worker` on the nodes of
    /// the partition `worker`'s arguments name (else the default), as
    /// `shapes` of that partition say them; Err, in the user's words, where
    /// no node of it holds one worker.
    pub fn plan(
        sbatch: PathBuf,
        job_name: String,
        worker: &ResourceRequest,
        workers: u32,
        shapes: &[NodeShape],
    ) -> Result<PilotJobs, String> {
        let Some((_, per_node)) = pilot_nodes::roomiest(shapes, worker) else {
            let largest = |f: fn(&NodeShape) -> u32| shapes.iter().map(f).max().unwrap_or(0);
            return Err(format!(
                "a worker asks for {} CPUs (cores={} x threads_per_core={}) and {} GPUs, which \
                 no node of the partition holds (at most {} CPUs and {} GPUs on a node): a \
                 pilot job runs its workers on one node, so ask for less, or name a partition \
                 whose nodes hold one with --partition in command_line_argument_lst",
                worker.cpus(),
                worker.cores,
                worker.threads_per_core,
                worker.gpus(),
                largest(|s| s.cpus),
                largest(|s| s.gpus),
            ));
        };
        let jobs = pilot_nodes::jobs_for(workers, per_node)
            .into_iter()
            .map(|here| PilotJob {
                workers: here,
                cpus: here * worker.cpus(),
                gpus: here * worker.gpus(),
            })
            .collect();
        Ok(PilotJobs {
            sbatch,
            job_name,
            extra_args: worker.extra_args.to_vec(),
            jobs,
        })
    }

    /// sbatch's arguments for `job`: one node, one task holding its
    /// workers' CPUs and GPUs; the executor's own options last, so they win.
    pub fn arguments(&self, job: &PilotJob) -> Vec<String> {
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={}", self.job_name),
            "--nodes=1".to_string(),
            "--ntasks=1".to_string(),
            format!("--cpus-per-task={}", job.cpus),
            // What the agent prints goes back with its workers' calls or
            // to the client's stderr; the job's own file would say nothing more.
            "--output=/dev/null".to_string(),
        ];
        if job.gpus > 0 {
            args.push(format!("--gres=gpu:{}", job.gpus));
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// The batch script: the agent, in place of the shell.
    pub fn script(program: &Path) -> String {
        format!(
            "#!/bin/sh\nexec {}\n",
            shell_quote(&program.to_string_lossy())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(threads: u32, gpus: u32, extra: &[&str]) -> ResourceRequest {
        ResourceRequest {
            threads_per_core: threads,
            gpus_per_core: gpus,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    const NODE: [NodeShape; 1] = [NodeShape { cpus: 4, gpus: 2 }];

    #[test]
    fn eight_one_cpu_workers_are_two_jobs_of_a_node_each() {
        let jobs = PilotJobs::plan(
            "sbatch".into(),
            "pmp-pilot-ab12".into(),
            &worker(1, 0, &["--partition=debug"]),
            8,
            &NODE,
        )
        .unwrap();
        let job = |workers, cpus| PilotJob {
            workers,
            cpus,
            gpus: 0,
        };
        assert_eq!(jobs.jobs, [job(4, 4), job(4, 4)]);
        let args = jobs.arguments(&jobs.jobs[0]);
        assert_eq!(
            args,
            [
                "--parsable",
                "--job-name=pmp-pilot-ab12",
                "--nodes=1",
                "--ntasks=1",
                "--cpus-per-task=4",
                "--output=/dev/null",
                "--partition=debug"
            ]
        );
    }

    #[test]
    fn gpus_bound_the_workers_of_a_node_and_are_asked_for() {
        let jobs =
            PilotJobs::plan("sbatch".into(), "p".into(), &worker(1, 1, &[]), 3, &NODE).unwrap();
        assert_eq!(jobs.jobs.len(), 2);
        assert!(jobs
            .arguments(&jobs.jobs[0])
            .contains(&"--gres=gpu:2".to_string()));
        assert!(jobs
            .arguments(&jobs.jobs[1])
            .contains(&"--gres=gpu:1".to_string()));
    }

    #[test]
    fn a_worker_no_node_holds_is_refused_naming_what_it_asked_for() {
        let why =
            PilotJobs::plan("sbatch".into(), "p".into(), &worker(5, 0, &[]), 1, &NODE).unwrap_err();
        assert!(
            why.contains("5 CPUs (cores=1 x threads_per_core=5)"),
            "{why}"
        );
        assert!(why.contains("at most 4 CPUs and 2 GPUs on a node"), "{why}");
    }

    #[test]
    fn the_script_runs_the_agent_and_holds_no_key() {
        let script = PilotJobs::script(Path::new("/venv/bin/pmp-worker"));
        assert_eq!(script, "#!/bin/sh\nexec /venv/bin/pmp-worker\n");
    }
}
