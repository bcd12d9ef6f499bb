//! Flux as a job system: one `flux submit` job per call to a Flux instance
//! the client is not a job of (the system instance of a Flux-run cluster,
//! seen from a login node), `flux batch` for an elastic allocation's job,
//! the states of all jobs from one `flux jobs`, `flux cancel`.
//!
//! Flux's states are put in Slurm's words, which batch jobs use for every
//! job system: DEPEND, PRIORITY and SCHED are PENDING (with the Flux state
//! as the reason), RUN and CLEANUP are RUNNING, an inactive job is its
//! result (COMPLETED, FAILED, TIMEOUT; CANCELED is CANCELLED), with the
//! note of the exception that ended it, if any, as the reason (Flux takes
//! a request it can never satisfy and fails it when it would allocate:
//! "unsatisfiable request: need 3 exclusive node(s), only 2 eligible").

use super::command::{self, QUERY, SUBMIT};
use super::{states_one_at_a_time, unanswered, JobRequest, JobStatus, JobSystem, SubmitError};
use std::collections::HashMap;
use std::path::PathBuf;

pub struct FluxJobs {
    flux: PathBuf,
}

impl FluxJobs {
    pub fn new(flux: PathBuf) -> FluxJobs {
        FluxJobs { flux }
    }

    fn jobs(&self, args: Vec<String>) -> Option<command::Output> {
        let mut all = vec!["jobs".to_string(), "--no-header".to_string()];
        all.extend(args);
        command::run(&self.flux, &all, None, &[], QUERY).ok()
    }

    /// One field of `flux jobs` for `job`, as text ("" if Flux does not answer).
    fn field(&self, job: &str, field: &str) -> String {
        self.jobs(vec![format!("--format={{{field}}}"), job.to_string()])
            .map(|done| done.stdout.trim().to_string())
            .unwrap_or_default()
    }
}

/// A job id as compared here: Flux writes 'ƒ' only in a UTF-8 locale.
fn plain(job: &str) -> String {
    job.replace('ƒ', "f")
}

/// `flux jobs`' times (seconds since the epoch, 0 before it happened).
fn epoch(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|t| *t > 0.0)
}

/// `flux jobs`' format for `parse_line`: the exception's note last, as
/// free text may hold the separator.
const FORMAT: &str = "--format={id.f58}|{state}|{result}|{nodelist}|{t_run}|{exception.note}";

/// A line of `flux jobs` in `FORMAT`.
fn parse_line(line: &str) -> Option<(String, JobStatus)> {
    let parts: Vec<&str> = line.splitn(6, '|').collect();
    let [id, state, result, nodes, run, note] = parts[..] else {
        return None;
    };
    let status = match state {
        "DEPEND" | "PRIORITY" | "SCHED" | "NEW" => JobStatus {
            state: "PENDING".into(),
            reason: state.into(),
            nodes: String::new(),
            started: None,
        },
        "RUN" | "CLEANUP" => JobStatus {
            state: "RUNNING".into(),
            reason: String::new(),
            nodes: nodes.into(),
            started: epoch(run),
        },
        _ => JobStatus {
            state: match result {
                "CANCELED" => "CANCELLED",
                "" => "COMPLETED",
                other => other,
            }
            .into(),
            reason: note.trim().into(),
            nodes: nodes.into(),
            started: None,
        },
    };
    Some((plain(id), status))
}

