//! The batch jobs of elastic allocations (`pmp.Allocation`, issue 25):
//! each is `nodes` whole nodes for `time_limit`, whose script runs one node
//! agent per node (itself on one node; one srun step across several), as
//! pilot jobs do. The agents join the executor as they connect and say
//! which allocation they belong to (`VARIABLE`, set in the job's
//! environment by the submission): the scheduler learns a job's id only
//! when sbatch answers, which may come after its agents connected.
//!
//! What the user writes is checked here, once: a Slurm time string or
//! seconds for `time_limit`, counts of at least one, a drain shorter than
//! the time limit.

use super::pilot_nodes::NodeShape;
use crate::core::allocations::AllocationSettings;
use crate::jobs::request::shell_quote;
use std::path::Path;
use std::time::Duration;

/// The variable that tells an agent its allocation's number.
pub const VARIABLE: &str = "PMP_AGENT_ALLOCATION";

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
                 at least 1 minute (\"1:00\" or 60)",
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
                "Allocation's partition and extra_args reach sbatch's command line: they \
                 may hold no control character, found {c:?}"
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

/// An executor's allocation jobs, as they are submitted.
#[derive(Clone, Debug)]
pub struct AllocationJobs {
    pub sbatch: std::path::PathBuf,
    /// One name for all of the executor's jobs, so that they can be found
    /// and cancelled together.
    pub job_name: String,
    pub request: AllocationRequest,
    /// The partition's node, as sinfo said it: the GPUs to ask for.
    pub shape: NodeShape,
}

impl AllocationJobs {
    /// sbatch's arguments: whole nodes (`--exclusive`, with their GPUs),
    /// one task a node, the time limit; the user's options last, so they win.
    pub fn arguments(&self) -> Vec<String> {
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

    /// The batch script: the agent in place of the shell on one node; on
    /// several, one srun step of an agent per node (the batch step runs on
    /// the first node only).
    pub fn script(&self, srun: &Path, program: &Path) -> String {
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

/// A Slurm time string (`minutes`, `minutes:seconds`,
/// `hours:minutes:seconds`, `days-hours`, `days-hours:minutes`,
/// `days-hours:minutes:seconds`) as a duration; Err in the user's words.
pub fn parse_slurm_time(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "time_limit={text:?} is not a Slurm time: give seconds, or \"minutes\", \
             \"minutes:seconds\", \"hours:minutes:seconds\", \"days-hours\", \
             \"days-hours:minutes\" or \"days-hours:minutes:seconds\""
        )
    };
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
    fn slurm_times_read_as_sbatch_reads_them() {
        let secs = |t: &str| parse_slurm_time(t).map(|d| d.as_secs());
        assert_eq!(secs("30"), Ok(1800));
        assert_eq!(secs("30:00"), Ok(1800));
        assert_eq!(secs("1:00:00"), Ok(3600));
        assert_eq!(secs("2-0"), Ok(172_800));
        assert_eq!(secs("1-2:3"), Ok(93_780));
        assert_eq!(secs("1-00:00:05"), Ok(86_405));
        for bad in ["", "1h", "1:2:3:4", "-5", "1-", "a:b"] {
            let why = parse_slurm_time(bad).unwrap_err();
            assert!(why.contains("is not a Slurm time"), "{bad}: {why}");
        }
        assert_eq!(slurm_time(Duration::from_secs(93_784)), "1-02:03:04");
    }

    #[test]
    fn a_job_asks_for_whole_nodes_its_time_and_the_users_options_last() {
        let jobs = AllocationJobs {
            sbatch: "sbatch".into(),
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
        let one = jobs.script(Path::new("srun"), Path::new("/venv/bin/pmp-worker"));
        assert_eq!(one, "#!/bin/sh\nexec /venv/bin/pmp-worker\n");
        let two = AllocationJobs {
            request: AllocationRequest {
                nodes: 2,
                ..request()
            },
            ..jobs
        };
        let script = two.script(
            Path::new("/usr/bin/srun"),
            Path::new("/venv/bin/pmp-worker"),
        );
        assert!(
            script.starts_with("#!/bin/sh\nexec /usr/bin/srun "),
            "{script}"
        );
        assert!(script.contains("--nodes=2"), "{script}");
        assert!(script.ends_with(" /venv/bin/pmp-worker\n"), "{script}");
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
