//! The Wing & Gong / Lowe (WGL) search for one key, with porcupine's cache of visited
//! (linearized set, state) pairs.
//!
//! Events live in a doubly linked list over index arrays (call of op `i` is node `2i`, its
//! return `2i + 1`); linearizing an op lifts both nodes out and backtracking puts them back in
//! LIFO order. The linearized set is a bitset with an incremental Zobrist hash. The loop does
//! not allocate except when the cache or the kv state table grows. Operations without a return
//! (`:info`, no completion) have no return node: they may be linearized any time after their
//! call, or never. It must not read input or format reports.

use crate::fast_hash::mix64;
use crate::limits::STEPS_PER_DEADLINE_CHECK;
use crate::model::{Step, Stepper};
use crate::pairing::{KeyProblem, PENDING_POS};
use crate::visited::VisitedCache;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Why a search stopped without a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The time limit passed.
    TimeLimit,
    /// The visited cache reached its limit.
    CacheLimit,
    /// The kv model reached its limit of distinct states.
    StateLimit,
    /// Another key was found not linearizable, so this one no longer matters.
    Stopped,
}

impl StopReason {
    /// A short description for reports.
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::TimeLimit => "the time limit was reached",
            StopReason::CacheLimit => "the visited-state cache reached MAX_CACHE_ENTRIES",
            StopReason::StateLimit => "the kv model reached MAX_KV_STATES distinct states",
            StopReason::Stopped => "stopped because another key is not linearizable",
        }
    }
}

/// Where a refuted search got furthest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refutation {
    /// The op (index into the key's ops) whose return was reached before it could be linearized,
    /// at the deepest point of the search.
    pub failing_op: usize,
    /// The linearization that got furthest, in order.
    pub linearized: Vec<usize>,
    /// The model state (id) after that linearization.
    pub state: u32,
}

/// What the search found for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchOutcome {
    /// Some linearization exists.
    Linearizable,
    /// None exists.
    NotLinearizable(Refutation),
    /// Undecided: why, and the most operations linearized at once.
    Unknown {
        /// Why it stopped.
        reason: StopReason,
        /// Deepest linearization reached.
        max_linearized: usize,
    },
}

/// The search's counters, for reports and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchStats {
    /// Loop iterations.
    pub steps: u64,
    /// Pairs in the visited cache at the end.
    pub cache_entries: usize,
}

const NO_SEED: u64 = 0x5EED_0F_5EA2C4;

/// Searches one key's history for a linearization.
pub fn search(
    problem: &mut KeyProblem,
    deadline: Option<Instant>,
    stop: &AtomicBool,
) -> (SearchOutcome, SearchStats) {
    let n = problem.ops.len();
    let mut stats = SearchStats::default();
    if n == 0 {
        return (SearchOutcome::Linearizable, stats);
    }
    let head = (2 * n) as u32;
    let tail = head + 1;
    let mut events: Vec<(u64, u32)> = Vec::with_capacity(2 * n);
    let mut remaining = 0usize;
    for (i, op) in problem.ops.iter().enumerate() {
        events.push((op.call_pos, (2 * i) as u32));
        if op.ret_pos != PENDING_POS {
            events.push((op.ret_pos, (2 * i + 1) as u32));
            remaining += 1;
        }
    }
    events.sort_unstable();
    let mut next = vec![tail; 2 * n + 2];
    let mut prev = vec![head; 2 * n + 2];
    let mut last = head;
    for &(_, node) in &events {
        next[last as usize] = node;
        prev[node as usize] = last;
        last = node;
    }
    next[last as usize] = tail;
    prev[tail as usize] = last;
    let pending: Vec<bool> = problem.ops.iter().map(|op| op.ret_pos == PENDING_POS).collect();
    let zobrist: Vec<u64> = (0..n as u64).map(|i| mix64(i ^ NO_SEED)).collect();
    let words = n.div_ceil(64);
    let mut bits = vec![0u64; words];
    let mut set_hash = 0u64;
    let mut cache = VisitedCache::new(words);
    let mut stack: Vec<(u32, u32)> = Vec::with_capacity(n);
    let mut state = problem.initial;
    let mut best: Option<Refutation> = None;
    let mut max_linearized = 0usize;
    let mut countdown = STEPS_PER_DEADLINE_CHECK;
    let steps: &[Step] = &problem.steps;
    let stepper: &mut Stepper = &mut problem.stepper;
    let mut node = next[head as usize];

    macro_rules! unknown {
        ($reason:expr) => {{
            stats.cache_entries = cache.len();
            return (
                SearchOutcome::Unknown {
                    reason: $reason,
                    max_linearized,
                },
                stats,
            );
        }};
    }

    while remaining > 0 {
        stats.steps += 1;
        countdown -= 1;
        if countdown == 0 {
            countdown = STEPS_PER_DEADLINE_CHECK;
            if stop.load(Ordering::Relaxed) {
                unknown!(StopReason::Stopped);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                unknown!(StopReason::TimeLimit);
            }
        }
        let op = (node >> 1) as usize;
        if node & 1 == 0 {
            let Ok(outcome) = stepper.step(state, steps[op]) else {
                unknown!(StopReason::StateLimit);
            };
            let Some(new_state) = outcome else {
                node = next[node as usize];
                continue;
            };
            let (word, bit) = (op >> 6, 1u64 << (op & 63));
            bits[word] |= bit;
            let new_hash = set_hash ^ zobrist[op];
            match cache.insert(&bits, new_hash, new_state) {
                Ok(true) => {
                    stack.push((op as u32, state));
                    max_linearized = max_linearized.max(stack.len());
                    state = new_state;
                    set_hash = new_hash;
                    // Lift the call node and (if any) the return node out of the list.
                    let call = node as usize;
                    next[prev[call] as usize] = next[call];
                    prev[next[call] as usize] = prev[call];
                    if !pending[op] {
                        let ret = call + 1;
                        next[prev[ret] as usize] = next[ret];
                        prev[next[ret] as usize] = prev[ret];
                        remaining -= 1;
                    }
                    node = next[head as usize];
                }
                Ok(false) => {
                    bits[word] &= !bit;
                    node = next[node as usize];
                }
                Err(_) => unknown!(StopReason::CacheLimit),
            }
        } else {
            // The return of an op that is not linearized: this branch is stuck.
            if best
                .as_ref()
                .map_or(true, |b| stack.len() > b.linearized.len())
            {
                best = Some(Refutation {
                    failing_op: op,
                    linearized: stack.iter().map(|&(o, _)| o as usize).collect(),
                    state,
                });
            }
            let Some((top, previous_state)) = stack.pop() else {
                stats.cache_entries = cache.len();
                let refutation = best.unwrap_or(Refutation {
                    failing_op: op,
                    linearized: Vec::new(),
                    state,
                });
                return (SearchOutcome::NotLinearizable(refutation), stats);
            };
            let top = top as usize;
            bits[top >> 6] &= !(1u64 << (top & 63));
            set_hash ^= zobrist[top];
            state = previous_state;
            let call = 2 * top;
            if !pending[top] {
                let ret = call + 1;
                next[prev[ret] as usize] = ret as u32;
                prev[next[ret] as usize] = ret as u32;
                remaining += 1;
            }
            next[prev[call] as usize] = call as u32;
            prev[next[call] as usize] = call as u32;
            node = next[call];
        }
    }
    stats.cache_entries = cache.len();
    (SearchOutcome::Linearizable, stats)
}
