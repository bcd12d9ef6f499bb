//! The Flux backend: each worker is one job in the Flux instance the client
//! runs in (`srun flux start`, or a Flux-managed cluster).
//!
//! A worker's job is submitted by flux-core's C commands, `flux job submit`
//! with the jobspec pmp writes (flux_jobspec.rs) and then `flux job attach`,
//! which is what `flux run` itself execs after building the same jobspec in
//! Python: attach streams the job's output and exits with the job's status;
//! a stop cancels the job. Only workers with a `flux run` option
//! pmp does not read (flux_options.rs) still start through `flux run`.
//!
//! Under node agents (`launcher="agent"`) one job runs an agent on every
//! node of the instance, and each call's worker is forked by its node's
//! agent, save the calls only a job of their own can run.

use super::flux_jobspec::{current_rlimits, jobspec, JobRequest};
use super::flux_options::{self, JobOptions};
use super::{finish_command, Backend, WorkerEnvironment};
use crate::core::Launch;
use crate::ids::WorkerId;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct FluxBackend {
    pub flux: PathBuf,
    /// flux-core's `flux-job` program, which `flux job ...` execs: called
    /// directly it spares two execs of the `flux` front command per worker.
    /// `None` where it cannot be found (workers then go through `flux run`).
    pub flux_job: Option<PathBuf>,
    /// Whether workers start under node agents (`launcher="agent"`).
    pub agents: bool,
}

/// Where each agent finds the names of the instance's nodes, in rank
/// order, to say which one is its own (worker/src/node.rs reads it).
pub const NODE_NAMES_VARIABLE: &str = "PMP_NODE_NAMES";

/// Where the submitting shell finds the jobspec: in its environment, not its
/// arguments, where a large one would not fit.
const JOBSPEC_VARIABLE: &str = "PMP_FLUX_JOBSPEC";

/// Linux takes no single variable over 128 KiB (MAX_ARG_STRLEN); a jobspec
/// near that (a huge environment) goes through `flux run` instead.
const LARGEST_JOBSPEC: usize = 120 * 1024;

/// `sh -c` with `$0` the `flux-job` program and `$@` the `flux job submit`
/// options. A stop is SIGTERM to the group and SIGKILL after a grace
/// (process.rs). While the job is being submitted the submit ignores it and
/// the shell cancels the job it gets back; once attached, attach forwards
/// SIGTERM to the job's tasks, and the shell cancels the job as well, since a
/// task that does not end on SIGTERM (a stopped or hung worker) would
/// otherwise keep running once SIGKILL has taken attach away. The shell
/// exits with attach's status: the job's, 128+signal for a killed task.
const SUBMIT_AND_ATTACH: &str = r#"pmp_stopping=
trap 'pmp_stopping=1' TERM INT HUP
id=$(trap '' TERM INT HUP; printf '%s' "$PMP_FLUX_JOBSPEC" | "$0" submit "$@") || exit
unset PMP_FLUX_JOBSPEC
if [ -n "$pmp_stopping" ]; then "$0" raise "$id"; exit 143; fi
trap 'pmp_stopping=1; "$0" raise "$id" 2>/dev/null' TERM INT HUP
"$0" attach "$id" &
attach=$!
while :; do
  wait "$attach"
  status=$?
  if [ "$status" -le 128 ] || ! kill -0 "$attach" 2>/dev/null; then exit "$status"; fi
done
"#;

impl FluxBackend {
    pub fn new(flux: PathBuf, agents: bool) -> FluxBackend {
        let flux_job = locate_flux_job(&flux);
        FluxBackend {
            flux,
            flux_job,
            agents,
        }
    }

