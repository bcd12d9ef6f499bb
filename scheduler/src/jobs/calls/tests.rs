//! The batch calls' stories, one step at a time: a real store in a scratch
//! directory, a job system that records what it is asked, and the
//! follower's events fed by hand.

use super::*;
use crate::jobs::test_support::{entry, new_store};
use bytes::Bytes;

/// A job system that numbers the jobs it takes and records them; it
/// refuses a job with dependencies while `refuse_dependencies` is set.
#[derive(Default)]
struct FakeJobs {
    submitted: Mutex<Vec<JobRequest>>,
    cancelled: Mutex<Vec<String>>,
    found: Mutex<Option<String>>,
    refuse_dependencies: Mutex<bool>,
}

impl FakeJobs {
    fn submitted(&self) -> Vec<(String, Vec<String>)> {
        let submitted = self.submitted.lock().unwrap();
        submitted
            .iter()
            .map(|r| (r.name.clone(), r.dependencies.clone()))
            .collect()
    }
}

impl JobSystem for FakeJobs {
    fn name(&self) -> &'static str {
        "slurm"
    }
    fn refuse(&self, _: &JobRequest) -> Option<String> {
        None
    }
    fn submit(&self, request: &JobRequest) -> Result<String, SubmitError> {
        if *self.refuse_dependencies.lock().unwrap() && !request.dependencies.is_empty() {
            return Err(SubmitError::DependencyRefused(
                "Job dependency problem".into(),
            ));
        }
        let mut submitted = self.submitted.lock().unwrap();
        submitted.push(request.clone());
        Ok(format!("{}", 100 + submitted.len()))
    }
    fn submit_script(
        &self,
        _: &[String],
        _: &str,
        _: &[(String, String)],
    ) -> Result<String, String> {
        unreachable!("batch calls submit no script")
    }
    fn states(&self, _: &[String]) -> Option<HashMap<String, JobStatus>> {
        Some(HashMap::new())
    }
    fn find(&self, _: &str) -> Result<Option<String>, String> {
        Ok(self.found.lock().unwrap().clone())
    }
    fn accounted(&self, _: &str) -> Option<(String, Option<i32>)> {
        None
    }
    fn ended_at(&self, _: &str) -> Option<f64> {
        None
    }
    fn exit_code(&self, _: &str) -> Option<i32> {
        None
    }
    fn cancel(&self, jobs: &[String]) {
        self.cancelled.lock().unwrap().extend_from_slice(jobs);
    }
}

