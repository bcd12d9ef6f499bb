//! Every message between the scheduler and a worker is encrypted and
//! authenticated (an AEAD), whatever the address: a worker that Slurm or
//! Flux started may reach us across a network others can read, and the
//! frames are pickles of the user's data. Nothing is decoded, let alone
//! unpickled, before its frames have opened.
//!
//! XChaCha20-Poly1305 rather than AES-GCM: its 192-bit nonce holds a
//! structured nonce (direction, message, frame, chunk) with room to spare,
//! where GCM's 96 bits would have to be split tightly; and it is constant
//! time in software, on nodes with or without AES instructions.
//!
//! Sessions. The executor's key is shared by all its workers, so it never
//! encrypts directly (two connections counting from 0 would reuse nonces):
//! each connection has a session key, a keyed BLAKE3 hash of a random salt
//! the worker picks when it connects. Each message carries a seal frame,
//! `salt (32) | counter (8, LE)`; each side counts the messages it sends,
//! and the other refuses a counter not above the last one it opened, so a
//! message replayed on its connection is refused. One replayed on a new
//! connection is refused by the scheduler's memory of the salts it has
//! seen (`SaltsSeen`); the worker connects out and fixes its salt, so
//! nothing from another connection opens for it.
//!
//! Nonce of each piece: `direction (1) | 0 (3) | counter (8) | frame (4) |
//! chunk (4) | 0 (4)`, unique under a session key. A frame is sealed in
//! chunks of `CHUNK` bytes, on all cores for a large one; each chunk's
//! associated data is the frame count and the frame's length, so frames or
//! chunks cut off, moved or swapped do not open.

use crate::auth::Key;
use bytes::Bytes;
use chacha20poly1305::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use std::collections::HashSet;

pub const SALT_LEN: usize = 32;
const SEAL_LEN: usize = SALT_LEN + 8;
const TAG_LEN: usize = 16;
/// Frames are sealed in chunks of this size, in parallel when there are
/// several: a 100 MB array is not encrypted at one core's speed.
const CHUNK: usize = 4 << 20;

/// Which way a message goes: part of every nonce, so the two directions of
/// a session never share one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    ToWorker = 1,
    FromWorker = 2,
}

#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Fewer frames than a seal frame and a header.
    TooShort,
    /// A seal frame of the wrong size, or another connection's salt.
    NotThisSession,
    /// A counter not above the last one opened: a replay, or out of order.
    Replayed,
    /// A frame did not open: changed on the wire, or another key.
    Forged,
    /// The first message of a connection with a salt used before.
    SaltReused,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OpenError::TooShort => "message has fewer than two frames",
            OpenError::NotThisSession => "message is not of this connection's session",
            OpenError::Replayed => "message replayed (its counter was seen before)",
            OpenError::Forged => "message does not open (changed on the wire, or not ours)",
            OpenError::SaltReused => "connection replays the salt of an earlier one",
        })
    }
}

/// One connection's session key and salt.
#[derive(Clone)]
struct SessionKey {
    cipher: XChaCha20Poly1305,
    salt: [u8; SALT_LEN],
}

impl SessionKey {
    fn derive(executor: &Key, salt: [u8; SALT_LEN]) -> SessionKey {
        let key = blake3::keyed_hash(executor.bytes(), &salt);
        SessionKey {
            cipher: XChaCha20Poly1305::new(key.as_bytes().into()),
            salt,
        }
    }
}

/// The sending half of a session: seals messages in the order they are sent.
pub struct Sealer {
    key: SessionKey,
    direction: Direction,
    sent: u64,
}

/// The receiving half: opens messages, refusing replays.
pub struct Opener {
    key: SessionKey,
    direction: Direction,
    /// The counter of the last message opened; messages count from 1.
    opened: u64,
}

/// A worker's session with the scheduler, on a fresh salt.
pub fn connect(executor: &Key) -> (Sealer, Opener) {
    let mut salt = [0u8; SALT_LEN];
    rand::fill(&mut salt);
    halves(
        SessionKey::derive(executor, salt),
        Direction::FromWorker,
        Direction::ToWorker,
    )
}

