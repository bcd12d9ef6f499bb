//! The batch jobs of elastic allocations (`pmp.Allocation`, issue 25):
//! each is `nodes` whole nodes for `time_limit`, whose script runs one node
//! agent per node, as pilot jobs do: under Slurm an sbatch script (the
//! agent itself on one node; one srun step across several), under Flux a
//! `flux batch` script whose `flux run` starts one agent on each node of
//! the batch job's own instance. The agents join the executor as they
//! connect and say which allocation they belong to (`VARIABLE`, set in the
//! job's environment by the submission): the scheduler learns a job's id
//! only when sbatch or flux batch answers, which may come after its agents
//! connected. The key reaches the agents as under pilots: the path of a
//! private file in the job's environment, never the key itself.
//!
//! What the user writes is checked here, once: a Slurm time string, a Flux
//! duration or seconds for `time_limit`, counts of at least one, a drain
//! shorter than the time limit.

use super::pilot_nodes::NodeShape;
use crate::core::allocations::AllocationSettings;
use crate::jobs::request::shell_quote;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The variable that tells an agent its allocation's number.
pub const VARIABLE: &str = "PMP_AGENT_ALLOCATION";

/// What a Flux allocation's script tells its agents of where they run:
/// the ranks of the enclosing instance that its job holds (an id set) and
/// that instance's hosts by rank (a host list). An agent names its node
/// from them as the flux backend names an instance's nodes: its host, or
/// `<host>#<rank>` where ranks share a host (`flux start -s 2`), so that
/// two allocations on one host's brokers are never taken for one node.
pub const RANKS_VARIABLE: &str = "PMP_AGENT_RANKS";
pub const HOSTS_VARIABLE: &str = "PMP_AGENT_HOSTS";

/// What the user asked for, checked (`check`), before the partition's
/// node shape is known.
#[derive(Clone, Debug, PartialEq)]
pub struct AllocationRequest {
    pub nodes: u32,
    pub time_limit: Duration,
    pub max_allocations: u32,
    pub min_allocations: u32,
    pub backlog: u32,
    pub idle_timeout: Duration,
    /// None: the default, `default_drain(time_limit)`.
    pub drain: Option<Duration>,
    pub partition: Option<String>,
    /// More sbatch options (account, qos, constraint...), last: they win.
    pub extra_args: Vec<String>,
}

/// The drain when none is given: a tenth of the time limit, between 30 s
/// and 5 minutes: long enough for a call without `run_time_max` started
/// just before it to finish most of the time, short enough to leave most
/// of an allocation to work.
pub fn default_drain(time_limit: Duration) -> Duration {
    (time_limit / 10).clamp(Duration::from_secs(30), Duration::from_secs(300))
}

impl AllocationRequest {
    /// Why these settings cannot work, in the user's key names.
    pub fn check(&self) -> Result<(), String> {
        for (key, value) in [
            ("nodes", self.nodes),
            ("max_allocations", self.max_allocations),
            ("backlog", self.backlog),
        ] {
            if value < 1 {
                return Err(format!("Allocation({key}={value}): it must be at least 1"));
            }
        }
        if self.min_allocations > self.max_allocations {
            return Err(format!(
                "Allocation(min_allocations={}) is more than max_allocations={}: keep \
                 min_allocations <= max_allocations",
                self.min_allocations, self.max_allocations
            ));
        }
        if self.time_limit < Duration::from_secs(60) {
            return Err(format!(
                "Allocation(time_limit={} s): Slurm counts time limits in minutes, so give \
                 at least 1 minute (\"1:00\", \"1m\" or 60)",
                self.time_limit.as_secs()
            ));
        }
        if self.drain() >= self.time_limit {
            return Err(format!(
                "Allocation(drain={} s) is not shorter than time_limit={} s: an allocation \
                 would take no call without run_time_max at all; give a shorter drain",
                self.drain().as_secs(),
                self.time_limit.as_secs()
            ));
        }
        if let Some(c) = self
            .extra_args
            .iter()
            .chain(&self.partition)
            .find_map(|a| crate::resources::control_character(a))
        {
            return Err(format!(
                "Allocation's partition and extra_args reach sbatch's or flux batch's command \
                 line: they may hold no control character, found {c:?}"
            ));
        }
        Ok(())
    }

