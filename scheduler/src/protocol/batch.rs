//! Many small messages of one link as one sealed message: what an agent's
//! link carries at scale is thousands of tiny `Run`s and `Done`s a second,
//! and each sealed message costs its own AEADs (a few µs each however
//! small it is), its send and its wake-up at the other end. A batch is one
//! header, the list of its messages' headers each with its payload
//! frames' lengths (`Entry`), and one payload frame, their frames end to
//! end: two AEADs and one send for the lot.
//!
//! The sender adds what it has ready in order (`Batch::add`) and sends
//! what that gives back, then the rest once nothing more is ready
//! (`Batch::take`), so the order of messages on the link is the order they
//! were made. A message with a large frame goes alone, as it was (never
//! copied into a batch), after the batch before it; a batch is cut at
//! `BATCH_BYTES` of payload and `BATCH_MESSAGES` messages, so neither a
//! large result nor a frame growing without limit waits behind small ones.
//! A batch of one message goes as that message.
//!
//! A batch is opened as any message (every byte of it authenticated by its
//! link's session) before `unpack` reads it; one that does not add up, or
//! holds a batch, is a peer out of step and is refused whole.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// Payload bytes a batch holds at most.
pub const BATCH_BYTES: usize = 256 << 10;
/// Messages a batch holds at most.
pub const BATCH_MESSAGES: usize = 1024;
/// A frame of more bytes makes its message go alone: copying it into a
/// batch would cost more than sealing it on its own.
pub const BATCHED_FRAME_MAX: usize = 16 << 10;

/// One message of a batch: its header, and the lengths of its payload
/// frames in the batch's payload frame, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry<H> {
    pub message: H,
    pub frames: Vec<u32>,
}

/// A header with a variant that is a batch of its own kind.
pub trait Batched: Sized {
    fn batch(entries: Vec<Entry<Self>>) -> Self;
    /// Its entries if it is a batch, itself if not.
    fn entries(self) -> Result<Vec<Entry<Self>>, Self>;
}

/// The messages made for one link and not sent yet.
pub struct Batch<H> {
    entries: Vec<Entry<H>>,
    payload: BytesMut,
}

impl<H> Default for Batch<H> {
    fn default() -> Self {
        Batch {
            entries: Vec::new(),
            payload: BytesMut::new(),
        }
    }
}

impl<H: Batched> Batch<H> {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Add `message`; what must be sent before it is read further, in
    /// order, goes to `out` (the batch so far when it is full, and the
    /// message itself when it goes alone).
    pub fn add(&mut self, message: H, frames: Vec<Bytes>, out: &mut Vec<(H, Vec<Bytes>)>) {
        let bytes: usize = frames.iter().map(Bytes::len).sum();
        let alone = frames.iter().any(|f| f.len() > BATCHED_FRAME_MAX);
        let full = self.entries.len() == BATCH_MESSAGES || self.payload.len() + bytes > BATCH_BYTES;
        if alone || full {
            out.extend(self.take());
        }
        if alone {
            return out.push((message, frames));
        }
        let lengths = frames.iter().map(|f| f.len() as u32).collect();
        for frame in &frames {
            self.payload.extend_from_slice(frame);
        }
        self.entries.push(Entry {
            message,
            frames: lengths,
        });
    }

    /// What was added and not sent yet, as one message: the batch, or the
    /// one message it holds.
    pub fn take(&mut self) -> Option<(H, Vec<Bytes>)> {
        let payload = std::mem::take(&mut self.payload).freeze();
        let mut entries = std::mem::take(&mut self.entries);
        match entries.len() {
            0 => None,
            1 => {
                let entry = entries.pop().expect("one");
                let frames = split(&payload, &entry.frames).expect("made here");
                Some((entry.message, frames))
            }
            _ => Some((H::batch(entries), vec![payload])),
        }
    }
}

/// The messages `header` and `frames` hold: a batch's, in order, or the
/// message itself.
pub fn unpack<H: Batched>(header: H, frames: Vec<Bytes>) -> Result<Vec<(H, Vec<Bytes>)>, String> {
    let entries = match header.entries() {
        Ok(entries) => entries,
        Err(message) => return Ok(vec![(message, frames)]),
    };
    let [payload]: [Bytes; 1] = frames
        .try_into()
        .map_err(|f: Vec<Bytes>| format!("a batch with {} payload frames, not one", f.len()))?;
    let total: u64 = entries
        .iter()
        .flat_map(|entry| &entry.frames)
        .map(|&len| u64::from(len))
        .sum();
    if total != payload.len() as u64 {
        return Err(format!(
            "a batch whose frames add up to {total} bytes, not its payload's {}",
            payload.len()
        ));
    }
    let mut rest = payload;
    let mut messages = Vec::with_capacity(entries.len());
    for entry in entries {
        let message = match entry.message.entries() {
            Ok(_) => return Err("a batch inside a batch".into()),
            Err(message) => message,
        };
        let taken: usize = entry.frames.iter().map(|&len| len as usize).sum();
        let frames = split(&rest.split_to(taken), &entry.frames).expect("lengths add up");
        messages.push((message, frames));
    }
    Ok(messages)
}

