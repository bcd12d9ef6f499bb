//! One input file: a call as the client leaves it for a batch job that runs
//! it later with no client around (`Input`), and its signed encoding, laid
//! out in the store module's documentation.

use super::signed;
use crate::auth::Key;
use bytes::Bytes;
use std::io::{self, Write};

/// A call waiting in the store to be run: what a `ToWorker::Run` would carry,
/// with the results it depends on named by their keys instead of sent along.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    /// The function's qualified name, for the entry's `Meta`.
    pub function: String,
    /// When the client submitted the call, in seconds since the Unix epoch.
    pub submitted: f64,
    /// The cloudpickled function.
    pub pickle: Bytes,
    /// The call's frames: its pickled arguments and their buffers.
    pub call: Vec<Bytes>,
    /// The keys of the entries whose results the call's Future placeholders
    /// stand for, in placeholder-index order.
    pub dependencies: Vec<String>,
    /// The call's resources as the client words them (a JSON object, for
    /// `get_cache_data`'s `resource_dict`; never read as code); empty in
    /// inputs written before it was kept.
    pub resources: String,
}

/// The meta blob of an input file, as bincode: function, submitted,
/// dependencies, resources. An input written before `resources` was kept
/// holds the first three (`EarlierMeta`); bincode reads those from either.
type InputMeta = (String, f64, Vec<String>, String);
type EarlierMeta = (String, f64, Vec<String>);

/// Write `input`, stored under `name`, signed with `key`, to `out`.
pub(super) fn encode(key: &Key, name: &str, input: &Input, out: &mut impl Write) -> io::Result<()> {
    let meta = bincode::serialize(&(
        &input.function,
        input.submitted,
        &input.dependencies,
        &input.resources,
    ))
    .expect("an input's meta always serializes");
    let mut frames = Vec::with_capacity(1 + input.call.len());
    frames.push(input.pickle.clone());
    frames.extend(input.call.iter().cloned());
    signed::encode(key, &signed::INPUT, name, Bytes::from(meta), &frames, out)
}

/// The input in `file`, the content of the input file named `name`, once its
/// signature has been checked against `key`; else why it is invalid.
pub(super) fn decode(key: &Key, name: &str, file: Bytes) -> Result<Input, String> {
    let (meta, mut frames) = signed::decode(key, &signed::INPUT, name, file)?;
    let (function, submitted, dependencies, resources): InputMeta =
        match bincode::deserialize(&meta) {
            Ok(meta) => meta,
            Err(_) => {
                let (function, submitted, dependencies): EarlierMeta = bincode::deserialize(&meta)
                    .map_err(|e| format!("its meta does not decode: {e}"))?;
                (function, submitted, dependencies, String::new())
            }
        };
    if frames.is_empty() {
        return Err("it holds no function pickle".into());
    }
    let pickle = frames.remove(0);
    Ok(Input {
        function,
        submitted,
        pickle,
        call: frames,
        dependencies,
        resources,
    })
}
