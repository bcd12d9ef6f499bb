//! The scheduler of an executor's batch calls: it decides when each call
//! may go, takes its key in the store, submits its job, and concludes it
//! from what the follower learns.
//!
//! A call goes as soon as every call it depends on is launched (its job has
//! an id, so the job system's `afterok` holds the dependent until that job
//! succeeded) or done. One that waits for a call whose job is not known yet
//! (attached to a key another client submits) goes when the store's record
//! names that job. A call whose upstream failed fails as it did, with no
//! job; a job that ended without running because of its upstream concludes
//! once each upstream call has, as the first that failed.
//!
//! `Calls` is the state and its rules, driven one step at a time (tests
//! drive it by hand); `BatchCalls` runs it with a follower thread.

use super::follower::{Follower, JobEvent};
use super::{JobRequest, JobStatus, JobSystem, SubmitError};
use crate::store::{Entry, Input, LockOwner, State, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A call to run as its own batch job.
pub struct CallSpec {
    /// The client's id for it.
    pub task: u64,
    pub store: Store,
    pub key: String,
    /// The call as its job reads it from the store; `input.dependencies`
    /// are the keys of `upstream`, in placeholder order.
    pub input: Input,
    /// Its job's resources, name and environment; the log and the
    /// dependencies are filled in here.
    pub request: JobRequest,
    pub upstream: Vec<Upstream>,
}

/// A call whose result this call reads.
#[derive(Clone)]
pub struct Upstream {
    pub store: Store,
    pub key: String,
    pub source: Source,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A call of this executor, by its task.
    Call(u64),
    /// A job of another executor or client, which writes the key.
    Job(String),
    /// Done: its result is in the store.
    Done,
}

/// What became of a call at submit.
#[derive(Debug, PartialEq)]
pub enum Taken {
    /// Its job is submitted.
    Submitted(String),
    /// It waits for calls it depends on to be launched.
    Waiting,
    /// Its job failed while no client followed it: it fails as that did
    /// (once: the record goes, so the next submission runs it again).
    FailedUnseen { job: String, entry: Entry },
    /// Another run holds its key (the lock's text, whether that process is
    /// gone, and its job where the store's record names one): followed.
    Attached {
        owner: Option<String>,
        gone: bool,
        job: Option<String>,
    },
    /// A client that died submitting it left its job queued: found by
    /// name and followed, never submitted twice.
    Found { owner: String, job: String },
    /// Its result came while its key was being taken.
    Stored(Entry),
    /// It ended before its job could go (a call it depends on failed).
    Concluded(Outcome),
}

/// How a call ended.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Its entry, or why it failed its check.
    Stored {
        key: String,
        entry: Result<Entry, String>,
    },
    /// Its job ended without an entry and not because of its upstream
    /// (`state` None: the job system lost it); its key is free again.
    Ended {
        job: String,
        state: Option<String>,
        exit_code: Option<i32>,
        ended_at: Option<f64>,
        log_tail: String,
        /// Whether it depends on other calls (a cancelled dependent is
        /// said to be cancelled with its upstream).
        has_upstream: bool,
    },
    /// It fails as this executor's call `0` did.
    AsUpstream(u64),
    /// It fails as the failure stored at the head of its chain (an
    /// upstream call of another client), under `key`.
    UpstreamStored { key: String, entry: Entry },
    /// The job system did not take its job when it could go.
    NotSubmitted(String),
}

/// What the client learns of its calls.
#[derive(Debug, PartialEq)]
pub enum CallEvent {
    /// Its job's id: submitted now (it waited for its upstream), or named
    /// by the store's record (attached).
    Launched {
        task: u64,
        job: String,
    },
    State {
        task: u64,
        status: JobStatus,
    },
    Output {
        task: u64,
        text: String,
        skipped: bool,
    },
    Concluded {
        task: u64,
        outcome: Outcome,
    },
}

