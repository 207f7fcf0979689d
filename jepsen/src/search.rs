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

const ZOBRIST_SEED: u64 = 0x5EED_0F5E_A2C4;

/// A resumable search over one key: [`KeySearch::run`] works for a bounded number of steps,
/// so the checker can interleave keys and stop at the first refuted one.
pub struct KeySearch<'p> {
    problem: &'p mut KeyProblem,
    next: Vec<u32>,
    prev: Vec<u32>,
    pending: Vec<bool>,
    zobrist: Vec<u64>,
    bits: Vec<u64>,
    set_hash: u64,
    cache: VisitedCache,
    stack: Vec<(u32, u32)>,
    state: u32,
    best: Option<Refutation>,
    max_linearized: usize,
    remaining: usize,
    node: u32,
    countdown: u32,
    stats: SearchStats,
    outcome: Option<SearchOutcome>,
}

impl<'p> KeySearch<'p> {
    /// Prepares the search of one key: builds the event list and the empty cache.
    pub fn new(problem: &'p mut KeyProblem) -> Self {
        let n = problem.ops.len();
        let head = (2 * n) as u32;
        let tail = head + 1;
        let mut events: Vec<(u64, u32)> = Vec::with_capacity(2 * n);
        let mut remaining = 0usize;
        for (i, op) in problem.ops.iter().enumerate() {
            events.push((op.call_pos(), (2 * i) as u32));
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
        let words = n.div_ceil(64).max(1);
        KeySearch {
            pending: problem
                .ops
                .iter()
                .map(|op| op.ret_pos == PENDING_POS)
                .collect(),
            zobrist: (0..n as u64).map(|i| mix64(i ^ ZOBRIST_SEED)).collect(),
            bits: vec![0u64; words],
            set_hash: 0,
            cache: VisitedCache::new(words, 2 * n),
            stack: Vec::with_capacity(n),
            state: problem.initial,
            best: None,
            max_linearized: 0,
            remaining,
            node: next[head as usize],
            countdown: STEPS_PER_DEADLINE_CHECK,
            stats: SearchStats::default(),
            outcome: None,
            next,
            prev,
            problem,
        }
    }

    /// The search's counters so far.
    pub fn stats(&self) -> SearchStats {
        SearchStats {
            cache_entries: self.cache.len(),
            ..self.stats
        }
    }

    /// The outcome, once decided (or stopped).
    pub fn outcome(&self) -> Option<&SearchOutcome> {
        self.outcome.as_ref()
    }

    /// Searches for at most `max_steps` steps: the outcome when decided or stopped (time
    /// limit, memory limits, `stop`), `None` when paused with work left.
    pub fn run(
        &mut self,
        max_steps: u64,
        deadline: Option<Instant>,
        stop: &AtomicBool,
    ) -> Option<&SearchOutcome> {
        if self.outcome.is_none() {
            self.outcome = self.work(max_steps, deadline, stop);
        }
        self.outcome.as_ref()
    }

    fn work(
        &mut self,
        max_steps: u64,
        deadline: Option<Instant>,
        stop: &AtomicBool,
    ) -> Option<SearchOutcome> {
        let KeySearch {
            problem,
            next,
            prev,
            pending,
            zobrist,
            bits,
            set_hash,
            cache,
            stack,
            state,
            best,
            max_linearized,
            remaining,
            node,
            countdown,
            stats,
            ..
        } = self;
        let steps: &[Step] = &problem.steps;
        let stepper: &mut Stepper = &mut problem.stepper;
        let head = 2 * steps.len();
        let mut budget = max_steps;
        let unknown = |reason, max_linearized: &usize| {
            Some(SearchOutcome::Unknown {
                reason,
                max_linearized: *max_linearized,
            })
        };
        while *remaining > 0 {
            if budget == 0 {
                return None;
            }
            budget -= 1;
            stats.steps += 1;
            *countdown -= 1;
            if *countdown == 0 {
                *countdown = STEPS_PER_DEADLINE_CHECK;
                if stop.load(Ordering::Relaxed) {
                    return unknown(StopReason::Stopped, max_linearized);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return unknown(StopReason::TimeLimit, max_linearized);
                }
            }
            let current = *node as usize;
            let op = current >> 1;
            if current & 1 == 0 {
                let Ok(outcome) = stepper.step(*state, steps[op]) else {
                    return unknown(StopReason::StateLimit, max_linearized);
                };
                let Some(new_state) = outcome else {
                    *node = next[current];
                    continue;
                };
                let (word, bit) = (op >> 6, 1u64 << (op & 63));
                bits[word] |= bit;
                let new_hash = *set_hash ^ zobrist[op];
                match cache.insert(bits, new_hash, new_state) {
                    Ok(true) => {
                        stack.push((op as u32, *state));
                        *max_linearized = (*max_linearized).max(stack.len());
                        *state = new_state;
                        *set_hash = new_hash;
                        // Lift the call node and (if any) the return node out of the list.
                        next[prev[current] as usize] = next[current];
                        prev[next[current] as usize] = prev[current];
                        if !pending[op] {
                            let ret = current + 1;
                            next[prev[ret] as usize] = next[ret];
                            prev[next[ret] as usize] = prev[ret];
                            *remaining -= 1;
                        }
                        *node = next[head];
                    }
                    Ok(false) => {
                        bits[word] &= !bit;
                        *node = next[current];
                    }
                    Err(_) => return unknown(StopReason::CacheLimit, max_linearized),
                }
            } else {
                // The return of an op that is not linearized: this branch is stuck.
                if best
                    .as_ref()
                    .map_or(true, |b| stack.len() > b.linearized.len())
                {
                    *best = Some(Refutation {
                        failing_op: op,
                        linearized: stack.iter().map(|&(o, _)| o as usize).collect(),
                        state: *state,
                    });
                }
                let Some((top, previous_state)) = stack.pop() else {
                    let refutation = best.take().unwrap_or(Refutation {
                        failing_op: op,
                        linearized: Vec::new(),
                        state: *state,
                    });
                    return Some(SearchOutcome::NotLinearizable(refutation));
                };
                let top = top as usize;
                bits[top >> 6] &= !(1u64 << (top & 63));
                *set_hash ^= zobrist[top];
                *state = previous_state;
                let call = 2 * top;
                if !pending[top] {
                    let ret = call + 1;
                    next[prev[ret] as usize] = ret as u32;
                    prev[next[ret] as usize] = ret as u32;
                    *remaining += 1;
                }
                next[prev[call] as usize] = call as u32;
                prev[next[call] as usize] = call as u32;
                *node = next[call];
            }
        }
        Some(SearchOutcome::Linearizable)
    }
}

/// Searches one key's history to the end (or the deadline, or `stop`).
pub fn search(
    problem: &mut KeyProblem,
    deadline: Option<Instant>,
    stop: &AtomicBool,
) -> (SearchOutcome, SearchStats) {
    let mut key = KeySearch::new(problem);
    let outcome = key
        .run(u64::MAX, deadline, stop)
        .cloned()
        .unwrap_or(SearchOutcome::Unknown {
            reason: StopReason::Stopped,
            max_linearized: 0,
        });
    (outcome, key.stats())
}
