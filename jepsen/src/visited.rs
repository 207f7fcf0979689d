//! The search's cache of visited (linearized set, model state) pairs: an open-addressing hash
//! table whose bitsets live in one arena of words, so an insert allocates only when a table
//! grows.
//!
//! It must not decide anything; it only answers "seen before?". The caller supplies the set's
//! hash (kept incrementally by the search) so no bitset is hashed twice.

use crate::fast_hash::mix64;
use crate::limits::{MAX_CACHE_ENTRIES, MAX_CACHE_WORDS};

const EMPTY: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Slot {
    hash: u64,
    /// Index of the bitset in the arena (in bitsets, not words); `EMPTY` for a free slot.
    set: u32,
    state: u32,
}

/// Why an insert could not be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheFull;

/// A set of (bitset, state) pairs with bitsets of a fixed number of words.
pub struct VisitedCache {
    words: usize,
    slots: Vec<Slot>,
    len: usize,
    arena: Vec<u64>,
}

impl VisitedCache {
    /// An empty cache for bitsets of `words` words, sized for about `expected` pairs.
    pub fn new(words: usize, expected: usize) -> Self {
        VisitedCache {
            words: words.max(1),
            slots: vec![
                Slot {
                    hash: 0,
                    set: EMPTY,
                    state: 0
                };
                (expected * 2).clamp(64, 1 << 16).next_power_of_two()
            ],
            len: 0,
            arena: Vec::with_capacity(expected.min(1 << 16) * words.max(1)),
        }
    }

    /// How many pairs are stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds the pair unless present; `Ok(true)` when it was new.
    #[inline]
    pub fn insert(&mut self, bits: &[u64], set_hash: u64, state: u32) -> Result<bool, CacheFull> {
        let hash = set_hash ^ mix64(u64::from(state));
        let mask = self.slots.len() - 1;
        let mut index = (hash as usize) & mask;
        loop {
            let slot = self.slots[index];
            if slot.set == EMPTY {
                break;
            }
            if slot.hash == hash && slot.state == state {
                let start = slot.set as usize * self.words;
                let stored = &self.arena[start..start + self.words];
                if stored.iter().zip(bits).all(|(a, b)| a == b) {
                    return Ok(false);
                }
            }
            index = (index + 1) & mask;
        }
        if self.len >= MAX_CACHE_ENTRIES || self.arena.len() + self.words > MAX_CACHE_WORDS {
            return Err(CacheFull);
        }
        let set = self.len as u32;
        self.arena.extend_from_slice(bits);
        self.slots[index] = Slot { hash, set, state };
        self.len += 1;
        if self.len * 2 > self.slots.len() {
            self.grow();
        }
        Ok(true)
    }

    fn grow(&mut self) {
        let capacity = self.slots.len() * 2;
        let mut slots = vec![
            Slot {
                hash: 0,
                set: EMPTY,
                state: 0
            };
            capacity
        ];
        let mask = capacity - 1;
        for slot in self.slots.iter().filter(|s| s.set != EMPTY) {
            let mut index = (slot.hash as usize) & mask;
            while slots[index].set != EMPTY {
                index = (index + 1) & mask;
            }
            slots[index] = *slot;
        }
        self.slots = slots;
    }
}