    /// `flux run`'s arguments for the agents' job: one task on each of the
    /// instance's `nodes` nodes, task rank i on broker rank i (the job has
    /// every node, and Flux lays tasks out in rank order), which is how an
    /// agent knows its node. No CPU or GPU binding: its workers use any of
    /// the node's cores.
    ///
    /// Flux counts the job as taking one core on each node, and does not
    /// see the workers the agents fork: the scheduler's count of each
    /// node's cores (`Capacity`, from `flux resource R`) is what places
    /// calls, as it counts every worker. A call that runs as a job of its
    /// own beside the agents may so wait in Flux's queue for the core an
    /// agent holds, on a node the scheduler counts as having room.
    pub fn agent_arguments(nodes: usize) -> Vec<String> {
        vec![
            "run".into(),
            "--job-name=pmp-agent".into(),
            format!("--nodes={nodes}"),
            format!("--ntasks={nodes}"),
            "-o".into(),
            "cpu-affinity=off".into(),
            "-o".into(),
            "gpu-affinity=off".into(),
        ]
    }

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
        let (nodes, exclusive) = self.nodes(launch);
        if let Some(nodes) = nodes {
            args.push(format!("--nodes={nodes}"));
        }
        if exclusive {
            args.push("--exclusive".into());
        }
        args.extend(r.extra_args.iter().cloned());
        args
    }

    /// The job's node count (`-N`) and whether it asks Flux for them whole
    /// (`--exclusive`, which Flux takes only with a node count): `num_nodes`,
    /// else for an exclusive call the nodes it was placed on. Under agents
    /// the scheduler keeps an exclusive call's nodes free of other calls
    /// (`Capacity`) and the job does not ask Flux: the agents' job holds a
    /// core of every node, so Flux would never start it.
    fn nodes(&self, launch: &Launch) -> (Option<u32>, bool) {
        let r = &launch.resources;
        let placed = match &launch.placement {
            crate::capacity::Placement::Node(_) => 1,
            crate::capacity::Placement::Span(shares) => {
                u32::try_from(shares.len()).unwrap_or(u32::MAX)
            }
        };
        let nodes = r.node_count().or(r.exclusive.then_some(placed));
        (nodes, r.exclusive && !self.agents)
    }

    /// The worker through `flux run` (Python), for options only it reads.
    fn run_command(
        &self,
        env: &WorkerEnvironment,
        worker: WorkerId,
        launch: &Launch,
    ) -> Result<Command, String> {
        let mut command = Command::new(&self.flux);
        command.args(self.arguments(launch)).arg(&env.program);
        // `flux run` copies its environment into the job and runs it in its
        // own working directory; it picks the GPUs (-g) itself.
        finish_command(&mut command, env, worker, launch, true, self.protection())?;
        Ok(command)
    }

    /// The worker through `flux job submit` + `flux job attach`; `None`
    /// where its jobspec cannot be handed to the shell (then `flux run`).
    fn submit_command(
        &self,
        env: &WorkerEnvironment,
        worker: WorkerId,
        launch: &Launch,
        options: &JobOptions,
    ) -> Result<Option<Command>, String> {
        let Some(flux_job) = &self.flux_job else {
            return Ok(None);
        };
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(SUBMIT_AND_ATTACH)
            .arg(flux_job)
            .args(options.urgency.map(|u| format!("--urgency={u}")));
        // The shell runs in the worker's cwd too: a cwd removed since submit
        // fails the start here, as with `flux run`.
        finish_command(&mut command, env, worker, launch, true, self.protection())?;
        let cwd = match &launch.resources.cwd {
            Some(cwd) => cwd.clone(),
            None => match std::env::current_dir()
                .map_err(|e| format!("the scheduler's working directory is unreadable: {e}"))?
                .to_str()
            {
                Some(cwd) => cwd.to_string(),
                None => return Ok(None),
            },
        };
        let (Some(program), Some(environment)) = (env.program.to_str(), job_environment(&command))
        else {
            return Ok(None);
        };
        let (nodes, exclusive) = self.nodes(launch);
        let spec = jobspec(&JobRequest {
            nodes,
            exclusive,
            resources: &launch.resources,
            command: vec![program.to_string()],
            cwd,
            environment,
            options,
            rlimits: current_rlimits(),
        })
        .to_string();
        if spec.len() > LARGEST_JOBSPEC {
            return Ok(None);
        }
        command.env(JOBSPEC_VARIABLE, spec);
        Ok(Some(command))
    }
}

/// Where the `flux` front command finds its `flux-job`: FLUX_EXEC_PATH (set
/// inside an instance), the install's libexec beside `bin/flux`, or what
/// `flux env` says the exec path is.
fn locate_flux_job(flux: &Path) -> Option<PathBuf> {
    let in_dir = |dir: &Path| Some(dir.join("flux-job")).filter(|p| p.is_file());
    let exec_path = |paths: &std::ffi::OsStr| std::env::split_paths(paths).find_map(|d| in_dir(&d));
    if let Some(found) = std::env::var_os("FLUX_EXEC_PATH").and_then(|p| exec_path(&p)) {
        return Some(found);
    }
    let prefix = flux.canonicalize().ok();
    let prefix = prefix
        .as_deref()
        .and_then(Path::parent)
        .and_then(Path::parent);
    if let Some(found) = prefix.and_then(|p| in_dir(&p.join("libexec/flux/cmd"))) {
        return Some(found);
    }
    let env = Command::new(flux).arg("env").output().ok()?;
    let env = String::from_utf8_lossy(&env.stdout);
    env.lines()
        .find_map(|line| line.strip_prefix("export FLUX_EXEC_PATH="))
        .and_then(|paths| exec_path(paths.trim_matches('"').as_ref()))
}