/// Where a call is.
enum Stage {
    /// Its key is taken; it waits for its upstream to be launched.
    Waiting(Box<CallSpec>),
    /// Its job is submitted or attached to (`job` None until the store's
    /// record names it): followed.
    Launched {
        job: Option<String>,
    },
    /// Its job ended, or the job system refused it, because of its upstream
    /// (probably): concluded once each upstream call has.
    Ending(Outcome),
    Done,
    /// Failed or cancelled: its dependents fail as it did.
    Failed,
}

struct Call {
    store: Store,
    key: String,
    upstream: Vec<Upstream>,
    stage: Stage,
    /// Cancelled by the client: its dependents fail as cancelled, whatever
    /// its job does.
    cancelled: bool,
}

impl Call {
    fn new(spec: &CallSpec, stage: Stage) -> Call {
        Call {
            store: spec.store.clone(),
            key: spec.key.clone(),
            upstream: spec.upstream.clone(),
            stage,
            cancelled: false,
        }
    }

    /// Whether it has concluded (done, failed or cancelled while waiting).
    fn concluded(&self) -> bool {
        matches!(self.stage, Stage::Done | Stage::Failed)
    }
}

/// What `Calls` asks of the follower.
pub trait Follows: Send {
    /// Follow `key`'s job (`job` None: the store's record will name it).
    fn follow(&self, task: u64, store: Store, key: String, job: Option<String>);
    fn forget(&self, task: u64);
}

pub struct Calls {
    system: Arc<dyn JobSystem>,
    follows: Box<dyn Follows>,
    calls: HashMap<u64, Call>,
}

impl Calls {
    pub fn new(system: Arc<dyn JobSystem>, follows: Box<dyn Follows>) -> Calls {
        Calls {
            system,
            follows,
            calls: HashMap::new(),
        }
    }

    /// Take `spec`'s key and submit its job, or wait, or attach to the run
    /// that holds the key. Err: nothing is kept (its key is free).
    pub fn submit(&mut self, spec: CallSpec) -> Result<Taken, SubmitError> {
        let (task, store, key) = (spec.task, spec.store.clone(), spec.key.clone());
        if let Some(failed) = self.failed_upstream_call(&spec.upstream) {
            return Ok(Taken::Concluded(Outcome::AsUpstream(failed)));
        }
        if let Some(taken) = failed_unseen(&store, &key) {
            return Ok(taken);
        }
        let left = store.lock_owner(&key);
        let owner = LockOwner::this_process(true).text();
        if !store.claim(&key, &owner).map_err(store_error)? {
            // Queued or running for another client (or an earlier kernel).
            let job = store.read_job(&key).ok().flatten();
            let gone = store.lock_owner_gone(&key);
            self.keep(&spec, Stage::Launched { job: job.clone() });
            self.follows
                .follow(task, store.clone(), key.clone(), job.clone());
            let owner = store.lock_owner(&key);
            return Ok(Taken::Attached { owner, gone, job });
        }
        if let Ok(Some(entry)) = store.read(&key) {
            if entry.meta.state == State::Done {
                let _ = store.unlock(&key); // finished meanwhile
                return Ok(Taken::Stored(entry));
            }
        }
        if let Some(left) = left.filter(|text| LockOwner::parse(text).is_some_and(|o| o.batch)) {
            // Taken over from a client that died submitting: its job may be
            // queued with no record naming it. Attach to it, never submit a
            // second one.
            let found = self.system.find(&spec.request.name);
            let found = found.map_err(|why| {
                let _ = store.unlock(&key);
                SubmitError::Refused(why)
            })?;
            if let Some(job) = found {
                let _ = store.write_job(&key, &job);
                self.keep(
                    &spec,
                    Stage::Launched {
                        job: Some(job.clone()),
                    },
                );
                self.follows.follow(task, store, key, Some(job.clone()));
                return Ok(Taken::Found { owner: left, job });
            }
        }
        let Some(dependencies) = self.launched_upstream(&spec.upstream) else {
            // Followed already, so that the record of a job submitted later
            // reaches the client as it would for an attached key.
            self.follows.follow(task, store, key, None);
            self.keep_waiting(spec);
            return Ok(Taken::Waiting);
        };
        match launch(self.system.as_ref(), &spec, dependencies) {
            Ok(job) => {
                self.keep(
                    &spec,
                    Stage::Launched {
                        job: Some(job.clone()),
                    },
                );
                self.follows.follow(task, store, key, Some(job.clone()));
                Ok(Taken::Submitted(job))
            }
            Err(SubmitError::DependencyRefused(message)) => {
                // An upstream job failed after the look above: the dependent
                // fails as it does, once it has concluded.
                self.keep(&spec, Stage::Ending(Outcome::NotSubmitted(message)));
                Ok(match self.try_conclude(task) {
                    Some(outcome) => Taken::Concluded(outcome),
                    None => Taken::Waiting,
                })
            }
            Err(other) => Err(other),
        }
    }

