//! Job mode: pmp-worker as the program of a batch job (Slurm's `sbatch`, with
//! `srun -n N pmp-worker` for N ranks), which may start long after the client
//! submitted the call, and after that client exited. There is no scheduler
//! and no network: the call comes from its input in the task store, and its
//! outcome goes to its entry there.
//!
//! Environment, set by the job's script:
//!
//! - `PMP_JOB_STORE`: the store's directory; `PMP_JOB_KEY`: the call's key.
//!   Either of them set with `PMP_SCHEDULER` unset selects this mode;
//! - `PMP_PYTHON`, `PMP_SYS_PATH`, `PMP_RANKS`, and the rank from the MPI
//!   launcher, as in connected mode: ranks above 0 follow rank 0 the same
//!   way. `PMP_KEY` is not used: inputs and entries are signed with the
//!   store's own key.
//!
//! Rank 0 reads and verifies the input and the entry of every key it depends
//! on, runs the call as a connected worker runs a task (what it prints stays
//! on the job's own stdout and stderr: its output file), writes the outcome
//! as the key's entry (`State::Failed` if the function raised), releases the
//! key's lock (taken by the client that submitted the job), and exits.
//!
//! A call runs once: a job that finds its outcome already stored exits
//! without running it. Its own input's outcome means Slurm started the job
//! again after it ended (a requeue after a node failure, `scontrol requeue`);
//! the lock it released then may be someone else's by now, so it is left
//! alone. A Done entry of another run (a client that ran the same call
//! meanwhile) ends the job as if it had run it, lock released.
//!
//! Exit codes, each with a reason on stderr prefixed `pmp-worker:`:
//!
//! - 0: the call ran and its entry is written, whether it returned or raised,
//!   or its outcome was stored already and it did not run again;
//! - 2: the environment is incomplete or wrong;
//! - 3: Python did not start;
//! - 4: pmp itself failed in Python: no entry is written;
//! - 5: a rank above 0 failed;
//! - 6: the key has no input, or its input fails its check: nothing is run
//!   or written;
//! - 7: a dependency has no entry in state Done (none, a failure, or one
//!   that fails its check): nothing is run or written;
//! - 8: the store cannot be opened, read or written.
//!
//! From 3 on the lock is released, unless the store could not be opened.

use crate::interpreter::Runtime;
use crate::settings::JobSettings;
use crate::stored;
use pmp_scheduler::protocol::FunctionRef;
use pmp_scheduler::store::{Entry, Input, State, Store, StoreError};
use pmp_scheduler::Bytes;
use std::collections::hash_map::{self, HashMap};
use std::fmt;

/// Why a job's call was not run, or its outcome not stored.
enum Failure {
    PythonDidNotStart(String),
    /// pmp's own code failed in Python: the call has no outcome.
    Internal(String),
    NoInput,
    InvalidInput(StoreError),
    /// `dependency` has no Done entry, for the reason `why`.
    Dependency {
        dependency: String,
        why: String,
    },
    Store(StoreError),
}

impl Failure {
    fn exit_code(&self) -> i32 {
        match self {
            Failure::PythonDidNotStart(_) => 3,
            Failure::Internal(_) => 4,
            Failure::NoInput | Failure::InvalidInput(_) => 6,
            Failure::Dependency { .. } => 7,
            Failure::Store(_) => 8,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::PythonDidNotStart(e) => write!(f, "Python did not start: {e}"),
            Failure::Internal(e) => write!(f, "pmp failed in Python: {e}"),
            Failure::NoInput => write!(
                f,
                "the task store has no input for it (it was cleared, or never written); \
                 nothing was run"
            ),
            Failure::InvalidInput(e) => write!(f, "{e}; nothing was run"),
            Failure::Dependency { dependency, why } => {
                write!(
                    f,
                    "it depends on {dependency}, which {why}; nothing was run"
                )
            }
            Failure::Store(e) => write!(f, "{e}"),
        }
    }
}

/// Run the job's call; returns the process's exit code.
pub fn run(settings: &JobSettings) -> i32 {
    let key = settings.key.as_str();
    let store = match Store::open(&settings.store) {
        Ok(store) => store,
        Err(e) => return report(key, Failure::Store(e)),
    };
    // Python first, even for a call that turns out not to run: ranks above 0
    // wait for rank 0's first broadcast, and only the runtime's close
    // releases them; exiting without it would leave them waiting until the
    // job's time limit.
    let runtime = Runtime::start(&settings.python, None);
    let ran = match &runtime {
        Ok(runtime) => run_call(&store, key, runtime),
        Err(e) => Err(Failure::PythonDidNotStart(e.clone())),
    };
    let mut code = 0;
    let holds_lock = match ran {
        Ok(Ran::Called) => true,
        Ok(stored) => {
            say!("pmp-worker: job {key}: {stored}; it was not run again");
            stored != Ran::StoredBefore
        }
        Err(failure) => {
            code = report(key, failure);
            true
        }
    };
    if holds_lock {
        if let Err(e) = store.unlock(key) {
            say!("pmp-worker: job {key}: cannot release its lock: {e}");
            if code == 0 {
                code = Failure::Store(e).exit_code();
            }
        }
    }
    if let Ok(runtime) = runtime {
        runtime.close();
    }
    code
}

