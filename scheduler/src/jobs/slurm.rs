//! Slurm as a job system: one `sbatch` job per call, the states of all of
//! an executor's jobs from one `squeue`, `scancel`; `sacct` and `scontrol`
//! for how a job that squeue no longer lists ended.

use super::command::{self, QUERY, SUBMIT};
use super::{states_one_at_a_time, unanswered, JobRequest, JobStatus, JobSystem, SubmitError};
use crate::backend::mpi::{MpiFlavor, MpiLauncher};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub struct SlurmJobs {
    sbatch: PathBuf,
    srun: PathBuf,
    squeue: PathBuf,
    scancel: PathBuf,
    scontrol: PathBuf,
    sacct: PathBuf,
    /// srun's `--mpi` for the ranks of the MPI pmp found, if it needs one.
    mpi: Option<&'static str>,
}

impl SlurmJobs {
    /// Slurm's commands beside `sbatch` (else on PATH); the MPI in
    /// `tool_dirs` (else on PATH) decides srun's `--mpi`.
    pub fn new(sbatch: PathBuf, tool_dirs: &[PathBuf]) -> SlurmJobs {
        let beside = |name: &str| {
            let path = sbatch.with_file_name(name);
            if path.is_file() {
                path
            } else {
                PathBuf::from(name)
            }
        };
        let flavor = MpiLauncher::locate(tool_dirs).ok().map(|m| m.flavor);
        SlurmJobs {
            srun: beside("srun"),
            squeue: beside("squeue"),
            scancel: beside("scancel"),
            scontrol: beside("scontrol"),
            sacct: beside("sacct"),
            sbatch,
            mpi: MpiFlavor::srun_option(flavor),
        }
    }

    fn query(&self, program: &Path, args: &[&str]) -> Option<command::Output> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        command::run(program, &args, None, &[], QUERY).ok()
    }
}

/// The job id in what `sbatch --parsable` printed: `id` or `id;cluster`.
fn parsable_job_id(stdout: &str) -> String {
    stdout.trim().split(';').next().unwrap_or("").to_string()
}

impl JobSystem for SlurmJobs {
    fn name(&self) -> &'static str {
        "slurm"
    }

    fn refuse(&self, request: &JobRequest) -> Option<String> {
        request.priority.map(|_| {
            "resource_dict key 'priority' cannot be honoured by Slurm: only its administrators \
             set a job's priority (pass --nice through slurm_cmd_args to lower it)"
                .to_string()
        })
    }

    fn submit(&self, request: &JobRequest) -> Result<String, SubmitError> {
        let srun = self.srun.to_string_lossy();
        let mut args = vec!["--parsable".to_string()];
        let script = match &request.template {
            None => request.sbatch_script(&srun, self.mpi),
            Some(template) => {
                let options = request.sbatch_options();
                args.extend(options);
                request.templated_script(template, &srun, self.mpi)
            }
        }
        .map_err(SubmitError::Invalid)?;
        let done = command::run(&self.sbatch, &args, Some(&script), &[], SUBMIT)
            .map_err(SubmitError::Refused)?;
        if !done.success {
            let said = done.said();
            let message = format!("sbatch refused the job of {}: {said}", request.name);
            // "Job dependency problem": an afterok job already failed.
            return Err(
                if !request.dependencies.is_empty() && said.contains("dependency") {
                    SubmitError::DependencyRefused(message)
                } else {
                    SubmitError::Refused(message)
                },
            );
        }
        Ok(parsable_job_id(&done.stdout))
    }

    /// sbatch `args` (`--parsable` among them) with `script` on its stdin.
    fn submit_script(
        &self,
        args: &[String],
        script: &str,
        env: &[(String, String)],
    ) -> Result<String, String> {
        let done = command::run(&self.sbatch, args, Some(script), env, SUBMIT)?;
        if !done.success {
            return Err(format!("sbatch refused it: {}", done.said()));
        }
        Ok(parsable_job_id(&done.stdout))
    }

    fn states(&self, jobs: &[String]) -> Option<HashMap<String, JobStatus>> {
        let list = jobs.join(",");
        let done = self.query(
            &self.squeue,
            &["-h", "-t", "all", "-o", "%i|%T|%r|%N|%S", "-j", &list],
        )?;
        let mut states = parse_squeue(&done.stdout);
        if done.success {
            return Some(states);
        }
        if !done.stderr.contains("Invalid job id") {
            return None;
        }
        if states.is_empty() && jobs.len() > 1 {
            // One unknown id fails the whole call.
            states = states_one_at_a_time(self, jobs)?;
        }
        Some(states)
    }

    fn find(&self, name: &str) -> Result<Option<String>, String> {
        let args = [
            "-h".to_string(),
            "--me".to_string(),
            format!("--name={name}"),
            "-o".to_string(),
            "%i".to_string(),
        ];
        let listing = command::answer(&self.squeue, &args)
            .map_err(|why| unanswered("squeue", "Slurm", name, &why))?;
        let mut jobs: Vec<&str> = listing.split_whitespace().collect();
        // The lowest id, should there be several.
        jobs.sort_by_key(|job| (job.len(), *job));
        Ok(jobs.first().map(|job| job.to_string()))
    }

    fn accounted(&self, job: &str) -> Option<(String, Option<i32>)> {
        let done = self.query(
            &self.sacct,
            &["-n", "-X", "-P", "-o", "State,ExitCode", "-j", job],
        )?;
        done.stdout.lines().find_map(|line| {
            let (state, code) = line.split_once('|').unwrap_or((line, ""));
            // "CANCELLED by 1000"; an exit code is "code:signal".
            let state = state.split_whitespace().next()?;
            Some((state.to_string(), code.split(':').next()?.parse().ok()))
        })
    }

    fn ended_at(&self, job: &str) -> Option<f64> {
        // squeue lists a job a few minutes after its end; the accounting longer.
        let asked = [
            (&self.squeue, vec!["-h", "-t", "all", "-o", "%e", "-j", job]),
            (&self.sacct, vec!["-n", "-X", "-P", "-o", "End", "-j", job]),
        ];
        asked.iter().find_map(|(program, args)| {
            let done = self.query(program, args)?;
            done.stdout.lines().find_map(|line| local_time(line.trim()))
        })
    }

    fn exit_code(&self, job: &str) -> Option<i32> {
        let done = self.query(&self.scontrol, &["show", "job", "-o", job])?;
        let field = done
            .stdout
            .split_whitespace()
            .find_map(|field| field.strip_prefix("ExitCode="))?;
        field.split(':').next()?.parse().ok()
    }

    fn cancel(&self, jobs: &[String]) {
        // Ids only (the store checked them), and after "--": never an option.
        let mut args = vec!["--".to_string()];
        args.extend(jobs.iter().cloned());
        let _ = command::run(&self.scancel, &args, None, &[], SUBMIT);
    }
}