    pub fn drain(&self) -> Duration {
        self.drain.unwrap_or_else(|| default_drain(self.time_limit))
    }

    /// The policy's settings, once the partition's node shape is known.
    pub fn settings(&self, shape: NodeShape) -> AllocationSettings {
        AllocationSettings {
            nodes: self.nodes,
            cpus: shape.cpus.saturating_mul(self.nodes),
            time_limit: self.time_limit,
            max_allocations: self.max_allocations,
            min_allocations: self.min_allocations,
            backlog: self.backlog,
            idle_timeout: self.idle_timeout,
            drain: self.drain(),
        }
    }
}

/// The job system that runs an executor's allocation jobs, by its command.
#[derive(Clone, Debug)]
pub enum AllocationSystem {
    /// sbatch, with srun beside it (else on PATH) for several nodes.
    Slurm { sbatch: PathBuf },
    /// flux, reaching the instance that hosts the allocations.
    Flux { flux: PathBuf },
}

/// An executor's allocation jobs, as they are submitted.
#[derive(Clone, Debug)]
pub struct AllocationJobs {
    pub system: AllocationSystem,
    /// One name for all of the executor's jobs, so that they can be found
    /// and cancelled together.
    pub job_name: String,
    pub request: AllocationRequest,
    /// The largest node, as sinfo or flux resource R said it: the GPUs to
    /// ask Slurm for, the CPUs an allocation adds.
    pub shape: NodeShape,
}

impl AllocationJobs {
    /// The batch job's options: whole nodes (`--exclusive`, with their
    /// GPUs), one task a node, the time limit; the user's options last, so
    /// they win.
    pub fn arguments(&self) -> Vec<String> {
        match &self.system {
            AllocationSystem::Slurm { .. } => self.sbatch_arguments(),
            AllocationSystem::Flux { .. } => self.flux_batch_arguments(),
        }
    }

    fn sbatch_arguments(&self) -> Vec<String> {
        let request = &self.request;
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={}", self.job_name),
            format!("--nodes={}", request.nodes),
            "--ntasks-per-node=1".to_string(),
            "--exclusive".to_string(),
            format!("--time={}", slurm_time(request.time_limit)),
            // What the agents print goes back with their workers' calls or
            // to the client's stderr; the job's own file would say nothing more.
            "--output=/dev/null".to_string(),
        ];
        if self.shape.gpus > 0 {
            args.push(format!("--gres=gpu:{}", self.shape.gpus));
        }
        if let Some(partition) = &request.partition {
            args.push(format!("--partition={partition}"));
        }
        args.extend(request.extra_args.iter().cloned());
        args
    }

    /// flux batch's: an exclusive node holds its GPUs too; the partition
    /// is Flux's queue.
    fn flux_batch_arguments(&self) -> Vec<String> {
        let request = &self.request;
        let mut args = vec![
            format!("--job-name={}", self.job_name),
            format!("--nodes={}", request.nodes),
            "--exclusive".to_string(),
            format!("--time-limit={}", flux_time(request.time_limit)),
            "--output=/dev/null".to_string(),
        ];
        if let Some(queue) = &request.partition {
            args.push(format!("--queue={queue}"));
        }
        args.extend(request.extra_args.iter().cloned());
        args
    }

    /// The batch script that starts the agent `program` on every node.
    pub fn script(&self, program: &Path) -> String {
        match &self.system {
            AllocationSystem::Slurm { sbatch } => {
                let srun = sbatch.with_file_name("srun");
                let srun = if srun.is_file() { srun } else { "srun".into() };
                self.sbatch_script(&srun, program)
            }
            AllocationSystem::Flux { flux } => self.flux_batch_script(flux, program),
        }
    }

    /// The agent in place of the shell on one node; on several, one srun
    /// step of an agent per node (the batch step runs on the first node only).
    fn sbatch_script(&self, srun: &Path, program: &Path) -> String {
        let program = shell_quote(&program.to_string_lossy());
        if self.request.nodes == 1 {
            return format!("#!/bin/sh\nexec {program}\n");
        }
        let args: Vec<String> =
            super::slurm::SlurmBackend::agent_arguments(self.request.nodes as usize)
                .iter()
                .map(|a| shell_quote(a))
                .collect();
        format!(
            "#!/bin/sh\nexec {} {} {program}\n",
            shell_quote(&srun.to_string_lossy()),
            args.join(" ")
        )
    }

    /// The script runs on the first node of the batch job's instance: it
    /// asks the enclosing instance (`--parent`) which of its ranks the job
    /// holds and its hosts (`RANKS_VARIABLE`, `HOSTS_VARIABLE`), then one
    /// `flux run` starts an agent on each node, unbound (its workers use
    /// any core of the node), as the flux backend's agents' job does.
    fn flux_batch_script(&self, flux: &Path, program: &Path) -> String {
        let flux = shell_quote(&flux.to_string_lossy());
        let args: Vec<String> =
            super::flux::FluxBackend::agent_arguments(self.request.nodes as usize)
                .iter()
                .map(|a| shell_quote(a))
                .collect();
        format!(
            "#!/bin/sh\n\
             {RANKS_VARIABLE}=$({flux} --parent jobs --no-header --format='{{ranks}}' \
             \"$({flux} getattr jobid)\" 2>/dev/null)\n\
             {HOSTS_VARIABLE}=$({flux} --parent getattr hostlist 2>/dev/null)\n\
             export {RANKS_VARIABLE} {HOSTS_VARIABLE}\n\
             exec {flux} {} {}\n",
            args.join(" "),
            shell_quote(&program.to_string_lossy()),
        )
    }
}

