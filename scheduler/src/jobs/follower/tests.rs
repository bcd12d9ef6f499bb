//! The follower's stories, one look at a time, against a real store in a
//! scratch directory and a job system that answers what each test says.

use super::*;
use crate::jobs::test_support::{entry, new_store};
use crate::jobs::{JobRequest, SubmitError};
use crate::store::State;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

/// A job system whose queue lists what `listed` holds (None: it does not
/// answer) and whose accounting knows what `accounted` holds.
#[derive(Default)]
struct FakeJobs {
    listed: Mutex<Option<HashMap<String, JobStatus>>>,
    accounted: Mutex<HashMap<String, String>>,
}

impl FakeJobs {
    fn list(&self, job: &str, state: &str) {
        let status = JobStatus {
            state: state.into(),
            reason: String::new(),
            nodes: "node1".into(),
            started: None,
        };
        self.listed
            .lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .insert(job.into(), status);
    }
}

impl JobSystem for FakeJobs {
    fn name(&self) -> &'static str {
        "slurm"
    }
    fn refuse(&self, _: &JobRequest) -> Option<String> {
        None
    }
    fn submit(&self, _: &JobRequest) -> Result<String, SubmitError> {
        unreachable!("the follower submits nothing")
    }
    fn submit_script(
        &self,
        _: &[String],
        _: &str,
        _: &[(String, String)],
    ) -> Result<String, String> {
        unreachable!("the follower submits nothing")
    }
    fn states(&self, _: &[String]) -> Option<HashMap<String, JobStatus>> {
        self.listed.lock().unwrap().clone()
    }
    fn find(&self, _: &str) -> Result<Option<String>, String> {
        Ok(None)
    }
    fn accounted(&self, job: &str) -> Option<(String, Option<i32>)> {
        let state = self.accounted.lock().unwrap().get(job)?.clone();
        Some((state, Some(0)))
    }
    fn ended_at(&self, _: &str) -> Option<f64> {
        Some(1_765_000_000.0)
    }
    fn exit_code(&self, _: &str) -> Option<i32> {
        Some(7)
    }
    fn cancel(&self, _: &[String]) {}
}

/// The follower's thread, driven by hand: each `look` asks for states too.
struct Driven {
    thread: Thread,
    events: Arc<Mutex<Vec<JobEvent>>>,
}

impl Driven {
    fn new(jobs: Arc<FakeJobs>) -> Driven {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let thread = Thread {
            system: Some(jobs),
            output_limit: 1024,
            deliver: Box::new(move |batch| sink.lock().unwrap().extend(batch)),
            followed: Vec::new(),
            last_states: None,
        };
        Driven { thread, events }
    }

    fn follow_job(&mut self, task: u64, store: &Store, key: &str, job: Option<&str>) {
        let job = Some(JobFollow::new(job.map(String::from)));
        let followed = Followed::new(task, store.clone(), key.into(), job);
        self.thread.obey(Command::Follow(Box::new(followed)));
    }

    fn follow_key(&mut self, task: u64, store: &Store, key: &str) {
        let followed = Followed::new(task, store.clone(), key.into(), None);
        self.thread.obey(Command::Follow(Box::new(followed)));
    }

