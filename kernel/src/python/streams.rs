//! stdout and stderr of the cell, at both levels: Python's `sys.stdout` /
//! `sys.stderr` (Rust writers installed in their place) and file descriptors
//! 1 and 2 (pipes in their place, for C extensions, `os.write`, `os.system`
//! and subprocesses). Everything lands in one ordered buffer that is flushed
//! as `stream` messages: on `flush()`, before any other output and every
//! reply, and shortly after a write by a background task.
//!
//! Each piece of text keeps the request it belongs to (its parent header):
//! a subshell's cell writes while the main shell's cell runs, and each one's
//! output must reach its own cell. Text from the pipes cannot tell which
//! thread wrote it; it goes to the main shell's request.
//!
//! Locking: one mutex guards the buffer and the reading of both pipes, so
//! text is never reordered between a pipe and the buffer; it is held only
//! for memory copies, non-blocking reads and channel sends, never while
//! waiting for anything (a writer holding the GIL must not wait on it long).

use bytes::Bytes;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Name {
    Stdout,
    Stderr,
}

impl Name {
    fn as_str(self) -> &'static str {
        match self {
            Name::Stdout => "stdout",
            Name::Stderr => "stderr",
        }
    }

    pub fn fd(self) -> RawFd {
        match self {
            Name::Stdout => 1,
            Name::Stderr => 2,
        }
    }
}

/// A file descriptor replaced by a pipe we read from.
struct Capture {
    name: Name,
    read_end: OwnedFd,
    /// Bytes of an incomplete UTF-8 sequence left from the last read.
    partial: Vec<u8>,
}

/// Text written to one stream for one request.
struct Chunk {
    parent: Option<Bytes>,
    name: Name,
    text: String,
}

#[derive(Default)]
struct Buffer {
    /// Text in write order; consecutive writes to one stream for one
    /// request share a chunk.
    chunks: Vec<Chunk>,
    captures: Vec<Capture>,
    /// The parent of text read from the pipes: the main shell's request.
    pipe_parent: Option<Bytes>,
}

impl Buffer {
    fn push(&mut self, parent: Option<&Bytes>, name: Name, text: &str) {
        match self.chunks.last_mut() {
            Some(last) if last.name == name && last.parent.as_ref() == parent => {
                last.text.push_str(text)
            }
            _ => self.chunks.push(Chunk {
                parent: parent.cloned(),
                name,
                text: text.to_owned(),
            }),
        }
    }

    /// Whether any pipe has data, in one syscall (cheaper than a read per pipe
    /// on the hot path of every Python-level write).
    fn pipes_readable(&self) -> bool {
        let mut polls = [libc::pollfd {
            fd: -1,
            events: libc::POLLIN,
            revents: 0,
        }; 2];
        for (poll, capture) in polls.iter_mut().zip(&self.captures) {
            poll.fd = capture.read_end.as_raw_fd();
        }
        // SAFETY: `polls` is a valid array; negative fds are ignored by poll.
        unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, 0) > 0 }
    }

    /// Move whatever the pipes hold into the buffer, without blocking.
    fn drain_pipes(&mut self) {
        if self.captures.is_empty() || !self.pipes_readable() {
            return;
        }
        let mut read = [0u8; 65536];
        for i in 0..self.captures.len() {
            loop {
                let capture = &mut self.captures[i];
                // SAFETY: reading into our own stack buffer from a fd we own.
                let n = unsafe {
                    libc::read(
                        capture.read_end.as_raw_fd(),
                        read.as_mut_ptr().cast(),
                        read.len(),
                    )
                };
                if n <= 0 {
                    break;
                }
                capture.partial.extend_from_slice(&read[..n as usize]);
                let text = take_utf8(&mut capture.partial);
                let name = capture.name;
                let parent = self.pipe_parent.clone();
                self.push(parent.as_ref(), name, &text);
            }
        }
    }
}

/// Decode the complete UTF-8 prefix of `bytes` (invalid bytes become U+FFFD)
/// and keep an incomplete trailing sequence for the next read.
fn take_utf8(bytes: &mut Vec<u8>) -> String {
    let keep = match std::str::from_utf8(bytes) {
        Ok(_) => 0,
        Err(e) if e.error_len().is_none() => bytes.len() - e.valid_up_to(),
        Err(_) => {
            // Invalid somewhere: decode lossily up to a possible incomplete tail.
            let tail = bytes.len().saturating_sub(3);
            (tail..bytes.len())
                .find(|&i| std::str::from_utf8(&bytes[i..]).is_err_and(|e| e.error_len().is_none()))
                .map_or(0, |i| bytes.len() - i)
        }
    };
    let rest = bytes.split_off(bytes.len() - keep);
    let text = String::from_utf8_lossy(bytes).into_owned();
    *bytes = rest;
    text
}

pub struct Streams {
    buffer: Mutex<Buffer>,
    /// Woken after a write into an empty buffer, to flush soon.
    pub written: tokio::sync::Notify,
}