/// The environment `flux run` would copy into the job: the scheduler's own
/// with the worker's variables set on `command`. `None` where a variable is
/// not UTF-8 (a jobspec is JSON); `flux run` is left to deal with it.
fn job_environment(command: &Command) -> Option<Map<String, Value>> {
    let mut environment = Map::new();
    for (name, value) in std::env::vars_os() {
        environment.insert(name.into_string().ok()?, value.into_string().ok()?.into());
    }
    for (name, value) in command.get_envs() {
        let name = name.to_str()?.to_string();
        match value {
            Some(value) => environment.insert(name, value.to_str()?.into()),
            None => environment.remove(&name),
        };
    }
    environment.remove(JOBSPEC_VARIABLE);
    Some(environment)
}

impl Backend for FluxBackend {
    /// `flux run` stays attached to the job for its lifetime, as a
    /// worker's `flux job attach` does: the job's output is the
    /// scheduler's, and the agents end when the scheduler stops them.
    fn agent_step(&self, agents: &super::AgentStep) -> Option<Result<Command, String>> {
        if !self.agents {
            return None;
        }
        let mut command = Command::new(&self.flux);
        command
            .args(Self::agent_arguments(agents.nodes.len()))
            .arg(&agents.environment.program)
            .envs(agents.variables())
            .env(NODE_NAMES_VARIABLE, agents.nodes.join(","));
        Some(Ok(command))
    }