impl JobSystem for FluxJobs {
    fn name(&self) -> &'static str {
        "flux"
    }

    fn refuse(&self, request: &JobRequest) -> Option<String> {
        let (key, why) = if request.template.is_some() {
            (
                "submission_template",
                "it is a Slurm job script, and pmp submits to Flux with flux submit; pass \
                 flux submit options through command_line_argument_lst",
            )
        } else if request.memory_max.is_some() {
            ("memory_max", "Flux has no per-job memory limit")
        } else if !request.slurm_args.is_empty() {
            (
                "slurm_cmd_args",
                "it holds sbatch options; use command_line_argument_lst",
            )
        } else {
            return None;
        };
        Some(format!(
            "resource_dict key '{key}' cannot be honoured on Flux: {why}"
        ))
    }

    fn submit(&self, request: &JobRequest) -> Result<String, SubmitError> {
        let mut args = vec!["submit".to_string()];
        args.extend(request.flux_options().map_err(SubmitError::Invalid)?);
        args.push(request.job.program.to_string_lossy().into_owned());
        // flux submit exports the submitting environment to the job; Flux
        // starts every rank itself, each with its rank and PMI.
        let done = command::run(&self.flux, &args, None, &request.environment(), SUBMIT)
            .map_err(SubmitError::Refused)?;
        if !done.success {
            let said = done.said();
            let message = format!("flux submit refused the job of {}: {said}", request.name);
            // "dependency: afterok: job ... failed or was canceled"
            return Err(
                if !request.dependencies.is_empty() && said.contains("afterok") {
                    SubmitError::DependencyRefused(message)
                } else {
                    SubmitError::Refused(message)
                },
            );
        }
        Ok(done.stdout.trim().lines().last().unwrap_or("").to_string())
    }

    /// `flux batch` `args` with `script` on its stdin; the id as plain
    /// ASCII (`f...`), which every flux command takes and any terminal shows.
    fn submit_script(
        &self,
        args: &[String],
        script: &str,
        env: &[(String, String)],
    ) -> Result<String, String> {
        let mut all = vec!["batch".to_string()];
        all.extend(args.iter().cloned());
        // flux batch exports the submitting environment to the job.
        let done = command::run(&self.flux, &all, Some(script), env, SUBMIT)?;
        if !done.success {
            return Err(format!("flux batch refused it: {}", done.said()));
        }
        let id = done.stdout.trim().lines().last().unwrap_or("");
        Ok(plain(id))
    }

    fn states(&self, jobs: &[String]) -> Option<HashMap<String, JobStatus>> {
        let mut args = vec![FORMAT.to_string()];
        args.extend(jobs.iter().cloned());
        let done = self.jobs(args)?;
        let asked: HashMap<String, &String> = jobs.iter().map(|j| (plain(j), j)).collect();
        let mut states: HashMap<String, JobStatus> = done
            .stdout
            .lines()
            .filter_map(parse_line)
            .filter_map(|(id, status)| Some(((*asked.get(&id)?).clone(), status)))
            .collect();
        if done.success || !states.is_empty() {
            return Some(states);
        }
        let text = done.stderr.to_lowercase();
        let names_unknown =
            text.contains("unknown") || text.contains("no such") || text.contains("not found");
        if !names_unknown {
            return None; // the instance did not answer: nothing is known
        }
        if jobs.len() > 1 {
            // One unknown id may fail the whole call.
            states = states_one_at_a_time(self, jobs)?;
        }
        Some(states)
    }

    fn find(&self, name: &str) -> Result<Option<String>, String> {
        let args = [
            "jobs",
            "--no-header",
            "--filter=pending,running",
            &format!("--name={name}"),
            "--format={id.f58}",
        ]
        .map(String::from);
        let listing = command::answer(&self.flux, &args)
            .map_err(|why| unanswered("flux jobs", "Flux", name, &why))?;
        // Listed newest first.
        Ok(listing.split_whitespace().last().map(String::from))
    }

    fn accounted(&self, _job: &str) -> Option<(String, Option<i32>)> {
        None // Flux keeps no accounting apart from `flux jobs`
    }

    fn ended_at(&self, job: &str) -> Option<f64> {
        epoch(&self.field(job, "t_inactive"))
    }

    fn exit_code(&self, job: &str) -> Option<i32> {
        self.field(job, "returncode").parse().ok()
    }

    fn cancel(&self, jobs: &[String]) {
        // Ids only (the store checked them), and after "--": never an option.
        let mut args = vec!["cancel".to_string(), "--".to_string()];
        args.extend(jobs.iter().cloned());
        let _ = command::run(&self.flux, &args, None, &[], SUBMIT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flux_states_read_in_slurms_words() {
        let (id, s) = parse_line("ƒAbc|SCHED|||0|").unwrap();
        assert_eq!(
            (id.as_str(), s.state.as_str(), s.reason.as_str()),
            ("fAbc", "PENDING", "SCHED")
        );
        let (_, s) = parse_line("fX|RUN||node1|1765000000.5|").unwrap();
        assert_eq!(
            (s.state.as_str(), s.started),
            ("RUNNING", Some(1765000000.5))
        );
        let (_, s) = parse_line("fX|INACTIVE|CANCELED|node1|0|").unwrap();
        assert_eq!(s.state, "CANCELLED");
        let (_, s) = parse_line("fX|INACTIVE|TIMEOUT||0|").unwrap();
        assert_eq!(s.state, "TIMEOUT");
        let (_, s) = parse_line(
            "fX|INACTIVE|FAILED||0.0|unsatisfiable request: need 3 exclusive node(s), a|b",
        )
        .unwrap();
        assert_eq!(
            (s.state.as_str(), s.reason.as_str()),
            (
                "FAILED",
                "unsatisfiable request: need 3 exclusive node(s), a|b"
            )
        );
    }
}
