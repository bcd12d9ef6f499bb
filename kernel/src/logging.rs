//! The kernel's own diagnostics. They go to a duplicate of the original
//! standard error taken before fd 2 is redirected into IOPub, so a log line
//! never turns into cell output (and never loops back into the log).

use std::io::Write;
use std::os::fd::FromRawFd;
use std::sync::Mutex;

struct Logger {
    sink: Mutex<std::fs::File>,
    level: log::LevelFilter,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            if let Ok(mut sink) = self.sink.lock() {
                let _ = writeln!(sink, "pmp-kernel {}: {}", record.level(), record.args());
            }
        }
    }

    fn flush(&self) {}
}

/// Install the logger. `PMP_KERNEL_LOG` (error, warn, info, debug) sets the
/// level; warn by default.
pub fn init() {
    let level = std::env::var("PMP_KERNEL_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(log::LevelFilter::Warn);
    // SAFETY: dup of fd 2, which every process starts with; the new fd is
    // owned by the File from here on.
    let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return;
    }
    let sink = unsafe { std::fs::File::from_raw_fd(fd) };
    let logger = Logger {
        sink: Mutex::new(sink),
        level,
    };
    if log::set_logger(Box::leak(Box::new(logger))).is_ok() {
        log::set_max_level(level);
    }
}
