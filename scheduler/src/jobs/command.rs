//! Running the job systems' commands: with a time limit (a controller that
//! hangs must not hang the follower), their output read while they run (a
//! long squeue listing must not fill the pipe and block them).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const QUERY: Duration = Duration::from_secs(30);
pub const SUBMIT: Duration = Duration::from_secs(60);

pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// What a refusing command said: its stderr, else its stdout.
    pub fn said(&self) -> String {
        let err = self.stderr.trim();
        if err.is_empty() {
            self.stdout.trim().to_string()
        } else {
            err.to_string()
        }
    }
}

/// Run `program` with `args`, `input` on its stdin and `env` added to its
/// environment; Err when it could not start or ran past `limit`.
pub fn run(
    program: &Path,
    args: &[String],
    input: Option<&str>,
    env: &[(String, String)],
    limit: Duration,
) -> Result<Output, String> {
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{} could not start: {e}", program.display()))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A script is a few hundred bytes: it fits the pipe.
        let _ = stdin.write_all(text.as_bytes());
    }
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
            text
        })
    };
    let stdout = reader(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = reader(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not answer within {} s",
                    program.display(),
                    limit.as_secs()
                ));
            }
        }
    };
    Ok(Output {
        success: status.success(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// The output of a query that must answer: Err with why it did not (it
/// could not start, ran past `QUERY`, or failed, in its own words).
pub fn answer(program: &Path, args: &[String]) -> Result<String, String> {
    let done = run(program, args, None, &[], QUERY)?;
    if done.success {
        Ok(done.stdout)
    } else {
        Err(done.stderr.trim().to_string())
    }
}
