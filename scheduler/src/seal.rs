//! Every message between the scheduler and a worker that a job system
//! (Slurm, Flux) started is encrypted and authenticated (an AEAD), whatever
//! the address: it may reach us across a network others can read, and the
//! frames are pickles of the user's data. Messages of the local backend's
//! workers, on this machine's loopback, are authenticated only
//! (`Protection::Signed`). Nothing is decoded, let alone unpickled, before
//! its frames have opened.
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
//!
//! A signed session's frames go in the clear; its seal frame goes on with
//! the HMAC-SHA256 (`auth`, keyed with the session key) of the direction,
//! the salt and counter, and every frame.

use crate::auth::{Key, SIGNATURE_LEN};
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

/// What protects a session's frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    /// Encrypted and authenticated: workers a job system starts.
    Encrypted,
    /// Authenticated, in the clear: workers on this machine, whose loopback
    /// traffic others cannot read. Encrypting costs them a fifth of their
    /// tiny-task throughput (bench/bench_executor.py: 24,900 and 23,300
    /// tasks/s signed against 17,600 and 19,500 encrypted, 2 busy cores):
    /// each frame's AEAD costs some 3 µs however small it is, and a tiny
    /// task's message takes 26 µs to seal and open encrypted, 3 µs signed
    /// (`speed::tiny_message_speed`).
    Signed,
}

impl Protection {
    /// The variable that tells a worker which one its scheduler speaks.
    pub const VARIABLE: &'static str = "PMP_WIRE";

    pub fn name(self) -> &'static str {
        match self {
            Protection::Encrypted => "encrypted",
            Protection::Signed => "signed",
        }
    }

    pub fn from_name(name: &str) -> Result<Protection, String> {
        match name {
            "encrypted" => Ok(Protection::Encrypted),
            "signed" => Ok(Protection::Signed),
            _ => Err(format!(
                "{} is {name:?}; it is 'encrypted' or 'signed' (set by pmp's scheduler)",
                Protection::VARIABLE
            )),
        }
    }
}

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
    protection: Protection,
    cipher: XChaCha20Poly1305,
    mac: Key,
    salt: [u8; SALT_LEN],
}

impl SessionKey {
    fn derive(executor: &Key, salt: [u8; SALT_LEN], protection: Protection) -> SessionKey {
        let key = blake3::keyed_hash(executor.bytes(), &salt);
        SessionKey {
            protection,
            cipher: XChaCha20Poly1305::new(key.as_bytes().into()),
            mac: Key::from_bytes(*key.as_bytes()),
            salt,
        }
    }

