//! One entry file: what it holds (`Entry`) and its signed binary encoding,
//! laid out in the store module's documentation.

use super::FORMAT;
use crate::auth::{Key, SIGNATURE_LEN};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::io::{self, Write};

const MAGIC: &[u8; 8] = b"PMPENTRY";
/// Magic, format, signature: what precedes the signed body.
const PREAMBLE: usize = MAGIC.len() + 4 + SIGNATURE_LEN;
/// Signatures of entries are told apart from those of wire messages, should
/// the two ever share a key.
const DOMAIN: &[u8] = b"pmp task store entry\0";

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

/// What the HMAC covers, as `Key::sign` frames: the entry's name and the
/// format (so an entry copied under another name, or read as another format,
/// fails), then the meta bytes and every frame, each length-prefixed by
/// `Key::sign`, which also hashes large frames on all cores.
fn signed(name: &str, meta: &Bytes, frames: &[Bytes]) -> Vec<Bytes> {
    let mut context = Vec::with_capacity(DOMAIN.len() + 4 + name.len());
    context.extend_from_slice(DOMAIN);
    context.extend_from_slice(&FORMAT.to_le_bytes());
    context.extend_from_slice(name.as_bytes());
    let mut signed = Vec::with_capacity(frames.len() + 2);
    signed.push(Bytes::from(context));
    signed.push(meta.clone());
    signed.extend(frames.iter().cloned());
    signed
}

/// Write `entry`, stored under `name`, signed with `key`, to `out`.
pub(super) fn encode(key: &Key, name: &str, entry: &Entry, out: &mut impl Write) -> io::Result<()> {
    let meta = Bytes::from(bincode::serialize(&entry.meta).expect("a Meta always serializes"));
    let too_many = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} exceed the entry format's limit"),
        )
    };
    let meta_len = u32::try_from(meta.len()).map_err(|_| too_many("meta bytes"))?;
    let count = u32::try_from(entry.frames.len()).map_err(|_| too_many("frames"))?;
    let signature = key.sign(&signed(name, &meta, &entry.frames));
    let mut head = Vec::with_capacity(PREAMBLE + 8 + meta.len());
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&FORMAT.to_le_bytes());
    head.extend_from_slice(&signature);
    head.extend_from_slice(&meta_len.to_le_bytes());
    head.extend_from_slice(&meta);
    head.extend_from_slice(&count.to_le_bytes());
    out.write_all(&head)?;
    for frame in &entry.frames {
        out.write_all(&(frame.len() as u64).to_le_bytes())?;
        out.write_all(frame)?;
    }
    Ok(())
}

/// Reads the body's lengths, checking each against what is left, without
/// looking at the bytes they delimit.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, len: usize) -> Result<std::ops::Range<usize>, String> {
        if len > self.data.len() - self.at {
            return Err(format!(
                "it ends after {} bytes, inside a field of {len} bytes at offset {} (truncated?)",
                self.data.len(),
                self.at
            ));
        }
        self.at += len;
        Ok(self.at - len..self.at)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let range = self.take(N)?;
        Ok(self.data[range].try_into().expect("N bytes were taken"))
    }

    fn left(&self) -> usize {
        self.data.len() - self.at
    }
}

/// The entry in `file`, the content of the entry file named `name`, once its
/// signature has been checked against `key`; else why it is invalid. The
/// frames are slices of `file`: their bytes are not copied again.
pub(super) fn decode(key: &Key, name: &str, file: Bytes) -> Result<Entry, String> {
    let mut cursor = Cursor { data: &file, at: 0 };
    if cursor.take(MAGIC.len()).map(|r| &file[r]) != Ok(MAGIC.as_slice()) {
        return Err("it does not start with \"PMPENTRY\", so it is not a pmp store entry".into());
    }
    let format = u32::from_le_bytes(cursor.array()?);
    if format != FORMAT {
        return Err(format!(
            "it has entry format {format}, this pmp reads format {FORMAT}"
        ));
    }
    let signature: [u8; SIGNATURE_LEN] = cursor.array()?;
    let meta_len = u32::from_le_bytes(cursor.array()?) as usize;
    let meta = file.slice(cursor.take(meta_len)?);
    let count = u32::from_le_bytes(cursor.array()?) as usize;
    // Each frame takes 8 bytes at least: a bogus count reserves no more than the file's size.
    let mut frames = Vec::with_capacity(count.min(cursor.left() / 8));
    for _ in 0..count {
        let len = usize::try_from(u64::from_le_bytes(cursor.array()?))
            .map_err(|_| "a frame is longer than this machine's address space".to_string())?;
        frames.push(file.slice(cursor.take(len)?));
    }
    if cursor.left() != 0 {
        return Err(format!("{} bytes follow its last frame", cursor.left()));
    }
    if !key.verify(&signature, &signed(name, &meta, &frames)) {
        return Err(
            "its signature does not match: it was changed, or written under another \
                    name or by a store with another key"
                .into(),
        );
    }
    let meta = bincode::deserialize(&meta).map_err(|e| format!("its meta does not decode: {e}"))?;
    Ok(Entry { meta, frames })
}
