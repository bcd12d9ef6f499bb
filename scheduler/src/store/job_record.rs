//! A job record (`jobs/<key>`): which batch job runs a key's call, for
//! clients that attach to it and for `terminate_tasks_in_cache`, which
//! hands it to `scancel` / `flux cancel`. Signed like entries, so that no
//! one but the store's owner can point those commands elsewhere, and its id
//! checked to be an id, so that not even a record of the owner's reaches a
//! command line as an option.

use super::signed;
use crate::auth::Key;
use bytes::Bytes;
use std::io::{self, Write};

/// Whether `job` is a batch job's id as the job systems print them: a Slurm
/// job id (decimal digits), or a Flux job id in f58 ('ƒ', or 'f' where the
/// locale is not UTF-8, then base58 digits: no 0, O, I or l).
pub fn valid_job_id(job: &str) -> bool {
    let digits = |s: &str, ok: fn(u8) -> bool| (1..=20).contains(&s.len()) && s.bytes().all(ok);
    let base58 = |b: u8| b.is_ascii_alphanumeric() && !matches!(b, b'0' | b'O' | b'I' | b'l');
    if let Some(f58) = job.strip_prefix('ƒ').or_else(|| job.strip_prefix('f')) {
        return digits(f58, base58);
    }
    digits(job, |b| b.is_ascii_digit())
}

/// Write the record of `job`, stored under `name`, signed with `key`.
pub(super) fn encode(key: &Key, name: &str, job: &str, out: &mut impl Write) -> io::Result<()> {
    let meta = Bytes::copy_from_slice(job.as_bytes());
    signed::encode(key, &signed::JOB, name, meta, &[], out)
}

/// The job id in `file`, the record named `name`, once its signature has
/// been checked against `key`; else why it is invalid.
pub(super) fn decode(key: &Key, name: &str, file: Bytes) -> Result<String, String> {
    let (meta, frames) = signed::decode(key, &signed::JOB, name, file)?;
    if !frames.is_empty() {
        return Err(format!(
            "it holds {} frames, a job record none",
            frames.len()
        ));
    }
    let job = String::from_utf8(meta.to_vec()).map_err(|_| "its job id is not UTF-8")?;
    if !valid_job_id(&job) {
        return Err(format!("{job:?} is not a job id"));
    }
    Ok(job)
}