    /// A call with `flux run` options of its own is a job of its own, where
    /// Flux honours them; so is a call spanning nodes, whose ranks only Flux
    /// starts across them, an exclusive one, and a call with GPUs, which Flux picks (the
    /// agents' job holds none).
    fn under_agent(&self, launch: &Launch) -> bool {
        self.agents
            && !launch.resources.needs_own_step()
            && launch.resources.gpus_per_core == 0
            && matches!(launch.placement, crate::capacity::Placement::Node(_))
    }

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
        if let Some(options) = flux_options::parse(&launch.resources.extra_args) {
            if let Some(command) = self.submit_command(env, worker, launch, &options)? {
                return Ok(command);
            }
        }
        self.run_command(env, worker, launch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{Gpus, ResourceRequest};

    fn backend() -> FluxBackend {
        FluxBackend {
            flux: "/usr/local/bin/flux".into(),
            flux_job: Some("/usr/local/libexec/flux/cmd/flux-job".into()),
            agents: false,
        }
    }

    fn launch(resources: ResourceRequest) -> Launch {
        Launch {
            resources,
            placement: crate::capacity::Placement::Node(crate::ids::NodeId(0)),
            gpus: Gpus::Counted(0),
        }
    }

    fn variable(command: &Command, name: &str) -> Option<String> {
        command
            .get_envs()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
    }

    fn submitted_jobspec(command: &Command) -> Value {
        serde_json::from_str(&variable(command, JOBSPEC_VARIABLE).expect("a jobspec")).unwrap()
    }

    #[test]
    fn num_nodes_and_exclusive_reach_the_jobspec_and_flux_run() {
        let env = WorkerEnvironment::for_tests();
        let spread = launch(ResourceRequest {
            exclusive: true,
            ..ResourceRequest::of(2, 1, 0).over(2)
        });
        let spec = submitted_jobspec(&backend().command(&env, WorkerId(1), &spread).unwrap());
        assert_eq!(spec["resources"][0]["type"], "node");
        assert_eq!(spec["resources"][0]["count"], 2);
        assert_eq!(spec["resources"][0]["exclusive"], true);
        let args = backend().arguments(&spread).join(" ");
        assert!(args.ends_with("-c 1 --nodes=2 --exclusive"), "{args}");
        // Exclusive alone: the node it was placed on, whole.
        let alone = launch(ResourceRequest {
            exclusive: true,
            ..Default::default()
        });
        let spec = submitted_jobspec(&backend().command(&env, WorkerId(2), &alone).unwrap());
        assert_eq!(spec["resources"][0]["count"], 1);
        assert_eq!(spec["resources"][0]["exclusive"], true);
        // Under agents the scheduler keeps the nodes to it; Flux is not
        // asked, since the agents' job holds a core on each.
        let agents = FluxBackend {
            agents: true,
            ..backend()
        };
        assert!(!agents.under_agent(&alone), "a job of its own");
        let spec = submitted_jobspec(&agents.command(&env, WorkerId(2), &alone).unwrap());
        assert_eq!(spec["resources"][0]["type"], "node");
        assert_eq!(spec["resources"][0].get("exclusive"), None);
    }

    #[test]
    fn a_worker_job_is_submitted_and_attached_by_the_c_commands() {
        let launch = launch(ResourceRequest {
            cores: 2,
            threads_per_core: 4,
            gpus_per_core: 1,
            ..Default::default()
        });
        let env = WorkerEnvironment::for_tests();
        let command = backend().command(&env, WorkerId(3), &launch).unwrap();
        assert_eq!(command.get_program(), "/bin/sh");
        let args: Vec<_> = command.get_args().collect();
        assert_eq!(
            args,
            [
                "-c",
                SUBMIT_AND_ATTACH,
                "/usr/local/libexec/flux/cmd/flux-job"
            ]
        );
        let spec = submitted_jobspec(&command);
        assert_eq!(
            spec["resources"][0]["with"],
            serde_json::json!([{"type": "core", "count": 4}, {"type": "gpu", "count": 1}])
        );
        assert_eq!(spec["resources"][0]["count"], 2);
        assert_eq!(spec["tasks"][0]["command"][0], "/venv/bin/pmp-worker");
        let system = &spec["attributes"]["system"];
        assert_eq!(system["job"]["name"], "pmp-worker");
        let job_env = &system["environment"];
        assert_eq!(job_env["PMP_WORKER_ID"], "3");
        assert_eq!(job_env["PMP_RANKS"], "2");
        assert_eq!(job_env["OMP_NUM_THREADS"], "4");
        assert!(job_env.get("PMP_KEY").is_none(), "the key is in a file");
        assert!(job_env[super::super::key_file::VARIABLE].is_string());
        // The scheduler's own environment goes along, as with `flux run`.
        let path = std::env::var("PATH").unwrap();
        assert_eq!(job_env["PATH"], path.as_str());
        assert!(job_env.get(JOBSPEC_VARIABLE).is_none());
        // Flux picks the devices: pmp exports none.
        assert!(job_env.get("CUDA_VISIBLE_DEVICES").is_none());
        assert_eq!(
            system["cwd"],
            std::env::current_dir().unwrap().to_str().unwrap()
        );
    }

    #[test]
    fn the_cwd_asked_for_is_the_jobs_and_a_missing_one_is_refused() {
        let dir = std::env::temp_dir();
        let here = launch(ResourceRequest {
            cwd: Some(dir.to_str().unwrap().into()),
            ..Default::default()
        });
        let env = WorkerEnvironment::for_tests();
        let command = backend().command(&env, WorkerId(0), &here).unwrap();
        assert_eq!(
            submitted_jobspec(&command)["attributes"]["system"]["cwd"],
            dir.to_str().unwrap()
        );
        assert_eq!(command.get_current_dir(), Some(dir.as_path()));
        let gone = launch(ResourceRequest {
            cwd: Some("/nonexistent/pmp-test".into()),
            ..Default::default()
        });
        assert!(backend()
            .command(&env, WorkerId(0), &gone)
            .unwrap_err()
            .contains("not a directory"));
    }

    #[test]
    fn urgency_is_a_submit_option_and_shell_options_go_in_the_jobspec() {
        let launch = launch(ResourceRequest {
            extra_args: vec!["--urgency=3".into(), "-o".into(), "pmi=simple".into()].into(),
            ..Default::default()
        });
        let env = WorkerEnvironment::for_tests();
        let command = backend().command(&env, WorkerId(0), &launch).unwrap();
        assert_eq!(
            command.get_args().last().unwrap(),
            "--urgency=3",
            "{command:?}"
        );
        let spec = submitted_jobspec(&command);
        assert_eq!(
            spec["attributes"]["system"]["shell"]["options"]["pmi"],
            "simple"
        );
    }

    #[test]
    fn an_option_only_flux_run_reads_goes_through_flux_run() {
        let launch = launch(ResourceRequest {
            cores: 2,
            threads_per_core: 4,
            gpus_per_core: 1,
            extra_args: vec!["--exclusive".into()].into(),
            ..Default::default()
        });
        assert_eq!(
            backend().arguments(&launch),
            vec![
                "run",
                "--job-name=pmp-worker",
                "-n",
                "2",
                "-c",
                "4",
                "-g",
                "1",
                "--exclusive"
            ]
        );
        let env = WorkerEnvironment::for_tests();
        let command = backend().command(&env, WorkerId(0), &launch).unwrap();
        assert_eq!(command.get_program(), "/usr/local/bin/flux");
        assert_eq!(command.get_args().last().unwrap(), "/venv/bin/pmp-worker");
        assert!(variable(&command, JOBSPEC_VARIABLE).is_none());
        assert_eq!(variable(&command, "PMP_RANKS").as_deref(), Some("2"));
    }

    #[test]
    fn without_flux_job_workers_go_through_flux_run() {
        let backend = FluxBackend {
            flux_job: None,
            ..backend()
        };
        let env = WorkerEnvironment::for_tests();
        let command = backend
            .command(&env, WorkerId(0), &launch(ResourceRequest::default()))
            .unwrap();
        assert_eq!(command.get_program(), "/usr/local/bin/flux");
        assert_eq!(command.get_args().next().unwrap(), "run");
    }

    #[test]
    fn flux_job_is_found_beside_the_flux_command() {
        let root = std::env::temp_dir().join(format!("pmp-flux-layout-{}", std::process::id()));
        let (bin, cmd) = (root.join("bin"), root.join("libexec/flux/cmd"));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&cmd).unwrap();
        std::fs::write(bin.join("flux"), "").unwrap();
        std::fs::write(cmd.join("flux-job"), "").unwrap();
        let found = locate_flux_job(&bin.join("flux"));
        let expected = cmd.join("flux-job").canonicalize().unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        // FLUX_EXEC_PATH, where a test runs inside an instance, comes first.
        if std::env::var_os("FLUX_EXEC_PATH").is_none() {
            assert_eq!(found, Some(expected));
        }
    }

