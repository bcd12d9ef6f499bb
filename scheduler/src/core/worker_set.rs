//! A set of worker ids as a two-level bitmap: what the scheduling pass asks
//! of the idle, open and holding workers (is there one, which is the lowest,
//! put one in, take one out) in a few word operations.
//!
//! These sets change once or twice a call. As B-trees over 128,000 pool
//! workers each insert and remove walked four levels of nodes, a cache miss
//! each, and were a tenth of the scheduler thread's time (perf, issue 24's
//! simulation). Worker ids are the scheduler's own dense numbers, so a bit
//! per id costs 16 KiB for 128,000 workers, and a summary bit per word of
//! them finds the lowest member without scanning the empty words.

use crate::ids::WorkerId;

#[derive(Default)]
pub(super) struct WorkerSet {
    /// Bit `id % 64` of word `id / 64` is set when `id` is a member.
    words: Vec<u64>,
    /// Bit `w % 64` of summary word `w / 64` is set when word `w` is not zero.
    summary: Vec<u64>,
    len: usize,
}

impl WorkerSet {
    /// Put `id` in; false if it was in already.
    pub(super) fn insert(&mut self, id: WorkerId) -> bool {
        let (word, bit) = split(id.0 as usize);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
            self.summary.resize(word / 64 + 1, 0);
        }
        if self.words[word] & bit != 0 {
            return false;
        }
        self.words[word] |= bit;
        let (summary_word, summary_bit) = split(word);
        self.summary[summary_word] |= summary_bit;
        self.len += 1;
        true
    }

    /// Take `id` out; false if it was not in.
    pub(super) fn remove(&mut self, id: WorkerId) -> bool {
        let (word, bit) = split(id.0 as usize);
        match self.words.get_mut(word) {
            Some(w) if *w & bit != 0 => {
                *w &= !bit;
                if *w == 0 {
                    let (summary_word, summary_bit) = split(word);
                    self.summary[summary_word] &= !summary_bit;
                }
                self.len -= 1;
                true
            }
            _ => false,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The lowest member.
    pub(super) fn first(&self) -> Option<WorkerId> {
        self.iter().next()
    }

    /// The members, lowest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = WorkerId> + '_ {
        self.summary
            .iter()
            .enumerate()
            .flat_map(|(s, &summary)| bits(summary).map(move |b| s * 64 + b))
            .flat_map(move |w| bits(self.words[w]).map(move |b| WorkerId((w * 64 + b) as u32)))
    }
}

/// The word an index is in, and its bit there.
fn split(index: usize) -> (usize, u64) {
    (index / 64, 1u64 << (index % 64))
}

/// The positions of the set bits of `word`, lowest first.
fn bits(mut word: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (word != 0).then(|| {
            let bit = word.trailing_zeros() as usize;
            word &= word - 1;
            bit
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The same answers as a `BTreeSet` through a long mixed sequence,
    /// across word and summary-word boundaries.
    #[test]
    fn behaves_as_an_ordered_set() {
        let mut set = WorkerSet::default();
        let mut model = BTreeSet::new();
        let mut x: u64 = 12345;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let id = WorkerId(((x >> 33) % 9000) as u32);
            if (x >> 20) & 1 == 0 {
                assert_eq!(set.insert(id), model.insert(id));
            } else {
                assert_eq!(set.remove(id), model.remove(&id));
            }
            assert_eq!(set.len(), model.len());
            assert_eq!(set.first(), model.first().copied());
        }
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            model.iter().copied().collect::<Vec<_>>()
        );
        for id in model.clone() {
            assert!(set.remove(id));
        }
        assert_eq!(set.first(), None);
        assert_eq!(set.len(), 0);
        assert!(
            !set.remove(WorkerId(100_000)),
            "beyond the words: not a member"
        );
    }
}
