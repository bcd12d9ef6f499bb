//! One thread per executor that learns how its batch jobs go, and what
//! became of the keys other runs hold: it looks for their entries in the
//! store (a stat each; every 50 ms after something changed, backing off to
//! a quarter second), reads what running jobs print from their logs as they
//! grow, and asks the job system for all of their states in one call every
//! two seconds. What it learns goes to the client as `JobEvent`s, in
//! batches; it sleeps while it follows nothing.

use super::{ended, JobStatus, JobSystem};
use crate::process::complete_utf8;
use crate::store::{Entry, Store, StoreError};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FIRST_LOOK: Duration = Duration::from_millis(50);
const ENTRY_POLL: Duration = Duration::from_millis(250);
const STATES_POLL: Duration = Duration::from_secs(2);
/// State polls that must miss a job before its accounting is asked, and
/// that a COMPLETED job without an entry is looked at again (written just
/// now on a shared file system).
const MISSES: u32 = 2;
/// What a failed job's report quotes of its log.
const TAIL_BYTES: u64 = 64 * 1024;
const TAIL_LINES: usize = 20;

/// What the follower learned about a followed task (the client's id).
#[derive(Debug)]
pub enum JobEvent {
    /// The job of a key another client submitted, from the store's record.
    Known { task: u64, job: String },
    /// The job's state changed.
    State { task: u64, status: JobStatus },
    /// What the running job printed since the last read (stdout and stderr
    /// as one); `skipped`: more was printed than the client keeps.
    Output {
        task: u64,
        text: String,
        skipped: bool,
    },
    /// The key's entry is there (Err: it failed its check).
    Stored {
        task: u64,
        key: String,
        entry: Result<Entry, String>,
    },
    /// The job ended without an entry (`state` None: the job system lost
    /// it); its key is unlocked.
    Ended {
        task: u64,
        job: String,
        state: Option<String>,
        exit_code: Option<i32>,
        ended_at: Option<f64>,
        log_tail: String,
    },
    /// The run that held the key let it go without an entry.
    Released { task: u64 },
}

enum Command {
    Follow(Box<Followed>),
    Forget(u64),
}

pub struct Follower {
    commands: Sender<Command>,
}

impl Follower {
    /// Start the thread; `deliver` gets each batch of events. `system` asks
    /// for job states (None: only keys are followed); `output_limit` is
    /// how much of a log one read takes at most.
    pub fn start(
        system: Option<Arc<dyn JobSystem>>,
        output_limit: u64,
        deliver: impl FnMut(Vec<JobEvent>) + Send + 'static,
    ) -> Follower {
        let (commands, received) = channel();
        let mut thread = Thread {
            system,
            output_limit,
            deliver: Box::new(deliver),
            followed: Vec::new(),
            last_states: None,
        };
        std::thread::Builder::new()
            .name("pmp-jobs".into())
            .spawn(move || {
                let mut interval = FIRST_LOOK;
                loop {
                    let first = if thread.followed.is_empty() {
                        received.recv().map_err(|_| RecvTimeoutError::Disconnected)
                    } else {
                        received.recv_timeout(interval)
                    };
                    match first {
                        Ok(command) => {
                            thread.obey(command);
                            while let Ok(more) = received.try_recv() {
                                thread.obey(more);
                            }
                            interval = FIRST_LOOK;
                        }
                        Err(RecvTimeoutError::Timeout) => {
                            interval = (interval * 2).min(ENTRY_POLL);
                        }
                        // The client is gone: its jobs go on without it.
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    thread.look();
                }
            })
            .expect("a thread for the job follower");
        Follower { commands }
    }

    /// Follow `key`'s batch job (`job` None: another client submits it, and
    /// the store's record will name it) until its entry is there.
    pub fn follow_job(&self, task: u64, store: Store, key: String, job: Option<String>) {
        let followed = Followed::new(task, store, key, Some(JobFollow::new(job)));
        let _ = self.commands.send(Command::Follow(Box::new(followed)));
    }

    /// Follow `key`, which another run holds, until its entry is there or
    /// its lock goes away.
    pub fn follow_key(&self, task: u64, store: Store, key: String) {
        let followed = Followed::new(task, store, key, None);
        let _ = self.commands.send(Command::Follow(Box::new(followed)));
    }

    pub fn forget(&self, task: u64) {
        let _ = self.commands.send(Command::Forget(task));
    }
}

struct Followed {
    task: u64,
    store: Store,
    key: String,
    /// None: a key another run holds, with no job of ours.
    job: Option<JobFollow>,
    over: bool,
}

struct JobFollow {
    id: Option<String>,
    last: Option<JobStatus>,
    /// State polls that did not list it, or saw it COMPLETED with no entry.
    missing: u32,
    log_offset: u64,
    /// The start of a character cut at the end of the last read.
    partial: Vec<u8>,
}

impl JobFollow {
    fn new(id: Option<String>) -> JobFollow {
        JobFollow {
            id,
            last: None,
            missing: 0,
            log_offset: 0,
            partial: Vec::new(),
        }
    }