    #[test]
    fn under_agents_a_one_node_call_without_options_or_gpus_is_forked() {
        let agents = FluxBackend {
            agents: true,
            ..backend()
        };
        let plain = launch(ResourceRequest::default());
        assert!(agents.under_agent(&plain));
        assert!(!backend().under_agent(&plain), "no agents: a job per call");
        let own = launch(ResourceRequest {
            extra_args: vec!["--exclusive".into()].into(),
            ..Default::default()
        });
        assert!(!agents.under_agent(&own), "its flux run options");
        let gpus = launch(ResourceRequest {
            gpus_per_core: 1,
            ..Default::default()
        });
        assert!(!agents.under_agent(&gpus), "Flux picks its GPUs");
        let env = WorkerEnvironment::for_tests();
        let nodes = ["vm#0".to_string(), "vm#1".to_string()];
        let step = super::super::AgentStep {
            environment: &env,
            address: "tcp://127.0.0.1:1",
            key_file: Path::new("/tmp/key"),
            nodes: &nodes,
        };
        assert!(backend().agent_step(&step).is_none());
        let command = agents.agent_step(&step).unwrap().unwrap();
        let args: Vec<_> = command.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "run",
                "--job-name=pmp-agent",
                "--nodes=2",
                "--ntasks=2",
                "-o",
                "cpu-affinity=off",
                "-o",
                "gpu-affinity=off",
                "/venv/bin/pmp-worker"
            ]
        );
        assert_eq!(
            variable(&command, NODE_NAMES_VARIABLE).as_deref(),
            Some("vm#0,vm#1")
        );
        assert_eq!(variable(&command, "PMP_AGENT").as_deref(), Some("1"));
    }

    #[test]
    fn oversubscription_is_refused_with_a_reason() {
        let launch = launch(ResourceRequest {
            oversubscribe: true,
            ..Default::default()
        });
        let env = WorkerEnvironment::for_tests();
        assert!(backend()
            .command(&env, WorkerId(0), &launch)
            .unwrap_err()
            .contains("oversubscribe"));
    }
}