impl Streams {
    pub fn new() -> Arc<Streams> {
        Arc::new(Streams {
            buffer: Mutex::new(Buffer::default()),
            written: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        // A panic while holding the lock leaves only text behind: keep going.
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Append text written through `sys.stdout`/`sys.stderr` for the
    /// request `parent`. Pipe contents are taken first so that C-level
    /// output written earlier stays earlier.
    pub fn write(&self, parent: Option<&Bytes>, name: Name, text: &str) {
        let mut buffer = self.lock();
        let was_empty = buffer.chunks.is_empty();
        buffer.drain_pipes();
        buffer.push(parent, name, text);
        drop(buffer);
        if was_empty {
            self.written.notify_one();
        }
    }

    /// Send everything written so far to `sink` (parent, stream, text), in
    /// order.
    pub fn flush(&self, sink: impl Fn(Option<&Bytes>, &'static str, String)) {
        let mut buffer = self.lock();
        buffer.drain_pipes();
        // Sent while holding the lock, so two flushes cannot interleave.
        for chunk in buffer.chunks.drain(..) {
            sink(chunk.parent.as_ref(), chunk.name.as_str(), chunk.text);
        }
    }

    /// Text read from the pipes from now on belongs to `parent` (the main
    /// shell's request; flush first what belongs to the previous one).
    pub fn set_pipe_parent(&self, parent: Option<Bytes>) {
        self.lock().pipe_parent = parent;
    }

    /// Point fd 1 or 2 at a pipe read by this buffer. A reader thread (which
    /// never touches Python) keeps the pipe from filling up; flushes also
    /// read it directly.
    pub fn capture_fd(self: &Arc<Self>, name: Name) -> io::Result<()> {
        let mut fds = [0 as RawFd; 2];
        open_pipe(&mut fds)?;
        let read_end = unsafe { OwnedFd::from_raw_fd(fds[0]) };
        let write_end = unsafe { OwnedFd::from_raw_fd(fds[1]) };
        // SAFETY: fcntl/dup2 on fds we own; dup2 replaces fd 1/2 atomically
        // and the new fd 1/2 is inherited by child processes (no CLOEXEC).
        unsafe {
            let flags = libc::fcntl(read_end.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(
                read_end.as_raw_fd(),
                libc::F_SETFL,
                flags | libc::O_NONBLOCK,
            );
            if libc::dup2(write_end.as_raw_fd(), name.fd()) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        drop(write_end);
        let watch = read_end.try_clone()?;
        self.lock().captures.push(Capture {
            name,
            read_end,
            partial: Vec::new(),
        });
        let streams = Arc::clone(self);
        std::thread::Builder::new()
            .name(format!("{}-pipe", name.as_str()))
            .spawn(move || streams.watch_pipe(watch))?;
        Ok(())
    }

    fn watch_pipe(&self, fd: OwnedFd) {
        loop {
            let mut poll = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut poll, 1, -1) };
            if ready < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            if poll.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
                && poll.revents & libc::POLLIN == 0
            {
                return;
            }
            let mut buffer = self.lock();
            let was_empty = buffer.chunks.is_empty();
            buffer.drain_pipes();
            let wrote = !buffer.chunks.is_empty();
            drop(buffer);
            if was_empty && wrote {
                self.written.notify_one();
            }
        }
    }
}

/// Content of a `stream` message.
pub fn stream_content(name: &'static str, text: &str) -> Bytes {
    #[derive(serde::Serialize)]
    struct Stream<'a> {
        name: &'static str,
        text: &'a str,
    }
    crate::wire::json(&Stream { name, text })
}

/// A pipe whose ends close on exec (they are this process's own).
#[cfg(target_os = "linux")]
fn open_pipe(fds: &mut [RawFd; 2]) -> io::Result<()> {
    // SAFETY: pipe2 fills `fds`; each fd is owned by the caller exactly once.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// macOS has no pipe2: pipe, then FD_CLOEXEC on each end (a fork in between
/// could leak them into that child: a window of two system calls at start-up).
#[cfg(not(target_os = "linux"))]
fn open_pipe(fds: &mut [RawFd; 2]) -> io::Result<()> {
    // SAFETY: pipe fills `fds`; fcntl on the two fds it made.
    unsafe {
        if libc::pipe(fds.as_mut_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        for &fd in fds.iter() {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_reads_is_kept_for_the_next_read() {
        let mut bytes = "é".as_bytes()[..1].to_vec();
        bytes.splice(0..0, b"ab".iter().copied());
        assert_eq!(take_utf8(&mut bytes), "ab");
        bytes.push("é".as_bytes()[1]);
        assert_eq!(take_utf8(&mut bytes), "é");
        assert!(bytes.is_empty());
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut bytes = b"a\xffb".to_vec();
        assert_eq!(take_utf8(&mut bytes), "a\u{fffd}b");
    }

    #[test]
    fn consecutive_writes_to_one_stream_share_a_message() {
        let streams = Streams::new();
        streams.write(None, Name::Stdout, "a");
        streams.write(None, Name::Stdout, "b");
        streams.write(None, Name::Stderr, "c");
        streams.write(None, Name::Stdout, "d");
        let sent = Mutex::new(Vec::new());
        streams.flush(|_, name, text| sent.lock().unwrap().push((name, text)));
        let sent = sent.into_inner().unwrap();
        assert_eq!(
            sent,
            vec![
                ("stdout", "ab".to_string()),
                ("stderr", "c".to_string()),
                ("stdout", "d".to_string())
            ]
        );
    }

    #[test]
    fn text_of_two_requests_stays_apart_and_in_order() {
        let main = Bytes::from_static(b"{\"msg_id\":\"main\"}");
        let sub = Bytes::from_static(b"{\"msg_id\":\"sub\"}");
        let streams = Streams::new();
        streams.write(Some(&main), Name::Stdout, "a");
        streams.write(Some(&sub), Name::Stdout, "b");
        streams.write(Some(&sub), Name::Stdout, "c");
        streams.write(Some(&main), Name::Stdout, "d");
        let sent = Mutex::new(Vec::new());
        streams.flush(|parent, _, text| sent.lock().unwrap().push((parent.cloned(), text)));
        let sent = sent.into_inner().unwrap();
        assert_eq!(
            sent,
            vec![
                (Some(main.clone()), "a".to_string()),
                (Some(sub), "bc".to_string()),
                (Some(main), "d".to_string()),
            ]
        );
    }
}
