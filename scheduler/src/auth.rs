//! HMAC-SHA256 over every frame of a message. Messages carry pickles, i.e. code:
//! nothing is decoded, let alone unpickled, before `verify` has accepted it.

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub const SIGNATURE_LEN: usize = 32;
pub const KEY_LEN: usize = 32;
/// Frames larger than this enter the HMAC as the BLAKE3 digests of their
/// chunks, hashed on all cores: a 100 MB array is not signed at one core's
/// SHA-256 speed. BLAKE3 is collision resistant like SHA-256 (the HMAC's
/// key makes the signature) and 2.5x as fast even against SHA-NI: 23 ms a
/// core for 100 MB here, against 59 ms.
const CHUNK: usize = 4 << 20;

fn chunk_digests(frame: &[u8]) -> Vec<[u8; 32]> {
    let chunks: Vec<&[u8]> = frame.chunks(CHUNK).collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(chunks.len());
    let per_thread = chunks.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .chunks(per_thread)
            .map(|group| {
                scope.spawn(move || {
                    group
                        .iter()
                        .map(|chunk| -> [u8; 32] { blake3::hash(chunk).into() })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("hashing does not panic"))
            .collect()
    })
}

/// The per-executor secret. It reaches a local worker through its
/// environment, one that a job system starts through a file of its own
/// (`backend::key_file`), never a command line (where `ps` would show it).
#[derive(Clone)]
pub struct Key([u8; KEY_LEN]);

/// Never the key itself, wherever a structure holding it is printed.
impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    pub fn generate() -> Key {
        let mut bytes = [0u8; KEY_LEN];
        rand::fill(&mut bytes);
        Key(bytes)
    }

    /// A key kept in a file rather than the environment (the task store's).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Key {
        Key(bytes)
    }

    /// The raw key, from which the wire's session keys are derived (`seal`).
    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Result<Key, String> {
        let raw = hex::decode(text.trim()).map_err(|e| format!("key is not hex: {e}"))?;
        let bytes: [u8; KEY_LEN] = raw
            .try_into()
            .map_err(|_| format!("key must be {KEY_LEN} bytes"))?;
        Ok(Key(bytes))
    }

    /// The HMAC of `head` (if any) and `frames`, each as one frame: a head
    /// signs as if it were the first frame, without copying it into a list.
    fn mac(&self, head: Option<&[u8]>, frames: &[Bytes]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("any key length");
        // Each frame is length-prefixed so that moving bytes between frames
        // changes the signature.
        for frame in head.into_iter().chain(frames.iter().map(|f| f.as_ref())) {
            mac.update(&(frame.len() as u64).to_le_bytes());
            if frame.len() <= CHUNK {
                mac.update(frame);
            } else {
                for digest in chunk_digests(frame) {
                    mac.update(&digest);
                }
            }
        }
        mac
    }

    pub fn sign(&self, frames: &[Bytes]) -> Bytes {
        self.sign_with_head(None, frames)
    }

    /// The signature of `head` followed by `frames`: as `sign` of both in
    /// one list.
    pub fn sign_with_head(&self, head: Option<&[u8]>, frames: &[Bytes]) -> Bytes {
        Bytes::copy_from_slice(&self.mac(head, frames).finalize().into_bytes())
    }

    /// Constant-time check of `signature` against `frames`.
    pub fn verify(&self, signature: &[u8], frames: &[Bytes]) -> bool {
        self.verify_with_head(signature, None, frames)
    }

    /// `verify` of `head` followed by `frames`.
    pub fn verify_with_head(
        &self,
        signature: &[u8],
        head: Option<&[u8]>,
        frames: &[Bytes],
    ) -> bool {
        signature.len() == SIGNATURE_LEN && self.mac(head, frames).verify_slice(signature).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_signs_as_a_first_frame() {
        let key = Key::generate();
        let frames = vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")];
        let listed = [vec![Bytes::from_static(b"head")], frames.clone()].concat();
        let sig = key.sign_with_head(Some(b"head"), &frames);
        assert_eq!(sig, key.sign(&listed));
        assert!(key.verify_with_head(&sig, Some(b"head"), &frames));
        assert!(!key.verify_with_head(&sig, Some(b"hea"), &frames));
    }

    #[test]
    fn signature_covers_every_frame_and_its_boundaries() {
        let key = Key::generate();
        let frames = vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")];
        let sig = key.sign(&frames);
        assert!(key.verify(&sig, &frames));
        let moved = vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")];
        assert!(!key.verify(&sig, &moved));
        assert!(!Key::generate().verify(&sig, &frames));
        assert!(!key.verify(&sig[..31], &frames));
    }

    #[test]
    fn a_change_anywhere_in_a_large_frame_changes_the_signature() {
        let key = Key::generate();
        let mut data = vec![7u8; 3 * CHUNK + 5];
        let sig = key.sign(&[Bytes::from(data.clone())]);
        assert!(key.verify(&sig, &[Bytes::from(data.clone())]));
        data[2 * CHUNK + 1] = 8;
        assert!(!key.verify(&sig, &[Bytes::from(data)]));
    }

    #[test]
    fn key_round_trips_through_hex() {
        let key = Key::generate();
        let again = Key::from_hex(&key.to_hex()).unwrap();
        let frames = vec![Bytes::from_static(b"x")];
        assert!(again.verify(&key.sign(&frames), &frames));
        assert!(Key::from_hex("zz").is_err());
    }
}
#[cfg(test)]
mod speed {
    #[test]
    #[ignore]
    fn hmac_speed() {
        let key = super::Key::generate();
        let frames = vec![bytes::Bytes::from(vec![1u8; 100 << 20])];
        let t = std::time::Instant::now();
        let sig = key.sign(&frames);
        eprintln!("sign 100MB: {:?}", t.elapsed());
        assert!(key.verify(&sig, &frames));
    }
}
