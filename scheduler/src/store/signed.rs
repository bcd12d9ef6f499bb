//! The signed file format that entries and inputs share, laid out in the
//! store module's documentation: a magic, the format, an HMAC, then a meta
//! blob and frames. Each kind of file has its own magic and its own signing
//! context, so a file of one kind never passes as the other.

use super::FORMAT;
use crate::auth::{Key, SIGNATURE_LEN};
use bytes::Bytes;
use std::io::{self, Write};

/// What tells one kind of signed file from another.
pub(super) struct Kind {
    /// The file's first 8 bytes.
    pub magic: &'static [u8; 8],
    /// Leads the signed bytes: signatures of entries, of inputs and of wire
    /// messages are told apart, should any two ever share a key.
    pub domain: &'static [u8],
    /// What the file is, in messages.
    pub noun: &'static str,
}

pub(super) const ENTRY: Kind = Kind {
    magic: b"PMPENTRY",
    domain: b"pmp task store entry\0",
    noun: "entry",
};

pub(super) const INPUT: Kind = Kind {
    magic: b"PMPINPUT",
    domain: b"pmp task store input\0",
    noun: "input",
};

pub(super) const JOB: Kind = Kind {
    magic: b"PMPJOB\0\0",
    domain: b"pmp task store job record\0",
    noun: "job record",
};

/// Magic and format: what a file's first bytes must be before anything else
/// of it is read.
pub(super) const HEAD: usize = 8 + 4;

/// Whether `head`, a file's first `HEAD` bytes, starts a file of `kind` of
/// this format; else why not.
pub(super) fn check_head(kind: &Kind, head: &[u8]) -> Result<(), String> {
    if head.len() < HEAD || &head[..8] != kind.magic.as_slice() {
        return Err(format!(
            "it does not start with {:?}, so it is not a pmp store {}",
            String::from_utf8_lossy(kind.magic),
            kind.noun
        ));
    }
    let format = u32::from_le_bytes(head[8..HEAD].try_into().expect("4 bytes"));
    if format != FORMAT {
        return Err(format!(
            "it has {} format {format}, this pmp reads format {FORMAT}",
            kind.noun
        ));
    }
    Ok(())
}

/// Magic, format, signature: what precedes the signed body.
const PREAMBLE: usize = 8 + 4 + SIGNATURE_LEN;

/// What the HMAC covers, as `Key::sign` frames: the kind's domain, the
/// format and the file's name (so a file copied under another name, read as
/// another format or as the other kind, fails), then the meta bytes and every
/// frame, each length-prefixed by `Key::sign`, which also hashes large frames
/// on all cores.
fn signed(kind: &Kind, name: &str, meta: &Bytes, frames: &[Bytes]) -> Vec<Bytes> {
    let mut context = Vec::with_capacity(kind.domain.len() + 4 + name.len());
    context.extend_from_slice(kind.domain);
    context.extend_from_slice(&FORMAT.to_le_bytes());
    context.extend_from_slice(name.as_bytes());
    let mut signed = Vec::with_capacity(frames.len() + 2);
    signed.push(Bytes::from(context));
    signed.push(meta.clone());
    signed.extend(frames.iter().cloned());
    signed
}

/// Write a file of `kind`, stored under `name`, signed with `key`, to `out`.
pub(super) fn encode(
    key: &Key,
    kind: &Kind,
    name: &str,
    meta: Bytes,
    frames: &[Bytes],
    out: &mut impl Write,
) -> io::Result<()> {
    let too_many = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} exceed the store {}'s limit", kind.noun),
        )
    };
    let meta_len = u32::try_from(meta.len()).map_err(|_| too_many("meta bytes"))?;
    let count = u32::try_from(frames.len()).map_err(|_| too_many("frames"))?;
    let signature = key.sign(&signed(kind, name, &meta, frames));
    let mut head = Vec::with_capacity(PREAMBLE + 8 + meta.len());
    head.extend_from_slice(kind.magic);
    head.extend_from_slice(&FORMAT.to_le_bytes());
    head.extend_from_slice(&signature);
    head.extend_from_slice(&meta_len.to_le_bytes());
    head.extend_from_slice(&meta);
    head.extend_from_slice(&count.to_le_bytes());
    out.write_all(&head)?;
    for frame in frames {
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

/// The meta bytes and frames of `file`, the content of the file of `kind`
/// named `name`, once its signature has been checked against `key`; else why
/// it is invalid. Both are slices of `file`: their bytes are not copied again.
pub(super) fn decode(
    key: &Key,
    kind: &Kind,
    name: &str,
    file: Bytes,
) -> Result<(Bytes, Vec<Bytes>), String> {
    check_head(kind, &file[..HEAD.min(file.len())])?;
    let mut cursor = Cursor {
        data: &file,
        at: HEAD,
    };
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
    if !key.verify(&signature, &signed(kind, name, &meta, &frames)) {
        return Err(
            "its signature does not match: it was changed, or written under another \
             name or by a store with another key"
                .into(),
        );
    }
    Ok((meta, frames))
}