    /// Learn what the follower saw; what the client should hear of it.
    pub fn learn(&mut self, seen: Vec<JobEvent>) -> Vec<CallEvent> {
        let mut events = Vec::new();
        let mut changed = false;
        for event in seen {
            match event {
                JobEvent::Known { task, job } => {
                    if let Some(call) = self.calls.get_mut(&task) {
                        if let Stage::Launched { job: known } = &mut call.stage {
                            if known.as_deref() != Some(job.as_str()) {
                                *known = Some(job.clone());
                                events.push(CallEvent::Launched { task, job });
                                changed = true;
                            }
                        }
                    }
                }
                JobEvent::State { task, status } => events.push(CallEvent::State { task, status }),
                JobEvent::Output {
                    task,
                    text,
                    skipped,
                } => events.push(CallEvent::Output {
                    task,
                    text,
                    skipped,
                }),
                JobEvent::Stored { task, key, entry } => {
                    let done = matches!(&entry, Ok(e) if e.meta.state == State::Done);
                    if self.set_stage(task, if done { Stage::Done } else { Stage::Failed }) {
                        let outcome = Outcome::Stored { key, entry };
                        events.push(CallEvent::Concluded { task, outcome });
                        changed = true;
                    }
                }
                JobEvent::Ended {
                    task,
                    job,
                    state,
                    exit_code,
                    ended_at,
                    log_tail,
                } => {
                    // A cancelled call's job's end changes nothing.
                    let Some(call) = self.open_mut(task) else {
                        continue;
                    };
                    let has_upstream = !call.upstream.is_empty();
                    call.stage = Stage::Ending(Outcome::Ended {
                        job,
                        state,
                        exit_code,
                        ended_at,
                        log_tail,
                        has_upstream,
                    });
                    changed = true;
                }
                // Only keys another run holds are released; none are followed here.
                JobEvent::Released { .. } => {}
            }
        }
        if changed {
            self.settle(&mut events);
        }
        events
    }

    /// Cancel these calls: their jobs are cancelled and their keys free
    /// again (the jobs write nothing). A launched call is followed until
    /// its job ended, which concludes it; a waiting one concludes now,
    /// with nothing to say (the client cancelled its Future); calls waiting
    /// for either fail as cancelled.
    pub fn cancel(&mut self, tasks: &[u64]) -> Vec<CallEvent> {
        let mut jobs = Vec::new();
        for task in tasks {
            let Some(call) = self.calls.get_mut(task) else {
                continue;
            };
            match &call.stage {
                Stage::Done | Stage::Failed => continue,
                Stage::Launched { job } => jobs.extend(job.clone()),
                Stage::Waiting(_) => {
                    call.stage = Stage::Failed;
                    self.follows.forget(*task);
                }
                Stage::Ending(_) => {}
            }
            call.cancelled = true;
            let _ = call.store.unlock(&call.key);
        }
        jobs.sort();
        jobs.dedup();
        if !jobs.is_empty() {
            self.system.cancel(&jobs);
        }
        let mut events = Vec::new();
        self.settle(&mut events);
        events
    }