fn halves(key: SessionKey, sends: Direction, receives: Direction) -> (Sealer, Opener) {
    (
        Sealer {
            key: key.clone(),
            direction: sends,
            sent: 0,
        },
        Opener {
            key,
            direction: receives,
            opened: 0,
        },
    )
}

/// The salts of the connections the scheduler accepted: a connection that
/// replays another's messages from its first one on is refused.
#[derive(Default)]
pub struct SaltsSeen(HashSet<[u8; SALT_LEN]>);

impl SaltsSeen {
    /// The scheduler's side of a new connection, from its first message
    /// (which the returned opener then opens). Its salt counts as seen only
    /// once `accept` is called, when the message opened.
    pub fn session(&self, executor: &Key, first: &[Bytes]) -> Result<(Sealer, Opener), OpenError> {
        let seal = first.first().ok_or(OpenError::TooShort)?;
        if seal.len() != SEAL_LEN {
            return Err(OpenError::NotThisSession);
        }
        let salt: [u8; SALT_LEN] = seal[..SALT_LEN].try_into().expect("length checked");
        if self.0.contains(&salt) {
            return Err(OpenError::SaltReused);
        }
        Ok(halves(
            SessionKey::derive(executor, salt),
            Direction::ToWorker,
            Direction::FromWorker,
        ))
    }

    /// Remember the salt of a session whose first message opened.
    pub fn accept(&mut self, opener: &Opener) {
        self.0.insert(opener.key.salt);
    }
}

fn nonce(direction: Direction, counter: u64, frame: u32, chunk: u32) -> XNonce {
    let mut nonce = [0u8; 24];
    nonce[0] = direction as u8;
    nonce[4..12].copy_from_slice(&counter.to_le_bytes());
    nonce[12..16].copy_from_slice(&frame.to_le_bytes());
    nonce[16..20].copy_from_slice(&chunk.to_le_bytes());
    XNonce::from(nonce)
}

fn associated(frames: usize, len: usize) -> [u8; 16] {
    let mut data = [0u8; 16];
    data[..8].copy_from_slice(&(frames as u64).to_le_bytes());
    data[8..].copy_from_slice(&(len as u64).to_le_bytes());
    data
}

