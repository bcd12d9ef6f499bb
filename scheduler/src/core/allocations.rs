//! Elastic allocations (issue 25): when to ask the job system for another
//! allocation of node agents, when to give one back, and which allocation
//! may still take a call before its time limit. One decision point, driven
//! by events (calls waiting, a submission answered, a job's state learned,
//! an allocation's calls started or ended) and the one heartbeat's `tick`:
//! no timer per allocation.
//!
//! The policy only decides; the server carries its decisions out (`sbatch`,
//! `scancel`) and tells it what happened, and the core places calls on the
//! nodes of the allocations that `may_take` them. Time is given, never
//! read, so that the tests tell stories of minutes in microseconds.
//!
//! The rules, as HyperQueue's automatic allocation and dask-jobqueue's
//! `adapt()` have them:
//! - **grow with the backlog**: an allocation is submitted while calls wait
//!   that no node can take now and the allocations queued would not hold
//!   them, up to `max_allocations` live and `backlog` queued at once;
//! - **shrink when idle**: an allocation with no call for `idle_timeout` is
//!   released, unless that leaves fewer than `min_allocations`;
//! - **never start what cannot finish**: a call with `run_time_max` goes
//!   only where that much time is left; a call without one goes nowhere in
//!   an allocation's last `drain`; and a replacement is submitted before an
//!   allocation that has work reaches its drain, as early as the last
//!   allocation took to start, so that a stream of work does not wait a
//!   whole queue wait at each boundary;
//! - **a refused submission pauses**: the calls waiting for it fail with
//!   the job system's words, and nothing is submitted again for a while
//!   (doubling with each refusal in a row), instead of a loop of refusals.

use std::time::{Duration, Instant};

/// What a user asked for (`pmp.Allocation`), checked by `plan`.
#[derive(Clone, Debug, PartialEq)]
pub struct AllocationSettings {
    /// Nodes per allocation: one agent each.
    pub nodes: u32,
    /// CPUs each allocation brings (its nodes' together), as the partition's
    /// node shape says before any has started.
    pub cpus: u32,
    pub time_limit: Duration,
    pub max_allocations: u32,
    pub min_allocations: u32,
    pub backlog: u32,
    pub idle_timeout: Duration,
    /// The last stretch of an allocation that takes no call without
    /// `run_time_max`.
    pub drain: Duration,
}

impl AllocationSettings {
    /// Why a call with `run_time_max` could never run in any allocation:
    /// a new one has `time_limit` left, and none has more.
    pub fn never_fits(&self, run_time_max: Duration) -> Option<String> {
        (run_time_max > self.time_limit).then(|| {
            format!(
                "resource_dict key 'run_time_max' is {} s, more than the allocations' \
                 time_limit of {} s: no allocation could finish it; lower it or raise \
                 Allocation(time_limit=...)",
                run_time_max.as_secs(),
                self.time_limit.as_secs()
            )
        })
    }
}

/// One allocation, numbered by the policy in the order it asked for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocationId(pub u32);

/// Where an allocation is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Asked for; the job system has not answered yet.
    Submitting,
    /// The job system holds it in its queue (Slurm's PENDING, and why).
    Queued {
        job: String,
        since: Instant,
        reason: String,
    },
    /// Its nodes run: it ends at `ends` at the latest.
    Running { job: String, ends: Instant },
    /// Released by the policy, or ended on its own; `state` is the job
    /// system's last word (COMPLETED, CANCELLED, TIMEOUT, NODE_FAIL...).
    Ended { job: Option<String>, state: String },
}

/// An allocation as the policy follows it.
#[derive(Clone, Debug)]
pub struct Allocation {
    pub id: AllocationId,
    pub stage: Stage,
    /// Calls running in it now.
    pub calls: u32,
    /// Since when it has run no call (while `calls` is 0).
    idle_since: Option<Instant>,
    /// Released by the policy (its end is no loss).
    released: bool,
    /// A replacement was asked for as it neared its end with work.
    replaced: bool,
}