/// `duration` as a Flux Standard Duration in whole seconds (`120s`).
pub fn flux_time(duration: Duration) -> String {
    format!("{}s", duration.as_secs())
}

/// The name of the node of a Flux allocation's agent of task rank
/// `task_rank`, from what its job's script said (`RANKS_VARIABLE`: the id
/// set of the enclosing instance's ranks the job holds, one agent each in
/// rank order; `HOSTS_VARIABLE`: that instance's host list): its host, or
/// `<host>#<rank>` where ranks share it. None where they do not say.
pub fn flux_allocation_node_name(ranks: &str, hosts: &str, task_rank: usize) -> Option<String> {
    let ranks = super::allocation_nodes::idset(ranks.trim()).ok()?;
    let hosts = super::hostlist::expand(hosts.trim()).ok()?;
    let rank = *ranks.get(task_rank)?;
    let host = hosts.get(rank as usize)?;
    if hosts.iter().filter(|h| *h == host).count() > 1 {
        Some(format!("{host}#{rank}"))
    } else {
        Some(host.clone())
    }
}

/// A Flux Standard Duration's value: None where `text` has no unit (a
/// Slurm time, then), Some(None) where its number is not one.
fn flux_duration(text: &str) -> Option<Option<Duration>> {
    let unit = match text.chars().last()? {
        's' => 1.0,
        'm' => 60.0,
        'h' => 3600.0,
        'd' => 86_400.0,
        _ => return None,
    };
    let number = &text[..text.len() - 1];
    let seconds = number
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'.')
        .then(|| number.parse::<f64>().ok())
        .flatten();
    Some(seconds.and_then(|s| Duration::try_from_secs_f64(s * unit).ok()))
}

/// `duration` as Slurm's `days-hours:minutes:seconds`.
pub fn slurm_time(duration: Duration) -> String {
    let s = duration.as_secs();
    format!(
        "{}-{:02}:{:02}:{:02}",
        s / 86_400,
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60
    )
}