    /// The ids of the jobs of calls not concluded yet.
    pub fn open_jobs(&self) -> Vec<String> {
        let mut jobs: Vec<String> = self
            .calls
            .values()
            .filter_map(|call| match &call.stage {
                Stage::Launched { job } => job.clone(),
                _ => None,
            })
            .collect();
        jobs.sort();
        jobs.dedup();
        jobs
    }

    fn keep(&mut self, spec: &CallSpec, stage: Stage) {
        self.calls.insert(spec.task, Call::new(spec, stage));
    }

    /// Keep `spec` until its upstream is launched.
    fn keep_waiting(&mut self, spec: CallSpec) {
        let mut call = Call::new(&spec, Stage::Failed);
        let task = spec.task;
        call.stage = Stage::Waiting(Box::new(spec));
        self.calls.insert(task, call);
    }

    /// A call not concluded yet (None also for a cancelled call's late event).
    fn open_mut(&mut self, task: u64) -> Option<&mut Call> {
        self.calls.get_mut(&task).filter(|call| !call.concluded())
    }

    /// Set a followed call's stage; false if it was concluded already.
    fn set_stage(&mut self, task: u64, stage: Stage) -> bool {
        let Some(call) = self.open_mut(task) else {
            return false;
        };
        call.stage = stage;
        true
    }

    /// Until nothing changes: waiting calls whose upstream is launched go
    /// (or fail as their upstream did), and ending calls whose upstream
    /// concluded conclude.
    fn settle(&mut self, events: &mut Vec<CallEvent>) {
        loop {
            let before = events.len();
            self.release_waiting(events);
            self.conclude_ending(events);
            if events.len() == before {
                return;
            }
        }
    }

    /// The calls at a stage `at` says yes to, in the order they were
    /// submitted (so that jobs released together are submitted so too).
    fn tasks_at(&self, at: impl Fn(&Stage) -> bool) -> Vec<u64> {
        let calls = self.calls.iter();
        let mut tasks: Vec<u64> = calls
            .filter(|(_, c)| at(&c.stage))
            .map(|(t, _)| *t)
            .collect();
        tasks.sort_unstable();
        tasks
    }

    fn release_waiting(&mut self, events: &mut Vec<CallEvent>) {
        for task in self.tasks_at(|stage| matches!(stage, Stage::Waiting(_))) {
            let upstream = self.calls[&task].upstream.clone();
            if let Some(failed) = self.failed_upstream_call(&upstream) {
                let call = self.calls.get_mut(&task).expect("listed above");
                let _ = call.store.unlock(&call.key);
                call.stage = Stage::Failed;
                self.follows.forget(task);
                let outcome = Outcome::AsUpstream(failed);
                events.push(CallEvent::Concluded { task, outcome });
                continue;
            }
            let Some(dependencies) = self.launched_upstream(&upstream) else {
                continue;
            };
            let call = self.calls.get_mut(&task).expect("listed above");
            let Stage::Waiting(spec) = std::mem::replace(&mut call.stage, Stage::Failed) else {
                unreachable!("listed as waiting")
            };
            match launch(self.system.as_ref(), &spec, dependencies) {
                Ok(job) => {
                    call.stage = Stage::Launched {
                        job: Some(job.clone()),
                    };
                    events.push(CallEvent::Launched { task, job });
                }
                Err(SubmitError::DependencyRefused(message)) => {
                    call.stage = Stage::Ending(Outcome::NotSubmitted(message));
                }
                Err(SubmitError::Refused(message) | SubmitError::Invalid(message)) => {
                    let _ = spec.store.unlock(&spec.key);
                    self.follows.forget(task);
                    let outcome = Outcome::NotSubmitted(message);
                    events.push(CallEvent::Concluded { task, outcome });
                }
            }
        }
    }

