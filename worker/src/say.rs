//! What the worker writes to its stderr (why it exits, what failed) never
//! panics: `eprintln!` panics when it cannot write (EPIPE once the client
//! that read the pipe is gone), which would end the thread that wanted to
//! say goodbye and could leave the worker running, or skip ending what its
//! tasks started.

/// `eprintln!`, but a line that cannot be written is dropped.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::say::line(format_args!($($arg)*))
    };
}

pub fn line(message: std::fmt::Arguments) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{message}");
}