impl Allocation {
    /// Counted against `max_allocations`: neither ended nor released.
    pub fn is_live(&self) -> bool {
        !self.released && !matches!(self.stage, Stage::Ended { .. })
    }

    /// Not running yet: what it will bring is still to come.
    fn is_coming(&self) -> bool {
        !self.released && matches!(self.stage, Stage::Submitting | Stage::Queued { .. })
    }

    /// The job system's id, once it gave one.
    pub fn job(&self) -> Option<&str> {
        match &self.stage {
            Stage::Submitting => None,
            Stage::Queued { job, .. } | Stage::Running { job, .. } => Some(job),
            Stage::Ended { job, .. } => job.as_deref(),
        }
    }

    /// Time left before its time limit; None until it runs.
    pub fn time_left(&self, now: Instant) -> Option<Duration> {
        match self.stage {
            Stage::Running { ends, .. } => Some(ends.saturating_duration_since(now)),
            _ => None,
        }
    }
}

/// What the policy decided: the server carries it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Ask the job system for a new allocation.
    Submit(AllocationId),
    /// Give this allocation back (scancel; its agents are told to stop).
    Release(AllocationId),
    /// Fail the calls waiting for an allocation with these words.
    FailWaiting(String),
}

/// The calls that wait for room, as the core sees them after a placement
/// pass: none of the nodes there are could take them now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Waiting {
    pub calls: u32,
    /// Their CPUs together; for a pool (`block_allocation`), those of the
    /// workers that could still start for them, which is all a new
    /// allocation would bring them.
    pub cpus: u32,
}

/// How long after a refused submission nothing is submitted, at first; it
/// doubles with each refusal in a row, up to `PAUSE_AT_MOST`.
const FIRST_PAUSE: Duration = Duration::from_secs(60);
const PAUSE_AT_MOST: Duration = Duration::from_secs(600);

/// The allocations of one executor and what decides about them.
pub struct AllocationPolicy {
    settings: AllocationSettings,
    allocations: Vec<Allocation>,
    waiting: Waiting,
    /// After a refused submission: nothing submitted before this, and why.
    paused: Option<(Instant, String)>,
    refusals_in_a_row: u32,
    /// How long the last allocation took from its submission to running:
    /// how early a replacement is asked for.
    last_queue_wait: Duration,
}

impl AllocationPolicy {
    pub fn new(settings: AllocationSettings) -> AllocationPolicy {
        AllocationPolicy {
            settings,
            allocations: Vec::new(),
            waiting: Waiting::default(),
            paused: None,
            refusals_in_a_row: 0,
            last_queue_wait: Duration::ZERO,
        }
    }

    pub fn allocations(&self) -> &[Allocation] {
        &self.allocations
    }

    /// Allocation `id`'s job id, once the job system gave one.
    pub fn job(&self, id: AllocationId) -> Option<&str> {
        self.allocations.get(id.0 as usize)?.job()
    }

    pub fn settings(&self) -> &AllocationSettings {
        &self.settings
    }

    /// Why nothing is submitted now, after a refusal.
    pub fn paused(&self, now: Instant) -> Option<&str> {
        self.paused
            .as_ref()
            .filter(|(until, _)| now < *until)
            .map(|(_, why)| why.as_str())
    }

    fn get(&mut self, id: AllocationId) -> Option<&mut Allocation> {
        self.allocations.get_mut(id.0 as usize)
    }

    /// The executor starts: the allocations kept even when idle.
    pub fn start(&mut self, now: Instant) -> Vec<Decision> {
        self.decide(now)
    }

    /// The core's placement pass ended with `waiting` calls that no node
    /// could take.
    pub fn on_waiting(&mut self, waiting: Waiting, now: Instant) -> Vec<Decision> {
        self.waiting = waiting;
        self.decide(now)
    }

    /// The job system took the submission: `job` is queued.
    pub fn on_submitted(&mut self, id: AllocationId, job: String, now: Instant) {
        self.refusals_in_a_row = 0;
        if let Some(allocation) = self.get(id) {
            allocation.stage = Stage::Queued {
                job,
                since: now,
                reason: String::new(),
            };
        }
    }

