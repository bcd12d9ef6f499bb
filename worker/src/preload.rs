//! Modules a zygote imports once its workers show they use them, so that the
//! next fresh workers find them imported (a fork) instead of importing them
//! again (numpy: about 0.1 s a worker on these machines, more than the call).
//! multiprocessing's forkserver does the same with a list the user sets; here
//! the workers tell: each child reports, as it ends, which of `PRELOADABLE`
//! it imported, on a datagram socket inherited from the zygote.
//!
//! Only modules in `PRELOADABLE` are ever imported, because a module imported
//! before a fork is shared by every call after it: each one listed has had
//! what a fork would get wrong set right in the child (`after_fork`):
//! - numpy's BLAS fixes its thread count when it is loaded, from the
//!   variables `threads_per_core` sets per call: the zygote imports it with
//!   one thread (so it starts none: a fork copies only the calling thread;
//!   OpenBLAS stops its own before a fork, other libraries may not), and
//!   each child sets its own count from its variables (`blas_threads`), as a
//!   process that imported numpy itself would have;
//! - numpy's global random state is seeded when numpy.random is imported
//!   (by `import numpy` itself before numpy 2): a child reseeds it, so two
//!   calls never draw the same numbers (CPython's `random` reseeds itself at
//!   a fork).

use crate::blas_threads;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

/// What a zygote may import for its workers, in report order.
const PRELOADABLE: [&str; 2] = ["numpy", "numpy.random"];

/// Which of `PRELOADABLE` this process imported as a zygote (bit i for
/// entry i); a fork's child inherits it and knows what to set right.
static PRELOADED: AtomicU32 = AtomicU32::new(0);

/// Which of `PRELOADABLE` the zygote tried to import, imported or not: a
/// child reports only the others.
static TRIED: AtomicU32 = AtomicU32::new(0);

/// In a zygote's child: where to report what it imported.
static REPORT_TO: AtomicI32 = AtomicI32::new(-1);

/// The zygote's end of the reports, and the end its children inherit.
pub struct Reports {
    read: RawFd,
    write: RawFd,
}

impl Reports {
    /// A datagram socket pair: each report is one message, and a child
    /// killed halfway through writing one cannot leave half of it.
    pub fn open() -> Result<Reports, String> {
        let mut fds = [-1; 2];
        // SAFETY: socketpair fills the two-int array.
        let made = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
                fds.as_mut_ptr(),
            )
        };
        if made != 0 {
            return Err(format!(
                "cannot make the preload socket: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Reports {
            read: fds[0],
            write: fds[1],
        })
    }

    /// The descriptor to poll for reports.
    pub fn fd(&self) -> RawFd {
        self.read
    }

    /// Import what the reports waiting name and was not imported yet.
    pub fn take(&self) {
        let mut buffer = [0u8; 256];
        loop {
            // SAFETY: reading into a live buffer; the socket does not block.
            let n = unsafe { libc::recv(self.read, buffer.as_mut_ptr().cast(), buffer.len(), 0) };
            if n <= 0 {
                return;
            }
            for name in buffer[..n as usize].split(|&b| b == b'\n') {
                if let Some(i) = PRELOADABLE.iter().position(|m| m.as_bytes() == name) {
                    import_in_zygote(i);
                }
            }
        }
    }

    /// In a forked child: keep only the end it reports on.
    pub fn become_child(&self) {
        // SAFETY: closing the zygote's end, which this process owns a copy of.
        unsafe { libc::close(self.read) };
        REPORT_TO.store(self.write, Ordering::SeqCst);
    }
}

/// Import `PRELOADABLE[i]` in the zygote, once, with one thread for every
/// threading library it loads. A module that does not import is not tried
/// again (the worker that used it may have had it on a path of its own).
fn import_in_zygote(i: usize) {
    let bit = 1 << i;
    if TRIED.fetch_or(bit, Ordering::SeqCst) & bit != 0 {
        return;
    }
    let imported = Python::attach(|py| -> PyResult<()> {
        let environ = py.import("os")?.getattr("environ")?;
        let saved = PyDict::new(py);
        for name in pmp_scheduler::backend::THREAD_VARIABLES {
            if let Some(value) = environ
                .call_method1("get", (name,))?
                .extract::<Option<String>>()?
            {
                saved.set_item(name, value)?;
            }
            environ.set_item(name, "1")?;
        }
        let result = py.import(PRELOADABLE[i]).map(|_| ());
        for name in pmp_scheduler::backend::THREAD_VARIABLES {
            match saved.get_item(name)? {
                Some(value) => environ.set_item(name, value)?,
                None => {
                    environ.call_method1("pop", (name, py.None()))?;
                }
            }
        }
        result
    });
    // Not imported: each worker imports it itself, as before.
    if imported.is_ok() {
        PRELOADED.fetch_or(bit, Ordering::SeqCst);
    }
}

/// In a zygote's child, once the worker's variables are set: what a fresh
/// process would have had differently from a copy of the zygote.
pub fn after_fork() -> Result<(), String> {
    if PRELOADED.load(Ordering::SeqCst) == 0 {
        return Ok(());
    }
    blas_threads::set_from_environment();
    Python::attach(|py| -> PyResult<()> {
        let modules = py.import("sys")?.getattr("modules")?;
        if let Some(random) = modules
            .call_method1("get", ("numpy.random",))?
            .extract::<Option<Bound<'_, PyAny>>>()?
        {
            random.call_method0("seed")?;
        }
        Ok(())
    })
    .map_err(|e| format!("reseeding numpy.random after the fork failed: {e}"))
}

/// In a zygote's child, as it ends: tell the zygote which of `PRELOADABLE`
/// this worker imported that the zygote has not.
pub fn report_imports() {
    let fd = REPORT_TO.load(Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    let tried = TRIED.load(Ordering::SeqCst);
    let names: Vec<&str> = Python::attach(|py| {
        let Ok(modules) = py.import("sys").and_then(|sys| sys.getattr("modules")) else {
            return Vec::new();
        };
        PRELOADABLE
            .iter()
            .enumerate()
            .filter(|(i, name)| tried & (1 << i) == 0 && modules.contains(**name).unwrap_or(false))
            .map(|(_, name)| *name)
            .collect()
    });
    if names.is_empty() {
        return;
    }
    let report = names.join("\n");
    // SAFETY: sending from a live buffer; a full socket drops the report.
    unsafe {
        libc::send(
            fd,
            report.as_ptr().cast(),
            report.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
}