/// Its `CHUNK`-sized pieces, each with the function applied, on all cores
/// when there are several.
fn each_chunk<F>(buffer: &mut [u8], chunk: usize, work: F) -> bool
where
    F: Fn(u32, &mut [u8]) -> bool + Sync,
{
    let pieces: Vec<(u32, &mut [u8])> = buffer
        .chunks_mut(chunk)
        .enumerate()
        .map(|(i, piece)| (i as u32, piece))
        .collect();
    if pieces.len() <= 1 {
        return pieces.into_iter().all(|(i, piece)| work(i, piece));
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(pieces.len());
    let per_thread = pieces.len().div_ceil(threads);
    let work = &work;
    let mut pieces = pieces;
    std::thread::scope(|scope| {
        let handles: Vec<_> = pieces
            .chunks_mut(per_thread)
            .map(|group| scope.spawn(move || group.iter_mut().all(|(i, p)| work(*i, p))))
            .collect();
        handles
            .into_iter()
            .all(|h| h.join().expect("sealing does not panic"))
    })
}

impl Sealer {
    /// The frames of one message, encrypted, behind its seal frame.
    pub fn seal(&mut self, frames: Vec<Bytes>) -> Vec<Bytes> {
        self.sent += 1;
        let mut seal = Vec::with_capacity(SEAL_LEN);
        seal.extend_from_slice(&self.key.salt);
        seal.extend_from_slice(&self.sent.to_le_bytes());
        let count = frames.len();
        let mut wire = Vec::with_capacity(count + 1);
        wire.push(Bytes::from(seal));
        for (index, frame) in frames.into_iter().enumerate() {
            wire.push(self.seal_frame(count, index as u32, &frame));
        }
        wire
    }

    /// Each chunk followed by its tag.
    fn seal_frame(&self, count: usize, index: u32, frame: &[u8]) -> Bytes {
        let chunks = frame.len().div_ceil(CHUNK).max(1);
        let mut out = vec![0u8; frame.len() + chunks * TAG_LEN];
        for (piece, plain) in out.chunks_mut(CHUNK + TAG_LEN).zip(frame.chunks(CHUNK)) {
            piece[..plain.len()].copy_from_slice(plain);
        }
        let aad = associated(count, frame.len());
        let (direction, counter, cipher) = (self.direction, self.sent, &self.key.cipher);
        each_chunk(&mut out, CHUNK + TAG_LEN, |chunk, piece| {
            let (text, tag) = piece.split_at_mut(piece.len() - TAG_LEN);
            let nonce = nonce(direction, counter, index, chunk);
            let sealed = cipher
                .encrypt_inout_detached(&nonce, &aad, text.into())
                .expect("a chunk is far below the cipher's limit");
            tag.copy_from_slice(&sealed);
            true
        });
        Bytes::from(out)
    }
}

impl Opener {
    /// The message's frames in the clear, or why it does not open; a
    /// message that does not open is not counted, so it cannot block the
    /// next one.
    pub fn open(&mut self, mut message: Vec<Bytes>) -> Result<Vec<Bytes>, OpenError> {
        if message.len() < 2 {
            return Err(OpenError::TooShort);
        }
        let seal = message.remove(0);
        if seal.len() != SEAL_LEN || seal[..SALT_LEN] != self.key.salt {
            return Err(OpenError::NotThisSession);
        }
        let counter = u64::from_le_bytes(seal[SALT_LEN..].try_into().expect("length checked"));
        if counter <= self.opened {
            return Err(OpenError::Replayed);
        }
        let count = message.len();
        let mut plain = Vec::with_capacity(count);
        for (index, frame) in message.iter().enumerate() {
            plain.push(self.open_frame(counter, count, index as u32, frame)?);
        }
        self.opened = counter;
        Ok(plain)
    }

    fn open_frame(
        &self,
        counter: u64,
        count: usize,
        index: u32,
        frame: &[u8],
    ) -> Result<Bytes, OpenError> {
        let chunks = frame.len().div_ceil(CHUNK + TAG_LEN);
        if chunks == 0 || frame.len() < chunks * TAG_LEN {
            return Err(OpenError::Forged);
        }
        let len = frame.len() - chunks * TAG_LEN;
        let aad = associated(count, len);
        let mut buffer = frame.to_vec();
        let (direction, cipher) = (self.direction, &self.key.cipher);
        let opened = each_chunk(&mut buffer, CHUNK + TAG_LEN, |chunk, piece| {
            if piece.len() < TAG_LEN {
                return false;
            }
            let (text, tag) = piece.split_at_mut(piece.len() - TAG_LEN);
            let nonce = nonce(direction, counter, index, chunk);
            let tag = Tag::try_from(&tag[..]).expect("TAG_LEN bytes");
            cipher
                .decrypt_inout_detached(&nonce, &aad, text.into(), &tag)
                .is_ok()
        });
        if !opened {
            return Err(OpenError::Forged);
        }
        let mut clear = Vec::with_capacity(len);
        for piece in buffer.chunks(CHUNK + TAG_LEN) {
            clear.extend_from_slice(&piece[..piece.len() - TAG_LEN]);
        }
        Ok(Bytes::from(clear))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Sealer, Opener, Sealer, Opener) {
        let key = Key::generate();
        let (mut worker_out, worker_in) = connect(&key);
        let hello = worker_out.seal(vec![Bytes::from_static(b"hello")]);
        let mut seen = SaltsSeen::default();
        let (scheduler_out, mut scheduler_in) = seen.session(&key, &hello).unwrap();
        assert_eq!(scheduler_in.open(hello).unwrap(), [b"hello".as_slice()]);
        seen.accept(&scheduler_in);
        (worker_out, worker_in, scheduler_out, scheduler_in)
    }

    #[test]
    fn frames_round_trip_and_are_not_in_the_clear_on_the_wire() {
        let (mut worker_out, mut worker_in, mut scheduler_out, mut scheduler_in) = pair();
        let frames = vec![
            Bytes::from_static(b"header"),
            Bytes::new(),
            Bytes::from(vec![5u8; 2 * CHUNK + 3]),
        ];
        let wire = scheduler_out.seal(frames.clone());
        assert!(wire[1..]
            .iter()
            .all(|f| !f.windows(6).any(|w| w == b"header" || w == [5u8; 6])));
        assert_eq!(worker_in.open(wire).unwrap(), frames);
        let back = worker_out.seal(frames.clone());
        assert_eq!(scheduler_in.open(back).unwrap(), frames);
    }

    #[test]
    fn a_changed_byte_anywhere_does_not_open() {
        let (_, mut worker_in, mut scheduler_out, _) = pair();
        let frames = vec![Bytes::from_static(b"h"), Bytes::from(vec![1u8; CHUNK + 9])];
        let wire = scheduler_out.seal(frames);
        for (frame, at) in [(0, 39), (1, 0), (2, CHUNK + 3), (2, CHUNK + 20)] {
            let mut changed = wire.clone();
            let mut bytes = changed[frame].to_vec();
            bytes[at] ^= 1;
            changed[frame] = Bytes::from(bytes);
            assert!(worker_in.open(changed).is_err(), "frame {frame} byte {at}");
        }
        assert!(worker_in.open(wire).is_ok(), "refusals are not counted");
    }

    #[test]
    fn frames_or_chunks_cut_off_or_swapped_do_not_open() {
        let (_, mut worker_in, mut scheduler_out, _) = pair();
        let wire = scheduler_out.seal(vec![
            Bytes::from_static(b"h"),
            Bytes::from_static(b"a"),
            Bytes::from(vec![2u8; 2 * CHUNK]),
        ]);
        let dropped = wire[..2].to_vec();
        assert_eq!(worker_in.open(dropped), Err(OpenError::Forged));
        let swapped = vec![wire[0].clone(), wire[2].clone(), wire[1].clone()];
        assert_eq!(worker_in.open(swapped), Err(OpenError::Forged));
        let mut cut = wire.clone();
        cut[3] = cut[3].slice(..CHUNK + TAG_LEN);
        assert_eq!(worker_in.open(cut), Err(OpenError::Forged));
    }

    #[test]
    fn a_replayed_message_is_refused_on_its_connection_and_on_a_new_one() {
        let key = Key::generate();
        let (mut worker_out, _) = connect(&key);
        let hello = worker_out.seal(vec![Bytes::from_static(b"hello")]);
        let done = worker_out.seal(vec![Bytes::from_static(b"done")]);
        let mut seen = SaltsSeen::default();
        let (_, mut opener) = seen.session(&key, &hello).unwrap();
        opener.open(hello.clone()).unwrap();
        seen.accept(&opener);
        opener.open(done.clone()).unwrap();
        assert_eq!(opener.open(done), Err(OpenError::Replayed));
        assert_eq!(opener.open(hello.clone()), Err(OpenError::Replayed));
        assert!(matches!(
            seen.session(&key, &hello),
            Err(OpenError::SaltReused)
        ));
    }

    #[test]
    fn another_key_or_session_does_not_open() {
        let (mut worker_out, _) = connect(&Key::generate());
        let hello = worker_out.seal(vec![Bytes::from_static(b"hello")]);
        let (_, mut stranger) = SaltsSeen::default()
            .session(&Key::generate(), &hello)
            .unwrap();
        assert_eq!(stranger.open(hello.clone()), Err(OpenError::Forged));
        let (_, mut worker_in, _, _) = pair();
        assert_eq!(worker_in.open(hello), Err(OpenError::NotThisSession));
    }
}
