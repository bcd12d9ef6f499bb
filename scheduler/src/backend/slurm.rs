//! The Slurm backend: each worker is one `srun` job step inside the
//! allocation the client runs in, or, under node agents, forked by its
//! node's agent, save the calls only a step of their own can run.

use super::mpi::MpiFlavor;
use super::{finish_command, Backend, WorkerEnvironment};
use crate::capacity::{Placement, Share};
use crate::core::Launch;
use crate::ids::WorkerId;
use std::path::PathBuf;
use std::process::Command;

pub struct SlurmBackend {
    pub srun: PathBuf,
    /// The MPI in the worker's environment, if any: Open MPI needs PMIx from
    /// srun; MPICH works with the cluster's default (pmi2 on most sites).
    pub mpi: Option<MpiFlavor>,
    /// Whether workers start under node agents (`launcher="agent"`).
    pub agents: bool,
    /// The allocation's nodes, in `Capacity`'s order, under agents: a
    /// step of its own for a call placed on one node goes to that node.
    pub node_names: Vec<String>,
}

impl SlurmBackend {
    /// srun's arguments before the worker program.
    pub fn arguments(&self, launch: &Launch) -> Vec<String> {
        let r = &launch.resources;
        let mut args = vec![
            "-Q".to_string(),
            "--input=none".to_string(),
            "--job-name=pmp-worker".to_string(),
        ];
        args.extend(self.sharing(r.exclusive));
        args.extend([
            // One failing rank ends the step instead of leaving the others waiting.
            "--kill-on-bad-exit=1".to_string(),
            "-n".to_string(),
            r.cores.to_string(),
        ]);
        match &launch.placement {
            // Without it a step spans all of the allocation's nodes, and srun
            // says in the user's output that one rank cannot run on two.
            // A range: several ranks still spread as srun places them.
            Placement::Node(node) => match self.node_names.get(node.0 as usize) {
                // The node the capacity counted it on (under agents, whose
                // workers srun does not see when it places a step).
                Some(name) => args.extend(["--nodes=1".to_string(), format!("--nodelist={name}")]),
                // `num_nodes`: srun picks that many of the allocation's nodes.
                None => match r.nodes {
                    Some(nodes) => args.push(format!("--nodes={nodes}")),
                    None => args.push(format!("--nodes=1-{}", r.cores)),
                },
            },
            Placement::Span(shares) => args.extend(span_arguments(shares)),
        }
        args.push(format!("--cpus-per-task={}", r.threads_per_core));
        if self.agents {
            // Slurm does not see the agents' workers, so its count of free
            // CPUs is not pmp's: the capacity, which counts them, decided
            // that this step has room now, and Slurm's count of the CPUs of
            // other steps is not to hold it back. (Not needed beside the
            // agents' own step, `--overlap --whole`: on the test Slurm,
            // 22.05, a step without it starts beside that one.)
            args.push("--overlap".into());
        }
        if r.gpus_per_core > 0 {
            args.push(format!("--gpus-per-task={}", r.gpus_per_core));
        } else if !asks_for_gpus(&r.extra_args) {
            // A step that names no GRES gets all of the allocation's GPUs
            // (CUDA_VISIBLE_DEVICES lists them all) and waits until every one
            // is free, so steps without GPUs would run one at a time. "none"
            // is Slurm's word for "none of the job's GRES"; it is accepted
            // where the cluster has no GRES at all. Not added where the
            // user's own arguments ask for GPUs: it would cancel them.
            args.push("--gres=none".into());
        }
        if r.oversubscribe {
            args.push("--oversubscribe".into());
        }
        if let Some(mb) = r.memory_mb {
            // `memory_max` per node, as a batch job's `--mem`: Slurm
            // limits the step's memory where its cgroups do.
            args.push(format!("--mem={mb}M"));
        }
        if let Some(cwd) = &r.cwd {
            args.push("-D".into());
            args.push(cwd.clone());
        }
        if let Some(option) = MpiFlavor::srun_option(self.mpi).filter(|_| r.cores > 1) {
            args.push(option.into());
        }
        // The user's own arguments last, so they win over ours.
        args.extend(r.extra_args.iter().cloned());
        args
    }

