//! The `flux run` options a worker job can carry without `flux run`:
//! `command_line_argument_lst` entries read the way flux-core's Python CLI
//! reads them, so that the jobspec pmp writes is the one `flux run` would
//! have submitted. Any other option sends the worker back to `flux run`.

use serde_json::{Map, Value};

/// What the recognised options change in the job.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobOptions {
    /// `--job-name`: replaces `pmp-worker`.
    pub name: Option<String>,
    /// `--urgency`: an argument of `flux job submit`, not part of the jobspec.
    pub urgency: Option<u32>,
    /// `-o/--setopt KEY[=VALUE]`, `--output`, `--error`: shell options by
    /// dotted key, in the order given.
    pub shell_options: Vec<(String, Value)>,
}

impl JobOptions {
    /// Set the shell options on `options`, each at the dots of its key as
    /// flux-core's `set_treedict` does (after the rlimits, as `flux run`).
    pub fn apply_to(&self, options: &mut Map<String, Value>) {
        for (key, value) in &self.shell_options {
            set_tree(options, key, value.clone());
        }
    }
}

/// The options in `args`, or `None` where one of them is not understood here
/// (that worker then goes through `flux run` itself).
pub fn parse(args: &[String]) -> Option<JobOptions> {
    let mut options = JobOptions::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_string())),
            _ if arg.starts_with("-o") && arg.len() > 2 => ("-o", Some(arg[2..].to_string())),
            _ => (arg.as_str(), None),
        };
        if !matches!(
            flag,
            "--job-name" | "--urgency" | "-o" | "--setopt" | "--output" | "--error"
        ) {
            return None;
        }
        let value = match inline {
            Some(value) => value,
            None => args.next()?.clone(),
        };
        match flag {
            "--job-name" => options.name = Some(value),
            "--urgency" => options.urgency = Some(urgency(&value)?),
            "--output" => set_output(&mut options.shell_options, "stdout", value),
            "--error" => set_output(&mut options.shell_options, "stderr", value),
            _ => set_option(&mut options.shell_options, &value)?,
        }
    }
    Some(options)
}

/// `--urgency`'s names and numbers (flux-core's FLUX_JOB_URGENCY_*); a
/// number out of 0-31 is left for Flux to refuse with its own message.
fn urgency(value: &str) -> Option<u32> {
    match value {
        "hold" => Some(0),
        "default" => Some(16),
        "expedite" => Some(31),
        number => number.parse().ok(),
    }
}

/// `--output=PATH` / `--error=PATH`: the stream goes to a file; `none` and
/// `kvs` are the default (the job's output eventlog, which attach prints).
fn set_output(options: &mut Vec<(String, Value)>, stream: &str, path: String) {
    if path == "none" || path == "kvs" {
        return;
    }
    options.push((format!("output.{stream}.type"), "file".into()));
    options.push((format!("output.{stream}.path"), path.into()));
}

/// `KEY[=VALUE]`: VALUE is JSON where it parses as JSON, a string
/// otherwise, 1 when absent (flux-core's `parse_jobspec_keyval`). `^KEY`
/// (VALUE read from a file) is left to `flux run`.
fn set_option(options: &mut Vec<(String, Value)>, keyval: &str) -> Option<()> {
    let (key, value) = match keyval.split_once('=') {
        Some((key, value)) => (
            key,
            serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into())),
        ),
        None => (keyval, Value::from(1)),
    };
    if key.is_empty() || key.starts_with('^') || key.split('.').any(str::is_empty) {
        return None;
    }
    options.push((key.to_string(), value));
    Some(())
}

/// Set `a.b.c` in nested objects, replacing whatever is in the way.
fn set_tree(options: &mut Map<String, Value>, key: &str, value: Value) {
    match key.split_once('.') {
        None => {
            options.insert(key.to_string(), value);
        }
        Some((head, rest)) => {
            let slot = options
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Value::Object(inner) = slot {
                set_tree(inner, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(args: &[&str]) -> Option<JobOptions> {
        parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    fn tree(options: &JobOptions) -> Value {
        let mut tree = Map::new();
        options.apply_to(&mut tree);
        Value::Object(tree)
    }

    #[test]
    fn no_options_change_nothing() {
        assert_eq!(parsed(&[]), Some(JobOptions::default()));
    }

    #[test]
    fn what_executorlib_fronts_pass_is_understood() {
        // pmi_mode, flux_log_files and priority, as FluxJobExecutor writes them.
        let options = parsed(&[
            "-o",
            "pmi=simple",
            "--output=flux-{{id}}.out",
            "--error=flux-{{id}}.err",
            "--urgency=3",
        ])
        .unwrap();
        assert_eq!(options.urgency, Some(3));
        assert_eq!(
            tree(&options),
            json!({
                "pmi": "simple",
                "output": {
                    "stdout": {"type": "file", "path": "flux-{{id}}.out"},
                    "stderr": {"type": "file", "path": "flux-{{id}}.err"},
                },
            })
        );
    }

    #[test]
    fn option_values_are_json_where_they_parse_and_nest_at_dots() {
        let options = parsed(&[
            "--setopt=cpu-affinity=per-task",
            "-ogpu-affinity=off",
            "--setopt",
            "a.b=[1, 2]",
            "-o",
            "verbose",
            "--urgency",
            "expedite",
            "--job-name",
            "mine",
        ])
        .unwrap();
        assert_eq!(
            tree(&options),
            json!({
                "cpu-affinity": "per-task",
                "gpu-affinity": "off",
                "a": {"b": [1, 2]},
                "verbose": 1,
            })
        );
        assert_eq!(options.urgency, Some(31));
        assert_eq!(options.name.as_deref(), Some("mine"));
    }

    #[test]
    fn anything_else_is_left_to_flux_run() {
        for args in [
            vec!["--exclusive"],
            vec!["-N", "2"],
            vec!["--env=-FOO"],
            vec!["-t", "10m"],
            vec!["--urgency=soon"],
            vec!["-o", "^opts=file.json"],
            vec!["-o"],
            vec!["--setopt=.x=1"],
        ] {
            assert_eq!(parsed(&args), None, "{args:?}");
        }
    }
}