    fn running(&self) -> bool {
        self.last.as_ref().is_some_and(|s| s.state == "RUNNING")
    }
}

impl Followed {
    fn new(task: u64, store: Store, key: String, job: Option<JobFollow>) -> Followed {
        Followed {
            task,
            store,
            key,
            job,
            over: false,
        }
    }
}

struct Thread {
    system: Option<Arc<dyn JobSystem>>,
    output_limit: u64,
    deliver: Box<dyn FnMut(Vec<JobEvent>) + Send>,
    followed: Vec<Followed>,
    last_states: Option<Instant>,
}

impl Thread {
    fn obey(&mut self, command: Command) {
        match command {
            Command::Follow(followed) => self.followed.push(*followed),
            Command::Forget(task) => self.followed.retain(|f| f.task != task),
        }
    }

    fn look(&mut self) {
        let mut events = Vec::new();
        let limit = self.output_limit;
        for f in &mut self.followed {
            look_for_entry(f, limit, &mut events);
        }
        let due = self
            .last_states
            .is_none_or(|last| last.elapsed() >= STATES_POLL);
        if due {
            if let Some(system) = self.system.clone() {
                self.last_states = Some(Instant::now());
                self.follow_states(system.as_ref(), &mut events);
            }
        }
        self.followed.retain(|f| !f.over);
        if !events.is_empty() {
            (self.deliver)(events);
        }
    }

