//! One thread that asks the job system (squeue, flux jobs) for the states
//! of an executor's jobs (pilot jobs, allocations) in one call every few
//! seconds, and hands each answer
//! to the server, which reads them at its heartbeat. The jobs followed can
//! change (`watch`, `unwatch`); the thread ends once the server drops it.

use crate::jobs::{JobStatus, JobSystem};
use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the job system is asked (one call for all of the jobs).
const POLL: Duration = Duration::from_secs(2);

pub(super) struct JobWatch {
    /// The jobs asked about; the thread ends once this is its last owner.
    watched: Arc<Mutex<Vec<String>>>,
    reports: Receiver<HashMap<String, JobStatus>>,
}

impl JobWatch {
    /// Start following `jobs` (`name`: the thread's).
    pub(super) fn start(
        system: Arc<dyn JobSystem>,
        jobs: Vec<String>,
        name: &str,
    ) -> Result<JobWatch, String> {
        let watched = Arc::new(Mutex::new(jobs));
        let (reports_tx, reports) = channel();
        let asked = watched.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || loop {
                std::thread::sleep(POLL);
                if Arc::strong_count(&asked) == 1 {
                    return; // the executor is gone
                }
                let jobs = asked.lock().map(|jobs| jobs.clone()).unwrap_or_default();
                if jobs.is_empty() {
                    continue;
                }
                let Some(states) = system.states(&jobs) else {
                    continue; // the job system did not answer: no news
                };
                if reports_tx.send(states).is_err() {
                    return;
                }
            })
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(JobWatch { watched, reports })
    }

    pub(super) fn watch(&self, job: String) {
        if let Ok(mut watched) = self.watched.lock() {
            watched.push(job);
        }
    }

    /// `job` ended: the job system is not asked about it again.
    pub(super) fn unwatch(&self, job: &str) {
        if let Ok(mut watched) = self.watched.lock() {
            watched.retain(|j| j != job);
        }
    }

    /// The jobs still followed.
    pub(super) fn watched(&self) -> Vec<String> {
        self.watched
            .lock()
            .map(|jobs| jobs.clone())
            .unwrap_or_default()
    }

    /// The next answer not read yet, if any.
    pub(super) fn next_report(&self) -> Option<HashMap<String, JobStatus>> {
        self.reports.try_recv().ok()
    }
}
