//! Starting a worker as N MPI ranks with `mpiexec`, knowing MPICH's and
//! Open MPI's flags apart. The flavour is read from `mpiexec --version`, not
//! guessed from a file name.

use std::path::PathBuf;
use std::process::Command;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MpiFlavor {
    /// MPICH and its derivatives (Intel MPI, MVAPICH): the Hydra launcher.
    Mpich,
    OpenMpi,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MpiLauncher {
    pub program: PathBuf,
    pub flavor: MpiFlavor,
}

impl MpiFlavor {
    /// srun's `--mpi` for ranks of this MPI: Open MPI needs PMIx from srun;
    /// MPICH works with the cluster's default (pmi2 on most sites). The one
    /// rule for srun steps, pilot jobs and batch jobs.
    pub fn srun_option(flavor: Option<MpiFlavor>) -> Option<&'static str> {
        (flavor == Some(MpiFlavor::OpenMpi)).then_some("--mpi=pmix")
    }

    pub fn from_version(text: &str) -> Option<MpiFlavor> {
        if text.contains("Open MPI") || text.contains("OpenRTE") || text.contains("prterun") {
            Some(MpiFlavor::OpenMpi)
        } else if text.contains("HYDRA") || text.contains("MPICH") || text.contains("Intel(R) MPI")
        {
            Some(MpiFlavor::Mpich)
        } else {
            None
        }
    }
}

impl MpiLauncher {
    /// `mpiexec` as `locate::mpiexec` finds it, and its flavour.
    pub fn locate(tool_dirs: &[PathBuf]) -> Result<MpiLauncher, String> {
        let program = super::locate::mpiexec(tool_dirs)?;
        let output = Command::new(&program)
            .arg("--version")
            .output()
            .map_err(|e| format!("cannot run {} --version: {e}", program.display()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let flavor = MpiFlavor::from_version(&text).ok_or_else(|| {
            format!(
                "{} is neither MPICH nor Open MPI (its --version says: {})",
                program.display(),
                text.lines().next().unwrap_or("")
            )
        })?;
        Ok(MpiLauncher { program, flavor })
    }

    /// Arguments before the worker program.
    pub fn arguments(
        &self,
        ranks: u32,
        oversubscribe: bool,
        cpus: usize,
        as_root: bool,
    ) -> Vec<String> {
        let mut args = vec!["-n".to_string(), ranks.to_string()];
        if self.flavor == MpiFlavor::OpenMpi {
            // MPICH runs as root and places more ranks than cores without
            // being asked; Open MPI refuses both unless told.
            if as_root {
                args.push("--allow-run-as-root".into());
            }
            if oversubscribe || ranks as usize > cpus {
                args.push("--oversubscribe".into());
            }
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavours_are_read_from_the_version_text() {
        let mpich = "HYDRA build details:\n    Version: 5.0.2";
        let ompi =
            "mpiexec (Open MPI) 5.0.11\n\nReport bugs to https://www.open-mpi.org/community/help/";
        assert_eq!(MpiFlavor::from_version(mpich), Some(MpiFlavor::Mpich));
        assert_eq!(MpiFlavor::from_version(ompi), Some(MpiFlavor::OpenMpi));
        assert_eq!(MpiFlavor::from_version("something else"), None);
    }

    #[test]
    fn open_mpi_gets_root_and_oversubscribe_flags_mpich_does_not() {
        let ompi = MpiLauncher {
            program: "mpiexec".into(),
            flavor: MpiFlavor::OpenMpi,
        };
        assert_eq!(
            ompi.arguments(4, false, 2, true),
            vec!["-n", "4", "--allow-run-as-root", "--oversubscribe"]
        );
        assert_eq!(ompi.arguments(2, false, 2, false), vec!["-n", "2"]);
        let mpich = MpiLauncher {
            program: "mpiexec".into(),
            flavor: MpiFlavor::Mpich,
        };
        assert_eq!(mpich.arguments(4, true, 2, true), vec!["-n", "4"]);
    }
}