    fn follow_states(&mut self, system: &dyn JobSystem, events: &mut Vec<JobEvent>) {
        let mut jobs: Vec<String> = self
            .followed
            .iter()
            .filter(|f| !f.over)
            .filter_map(|f| f.job.as_ref()?.id.clone())
            .collect();
        jobs.sort();
        jobs.dedup();
        if jobs.is_empty() {
            return;
        }
        // None: the job system did not answer (slurmctld restarting), which
        // says nothing about the jobs: they go on, and it is asked again.
        let Some(states) = system.states(&jobs) else {
            return;
        };
        let limit = self.output_limit;
        for f in self.followed.iter_mut().filter(|f| !f.over) {
            let task = f.task;
            let Some(job) = f.job.as_mut() else { continue };
            let Some(id) = job.id.clone() else { continue };
            let Some(status) = states.get(&id) else {
                // Not known any more (or not yet visible): look twice, then
                // ask the accounting how it ended.
                job.missing += 1;
                if job.missing >= MISSES {
                    let state = system.accounted(&id).map(|(state, _)| state);
                    job_ended(f, system, state, limit, events);
                }
                continue;
            };
            if !ended(&status.state) {
                // Listed again. An ended job is not: its looks for an entry count on.
                job.missing = 0;
            }
            if job.last.as_ref() != Some(status) {
                job.last = Some(status.clone());
                events.push(JobEvent::State {
                    task,
                    status: status.clone(),
                });
            }
            if ended(&status.state) {
                let state = Some(status.state.clone());
                job_ended(f, system, state, limit, events);
            }
        }
    }
}

/// Whether `f`'s entry is there (then it is over), and what its running job
/// printed since the last look.
fn look_for_entry(f: &mut Followed, limit: u64, events: &mut Vec<JobEvent>) {
    if f.over {
        return;
    }
    if let Some(job) = f.job.as_mut().filter(|job| job.id.is_none()) {
        // Attached to a key another client submits: its record names the job.
        if let Ok(Some(id)) = f.store.read_job(&f.key) {
            job.id = Some(id.clone());
            events.push(JobEvent::Known {
                task: f.task,
                job: id,
            });
        }
    }
    let mut entry = f.store.read(&f.key);
    if f.job.is_none() && matches!(entry, Ok(None)) {
        if f.store.lock_owner(&f.key).is_some() && !f.store.lock_is_stale(&f.key) {
            return; // still held
        }
        // Gone since the read: written just before the unlock, or never.
        entry = f.store.read(&f.key);
        if matches!(entry, Ok(None)) {
            f.over = true;
            events.push(JobEvent::Released { task: f.task });
            return;
        }
    }
    match entry {
        Ok(Some(entry)) => stored(f, Ok(entry), limit, events),
        Err(invalid @ StoreError::Invalid { .. }) => {
            let why = invalid.to_string();
            if f.job.is_some() {
                stored(f, Err(why), limit, events);
            } else {
                // Reported by whoever reads it for real; this run goes on.
                f.over = true;
                events.push(JobEvent::Released { task: f.task });
            }
        }
        // None yet, or the store could not be read now (a shared file
        // system): look again.
        _ => {
            if f.job.as_ref().is_some_and(JobFollow::running) {
                read_log(f, limit, events);
            }
        }
    }
}

/// The entry is there: the rest of what the job printed (it flushed before
/// writing its entry), then the entry. Its job record goes: a record left
/// beside an entry is an end no client saw.
fn stored(f: &mut Followed, entry: Result<Entry, String>, limit: u64, events: &mut Vec<JobEvent>) {
    if f.job.is_some() {
        read_log(f, limit, events);
        let _ = f.store.remove_job(&f.key); // a read-only store keeps it
    }
    f.over = true;
    events.push(JobEvent::Stored {
        task: f.task,
        key: f.key.clone(),
        entry,
    });
}

/// The job ended (`state`), or the job system lost it (None): its entry
/// tells the outcome; without one, the client says why.
fn job_ended(
    f: &mut Followed,
    system: &dyn JobSystem,
    state: Option<String>,
    limit: u64,
    events: &mut Vec<JobEvent>,
) {
    match f.store.read(&f.key) {
        Ok(Some(entry)) => return stored(f, Ok(entry), limit, events),
        Err(invalid @ StoreError::Invalid { .. }) => {
            return stored(f, Err(invalid.to_string()), limit, events)
        }
        _ => {}
    }
    let Some(job) = f.job.as_mut() else { return };
    if state.as_deref() == Some("COMPLETED") && job.missing < MISSES {
        job.missing += 1; // written just now on a shared file system: look again
        return;
    }
    let id = job.id.clone().unwrap_or_default();
    // The job no longer holds the key.
    let _ = f.store.unlock(&f.key);
    let _ = f.store.remove_job(&f.key);
    read_log(f, limit, events);
    let (exit_code, ended_at) = match state {
        Some(_) => (system.exit_code(&id), system.ended_at(&id)),
        None => (None, None),
    };
    let log_tail = match f.store.log_tail(&f.key, TAIL_BYTES) {
        Ok(Some(tail)) => last_lines(&String::from_utf8_lossy(&tail), TAIL_LINES),
        _ => String::new(),
    };
    f.over = true;
    events.push(JobEvent::Ended {
        task: f.task,
        job: id,
        state,
        exit_code,
        ended_at,
        log_tail,
    });
}

/// What the job printed since the last read, at most `limit` bytes (a job
/// printing gigabytes costs the client no more than that).
fn read_log(f: &mut Followed, limit: u64, events: &mut Vec<JobEvent>) {
    let Some(job) = f.job.as_mut() else { return };
    // Not the user's own file (the store's trust rules never read it), or
    // an I/O error on a shared file system: no output now.
    let Ok(Some((start, data))) = f.store.log_from(&f.key, job.log_offset, limit) else {
        return;
    };
    let mut skipped = false;
    if start != job.log_offset {
        // Skipped what the client would not keep anyway, or the log was
        // started again by a new job: a cut character is lost.
        job.partial.clear();
        skipped = start > job.log_offset;
    }
    job.log_offset = start + data.len() as u64;
    let text = decode(&mut job.partial, &data);
    if !text.is_empty() || skipped {
        events.push(JobEvent::Output {
            task: f.task,
            text,
            skipped,
        });
    }
}

/// `data` after what `partial` held, as text: a character cut at its end
/// waits in `partial` for the next read; bytes that are not UTF-8 become
/// U+FFFD.
fn decode(partial: &mut Vec<u8>, data: &[u8]) -> String {
    partial.extend_from_slice(data);
    let cut = complete_utf8(partial);
    let text = String::from_utf8_lossy(&partial[..cut]).into_owned();
    partial.drain(..cut);
    text
}

fn last_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.split_inclusive('\n').collect();
    all[all.len().saturating_sub(lines)..].concat()
}

#[cfg(test)]
mod tests;