/// `payload` cut into frames of these lengths (slices, not copies).
fn split(payload: &Bytes, lengths: &[u32]) -> Option<Vec<Bytes>> {
    let mut at = 0usize;
    lengths
        .iter()
        .map(|&len| {
            let end = at
                .checked_add(len as usize)
                .filter(|&end| end <= payload.len())?;
            let frame = payload.slice(at..end);
            at = end;
            Some(frame)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header that batches: a number, or a batch of them.
    #[derive(Clone, Debug, PartialEq)]
    enum Said {
        One(u32),
        Many(Vec<Entry<Said>>),
    }

    impl Batched for Said {
        fn batch(entries: Vec<Entry<Said>>) -> Said {
            Said::Many(entries)
        }
        fn entries(self) -> Result<Vec<Entry<Said>>, Said> {
            match self {
                Said::Many(entries) => Ok(entries),
                one => Err(one),
            }
        }
    }

    fn frames(sizes: &[usize], fill: u8) -> Vec<Bytes> {
        sizes.iter().map(|&n| Bytes::from(vec![fill; n])).collect()
    }

    /// What the other end reads of what `add` and `take` gave.
    fn read(sent: Vec<(Said, Vec<Bytes>)>) -> (usize, Vec<(Said, Vec<Bytes>)>) {
        let wires = sent.len();
        let messages = sent
            .into_iter()
            .flat_map(|(header, frames)| unpack(header, frames).unwrap())
            .collect();
        (wires, messages)
    }

    #[test]
    fn messages_come_out_in_order_with_their_frames_and_a_large_frame_alone() {
        let made = vec![
            (Said::One(1), frames(&[3, 0, 5], 1)),
            (Said::One(2), Vec::new()),
            (Said::One(3), frames(&[BATCHED_FRAME_MAX + 1], 3)),
            (Said::One(4), frames(&[7], 4)),
            (Said::One(5), frames(&[2, 2], 5)),
        ];
        let (mut batch, mut sent) = (Batch::default(), Vec::new());
        for (header, frames) in made.clone() {
            batch.add(header, frames, &mut sent);
        }
        sent.extend(batch.take());
        assert!(batch.is_empty());
        let (wires, messages) = read(sent.clone());
        assert_eq!(messages, made);
        // 1 and 2 batched, 3 alone and not copied, 4 and 5 batched.
        assert_eq!(wires, 3);
        assert!(matches!(sent[1].0, Said::One(3)));
    }

    #[test]
    fn a_batch_is_cut_at_its_byte_and_message_bounds() {
        let (mut batch, mut sent) = (Batch::default(), Vec::new());
        let each = BATCHED_FRAME_MAX;
        let fit = BATCH_BYTES / each;
        for i in 0..=fit as u32 {
            batch.add(Said::One(i), frames(&[each], 0), &mut sent);
        }
        assert_eq!(
            sent.len(),
            1,
            "the batch before the message that did not fit"
        );
        assert!(matches!(&sent[0].0, Said::Many(entries) if entries.len() == fit));
        let (mut batch, mut sent) = (Batch::default(), Vec::new());
        for i in 0..=BATCH_MESSAGES as u32 {
            batch.add(Said::One(i), Vec::new(), &mut sent);
        }
        assert_eq!(sent.len(), 1);
        assert!(matches!(&sent[0].0, Said::Many(e) if e.len() == BATCH_MESSAGES));
        assert_eq!(
            batch.take(),
            Some((Said::One(BATCH_MESSAGES as u32), vec![]))
        );
    }

    #[test]
    fn a_batch_that_does_not_add_up_or_nests_is_refused() {
        let entry = |message, frames| Entry { message, frames };
        let short = Said::Many(vec![
            entry(Said::One(1), vec![4]),
            entry(Said::One(2), vec![]),
        ]);
        let error = unpack(short, vec![Bytes::from_static(b"abc")]).unwrap_err();
        assert!(error.contains("add up to 4 bytes"), "{error}");
        let two = Said::Many(vec![entry(Said::One(1), vec![])]);
        let error = unpack(two, vec![Bytes::new(), Bytes::new()]).unwrap_err();
        assert!(error.contains("2 payload frames"), "{error}");
        let nested = Said::Many(vec![entry(Said::Many(Vec::new()), vec![])]);
        let error = unpack(nested, vec![Bytes::new()]).unwrap_err();
        assert!(error.contains("inside a batch"), "{error}");
    }
}
