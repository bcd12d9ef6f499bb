//! What one call's batch job asks for, and how each job system reads it:
//! `#SBATCH` options and script (`sbatch_script`), `flux submit` options
//! (`flux_options`). One place builds them, so a rule (say, Slurm's whole
//! minutes) is written once.

use crate::backend::python_variables;
use crate::resources::control_character;
use std::path::PathBuf;

/// What a client puts in a rendered `submission_template` where pmp's
/// command goes (its `{{command}}`).
pub const COMMAND_MARK: &str = "__PMP_COMMAND__";

#[derive(Clone, Debug, Default)]
pub struct JobRequest {
    /// The function's name, then a tag of the store and key (`find`).
    pub name: String,
    pub cores: u32,
    pub threads_per_core: u32,
    pub gpus_per_core: u32,
    pub num_nodes: Option<u32>,
    pub exclusive: bool,
    /// Seconds.
    pub run_time_max: Option<u64>,
    /// GB, as the user gave it (Slurm gets whole MB).
    pub memory_max: Option<f64>,
    pub partition: Option<String>,
    /// Flux's urgency, 0 to 31.
    pub priority: Option<u32>,
    pub cwd: String,
    /// Where the job writes what it prints: the store's own `logs/`.
    pub log: String,
    /// Jobs this one runs after (`afterok`).
    pub dependencies: Vec<String>,
    /// The user's own launcher options (`command_line_argument_lst`).
    pub extra_args: Vec<String>,
    /// More sbatch options (`slurm_cmd_args`).
    pub slurm_args: Vec<String>,
    /// srun's `--mpi` for the ranks inside a Slurm job; None: pmp's choice.
    pub pmi_mode: Option<String>,
    /// A site's own job script (`submission_template`, rendered by the
    /// client), with `COMMAND_MARK` where pmp's command goes.
    pub template: Option<String>,
    pub job: JobEnvironment,
}

/// What the job's `pmp-worker` needs to find its call, and runs it with.
#[derive(Clone, Debug, Default)]
pub struct JobEnvironment {
    pub program: PathBuf,
    pub store: String,
    pub key: String,
    pub python: String,
    pub sys_path: Vec<String>,
}

impl JobRequest {
    /// The job's environment: where its call is, and the variables every
    /// backend sets from `threads_per_core`.
    pub fn environment(&self) -> Vec<(String, String)> {
        let job = &self.job;
        let mut vars = vec![
            ("PMP_JOB_STORE".to_string(), job.store.clone()),
            ("PMP_JOB_KEY".to_string(), job.key.clone()),
            ("PMP_RANKS".to_string(), self.cores.to_string()),
            // What the call prints reaches its log as printed, not a block
            // at a time: the client shows the log as it grows.
            ("PYTHONUNBUFFERED".to_string(), "1".to_string()),
        ];
        vars.extend(python_variables(
            &job.python,
            &job.sys_path,
            self.threads_per_core,
        ));
        vars
    }

    /// The options every Slurm job of pmp's has, pilots too: its ranks,
    /// their cores and GPUs, its directory.
    pub fn slurm_resources(
        cores: u32,
        threads_per_core: u32,
        gpus_per_core: u32,
        cwd: Option<&str>,
    ) -> Vec<String> {
        let mut options = vec![
            format!("--ntasks={cores}"),
            format!("--cpus-per-task={threads_per_core}"),
        ];
        if gpus_per_core > 0 {
            options.push(format!("--gpus-per-task={gpus_per_core}"));
        }
        if let Some(cwd) = cwd {
            options.push(format!("--chdir={cwd}"));
        }
        options
    }