    /// One look, states included; the events it gave.
    fn look(&mut self) -> Vec<JobEvent> {
        self.thread.last_states = None;
        self.thread.look();
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

/// What a job prints, as its log in the store grows.
fn print(store: &Store, key: &str, text: &str) {
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(store.log_path(key).unwrap())
        .unwrap();
    log.write_all(text.as_bytes()).unwrap();
}

#[test]
fn a_running_jobs_output_then_its_entry_reach_the_client_and_its_record_goes() {
    let (_scratch, store) = new_store();
    let jobs = Arc::new(FakeJobs::default());
    let mut follower = Driven::new(jobs.clone());
    store.write_job("k", "12").unwrap();
    follower.follow_job(1, &store, "k", Some("12"));
    jobs.list("12", "RUNNING");
    print(&store, "k", "first line\n");
    // Entries are looked for before states are asked: its log is read
    // from the look after the one that saw it running.
    let events = follower.look();
    assert!(matches!(&events[..], [JobEvent::State { status, .. }] if status.state == "RUNNING"));
    let events = follower.look();
    assert!(matches!(&events[..], [JobEvent::Output { text, .. }] if text == "first line\n"));
    assert!(follower.look().is_empty(), "no change, nothing said");

    // The job flushed its last line before writing its entry.
    print(&store, "k", "last line\n");
    store.write("k", &entry(State::Done)).unwrap();
    let events = follower.look();
    assert!(matches!(&events[0], JobEvent::Output { text, .. } if text == "last line\n"));
    assert!(matches!(&events[1], JobEvent::Stored { entry: Ok(_), .. }));
    assert_eq!(
        store.read_job("k").unwrap(),
        None,
        "a seen end leaves no record"
    );
    assert!(follower.look().is_empty(), "followed no more");
}

#[test]
fn a_job_that_completed_without_an_entry_is_looked_at_again_then_said_to_have_ended() {
    let (_scratch, store) = new_store();
    let jobs = Arc::new(FakeJobs::default());
    let mut follower = Driven::new(jobs.clone());
    store.claim("k", "batch host 1").unwrap();
    follower.follow_job(1, &store, "k", Some("12"));
    jobs.list("12", "COMPLETED");
    // Written just now on a shared file system: two more looks.
    let first = follower.look();
    assert!(matches!(&first[..], [JobEvent::State { .. }]), "{first:?}");
    assert!(follower.look().is_empty());
    let ended = follower.look();
    let [JobEvent::Ended {
        job,
        state,
        exit_code,
        ended_at,
        ..
    }] = &ended[..]
    else {
        panic!("{ended:?}")
    };
    assert_eq!(
        (job.as_str(), state.as_deref(), *exit_code, *ended_at),
        ("12", Some("COMPLETED"), Some(7), Some(1_765_000_000.0))
    );
    assert_eq!(store.lock_owner("k"), None, "the key is free again");
}

#[test]
fn a_job_the_queue_forgets_ends_as_its_accounting_says_or_is_lost() {
    let (_scratch, store) = new_store();
    let jobs = Arc::new(FakeJobs::default());
    let mut follower = Driven::new(jobs.clone());
    follower.follow_job(1, &store, "a", Some("12"));
    follower.follow_job(2, &store, "b", Some("13"));
    jobs.accounted
        .lock()
        .unwrap()
        .insert("12".into(), "TIMEOUT".into());
    *jobs.listed.lock().unwrap() = None; // slurmctld restarting: says nothing
    assert!(follower.look().is_empty());
    assert!(follower.look().is_empty());
    *jobs.listed.lock().unwrap() = Some(HashMap::new()); // lists neither
    assert!(
        follower.look().is_empty(),
        "not yet visible, maybe: look again"
    );
    let mut ended = follower.look();
    ended.sort_by_key(|e| match e {
        JobEvent::Ended { task, .. } => *task,
        _ => 0,
    });
    let states: Vec<_> = ended
        .iter()
        .map(|e| match e {
            JobEvent::Ended { task, state, .. } => (*task, state.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(states, [(1, Some("TIMEOUT".into())), (2, None)]);
}

#[test]
fn a_key_another_run_holds_resolves_when_its_entry_comes_or_its_lock_goes() {
    let (_scratch, store) = new_store();
    let mut follower = Driven::new(Arc::new(FakeJobs::default()));
    let alive = crate::store::LockOwner::this_process(false).text();
    store.claim("done", &alive).unwrap();
    store.claim("given-up", &alive).unwrap();
    follower.follow_key(1, &store, "done");
    follower.follow_key(2, &store, "given-up");
    assert!(follower.look().is_empty(), "both still held");
    store.write("done", &entry(State::Failed)).unwrap();
    store.unlock("done").unwrap();
    store.unlock("given-up").unwrap();
    let events = follower.look();
    assert!(
        matches!(&events[0], JobEvent::Stored { task: 1, entry: Ok(e), .. } if e.meta.state == State::Failed)
    );
    assert!(matches!(&events[1], JobEvent::Released { task: 2 }));
}

#[test]
fn a_forgotten_job_is_followed_no_more() {
    let (_scratch, store) = new_store();
    let jobs = Arc::new(FakeJobs::default());
    let mut follower = Driven::new(jobs.clone());
    follower.follow_job(1, &store, "k", Some("12"));
    follower.thread.obey(Command::Forget(1));
    jobs.list("12", "RUNNING");
    store.write("k", &entry(State::Done)).unwrap();
    assert!(follower.look().is_empty());
}

#[test]
fn a_character_cut_between_reads_is_decoded_whole() {
    let mut partial = Vec::new();
    let bytes = "aé€😀".as_bytes();
    let mut text = String::new();
    for chunk in bytes.chunks(1) {
        text += &decode(&mut partial, chunk);
    }
    assert_eq!(text, "aé€😀");
    assert!(partial.is_empty());
    assert_eq!(decode(&mut partial, b"\xffx"), "\u{fffd}x");
}

#[test]
fn a_report_quotes_the_last_lines() {
    assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc\n");
    assert_eq!(last_lines("a", 5), "a");
}