    fn conclude_ending(&mut self, events: &mut Vec<CallEvent>) {
        for task in self.tasks_at(|stage| matches!(stage, Stage::Ending(_))) {
            if let Some(outcome) = self.try_conclude(task) {
                events.push(CallEvent::Concluded { task, outcome });
            }
        }
    }

    /// How an ending call ends, once each upstream call of this executor
    /// has concluded (it fails as the first that failed); None before.
    fn try_conclude(&mut self, task: u64) -> Option<Outcome> {
        let upstream = self.calls[&task].upstream.clone();
        let outcome = if let Some(failed) = self.failed_upstream_call(&upstream) {
            Outcome::AsUpstream(failed)
        } else if upstream.iter().any(|u| self.open_call(&u.source)) {
            return None;
        } else if let Some((key, entry)) = stored_upstream_failure(&upstream) {
            Outcome::UpstreamStored { key, entry }
        } else {
            let call = self.calls.get_mut(&task).expect("a kept call");
            match std::mem::replace(&mut call.stage, Stage::Failed) {
                Stage::Ending(outcome) => outcome,
                _ => unreachable!("only an ending call concludes"),
            }
        };
        // Its key is free already: its job, or the follower once the job
        // ended, or the refused submission let it go.
        self.calls.get_mut(&task).expect("a kept call").stage = Stage::Failed;
        self.follows.forget(task);
        Some(outcome)
    }

    /// The first upstream call of this executor that failed or was cancelled.
    fn failed_upstream_call(&self, upstream: &[Upstream]) -> Option<u64> {
        upstream.iter().find_map(|u| match u.source {
            Source::Call(task) => {
                let call = self.calls.get(&task)?;
                let failed = call.cancelled || matches!(call.stage, Stage::Failed);
                failed.then_some(task)
            }
            _ => None,
        })
    }

    /// Whether `source` is a call of this executor not concluded yet.
    fn open_call(&self, source: &Source) -> bool {
        match source {
            Source::Call(task) => self.calls.get(task).is_some_and(|call| !call.concluded()),
            _ => false,
        }
    }

    /// The jobs `upstream` runs in, for `afterok`; None while one of them is
    /// not launched yet.
    fn launched_upstream(&self, upstream: &[Upstream]) -> Option<Vec<String>> {
        let mut jobs = Vec::new();
        for u in upstream {
            match &u.source {
                Source::Done => {}
                Source::Job(job) => jobs.push(job.clone()),
                Source::Call(task) => match self.calls.get(task).map(|c| &c.stage) {
                    // Forgotten by the client: it concluded.
                    None | Some(Stage::Done | Stage::Failed) => {}
                    Some(Stage::Launched { job: Some(job) }) => jobs.push(job.clone()),
                    // Ending: its conclusion is near, and decides.
                    Some(_) => return None,
                },
            }
        }
        jobs.sort();
        jobs.dedup();
        Some(jobs)
    }
}

/// Submit `spec`'s job: its input goes to the store first (the job reads
/// it), and the record of its job after (clients attach by it). On an
/// error the input goes, and the key is free again.
fn launch(
    system: &dyn JobSystem,
    spec: &CallSpec,
    dependencies: Vec<String>,
) -> Result<String, SubmitError> {
    let (store, key) = (&spec.store, &spec.key);
    let fail = |error: SubmitError| {
        let _ = store.remove(key);
        let _ = store.unlock(key);
        error
    };
    store
        .write_input(key, &spec.input)
        .map_err(|e| fail(store_error(e)))?;
    // In the store's own logs/, made and checked with it: no one else can
    // put a link there for the job system to follow.
    let log = store.log_path(key).map_err(|e| fail(store_error(e)))?;
    let request = JobRequest {
        log: log.to_string_lossy().into_owned(),
        dependencies,
        ..spec.request.clone()
    };
    let job = system.submit(&request).map_err(fail)?;
    // Only ever a job id: the store refuses anything else, so no record
    // reaches a command line as an option.
    let _ = store.write_job(key, &job);
    Ok(job)
}