    /// The `#SBATCH` options of the job.
    pub fn sbatch_options(&self) -> Vec<String> {
        let mut options = vec![format!("--job-name={}", self.name)];
        options.extend(Self::slurm_resources(
            self.cores,
            self.threads_per_core,
            self.gpus_per_core,
            Some(&self.cwd),
        ));
        // Slurm expands %-patterns in the path: a key part "run/a" is "run%a" there.
        options.push(format!("--output={}", self.log.replace('%', "%%")));
        // A requeued job would run its call again (a node failure, `scontrol
        // requeue`); the job refuses to, but Slurm would still hold the
        // allocation. A user's --requeue comes later, and the last one wins.
        options.push("--no-requeue".to_string());
        if let Some(nodes) = self.num_nodes {
            options.push(format!("--nodes={nodes}"));
        }
        if self.exclusive {
            options.push("--exclusive".to_string());
        }
        if let Some(seconds) = self.run_time_max {
            // Slurm counts whole minutes.
            options.push(format!("--time={}", seconds.div_ceil(60)));
        }
        if let Some(gb) = self.memory_max {
            options.push(format!("--mem={}M", crate::resources::memory_mb(gb)));
        }
        if let Some(partition) = &self.partition {
            options.push(format!("--partition={partition}"));
        }
        if !self.dependencies.is_empty() {
            options.push(format!(
                "--dependency=afterok:{}",
                self.dependencies.join(":")
            ));
            // A dependency that can never be met cancels the job instead of
            // leaving it pending forever.
            options.push("--kill-on-invalid-dep=yes".to_string());
        }
        options.extend(self.extra_args.iter().cloned());
        options.extend(self.slurm_args.iter().cloned());
        options
    }

    /// The job script sbatch reads: its options, its environment, and the
    /// worker (under `srun` for several ranks, with `mpi`'s options).
    pub fn sbatch_script(&self, srun: &str, mpi: Option<&str>) -> Result<String, String> {
        let options = self.sbatch_options();
        // A newline would end the #SBATCH line: the rest would run as a
        // command, and the options after it would be lost.
        plain(&options, "sbatch")?;
        let mut lines = vec!["#!/bin/sh".to_string()];
        lines.extend(options.iter().map(|o| format!("#SBATCH {o}")));
        lines.extend(self.command_lines(srun, mpi));
        Ok(lines.join("\n") + "\n")
    }

    /// A site's template with pmp's command in place of its mark; pmp's
    /// options go on sbatch's command line (`sbatch_options`), where they
    /// take precedence over the template's `#SBATCH` lines, so that the job
    /// writes its log where the client reads it and runs what was asked.
    pub fn templated_script(
        &self,
        template: &str,
        srun: &str,
        mpi: Option<&str>,
    ) -> Result<String, String> {
        plain(&self.sbatch_options(), "sbatch")?;
        if template.matches(COMMAND_MARK).count() != 1 {
            return Err(format!(
                "submission_template must have {{{{command}}}} once, where pmp's command goes \
                 (a job of pmp's runs pmp-worker, with its environment), and it has it {} \
                 times: put {{{{command}}}} on a line of its own after the template's \
                 #SBATCH lines",
                template.matches(COMMAND_MARK).count()
            ));
        }
        Ok(template.replace(COMMAND_MARK, &self.command_lines(srun, mpi).join("\n")))
    }

    /// The job's environment as `export` lines, then the line that runs
    /// the worker (under `srun` for several ranks, with `mpi`'s options).
    fn command_lines(&self, srun: &str, mpi: Option<&str>) -> Vec<String> {
        let mut lines: Vec<String> = self
            .environment()
            .iter()
            .map(|(k, v)| format!("export {k}={}", shell_quote(v)))
            .collect();
        let program = shell_quote(&self.job.program.to_string_lossy());
        let command = if self.cores > 1 {
            let mut parts = vec![shell_quote(srun), format!("--ntasks={}", self.cores)];
            if let Some(mode) = &self.pmi_mode {
                parts.push(shell_quote(&format!("--mpi={mode}")));
            } else if let Some(option) = mpi {
                parts.push(option.to_string());
            }
            parts.push(program);
            parts.join(" ")
        } else {
            program
        };
        lines.push(format!("exec {command}"));
        lines
    }

    /// `flux submit`'s options for the job.
    pub fn flux_options(&self) -> Result<Vec<String>, String> {
        let mut options = vec![
            format!("--job-name={}", self.name),
            format!("--ntasks={}", self.cores),
            format!("--cores-per-task={}", self.threads_per_core),
            format!("--output={}", self.log), // stderr goes there too
            format!("--cwd={}", self.cwd),
        ];
        if self.gpus_per_core > 0 {
            options.push(format!("--gpus-per-task={}", self.gpus_per_core));
        }
        if let Some(nodes) = self.num_nodes {
            options.push(format!("--nodes={nodes}"));
        }
        if self.exclusive {
            options.push("--exclusive".to_string());
        }
        if let Some(seconds) = self.run_time_max {
            options.push(format!("--time-limit={seconds}s"));
        }
        if let Some(partition) = &self.partition {
            options.push(format!("--queue={partition}")); // Flux calls them queues
        }
        if let Some(urgency) = self.priority {
            options.push(format!("--urgency={urgency}"));
        }
        options.extend(
            self.dependencies
                .iter()
                .map(|job| format!("--dependency=afterok:{job}")),
        );
        options.extend(self.extra_args.iter().cloned());
        plain(&options, "flux submit")?;
        Ok(options)
    }
}

