//! Who holds a key's lock, as its lock file says: a process of a host
//! ("host pid"), or a client that submits a batch job ("batch host pid"),
//! which holds the lock until the job, once submitted, holds it for itself.
//! Written and read only here: by the worker that runs a call, by the
//! client that submits a batch job, and by whoever asks whether the holder
//! is gone.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockOwner {
    pub batch: bool,
    pub host: String,
    pub pid: u32,
}

impl LockOwner {
    /// This process, on this host.
    pub fn this_process(batch: bool) -> LockOwner {
        LockOwner {
            batch,
            host: crate::host::name(),
            pid: std::process::id(),
        }
    }

    /// The owner a lock file's `text` names, if it names one.
    pub fn parse(text: &str) -> Option<LockOwner> {
        let (batch, rest) = match text.strip_prefix("batch ") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let mut parts = rest.split(' ');
        let (host, pid) = (parts.next()?, parts.next()?);
        if host.is_empty() || parts.next().is_some() {
            return None;
        }
        Some(LockOwner {
            batch,
            host: host.to_string(),
            pid: pid.trim().parse().ok()?,
        })
    }

    /// The lock file's text.
    pub fn text(&self) -> String {
        let batch = if self.batch { "batch " } else { "" };
        format!("{batch}{} {}", self.host, self.pid)
    }

    /// Whether it is a process of this host that no longer runs (one of
    /// another host cannot be asked).
    pub fn gone(&self) -> bool {
        if self.host != crate::host::name() {
            return false;
        }
        let Ok(pid) = i32::try_from(self.pid) else {
            return false;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        !alive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_reads_back_as_written_and_nothing_else_is_one() {
        let me = LockOwner::this_process(true);
        assert_eq!(LockOwner::parse(&me.text()), Some(me.clone()));
        assert!(!me.gone());
        assert_eq!(LockOwner::parse("host"), None);
        assert_eq!(LockOwner::parse("host pid"), None);
        assert_eq!(LockOwner::parse("a b c"), None);
        let dead = LockOwner {
            pid: i32::MAX as u32,
            ..LockOwner::this_process(false)
        };
        assert!(dead.gone());
        let elsewhere = LockOwner {
            host: "another-host".into(),
            ..dead
        };
        assert!(!elsewhere.gone(), "another host's process cannot be asked");
    }
}