/// One thing the calls asked the follower: ("follow", task, job) or ("forget", task, None).
type Asked = (&'static str, u64, Option<String>);

#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<Asked>>>);

impl Follows for Recorded {
    fn follow(&self, task: u64, _: Store, _: String, job: Option<String>) {
        self.0.lock().unwrap().push(("follow", task, job));
    }
    fn forget(&self, task: u64) {
        self.0.lock().unwrap().push(("forget", task, None));
    }
}

struct World {
    jobs: Arc<FakeJobs>,
    follows: Recorded,
    calls: Calls,
    store: Store,
}

impl World {
    fn new(store: Store) -> World {
        let jobs = Arc::new(FakeJobs::default());
        let follows = Recorded::default();
        let calls = Calls::new(jobs.clone(), Box::new(follows.clone()));
        World {
            jobs,
            follows,
            calls,
            store,
        }
    }

    /// Submit the call `task`, named and keyed after it, reading `upstream`.
    fn submit(&mut self, task: u64, upstream: &[(u64, Source)]) -> Taken {
        let upstream: Vec<Upstream> = upstream
            .iter()
            .map(|(of, source)| Upstream {
                store: self.store.clone(),
                key: key(*of),
                source: source.clone(),
            })
            .collect();
        let spec = CallSpec {
            task,
            store: self.store.clone(),
            key: key(task),
            input: Input {
                function: "f".into(),
                submitted: 1.0,
                pickle: Bytes::from_static(b"function"),
                call: vec![Bytes::from_static(b"call")],
                dependencies: upstream.iter().map(|u| u.key.clone()).collect(),
                resources: String::new(),
            },
            request: JobRequest {
                name: format!("f.{task}"),
                ..JobRequest::default()
            },
            upstream,
        };
        self.calls.submit(spec).unwrap()
    }

    fn forgotten(&self, task: u64) -> bool {
        let recorded = self.follows.0.lock().unwrap();
        recorded.contains(&("forget", task, None))
    }
}

fn key(task: u64) -> String {
    format!("k{task}")
}

fn ended(task: u64, job: &str, state: &str) -> JobEvent {
    JobEvent::Ended {
        task,
        job: job.into(),
        state: Some(state.into()),
        exit_code: None,
        ended_at: None,
        log_tail: String::new(),
    }
}

fn stored(task: u64, state: State) -> JobEvent {
    JobEvent::Stored {
        task,
        key: key(task),
        entry: Ok(entry(state)),
    }
}

fn concluded(task: u64, outcome: Outcome) -> CallEvent {
    CallEvent::Concluded { task, outcome }
}

/// The key is held by a batch client of another host (a live one, as far
/// as this host can tell).
fn held_elsewhere(store: &Store, task: u64) {
    assert!(store.try_lock(&key(task), "batch otherhost 1").unwrap());
}

#[test]
fn a_call_goes_at_once_after_a_launched_upstream_with_afterok_on_its_job() {
    let (_scratch, store) = new_store();
    let mut w = World::new(store.clone());
    assert_eq!(w.submit(1, &[]), Taken::Submitted("101".into()));
    assert_eq!(
        w.submit(2, &[(1, Source::Call(1))]),
        Taken::Submitted("102".into())
    );
    assert_eq!(
        w.jobs.submitted(),
        [
            ("f.1".to_string(), vec![]),
            ("f.2".to_string(), vec!["101".to_string()])
        ]
    );
    // Its job reads the input; clients attach by the record; the lock says a batch client.
    assert_eq!(
        store.read_input("k2").unwrap().unwrap().dependencies,
        ["k1"]
    );
    assert_eq!(store.read_job("k2").unwrap().as_deref(), Some("102"));
    assert!(store.lock_owner("k2").unwrap().starts_with("batch "));
    assert_eq!(w.calls.open_jobs(), ["101", "102"]);
}

#[test]
fn a_call_waits_for_an_attached_upstream_until_its_record_names_the_job() {
    let (_scratch, store) = new_store();
    let mut w = World::new(store.clone());
    held_elsewhere(&store, 1);
    let attached = w.submit(1, &[]);
    assert!(matches!(attached, Taken::Attached { job: None, .. }));
    assert_eq!(w.submit(2, &[(1, Source::Call(1))]), Taken::Waiting);
    assert!(w.jobs.submitted().is_empty());
    assert!(!store.has_input("k2"));

    let events = w.calls.learn(vec![JobEvent::Known {
        task: 1,
        job: "77".into(),
    }]);
    assert_eq!(
        events,
        [
            CallEvent::Launched {
                task: 1,
                job: "77".into()
            },
            CallEvent::Launched {
                task: 2,
                job: "101".into()
            },
        ]
    );
    assert_eq!(
        w.jobs.submitted(),
        [("f.2".to_string(), vec!["77".to_string()])]
    );
    // The follower heard of it when it began to wait; its record names it now.
    assert_eq!(store.read_job("k2").unwrap().as_deref(), Some("101"));
}

#[test]
fn a_waiting_call_whose_upstream_failed_fails_as_it_did_with_no_job() {
    let (_scratch, store) = new_store();
    let mut w = World::new(store.clone());
    held_elsewhere(&store, 1);
    w.submit(1, &[]);
    assert_eq!(w.submit(2, &[(1, Source::Call(1))]), Taken::Waiting);
    let events = w.calls.learn(vec![stored(1, State::Failed)]);
    assert_eq!(events.len(), 2);
    assert_eq!(events[1], concluded(2, Outcome::AsUpstream(1)));
    assert!(w.jobs.submitted().is_empty());
    assert_eq!(store.lock_owner("k2"), None, "its key is free again");
    assert!(w.forgotten(2));
    // A later dependent of the failed call fails at submit.
    assert_eq!(
        w.submit(3, &[(1, Source::Call(1))]),
        Taken::Concluded(Outcome::AsUpstream(1))
    );
}

#[test]
fn a_dependent_whose_job_ended_waits_for_its_upstream_and_fails_as_it_did() {
    let (_scratch, store) = new_store();
    let mut w = World::new(store.clone());
    w.submit(1, &[]);
    w.submit(2, &[(1, Source::Call(1))]);
    // The job system cancelled the dependent (its upstream failed) before
    // the follower saw the upstream's entry.
    assert!(w.calls.learn(vec![ended(2, "102", "CANCELLED")]).is_empty());
    let events = w.calls.learn(vec![stored(1, State::Failed)]);
    assert_eq!(events[1], concluded(2, Outcome::AsUpstream(1)));
}

#[test]
fn a_job_that_ended_on_its_own_says_how() {
    let (_scratch, store) = new_store();
    let mut w = World::new(store.clone());
    w.submit(1, &[]);
    w.submit(2, &[(1, Source::Call(1))]);
    w.calls.learn(vec![stored(1, State::Done)]);
    let events = w.calls.learn(vec![ended(2, "102", "TIMEOUT")]);
    let [CallEvent::Concluded {
        task: 2,
        outcome:
            Outcome::Ended {
                state,
                has_upstream: true,
                ..
            },
    }] = &events[..]
    else {
        panic!("{events:?}")
    };
    assert_eq!(state.as_deref(), Some("TIMEOUT"));
    assert_eq!(w.calls.open_jobs(), Vec::<String>::new());
}

#[test]
fn a_refused_dependency_concludes_as_its_upstream_once_that_has() {
    let (_scratch, store) = new_store();
    let mut w = World::new(store.clone());
    w.submit(1, &[]);
    *w.jobs.refuse_dependencies.lock().unwrap() = true;
    // Its upstream's job failed between the look and the submission.
    assert_eq!(w.submit(2, &[(1, Source::Call(1))]), Taken::Waiting);
    assert!(!store.has_input("k2"), "a refused job's input goes");
    assert_eq!(store.lock_owner("k2"), None);
    let events = w.calls.learn(vec![stored(1, State::Failed)]);
    assert_eq!(events[1], concluded(2, Outcome::AsUpstream(1)));
}

#[test]
fn a_failure_stored_up_the_chain_by_another_client_is_the_dependents() {
    let (_scratch, store) = new_store();
    let mut w = World::new(store.clone());
    store.write("k9", &entry(State::Failed)).unwrap();
    w.submit(2, &[(9, Source::Job("55".into()))]);
    assert_eq!(
        w.jobs.submitted(),
        [("f.2".to_string(), vec!["55".to_string()])]
    );
    let events = w.calls.learn(vec![ended(2, "101", "CANCELLED")]);
    assert_eq!(
        events,
        [concluded(
            2,
            Outcome::UpstreamStored {
                key: "k9".into(),
                entry: entry(State::Failed)
            }
        )]
    );
}

#[test]
fn cancelling_a_call_cancels_its_job_frees_its_key_and_fails_its_waiting_dependents() {
    let (_scratch, store) = new_store();
    let mut w = World::new(store.clone());
    held_elsewhere(&store, 1);
    w.submit(1, &[]);
    w.submit(2, &[(1, Source::Call(1))]);
    w.submit(3, &[]);
    let events = w.calls.cancel(&[2, 3]);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(*w.jobs.cancelled.lock().unwrap(), ["101"]);
    assert_eq!(store.lock_owner("k2"), None);
    assert_eq!(store.lock_owner("k3"), None);
    // The waiting call is over; the launched one is followed to its job's end.
    assert!(w.forgotten(2) && !w.forgotten(3));
    let events = w.calls.learn(vec![ended(3, "101", "CANCELLED")]);
    assert!(
        matches!(&events[..], [CallEvent::Concluded { task: 3, outcome: Outcome::Ended { state: Some(s), .. } }] if s == "CANCELLED"),
        "{events:?}"
    );

    let mut w = World::new(store.clone());
    w.submit(4, &[]);
    w.submit(5, &[(4, Source::Call(4))]);
    held_elsewhere(&store, 6);
    w.submit(6, &[]);
    w.submit(7, &[(6, Source::Call(6))]);
    let events = w.calls.cancel(&[6]);
    assert_eq!(events, [concluded(7, Outcome::AsUpstream(6))]);
    // A dependent whose job the job system ended for a cancelled upstream
    // fails as cancelled too, once that upstream's job ended.
    w.calls.cancel(&[4]);
    assert_eq!(
        w.calls.learn(vec![ended(5, "102", "CANCELLED")]),
        [concluded(5, Outcome::AsUpstream(4))]
    );
}

#[test]
fn a_job_a_dead_client_left_queued_is_found_not_submitted_again() {
    let (_scratch, store) = new_store();
    let mut w = World::new(store.clone());
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let owner = LockOwner {
        batch: true,
        host: crate::host::name(),
        pid: dead,
    };
    assert!(store.try_lock("k1", &owner.text()).unwrap());
    *w.jobs.found.lock().unwrap() = Some("88".into());
    assert_eq!(
        w.submit(1, &[]),
        Taken::Found {
            owner: owner.text(),
            job: "88".into()
        }
    );
    assert!(w.jobs.submitted().is_empty());
    assert_eq!(store.read_job("k1").unwrap().as_deref(), Some("88"));
}

#[test]
fn a_failure_no_client_saw_fails_the_next_submission_once() {
    let (_scratch, store) = new_store();
    let mut w = World::new(store.clone());
    store.write("k1", &entry(State::Failed)).unwrap();
    store.write_job("k1", "42").unwrap();
    assert_eq!(
        w.submit(1, &[]),
        Taken::FailedUnseen {
            job: "42".into(),
            entry: entry(State::Failed)
        }
    );
    // Its record went: the next submission runs it again.
    assert_eq!(store.read_job("k1").unwrap(), None);
    assert_eq!(w.submit(1, &[]), Taken::Submitted("101".into()));
}