    /// The job system refused the submission (`why`, in its words): the
    /// calls waiting for it fail, and submitting pauses.
    pub fn on_refused(&mut self, id: AllocationId, why: &str, now: Instant) -> Vec<Decision> {
        if let Some(allocation) = self.get(id) {
            allocation.stage = Stage::Ended {
                job: None,
                state: "REFUSED".into(),
            };
        }
        let pause = (FIRST_PAUSE * 2u32.saturating_pow(self.refusals_in_a_row)).min(PAUSE_AT_MOST);
        self.refusals_in_a_row += 1;
        let words = format!(
            "the allocation was not submitted: {why} (pmp submits none again for {} s; \
             check Allocation(partition=..., extra_args=...))",
            pause.as_secs()
        );
        self.paused = Some((now + pause, words.clone()));
        self.waiting = Waiting::default();
        vec![Decision::FailWaiting(words)]
    }

    /// Still in the job system's queue, for `reason` (Slurm's Priority,
    /// Resources...).
    pub fn on_pending(&mut self, id: AllocationId, reason: &str) {
        if let Some(Allocation {
            stage: Stage::Queued { reason: was, .. },
            ..
        }) = self.get(id)
        {
            *was = reason.to_string();
        }
    }

    /// It runs (its first agent connected, or the job system says so):
    /// its time limit counts from `started`.
    pub fn on_running(&mut self, id: AllocationId, started: Instant) -> Vec<Decision> {
        let limit = self.settings.time_limit;
        let Some(allocation) = self.get(id) else {
            return Vec::new();
        };
        let (job, submitted) = match &allocation.stage {
            Stage::Queued { job, since, .. } => (job.clone(), *since),
            _ => return Vec::new(),
        };
        allocation.stage = Stage::Running {
            job,
            ends: started + limit,
        };
        allocation.idle_since = Some(started);
        self.last_queue_wait = started.saturating_duration_since(submitted);
        // The calls that waited may fit its nodes: the core's next
        // placement pass says what still waits (`on_waiting`), and asking
        // for more on the old count would ask for what is already here.
        self.waiting = Waiting::default();
        self.decide(started)
    }

    /// The job ended (`state`, the job system's word): released by the
    /// policy, or lost (the core fails or reruns its calls).
    pub fn on_ended(&mut self, id: AllocationId, state: &str, now: Instant) -> Vec<Decision> {
        if let Some(allocation) = self.get(id) {
            let job = allocation.job().map(String::from);
            allocation.stage = Stage::Ended {
                job,
                state: state.to_string(),
            };
            allocation.calls = 0;
        }
        self.decide(now)
    }

    /// Whether it ended because the policy released it.
    pub fn was_released(&self, id: AllocationId) -> bool {
        self.allocations
            .get(id.0 as usize)
            .is_some_and(|a| a.released)
    }

    /// A call started in it.
    pub fn on_call_started(&mut self, id: AllocationId) {
        if let Some(allocation) = self.get(id) {
            allocation.calls += 1;
            allocation.idle_since = None;
        }
    }

    /// A call in it ended.
    pub fn on_call_ended(&mut self, id: AllocationId, now: Instant) {
        if let Some(allocation) = self.get(id) {
            allocation.calls = allocation.calls.saturating_sub(1);
            if allocation.calls == 0 {
                allocation.idle_since = Some(now);
            }
        }
    }

    /// A pool's calls in it now (`block_allocation`: its workers busy, as
    /// the core counts them before each decision): idle from the moment
    /// none is, as a fresh call's end says it.
    pub fn on_pool_calls(&mut self, id: AllocationId, calls: u32, now: Instant) {
        if let Some(allocation) = self.get(id).filter(|a| a.is_live()) {
            allocation.calls = calls;
            if calls > 0 {
                allocation.idle_since = None;
            } else if allocation.idle_since.is_none() {
                allocation.idle_since = Some(now);
            }
        }
    }

    /// The heartbeat: idle allocations go, replacements come.
    pub fn tick(&mut self, now: Instant) -> Vec<Decision> {
        self.decide(now)
    }