/// Every option one value for its command line or script: no control
/// character (the client checked the user's; this is the last guard).
fn plain(options: &[String], command: &str) -> Result<(), String> {
    for option in options {
        if let Some(found) = control_character(option) {
            let name = option.split('=').next().unwrap_or(option);
            return Err(format!(
                "the {command} option {name:?} holds the control character {found:?} in \
                 {option:?}: a job script or command line would not read it as one value \
                 (a newline starts a line of its own); remove it"
            ));
        }
    }
    Ok(())
}

/// `text` as one word of a POSIX shell.
pub fn shell_quote(text: &str) -> String {
    let safe = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c));
    if safe {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\"'\"'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> JobRequest {
        JobRequest {
            name: "f.abc".into(),
            cores: 2,
            threads_per_core: 1,
            cwd: "/home/u/run".into(),
            log: "/s/logs/k%1.out".into(),
            job: JobEnvironment {
                program: "/opt/pmp worker".into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn slurm_reads_whole_minutes_and_escapes_its_patterns() {
        let mut r = request();
        r.run_time_max = Some(61);
        r.memory_max = Some(0.5);
        r.dependencies = vec!["12".into(), "13".into()];
        let options = r.sbatch_options();
        assert!(options.contains(&"--time=2".to_string()));
        assert!(options.contains(&"--mem=512M".to_string()));
        assert!(options.contains(&"--output=/s/logs/k%%1.out".to_string()));
        assert!(options.contains(&"--dependency=afterok:12:13".to_string()));
        assert!(options.contains(&"--kill-on-invalid-dep=yes".to_string()));
    }

    #[test]
    fn a_script_runs_ranks_under_srun_with_the_quoted_worker() {
        let script = request().sbatch_script("srun", Some("--mpi=pmix")).unwrap();
        assert!(script.ends_with("exec srun --ntasks=2 --mpi=pmix '/opt/pmp worker'\n"));
        assert!(script.contains("export PMP_RANKS=2\n"));
        assert!(script.contains("export OMP_NUM_THREADS=1\n"));
    }

    #[test]
    fn a_newline_in_an_option_is_refused_before_any_script() {
        let mut r = request();
        r.slurm_args = vec!["--comment=a\nrm -rf x".into()];
        let error = r.sbatch_script("srun", None).unwrap_err();
        assert!(error.contains("\"--comment\""), "{error}");
        r.slurm_args.clear();
        r.extra_args = vec!["--setattr=a\nb".into()];
        assert!(r.flux_options().is_err());
    }

    #[test]
    fn a_template_gets_the_command_once_and_pmps_options_stay_out_of_it() {
        let r = request();
        let template = "#!/bin/bash\n#SBATCH --account=a1\nmodule load x\n__PMP_COMMAND__\n";
        let script = r.templated_script(template, "srun", None).unwrap();
        assert!(script.starts_with("#!/bin/bash\n#SBATCH --account=a1\nmodule load x\nexport "));
        assert!(script.contains("\nexec srun --ntasks=2 '/opt/pmp worker'\n"));
        assert!(
            !script.contains("--job-name"),
            "pmp's options go on the command line"
        );
        let error = r.templated_script("#!/bin/sh\n", "srun", None).unwrap_err();
        assert!(
            error.contains("{{command}} once") && error.contains("0 times"),
            "{error}"
        );
    }

    #[test]
    fn flux_counts_seconds_and_urgency() {
        let mut r = request();
        r.run_time_max = Some(61);
        r.priority = Some(20);
        let options = r.flux_options().unwrap();
        assert!(options.contains(&"--time-limit=61s".to_string()));
        assert!(options.contains(&"--urgency=20".to_string()));
    }
}
