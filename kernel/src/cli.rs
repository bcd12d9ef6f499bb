//! The command line.

use std::path::PathBuf;

pub const USAGE: &str = "\
pmp-kernel: a Jupyter kernel for Python (IPython) with pmp built in

Usage:
  pmp-kernel -f CONNECTION_FILE [--python PYTHON]
      Run the kernel (Jupyter starts it this way, from the kernelspec).
  pmp-kernel install [--user | --sys-prefix | --prefix DIR] [--python PYTHON]
                     [--name NAME] [--display-name TEXT]
      Register the kernelspec (default: --user, name \"pmp\"), so Jupyter
      offers \"Python 3 (pmp)\".
  pmp-kernel --help | --version

Options:
  --python PYTHON  the interpreter of the environment cells run in; it must be
                   the Python version pmp-kernel was built for. Default: the
                   python beside pmp-kernel, else the one it was built with.
  --user           install into the per-user Jupyter data directory
  --sys-prefix     install into PYTHON's environment (share/jupyter/kernels)
  --prefix DIR     install into DIR/share/jupyter/kernels

Environment:
  PMP_KERNEL_LOG   error, warn (default), info or debug: the kernel's own log,
                   written to its original standard error
";

#[derive(Debug, PartialEq, Eq)]
pub enum Destination {
    User,
    SysPrefix,
    Prefix(PathBuf),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run {
        connection_file: PathBuf,
        python: Option<PathBuf>,
    },
    Install {
        destination: Destination,
        python: Option<PathBuf>,
        name: String,
        display_name: String,
    },
    Help,
    Version,
}

fn value(args: &mut impl Iterator<Item = String>, flag: &str) -> Result<String, String> {
    args.next().ok_or_else(|| format!("{flag} needs a value"))
}

pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut args = args.into_iter().peekable();
    match args.peek().map(String::as_str) {
        Some("install") => {
            args.next();
            parse_install(args)
        }
        Some("-h" | "--help" | "help") => Ok(Command::Help),
        Some("-V" | "--version") => Ok(Command::Version),
        None => Err("no connection file: pmp-kernel is started by Jupyter with -f FILE".into()),
        Some(_) => parse_run(args),
    }
}

fn parse_run(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut connection_file = None;
    let mut python = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-f" | "--f" | "--connection-file" => {
                connection_file = Some(PathBuf::from(value(&mut args, &arg)?))
            }
            "--python" => python = Some(PathBuf::from(value(&mut args, &arg)?)),
            other => match other.split_once('=') {
                Some(("-f" | "--f" | "--connection-file", file)) => {
                    connection_file = Some(PathBuf::from(file))
                }
                Some(("--python", file)) => python = Some(PathBuf::from(file)),
                _ => return Err(format!("unknown argument {other:?}")),
            },
        }
    }
    let connection_file = connection_file.ok_or("no connection file (-f FILE)")?;
    Ok(Command::Run {
        connection_file,
        python,
    })
}

fn parse_install(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut destination = None;
    let mut python = None;
    let mut name = "pmp".to_string();
    let mut display_name = "Python 3 (pmp)".to_string();
    let set = |d: Destination, current: &mut Option<Destination>| {
        if current.is_some() {
            return Err("give only one of --user, --sys-prefix, --prefix".to_string());
        }
        *current = Some(d);
        Ok(())
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--user" => set(Destination::User, &mut destination)?,
            "--sys-prefix" => set(Destination::SysPrefix, &mut destination)?,
            "--prefix" => set(
                Destination::Prefix(value(&mut args, &arg)?.into()),
                &mut destination,
            )?,
            "--python" => python = Some(PathBuf::from(value(&mut args, &arg)?)),
            "--name" => name = value(&mut args, &arg)?,
            "--display-name" => display_name = value(&mut args, &arg)?,
            other => return Err(format!("unknown argument to install: {other:?}")),
        }
    }
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    {
        return Err(format!(
            "kernel name {name:?} may only contain letters, digits, '-', '.' and '_'"
        ));
    }
    Ok(Command::Install {
        destination: destination.unwrap_or(Destination::User),
        python,
        name,
        display_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse_str(args: &str) -> Result<Command, String> {
        parse(args.split_whitespace().map(String::from))
    }

    #[test]
    fn runs_with_a_connection_file() {
        assert_eq!(
            parse_str("-f /tmp/k.json --python /env/bin/python"),
            Ok(Command::Run {
                connection_file: "/tmp/k.json".into(),
                python: Some("/env/bin/python".into()),
            })
        );
        assert!(parse_str("--python /x").is_err());
        assert!(parse_str("-f").is_err());
    }

    #[test]
    fn installs_for_the_user_by_default() {
        let Ok(Command::Install {
            destination, name, ..
        }) = parse_str("install")
        else {
            panic!("install not parsed");
        };
        assert_eq!(destination, Destination::User);
        assert_eq!(name, "pmp");
        assert!(parse_str("install --user --sys-prefix").is_err());
        assert!(parse_str("install --name a/b").is_err());
        assert_eq!(
            parse_str("install --prefix /p").map(|c| matches!(
                c,
                Command::Install { destination: Destination::Prefix(p), .. } if p == Path::new("/p")
            )),
            Ok(true)
        );
    }
}