    /// Whether a new call may start in allocation `id` now: one with
    /// `run_time_max` where that much time is left, one without anywhere
    /// but in an allocation's last `drain`.
    pub fn may_take(&self, id: AllocationId, run_time_max: Option<Duration>, now: Instant) -> bool {
        let Some(left) = self
            .allocations
            .get(id.0 as usize)
            .and_then(|a| a.time_left(now))
        else {
            return false;
        };
        match run_time_max {
            Some(needed) => left >= needed,
            None => left > self.settings.drain,
        }
    }

    /// Why a call with `run_time_max` could never run in any allocation.
    pub fn never_fits(&self, run_time_max: Duration) -> Option<String> {
        self.settings.never_fits(run_time_max)
    }

    /// The one decision point.
    fn decide(&mut self, now: Instant) -> Vec<Decision> {
        let mut decisions = Vec::new();
        self.release_idle(now, &mut decisions);
        let (wanted, replacing) = self.wanted(now);
        for i in replacing.into_iter().take(wanted as usize) {
            self.allocations[i].replaced = true;
        }
        for _ in 0..wanted {
            let id = AllocationId(self.allocations.len() as u32);
            self.allocations.push(Allocation {
                id,
                stage: Stage::Submitting,
                calls: 0,
                idle_since: None,
                released: false,
                replaced: false,
            });
            decisions.push(Decision::Submit(id));
        }
        decisions
    }

    /// How many allocations to submit now, and the running allocations
    /// that need a replacement (indices), which those submitted serve first.
    fn wanted(&self, now: Instant) -> (u32, Vec<usize>) {
        let s = &self.settings;
        let live = self.allocations.iter().filter(|a| a.is_live()).count() as u32;
        let coming = self.allocations.iter().filter(|a| a.is_coming()).count() as u32;
        // Replacements, for allocations with work that reach their drain
        // within the time the last one took to start.
        let lead = s.drain + self.last_queue_wait;
        let replacing: Vec<usize> = (0..self.allocations.len())
            .filter(|&i| {
                let a = &self.allocations[i];
                a.is_live()
                    && !a.replaced
                    && (a.calls > 0 || self.waiting.calls > 0)
                    && a.time_left(now).is_some_and(|left| left <= lead)
            })
            .collect();
        if self.paused(now).is_some() {
            return (0, replacing);
        }
        // Those kept even when idle, first.
        let mut wanted = s.min_allocations.saturating_sub(live);
        // The backlog: what the allocations on their way will not hold.
        if self.waiting.calls > 0 {
            let cpus = s.cpus.max(1);
            let short = self.waiting.cpus.saturating_sub(coming * cpus);
            wanted = wanted.max(short.div_ceil(cpus));
        }
        wanted = wanted.max(replacing.len() as u32);
        let room = s.max_allocations.saturating_sub(live);
        let queue_room = s.backlog.saturating_sub(coming);
        (wanted.min(room).min(queue_room), replacing)
    }

    /// Release, keeping `min_allocations` live: what has had no call for
    /// `idle_timeout` while none waits, and what has no call in its drain
    /// (nothing but a call with `run_time_max` short enough would start
    /// there any more).
    fn release_idle(&mut self, now: Instant, decisions: &mut Vec<Decision>) {
        let s = &self.settings;
        let mut live = self.allocations.iter().filter(|a| a.is_live()).count() as u32;
        let waiting = self.waiting.calls > 0;
        for allocation in &mut self.allocations {
            if live <= s.min_allocations {
                return;
            }
            if !allocation.is_live() || allocation.calls > 0 {
                continue;
            }
            let Some(left) = allocation.time_left(now) else {
                continue;
            };
            let idle_long = !waiting
                && allocation
                    .idle_since
                    .is_some_and(|since| now.saturating_duration_since(since) >= s.idle_timeout);
            if idle_long || left <= s.drain {
                allocation.released = true;
                live -= 1;
                decisions.push(Decision::Release(allocation.id));
            }
        }
    }
}

#[cfg(test)]
#[path = "allocations_tests.rs"]
mod tests;
