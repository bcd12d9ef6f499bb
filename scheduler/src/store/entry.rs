//! One entry file: what it holds (`Entry`) and its signed binary encoding,
//! laid out in the store module's documentation.

use super::signed;
use crate::auth::Key;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::io::{self, Write};

/// A task's outcome as the store keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub meta: Meta,
    /// The pickled result (`State::Done`) or exception (`State::Failed`).
    pub frames: Vec<Bytes>,
}

/// What is known about the run that produced an entry (`get_cache_data`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// The function's qualified name.
    pub function: String,
    pub state: State,
    /// Seconds since the Unix epoch: entries are compared across hosts.
    pub submitted: f64,
    pub started: f64,
    pub finished: f64,
    pub host: String,
    pub pid: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// The frames are the pickled return value.
    Done,
    /// The frames are the pickled exception.
    Failed,
}

/// Write `entry`, stored under `name`, signed with `key`, to `out`.
pub(super) fn encode(key: &Key, name: &str, entry: &Entry, out: &mut impl Write) -> io::Result<()> {
    let meta = Bytes::from(bincode::serialize(&entry.meta).expect("a Meta always serializes"));
    signed::encode(key, &signed::ENTRY, name, meta, &entry.frames, out)
}

/// The entry in `file`, the content of the entry file named `name`, once its
/// signature has been checked against `key`; else why it is invalid. The
/// frames are slices of `file`: their bytes are not copied again.
pub(super) fn decode(key: &Key, name: &str, file: Bytes) -> Result<Entry, String> {
    let (meta, frames) = signed::decode(key, &signed::ENTRY, name, file)?;
    let meta = bincode::deserialize(&meta).map_err(|e| format!("its meta does not decode: {e}"))?;
    Ok(Entry { meta, frames })
}