/// A time limit as the user writes it: a Slurm time string (`minutes`,
/// `minutes:seconds`, `hours:minutes:seconds`, `days-hours`,
/// `days-hours:minutes`, `days-hours:minutes:seconds`) or a Flux Standard
/// Duration (a number and its unit: `90s`, `2m`, `1.5h`, `1d`), as a
/// duration; Err in the user's words.
pub fn parse_time_limit(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "time_limit={text:?} is not a Slurm time or a Flux duration: give seconds, or \
             \"minutes\", \"minutes:seconds\", \"hours:minutes:seconds\", \"days-hours\", \
             \"days-hours:minutes\", \"days-hours:minutes:seconds\", or a number with s, m, \
             h or d (\"90s\", \"2m\", \"1.5h\")"
        )
    };
    if let Some(duration) = flux_duration(text.trim()) {
        return duration.ok_or_else(bad);
    }
    let number = |part: &str| -> Result<u64, String> {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse::<u64>().map_err(|_| bad())
    };
    let text_trimmed = text.trim();
    let (days, rest) = match text_trimmed.split_once('-') {
        Some((days, rest)) => (Some(number(days)?), rest),
        None => (None, text_trimmed),
    };
    let parts: Vec<u64> = rest.split(':').map(number).collect::<Result<_, _>>()?;
    let seconds = match (days, parts.as_slice()) {
        (None, [m]) => m * 60,
        (None, [m, s]) => m * 60 + s,
        (None, [h, m, s]) => h * 3600 + m * 60 + s,
        (Some(d), [h]) => d * 86_400 + h * 3600,
        (Some(d), [h, m]) => d * 86_400 + h * 3600 + m * 60,
        (Some(d), [h, m, s]) => d * 86_400 + h * 3600 + m * 60 + s,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> AllocationRequest {
        AllocationRequest {
            nodes: 1,
            time_limit: Duration::from_secs(3600),
            max_allocations: 2,
            min_allocations: 0,
            backlog: 1,
            idle_timeout: Duration::from_secs(300),
            drain: None,
            partition: Some("debug".into()),
            extra_args: vec!["--account=chem".into()],
        }
    }

    #[test]
    fn slurm_times_read_as_sbatch_reads_them_and_flux_durations_as_flux_does() {
        let secs = |t: &str| parse_time_limit(t).map(|d| d.as_secs());
        assert_eq!(secs("30"), Ok(1800));
        assert_eq!(secs("30:00"), Ok(1800));
        assert_eq!(secs("1:00:00"), Ok(3600));
        assert_eq!(secs("2-0"), Ok(172_800));
        assert_eq!(secs("1-2:3"), Ok(93_780));
        assert_eq!(secs("1-00:00:05"), Ok(86_405));
        assert_eq!(secs("2m"), Ok(120));
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("1.5h"), Ok(5400));
        assert_eq!(secs("1d"), Ok(86_400));
        for bad in ["", "h", "1:2:3:4", "-5", "1-", "a:b", "1x", "-2m", "1:0m"] {
            let why = parse_time_limit(bad).unwrap_err();
            assert!(why.contains("is not a Slurm time"), "{bad}: {why}");
        }
        assert_eq!(slurm_time(Duration::from_secs(93_784)), "1-02:03:04");
        assert_eq!(flux_time(Duration::from_secs(7200)), "7200s");
    }

    #[test]
    fn a_job_asks_for_whole_nodes_its_time_and_the_users_options_last() {
        let jobs = AllocationJobs {
            system: AllocationSystem::Slurm {
                sbatch: "/nowhere/sbatch".into(),
            },
            job_name: "pmp-alloc-ab".into(),
            request: request(),
            shape: NodeShape { cpus: 4, gpus: 2 },
        };
        assert_eq!(
            jobs.arguments(),
            [
                "--parsable",
                "--job-name=pmp-alloc-ab",
                "--nodes=1",
                "--ntasks-per-node=1",
                "--exclusive",
                "--time=0-01:00:00",
                "--output=/dev/null",
                "--gres=gpu:2",
                "--partition=debug",
                "--account=chem",
            ]
        );
        let one = jobs.script(Path::new("/venv/bin/pmp-worker"));
        assert_eq!(one, "#!/bin/sh\nexec /venv/bin/pmp-worker\n");
        let two = AllocationJobs {
            request: AllocationRequest {
                nodes: 2,
                ..request()
            },
            ..jobs
        };
        // No srun beside this sbatch: the one on PATH.
        let script = two.script(Path::new("/venv/bin/pmp-worker"));
        assert!(script.starts_with("#!/bin/sh\nexec srun "), "{script}");
        assert!(script.contains("--nodes=2"), "{script}");
        assert!(script.ends_with(" /venv/bin/pmp-worker\n"), "{script}");
    }

    #[test]
    fn a_flux_job_asks_for_whole_nodes_in_the_queue_its_time_in_seconds_and_options_last() {
        let jobs = AllocationJobs {
            system: AllocationSystem::Flux {
                flux: "/usr/local/bin/flux".into(),
            },
            job_name: "pmp-alloc-ab".into(),
            request: AllocationRequest {
                nodes: 2,
                time_limit: Duration::from_secs(120),
                extra_args: vec!["--setattr=system.bank=chem".into()],
                ..request()
            },
            shape: NodeShape { cpus: 4, gpus: 2 },
        };
        assert_eq!(
            jobs.arguments(),
            [
                "--job-name=pmp-alloc-ab",
                "--nodes=2",
                "--exclusive",
                "--time-limit=120s",
                "--output=/dev/null",
                "--queue=debug",
                "--setattr=system.bank=chem",
            ]
        );
        let script = jobs.script(Path::new("/venv/bin/pmp-worker"));
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(
            lines,
            [
                "#!/bin/sh",
                "PMP_AGENT_RANKS=$(/usr/local/bin/flux --parent jobs --no-header \
                 --format='{ranks}' \"$(/usr/local/bin/flux getattr jobid)\" 2>/dev/null)",
                "PMP_AGENT_HOSTS=$(/usr/local/bin/flux --parent getattr hostlist 2>/dev/null)",
                "export PMP_AGENT_RANKS PMP_AGENT_HOSTS",
                "exec /usr/local/bin/flux run --job-name=pmp-agent --nodes=2 --ntasks=2 -o \
                 cpu-affinity=off -o gpu-affinity=off /venv/bin/pmp-worker",
            ]
        );
        assert!(
            !script.contains("PMP_KEY"),
            "the key never reaches a script"
        );
    }

    #[test]
    fn a_flux_agent_names_its_node_by_its_rank_where_ranks_share_a_host() {
        // `flux start -s 2`: both ranks on host vm; a job on rank 1.
        assert_eq!(
            flux_allocation_node_name("1", "vm,vm", 0).as_deref(),
            Some("vm#1")
        );
        // A cluster: one rank a host, the second agent of a job on 3-4.
        assert_eq!(
            flux_allocation_node_name("[3-4]\n", "node[0-7]", 1).as_deref(),
            Some("node4")
        );
        assert_eq!(flux_allocation_node_name("3", "node[0-7]", 1), None);
        assert_eq!(flux_allocation_node_name("", "node[0-7]", 0), None);
        assert_eq!(flux_allocation_node_name("9", "node[0-7]", 0), None);
    }

    #[test]
    fn settings_that_cannot_work_are_refused_in_the_users_words() {
        let refused = |r: AllocationRequest| r.check().unwrap_err();
        assert!(refused(AllocationRequest {
            max_allocations: 0,
            ..request()
        })
        .contains("max_allocations=0"));
        assert!(refused(AllocationRequest {
            min_allocations: 3,
            ..request()
        })
        .contains("min_allocations <= max_allocations"));
        assert!(refused(AllocationRequest {
            time_limit: Duration::from_secs(30),
            ..request()
        })
        .contains("at least 1 minute"));
        assert!(refused(AllocationRequest {
            drain: Some(Duration::from_secs(3600)),
            ..request()
        })
        .contains("shorter drain"));
        assert_eq!(
            request().drain(),
            Duration::from_secs(360).min(Duration::from_secs(300))
        );
        assert_eq!(
            default_drain(Duration::from_secs(120)),
            Duration::from_secs(30)
        );
    }
}
