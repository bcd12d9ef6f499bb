//! The worker's stdout and stderr file descriptors are pipes the scheduler
//! reads (directly, or through srun or mpiexec). What a task's subprocesses
//! and C code write there is given to the task the worker runs when the
//! scheduler reads it, so before a task is reported done its output must have
//! left: C's stdio buffers are flushed and the pipes waited on until read.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Longest wait for the reader; from a reader that far behind (a stopped
/// terminal, a slow launcher) the rest arrives late, as if printed after
/// the task.
const MOST_WAIT: Duration = Duration::from_millis(50);

/// stdout and stderr, where they are pipes someone reads.
pub struct OutputPipes {
    fds: Vec<i32>,
    /// Set when a wait ran out: a reader that slow (or gone) is not waited
    /// for again, so it costs one task 50 ms, not every task.
    given_up: Cell<bool>,
}

impl OutputPipes {
    pub fn find() -> OutputPipes {
        OutputPipes {
            fds: [1, 2].into_iter().filter(|&fd| is_pipe(fd)).collect(),
            given_up: Cell::new(false),
        }
    }

    /// Flush C's stdio buffers, then wait until the reader has taken all
    /// that is in the pipes. Costs a few system calls when nothing was written.
    pub fn drain(&self) {
        // SAFETY: fflush(NULL) flushes every open output stream.
        unsafe {
            libc::fflush(std::ptr::null_mut());
        }
        if self.given_up.get() {
            return;
        }
        let deadline = Instant::now() + MOST_WAIT;
        while self.fds.iter().any(|&fd| unread(fd) > 0) {
            if Instant::now() >= deadline {
                self.given_up.set(true);
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

fn is_pipe(fd: i32) -> bool {
    // SAFETY: fstat fills the zeroed struct or fails.
    unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut stat) == 0 && (stat.st_mode & libc::S_IFMT) == libc::S_IFIFO
    }
}

/// Bytes in the pipe not read yet (Linux answers FIONREAD on either end).
#[cfg(target_os = "linux")]
fn unread(fd: i32) -> i32 {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } != 0 {
        return 0;
    }
    n
}

/// macOS answers FIONREAD only for the read end, which the worker does
/// not have: its output is not waited for (it may arrive just after the task).
#[cfg(not(target_os = "linux"))]
fn unread(_fd: i32) -> i32 {
    0
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    /// A pipe holding `bytes`, closed when dropped.
    fn pipe_holding(bytes: &[u8]) -> (std::io::PipeReader, std::io::PipeWriter) {
        let (reader, mut writer) = std::io::pipe().expect("a pipe");
        writer.write_all(bytes).expect("room in the pipe");
        (reader, writer)
    }

    #[test]
    fn unread_counts_what_is_in_a_pipe_seen_from_its_write_end() {
        let (mut reader, writer) = pipe_holding(b"hello");
        let fd = writer.as_raw_fd();
        assert!(is_pipe(fd));
        assert_eq!(unread(fd), 5);
        reader.read_exact(&mut [0u8; 5]).expect("what was written");
        assert_eq!(unread(fd), 0);
    }

    #[test]
    fn a_pipe_nobody_reads_is_waited_for_once() {
        let (_reader, writer) = pipe_holding(b"stuck");
        let pipes = OutputPipes {
            fds: vec![writer.as_raw_fd()],
            given_up: Cell::new(false),
        };
        pipes.drain();
        assert!(pipes.given_up.get());
        assert_eq!(unread(writer.as_raw_fd()), 5);
    }
}