/// The failure of `key`'s job that no client followed to its end (the
/// kernel that submitted it was restarted): its record is still there (it
/// goes when a client sees the end).
fn failed_unseen(store: &Store, key: &str) -> Option<Taken> {
    let entry = store.read(key).ok()??;
    if entry.meta.state != State::Failed {
        return None;
    }
    let job = store.read_job(key).ok()??;
    let _ = store.remove_job(key); // a read-only store keeps it (and runs nothing)
    Some(Taken::FailedUnseen { job, entry })
}

/// The failure stored at the head of the chain `upstream` belongs to (the
/// store walks their inputs), for upstream calls of other clients.
fn stored_upstream_failure(upstream: &[Upstream]) -> Option<(String, Entry)> {
    let mut by_store: Vec<(&Store, Vec<String>)> = Vec::new();
    for u in upstream {
        match by_store
            .iter_mut()
            .find(|(s, _)| s.root() == u.store.root())
        {
            Some((_, keys)) => keys.push(u.key.clone()),
            None => by_store.push((&u.store, vec![u.key.clone()])),
        }
    }
    by_store
        .into_iter()
        .find_map(|(store, keys)| store.failed_upstream(&keys).ok().flatten())
}

fn store_error(error: StoreError) -> SubmitError {
    SubmitError::Refused(error.to_string())
}

/// `Calls` run with a follower thread: what it learns goes through the
/// rules, then to `deliver`, on its thread.
pub struct BatchCalls {
    calls: Arc<Mutex<Calls>>,
    follower: Arc<Mutex<Option<Follower>>>,
    deliver: Arc<dyn Fn(Vec<CallEvent>) + Send + Sync>,
}

struct SharedFollower(Arc<Mutex<Option<Follower>>>);

impl Follows for SharedFollower {
    fn follow(&self, task: u64, store: Store, key: String, job: Option<String>) {
        if let Some(follower) = self.0.lock().expect("never poisoned").as_ref() {
            follower.follow_job(task, store, key, job);
        }
    }

    fn forget(&self, task: u64) {
        if let Some(follower) = self.0.lock().expect("never poisoned").as_ref() {
            follower.forget(task);
        }
    }
}

impl BatchCalls {
    pub fn start(
        system: Arc<dyn JobSystem>,
        output_limit: u64,
        deliver: Arc<dyn Fn(Vec<CallEvent>) + Send + Sync>,
    ) -> BatchCalls {
        let slot = Arc::new(Mutex::new(None));
        let follows = Box::new(SharedFollower(slot.clone()));
        let calls = Arc::new(Mutex::new(Calls::new(system.clone(), follows)));
        let (learning, delivering) = (calls.clone(), deliver.clone());
        let follower = Follower::start(Some(system), output_limit, move |seen| {
            let events = learning.lock().expect("never poisoned").learn(seen);
            if !events.is_empty() {
                delivering(events);
            }
        });
        *slot.lock().expect("never poisoned") = Some(follower);
        BatchCalls {
            calls,
            follower: slot,
            deliver,
        }
    }

    pub fn submit(&self, spec: CallSpec) -> Result<Taken, SubmitError> {
        self.lock().submit(spec)
    }

    pub fn cancel(&self, tasks: &[u64]) {
        let events = self.lock().cancel(tasks);
        if !events.is_empty() {
            (self.deliver)(events);
        }
    }

    pub fn open_jobs(&self) -> Vec<String> {
        self.lock().open_jobs()
    }

    /// Stop following (the thread ends after its current look): the jobs
    /// go on without this client.
    pub fn close(&self) {
        self.follower.lock().expect("never poisoned").take();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Calls> {
        self.calls.lock().expect("never poisoned")
    }
}

#[cfg(test)]
mod tests;