/// `squeue -o %i|%T|%r|%N|%S` lines by job id.
fn parse_squeue(listing: &str) -> HashMap<String, JobStatus> {
    listing
        .lines()
        .filter_map(|line| {
            let parts: Vec<&str> = line.split('|').collect();
            let [id, state, reason, nodes, start] = parts[..] else {
                return None;
            };
            let status = JobStatus {
                state: state.to_string(),
                reason: reason.to_string(),
                nodes: nodes.to_string(),
                started: if state == "RUNNING" {
                    local_time(start)
                } else {
                    None
                },
            };
            Some((id.to_string(), status))
        })
        .collect()
}

/// Slurm's time (local time, `2026-12-06T02:30:00`) as seconds since the
/// epoch; None for `N/A`, `Unknown` or anything else.
pub fn local_time(text: &str) -> Option<f64> {
    let (date, time) = text.split_once('T')?;
    let d: Vec<i32> = date
        .split('-')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let t: Vec<i32> = time
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let (&[year, month, day], &[hour, minute, second]) = (&d[..], &t[..]) else {
        return None;
    };
    // mktime knows the local time zone, daylight saving included.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = year - 1900;
    tm.tm_mon = month - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = minute;
    tm.tm_sec = second;
    tm.tm_isdst = -1;
    // SAFETY: mktime reads and normalises the struct we own.
    let seconds = unsafe { libc::mktime(&mut tm) };
    (seconds != -1).then_some(seconds as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines_become_states() {
        let states = parse_squeue(
            "12|PENDING|Priority||N/A\n13|RUNNING|None|node1|2026-12-06T02:30:00\nbad line\n",
        );
        assert_eq!(states.len(), 2);
        assert_eq!(states["12"].reason, "Priority");
        assert_eq!(states["12"].started, None);
        assert_eq!(states["13"].nodes, "node1");
        assert!(states["13"].started.is_some());
    }

    #[test]
    fn slurm_times_are_local_and_unknown_ones_none() {
        let a = local_time("2026-12-06T02:30:00").unwrap();
        let b = local_time("2026-12-06T02:31:05").unwrap();
        assert_eq!(b - a, 65.0);
        assert_eq!(local_time("N/A"), None);
        assert_eq!(local_time("Unknown"), None);
    }
}