    /// How a step shares its nodes. Normally it gets exactly what it asks
    /// for, so several share the allocation (`--exact`). An `exclusive`
    /// call: srun's own `--exclusive` where srun places steps; under
    /// agents, where every step must `--overlap` theirs (which srun does
    /// not combine with `--exclusive`), pmp's scheduler keeps the call's
    /// nodes free of other calls (`Capacity`), and `--whole` gives the
    /// step all of their CPUs.
    fn sharing(&self, exclusive: bool) -> [String; 1] {
        match (exclusive, self.agents) {
            (false, _) => ["--exact".into()],
            (true, false) => ["--exclusive".into()],
            (true, true) => ["--whole".into()],
        }
    }
}

/// The ranks of a call spanning nodes exactly where the capacity counted
/// them: srun's arbitrary distribution lays out rank after rank on the
/// nodes of the node list in its order, a node named once per rank, which
/// says an uneven split too. (Slurm 22.05 refuses the short form
/// "node1*3": "You asked for 6 tasks but hostlist specified 2 nodes".)
fn span_arguments(shares: &[Share]) -> [String; 3] {
    let ranks: Vec<&str> = shares
        .iter()
        .flat_map(|share| std::iter::repeat_n(share.name.as_str(), share.ranks as usize))
        .collect();
    [
        format!("--nodes={}", shares.len()),
        "--distribution=arbitrary".into(),
        format!("--nodelist={}", ranks.join(",")),
    ]
}

/// Whether srun arguments ask for GPUs or other GRES themselves
/// (`--gres`, `--gpus*`, `-G`, `--tres-per-task`, `--*-per-gpu`).
fn asks_for_gpus(args: &[String]) -> bool {
    args.iter().any(|arg| {
        let option = arg.split('=').next().unwrap_or(arg);
        (option.starts_with("--")
            && (option.contains("gpu") || option.contains("gres") || option.contains("tres")))
            || (option.starts_with("-G") && !option.starts_with("--"))
    })
}

impl SlurmBackend {
    /// srun's arguments for the agents' step: one task on each node of the
    /// allocation, sharing all of the node's CPUs, memory and GPUs with
    /// the workers it forks and with the steps of calls that need one
    /// (`--overlap`, `--whole`); no CPU binding, since its workers use any
    /// of the node's CPUs; one agent that dies does not end the others.
    pub fn agent_arguments(nodes: usize) -> Vec<String> {
        vec![
            "-Q".into(),
            "--input=none".into(),
            "--job-name=pmp-agent".into(),
            "--overlap".into(),
            "--whole".into(),
            format!("--nodes={nodes}"),
            "--ntasks-per-node=1".into(),
            format!("--ntasks={nodes}"),
            "--kill-on-bad-exit=0".into(),
        ]
    }
}

impl Backend for SlurmBackend {
    fn agent_step(&self, agents: &super::AgentStep) -> Option<Result<Command, String>> {
        if !self.agents {
            return None;
        }
        let mut command = Command::new(&self.srun);
        command
            .args(Self::agent_arguments(agents.nodes.len()))
            .arg(&agents.environment.program)
            .envs(agents.variables());
        Some(Ok(command))
    }

    /// A call with srun options of its own gets a step of its own, where
    /// srun honours them; so does a call spanning nodes, whose ranks only
    /// srun starts across them, and an exclusive one.
    fn under_agent(&self, launch: &Launch) -> bool {
        self.agents
            && !launch.resources.needs_own_step()
            && matches!(launch.placement, Placement::Node(_))
    }