    /// What a signed message's HMAC covers before its frames: its
    /// direction, salt and counter (signed as a first frame).
    fn signed_head(direction: Direction, seal: &[u8]) -> [u8; 1 + SEAL_LEN] {
        let mut head = [0u8; 1 + SEAL_LEN];
        head[0] = direction as u8;
        head[1..].copy_from_slice(&seal[..SEAL_LEN]);
        head
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
pub fn connect(executor: &Key, protection: Protection) -> (Sealer, Opener) {
    let mut salt = [0u8; SALT_LEN];
    rand::fill(&mut salt);
    halves(
        SessionKey::derive(executor, salt, protection),
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
    pub fn session(
        &self,
        executor: &Key,
        protection: Protection,
        first: &[Bytes],
    ) -> Result<(Sealer, Opener), OpenError> {
        let seal = first.first().ok_or(OpenError::TooShort)?;
        if seal.len() != seal_len(protection) {
            return Err(OpenError::NotThisSession);
        }
        let salt: [u8; SALT_LEN] = seal[..SALT_LEN].try_into().expect("length checked");
        if self.0.contains(&salt) {
            return Err(OpenError::SaltReused);
        }
        Ok(halves(
            SessionKey::derive(executor, salt, protection),
            Direction::ToWorker,
            Direction::FromWorker,
        ))
    }

    /// Remember the salt of a session whose first message opened.
    pub fn accept(&mut self, opener: &Opener) {
        self.0.insert(opener.key.salt);
    }
}

fn seal_len(protection: Protection) -> usize {
    match protection {
        Protection::Encrypted => SEAL_LEN,
        Protection::Signed => SEAL_LEN + SIGNATURE_LEN,
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
        if self.key.protection == Protection::Signed {
            let head = SessionKey::signed_head(self.direction, &seal);
            seal.extend_from_slice(&self.key.mac.sign_with_head(Some(&head), &frames));
            let mut wire = Vec::with_capacity(frames.len() + 1);
            wire.push(Bytes::from(seal));
            wire.extend(frames);
            return wire;
        }
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
        if seal.len() != seal_len(self.key.protection) || seal[..SALT_LEN] != self.key.salt {
            return Err(OpenError::NotThisSession);
        }
        let counter =
            u64::from_le_bytes(seal[SALT_LEN..SEAL_LEN].try_into().expect("length checked"));
        if counter <= self.opened {
            return Err(OpenError::Replayed);
        }
        if self.key.protection == Protection::Signed {
            let head = SessionKey::signed_head(self.direction, &seal);
            if !self
                .key
                .mac
                .verify_with_head(&seal[SEAL_LEN..], Some(&head), &message)
            {
                return Err(OpenError::Forged);
            }
            self.opened = counter;
            return Ok(message);
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

    const BOTH: [Protection; 2] = [Protection::Encrypted, Protection::Signed];

    fn pair(protection: Protection) -> (Sealer, Opener, Sealer, Opener) {
        let key = Key::generate();
        let (mut worker_out, worker_in) = connect(&key, protection);
        let hello = worker_out.seal(vec![Bytes::from_static(b"hello")]);
        let mut seen = SaltsSeen::default();
        let (scheduler_out, mut scheduler_in) = seen.session(&key, protection, &hello).unwrap();
        assert_eq!(scheduler_in.open(hello).unwrap(), [b"hello".as_slice()]);
        seen.accept(&scheduler_in);
        (worker_out, worker_in, scheduler_out, scheduler_in)
    }

    #[test]
    fn frames_round_trip_and_are_not_in_the_clear_on_the_wire() {
        let (mut worker_out, mut worker_in, mut scheduler_out, mut scheduler_in) =
            pair(Protection::Encrypted);
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
    fn signed_frames_round_trip_as_they_are() {
        let (_, mut worker_in, mut scheduler_out, _) = pair(Protection::Signed);
        let frames = vec![Bytes::from_static(b"header"), Bytes::from_static(b"pickle")];
        let wire = scheduler_out.seal(frames.clone());
        assert_eq!(wire[1..], frames);
        assert_eq!(worker_in.open(wire).unwrap(), frames);
    }

    #[test]
    fn a_changed_byte_anywhere_does_not_open() {
        for protection in BOTH {
            let (_, mut worker_in, mut scheduler_out, _) = pair(protection);
            let frames = vec![Bytes::from_static(b"h"), Bytes::from(vec![1u8; CHUNK + 9])];
            let wire = scheduler_out.seal(frames);
            for (frame, at) in [(0, 39), (0, 45), (1, 0), (2, 3), (2, CHUNK + 3)] {
                let mut changed = wire.clone();
                let mut bytes = changed[frame].to_vec();
                if at >= bytes.len() {
                    continue;
                }
                bytes[at] ^= 1;
                changed[frame] = Bytes::from(bytes);
                assert!(
                    worker_in.open(changed).is_err(),
                    "{protection:?}: frame {frame} byte {at}"
                );
            }
            assert!(worker_in.open(wire).is_ok(), "refusals are not counted");
        }
    }

    #[test]
    fn frames_or_chunks_cut_off_or_swapped_do_not_open() {
        let (_, mut worker_in, mut scheduler_out, _) = pair(Protection::Encrypted);
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
        for protection in BOTH {
            let key = Key::generate();
            let (mut worker_out, _) = connect(&key, protection);
            let hello = worker_out.seal(vec![Bytes::from_static(b"hello")]);
            let done = worker_out.seal(vec![Bytes::from_static(b"done")]);
            let mut seen = SaltsSeen::default();
            let (_, mut opener) = seen.session(&key, protection, &hello).unwrap();
            opener.open(hello.clone()).unwrap();
            seen.accept(&opener);
            opener.open(done.clone()).unwrap();
            assert_eq!(opener.open(done), Err(OpenError::Replayed));
            assert_eq!(opener.open(hello.clone()), Err(OpenError::Replayed));
            assert!(matches!(
                seen.session(&key, protection, &hello),
                Err(OpenError::SaltReused)
            ));
        }
    }

    #[test]
    fn another_key_session_or_protection_does_not_open() {
        for protection in BOTH {
            let (mut worker_out, _) = connect(&Key::generate(), protection);
            let hello = worker_out.seal(vec![Bytes::from_static(b"hello")]);
            let (_, mut stranger) = SaltsSeen::default()
                .session(&Key::generate(), protection, &hello)
                .unwrap();
            assert_eq!(stranger.open(hello.clone()), Err(OpenError::Forged));
            let (_, mut worker_in, _, _) = pair(protection);
            assert_eq!(worker_in.open(hello), Err(OpenError::NotThisSession));
        }
        // A worker told to sign cannot talk a scheduler that encrypts into
        // taking its messages in the clear.
        let key = Key::generate();
        let (mut signing, _) = connect(&key, Protection::Signed);
        let hello = signing.seal(vec![Bytes::from_static(b"hello")]);
        assert!(SaltsSeen::default()
            .session(&key, Protection::Encrypted, &hello)
            .is_err());
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// What a tiny task's message costs to seal and open, each way
    /// (`cargo test --release -p pmp-scheduler --lib seal::speed -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn tiny_message_speed() {
        for protection in [Protection::Encrypted, Protection::Signed] {
            let key = Key::generate();
            let (mut sealer, _) = connect(&key, protection);
            let first = sealer.seal(vec![Bytes::from_static(b"hello")]);
            let (_, mut opener) = SaltsSeen::default()
                .session(&key, protection, &first)
                .unwrap();
            opener.open(first).unwrap();
            let frames = vec![
                Bytes::from(vec![1u8; 60]),
                Bytes::from(vec![2u8; 200]),
                Bytes::from(vec![3u8; 40]),
            ];
            let n = 100_000;
            let t = std::time::Instant::now();
            for _ in 0..n {
                opener.open(sealer.seal(frames.clone())).unwrap();
            }
            eprintln!("{protection:?}: {:?} a message", t.elapsed() / n);
        }
    }
}
