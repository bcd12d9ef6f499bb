//! pmp-kernel: a Jupyter kernel that runs Python cells in IPython, hosted in
//! this process through pyo3. `server` shows how the pieces fit together.

mod children;
mod cli;
mod control;
mod dap;
mod debugger;
mod heartbeat;
mod install;
mod interrupt;
mod iopub;
mod lifecycle;
mod logging;
mod python;
mod server;
mod shell;
mod sockets;
mod stdin;
mod subshells;
mod wire;

use cli::Command;

fn main() {
    logging::init();
    let outcome = match cli::parse(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            print!("{}", cli::USAGE);
            Ok(())
        }
        Ok(Command::Version) => {
            println!(
                "pmp-kernel {} (Python {})",
                env!("CARGO_PKG_VERSION"),
                python::BUILT_FOR
            );
            Ok(())
        }
        Ok(Command::Install {
            destination,
            python,
            name,
            display_name,
        }) => install::install(&destination, python.as_deref(), &name, &display_name)
            .map(|dir| println!("installed kernelspec {name} in {}", dir.display())),
        Ok(Command::Run {
            connection_file,
            python,
        }) => server::run(
            &connection_file,
            &python.unwrap_or_else(install::default_python),
        ),
        Err(e) => Err(format!("{e}\n\n{}", cli::USAGE)),
    };
    if let Err(e) = outcome {
        eprintln!("pmp-kernel: {e}");
        std::process::exit(2);
    }
}