    fn command(
        &self,
        env: &WorkerEnvironment,
        worker: WorkerId,
        launch: &Launch,
    ) -> Result<Command, String> {
        let mut command = Command::new(&self.srun);
        command.args(self.arguments(launch)).arg(&env.program);
        if let Placement::Span(_) = launch.placement {
            // `salloc --ntasks-per-node` leaves it set for srun, which
            // warns in the user's output that an uneven node list cannot
            // honour it, and then ignores it anyway.
            command.env_remove("SLURM_NTASKS_PER_NODE");
        }
        // srun passes its environment to the step (--export=ALL), takes the
        // working directory as -D, and picks the step's GPUs itself.
        finish_command(&mut command, env, worker, launch, false, self.protection())?;
        Ok(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{Gpus, ResourceRequest};

    fn launch(resources: ResourceRequest) -> Launch {
        Launch {
            resources,
            placement: Placement::Node(crate::ids::NodeId(0)),
            gpus: Gpus::Counted(0),
        }
    }

    #[test]
    fn a_step_asks_for_ranks_threads_gpus_cwd_and_the_users_arguments() {
        let backend = SlurmBackend {
            srun: "srun".into(),
            agents: false,
            node_names: vec![],
            mpi: Some(MpiFlavor::OpenMpi),
        };
        let args = backend.arguments(&launch(ResourceRequest {
            cores: 2,
            threads_per_core: 3,
            gpus_per_core: 1,
            oversubscribe: true,
            cwd: Some("/scratch/run".into()),
            extra_args: vec!["--job-name=mine".into()].into(),
            ..Default::default()
        }));
        let joined = args.join(" ");
        assert!(joined.contains("-n 2 --nodes=1-2 --cpus-per-task=3 --gpus-per-task=1 --oversubscribe -D /scratch/run --mpi=pmix"), "{joined}");
        assert_eq!(args.last().unwrap(), "--job-name=mine");
    }

    #[test]
    fn a_step_asks_srun_for_memory_max_per_node_as_a_batch_job_asks_sbatch() {
        let backend = SlurmBackend {
            srun: "srun".into(),
            agents: true,
            node_names: vec!["node1".into(), "node2".into()],
            mpi: None,
        };
        let args = backend.arguments(&launch(ResourceRequest {
            cores: 2,
            memory_mb: std::num::NonZeroU32::new(512),
            ..ResourceRequest::default().over(2)
        }));
        assert!(args.contains(&"--mem=512M".to_string()), "{args:?}");
        let none = backend.arguments(&launch(ResourceRequest::default()));
        assert!(!none.iter().any(|a| a.starts_with("--mem")), "{none:?}");
    }

    fn span(shares: &[(&str, u32)]) -> Placement {
        Placement::Span(
            (0u32..)
                .zip(shares)
                .map(|(id, (name, ranks))| Share {
                    node: crate::ids::NodeId(id),
                    name: name.to_string(),
                    ranks: *ranks,
                    gpus: Gpus::Counted(0),
                })
                .collect(),
        )
    }

    fn under_agents() -> SlurmBackend {
        SlurmBackend {
            srun: "srun".into(),
            agents: true,
            node_names: vec!["node1".into(), "node2".into()],
            mpi: Some(MpiFlavor::Mpich),
        }
    }

    #[test]
    fn a_one_node_step_beside_the_agents_goes_to_the_node_it_was_counted_on() {
        let launch = Launch {
            resources: ResourceRequest {
                cores: 2,
                extra_args: vec!["--job-name=mine".into()].into(),
                ..Default::default()
            },
            placement: Placement::Node(crate::ids::NodeId(1)),
            gpus: Gpus::Counted(0),
        };
        let args = under_agents().arguments(&launch).join(" ");
        assert!(args.contains("--nodes=1 --nodelist=node2"), "{args}");
        assert!(!args.contains("--nodes=1-"), "{args}");
    }

    #[test]
    fn a_span_names_each_node_once_per_rank_in_rank_order() {
        let launch = Launch {
            resources: ResourceRequest {
                cores: 6,
                threads_per_core: 2,
                gpus_per_core: 1,
                ..Default::default()
            },
            placement: span(&[("node1", 4), ("node2", 2)]),
            gpus: Gpus::Counted(6),
        };
        let args = under_agents().arguments(&launch).join(" ");
        assert!(
            args.contains(
                "-n 6 --nodes=2 --distribution=arbitrary \
                 --nodelist=node1,node1,node1,node1,node2,node2 --cpus-per-task=2 --overlap \
                 --gpus-per-task=1"
            ),
            "{args}"
        );
        assert!(!args.contains("--nodes=1-"), "{args}");
        assert!(!under_agents().under_agent(&launch), "a step of its own");
    }

    #[test]
    fn num_nodes_spans_exactly_the_nodes_counted_and_exclusive_has_them_whole() {
        let two = ResourceRequest::of(2, 1, 0).over(2);
        let launch = Launch {
            resources: two.clone(),
            placement: span(&[("node1", 1), ("node2", 1)]),
            gpus: Gpus::Counted(0),
        };
        let args = under_agents().arguments(&launch).join(" ");
        assert!(
            args.contains("--exact --kill-on-bad-exit=1 -n 2 --nodes=2 --distribution=arbitrary --nodelist=node1,node2"),
            "{args}"
        );
        assert!(!under_agents().under_agent(&launch));
        // Under agents every step overlaps theirs, which srun does not
        // combine with --exclusive: the step has its nodes whole, and the
        // scheduler places nothing else there.
        let alone = Launch {
            resources: ResourceRequest {
                exclusive: true,
                ..Default::default()
            },
            placement: Placement::Node(crate::ids::NodeId(1)),
            gpus: Gpus::Counted(0),
        };
        let args = under_agents().arguments(&alone);
        assert!(args.contains(&"--whole".to_string()), "{args:?}");
        assert!(args.contains(&"--overlap".to_string()), "{args:?}");
        assert!(
            !args.iter().any(|a| a == "--exact" || a == "--exclusive"),
            "{args:?}"
        );
        assert!(!under_agents().under_agent(&alone), "a step of its own");
        // With a step per call srun places them, and honours its own words.
        let steps = SlurmBackend {
            agents: false,
            node_names: vec![],
            ..under_agents()
        };
        let args = steps.arguments(&super::tests::launch(ResourceRequest {
            exclusive: true,
            ..two
        }));
        let joined = args.join(" ");
        assert!(
            joined.contains("--exclusive --kill-on-bad-exit=1 -n 2 --nodes=2 --cpus-per-task=1"),
            "{joined}"
        );
        assert!(
            !args.iter().any(|a| a == "--exact" || a == "--whole"),
            "{joined}"
        );
    }

    #[test]
    fn a_spans_srun_forgets_the_allocations_tasks_per_node_that_it_would_warn_about() {
        let launch = Launch {
            resources: ResourceRequest {
                cores: 3,
                ..Default::default()
            },
            placement: span(&[("node2", 2), ("node1", 1)]),
            gpus: Gpus::Counted(0),
        };
        let env = WorkerEnvironment::for_tests();
        let command = under_agents().command(&env, WorkerId(0), &launch).unwrap();
        assert!(command
            .get_envs()
            .any(|(name, value)| name == "SLURM_NTASKS_PER_NODE" && value.is_none()));
        let one_node = under_agents()
            .command(
                &env,
                WorkerId(0),
                &super::tests::launch(ResourceRequest::default()),
            )
            .unwrap();
        assert!(one_node
            .get_envs()
            .all(|(name, _)| name != "SLURM_NTASKS_PER_NODE"));
    }

    #[test]
    fn under_agents_a_one_node_call_is_forked_and_any_step_overlaps_the_agents() {
        let plain = launch(ResourceRequest::default());
        assert!(under_agents().under_agent(&plain));
        let own = launch(ResourceRequest {
            extra_args: vec!["--exclusive".into()].into(),
            ..Default::default()
        });
        assert!(!under_agents().under_agent(&own));
        assert!(under_agents().arguments(&own).contains(&"--overlap".into()));
        let steps = SlurmBackend {
            agents: false,
            node_names: vec![],
            ..under_agents()
        };
        assert!(!steps.under_agent(&plain));
        assert!(!steps.arguments(&plain).contains(&"--overlap".into()));
    }

    #[test]
    fn a_single_rank_step_has_no_gpu_mpi_or_oversubscribe_flags() {
        let backend = SlurmBackend {
            srun: "srun".into(),
            agents: false,
            node_names: vec![],
            mpi: Some(MpiFlavor::Mpich),
        };
        let args = backend
            .arguments(&launch(ResourceRequest::default()))
            .join(" ");
        assert!(
            args.contains("-n 1 --nodes=1-1 --cpus-per-task=1"),
            "{args}"
        );
        for absent in ["--gpus-per-task", "--mpi", "--oversubscribe", "-D"] {
            assert!(!args.contains(absent), "{args}");
        }
    }

    #[test]
    fn a_step_without_gpus_asks_for_no_gres_so_it_neither_gets_nor_waits_for_the_jobs_gpus() {
        let backend = SlurmBackend {
            srun: "srun".into(),
            agents: false,
            node_names: vec![],
            mpi: None,
        };
        let args = backend.arguments(&launch(ResourceRequest::default()));
        assert_eq!(
            args.iter()
                .filter(|a| a.starts_with("--gres"))
                .collect::<Vec<_>>(),
            ["--gres=none"]
        );
        let gpu = backend.arguments(&launch(ResourceRequest {
            gpus_per_core: 2,
            ..Default::default()
        }));
        assert!(gpu.contains(&"--gpus-per-task=2".to_string()), "{gpu:?}");
        assert!(!gpu.iter().any(|a| a.starts_with("--gres")), "{gpu:?}");
    }

    #[test]
    fn no_gres_none_where_the_users_arguments_ask_for_gpus_themselves() {
        let backend = SlurmBackend {
            srun: "srun".into(),
            agents: false,
            node_names: vec![],
            mpi: None,
        };
        for own in [
            &["--gres=gpu:1"][..],
            &["--gpus-per-task=1"],
            &["--gpus", "1"],
            &["-G1"],
            &["-G", "1"],
            &["--tres-per-task=gres/gpu:1"],
            &["--cpus-per-gpu=2"],
        ] {
            let args = backend.arguments(&launch(ResourceRequest {
                extra_args: own.iter().map(|a| a.to_string()).collect(),
                ..Default::default()
            }));
            assert!(
                !args.contains(&"--gres=none".to_string()),
                "{own:?}: {args:?}"
            );
        }
        let unrelated = backend.arguments(&launch(ResourceRequest {
            extra_args: vec!["--job-name=gpu-run".into(), "--exclusive".into()].into(),
            ..Default::default()
        }));
        assert!(
            unrelated.contains(&"--gres=none".to_string()),
            "{unrelated:?}"
        );
    }

    #[test]
    fn srun_picks_the_devices_so_pmp_exports_none() {
        let backend = SlurmBackend {
            srun: "srun".into(),
            agents: false,
            node_names: vec![],
            mpi: None,
        };
        let launch = Launch {
            resources: ResourceRequest {
                gpus_per_core: 1,
                ..Default::default()
            },
            placement: Placement::Node(crate::ids::NodeId(0)),
            gpus: Gpus::Counted(1),
        };
        let env = WorkerEnvironment::for_tests();
        let command = backend.command(&env, WorkerId(0), &launch).unwrap();
        assert!(command
            .get_envs()
            .all(|(name, _)| name != "CUDA_VISIBLE_DEVICES"));
        assert_eq!(command.get_args().last().unwrap(), "/venv/bin/pmp-worker");
    }

    #[test]
    fn a_step_gets_the_key_in_a_private_file_never_in_its_environment() {
        let backend = SlurmBackend {
            srun: "srun".into(),
            agents: false,
            node_names: vec![],
            mpi: None,
        };
        let env = WorkerEnvironment::for_tests();
        let command = backend
            .command(&env, WorkerId(0), &launch(ResourceRequest::default()))
            .unwrap();
        let variables: std::collections::HashMap<_, _> = command
            .get_envs()
            .map(|(name, value)| (name.to_string_lossy().to_string(), value))
            .collect();
        assert!(!variables.contains_key("PMP_KEY"));
        let file = variables[super::super::key_file::VARIABLE].unwrap();
        assert_eq!(
            std::fs::read_to_string(file).unwrap(),
            env.key.to_hex(),
            "the file holds the key"
        );
    }
}