/// Print why the job failed; returns its exit code.
fn report(key: &str, failure: Failure) -> i32 {
    say!("pmp-worker: job {key}: {failure}");
    failure.exit_code()
}

/// What became of the job's call when nothing failed.
#[derive(Debug, PartialEq, Eq)]
enum Ran {
    /// It ran, and its outcome is stored.
    Called,
    /// The entry of this very input was there: the job ran before.
    StoredBefore,
    /// A Done entry of another run was there.
    StoredElsewhere,
}

impl fmt::Display for Ran {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ran::Called => write!(f, "it ran"),
            Ran::StoredBefore => write!(
                f,
                "its outcome is already in the task store: this job ran before and was \
                 started again (requeued)"
            ),
            Ran::StoredElsewhere => write!(
                f,
                "its result is already in the task store, written by another run"
            ),
        }
    }
}

/// Whether `key`'s outcome is stored already, and by whom (see `Ran`). An
/// entry that fails its check counts as none: the call runs and replaces it.
fn stored_already(store: &Store, key: &str, input: &Input) -> Result<Option<Ran>, Failure> {
    match store.read(key) {
        // `submitted` is copied from the input into the entry its run writes.
        Ok(Some(entry)) if entry.meta.submitted == input.submitted => Ok(Some(Ran::StoredBefore)),
        Ok(Some(entry)) if entry.meta.state == State::Done => Ok(Some(Ran::StoredElsewhere)),
        Ok(_) | Err(StoreError::Invalid { .. }) => Ok(None),
        Err(e) => Err(Failure::Store(e)),
    }
}

fn run_call(store: &Store, key: &str, runtime: &Runtime) -> Result<Ran, Failure> {
    let input = match store.read_input(key) {
        Ok(Some(input)) => input,
        Ok(None) => return Err(Failure::NoInput),
        Err(e @ StoreError::Invalid { .. }) => return Err(Failure::InvalidInput(e)),
        Err(e) => return Err(Failure::Store(e)),
    };
    if let Some(stored) = stored_already(store, key, &input)? {
        return Ok(stored);
    }
    let results = dependency_results(store, &input.dependencies)?;
    let Input {
        function,
        submitted,
        pickle,
        call,
        dependencies: _,
        resources: _,
    } = input;
    // The frames of a `ToWorker::Run` of an inline function: the function,
    // the call, then each dependency's result.
    let call_frames = call.len() as u32;
    let mut frames =
        Vec::with_capacity(1 + call.len() + results.iter().map(Vec::len).sum::<usize>());
    frames.push(pickle);
    frames.extend(call);
    let mut dependency_frames = Vec::with_capacity(results.len());
    for result in results {
        dependency_frames.push(result.len() as u32);
        frames.extend(result);
    }
    let started = stored::now();
    let (outcome, frames) = runtime
        .run(
            FunctionRef::Inline { slot: 0 },
            call_frames,
            &dependency_frames,
            frames,
        )
        .map_err(Failure::Internal)?;
    // A call that raised says nothing more on stderr: the log is what the
    // call printed, which the client shows as its output, and its entry
    // holds the exception.
    let entry = stored::outcome_entry(function, submitted, started, outcome, frames);
    store.write(key, &entry).map_err(Failure::Store)?;
    Ok(Ran::Called)
}

/// The result frames of each of `dependencies`, in order; an entry named
/// twice is read once.
fn dependency_results(store: &Store, dependencies: &[String]) -> Result<Vec<Vec<Bytes>>, Failure> {
    let mut read = HashMap::new();
    let mut results = Vec::with_capacity(dependencies.len());
    for dependency in dependencies {
        let frames = match read.entry(dependency.as_str()) {
            hash_map::Entry::Occupied(known) => known.into_mut(),
            hash_map::Entry::Vacant(slot) => slot.insert(done_result(store, dependency)?),
        };
        results.push(frames.clone());
    }
    Ok(results)
}

/// The frames of `dependency`'s result, if its entry is there, valid and Done.
fn done_result(store: &Store, dependency: &str) -> Result<Vec<Bytes>, Failure> {
    let why = match store.read(dependency) {
        Ok(Some(Entry { meta, frames })) if meta.state == State::Done => return Ok(frames),
        Ok(Some(_)) => "failed: its entry holds the exception".to_string(),
        Ok(None) => "has no entry: it has not run yet, or its entry was removed".to_string(),
        Err(e @ (StoreError::Invalid { .. } | StoreError::InvalidKey(_))) => {
            format!("has no usable entry: {e}")
        }
        Err(e) => return Err(Failure::Store(e)),
    };
    Err(Failure::Dependency {
        dependency: dependency.to_string(),
        why,
    })
}
