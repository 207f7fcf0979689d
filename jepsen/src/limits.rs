//! Named limits on the checker's input and work, checked with clear errors.
//!
//! Only constants live here; this module must not hold logic or state.

/// Largest history file the readers accept, in bytes.
pub const MAX_INPUT_BYTES: usize = 1 << 30;

/// Longest line the readers accept, in bytes (one op map per line is typical; a vector
/// history written on one line is allowed up to this length).
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// Most operation records (invocations and completions together) one history may hold.
pub const MAX_HISTORY_EVENTS: usize = 20_000_000;

/// Most operations one key may hold in the search (the linearized set is a bitset of this size).
pub const MAX_OPS_PER_KEY: usize = 4_000_000;

/// Deepest nesting of EDN collections the reader accepts.
pub const MAX_EDN_DEPTH: usize = 64;

/// Most (linearized set, state) pairs the visited cache may hold for one key before the search
/// gives up with an `Unknown` verdict instead of exhausting memory.
pub const MAX_CACHE_ENTRIES: usize = 16_000_000;

/// Most 64-bit words the visited cache may hold for its bitsets, for one key (1 GiB).
pub const MAX_CACHE_WORDS: usize = 1 << 27;

/// Most distinct key-value states (strings) the kv model may intern for one key.
pub const MAX_KV_STATES: usize = 8_000_000;

/// Search steps between two looks at the clock for the time limit.
pub const STEPS_PER_DEADLINE_CHECK: u32 = 1 << 12;

/// Most operations a failure window shows (the failing op and those concurrent with it).
pub const MAX_WINDOW_OPS: usize = 64;

/// Fewest searched operations for which the keys are checked on several threads.
pub const PARALLEL_MIN_OPS: usize = 1000;

/// Most threads the checker uses for the keys of one history.
pub const MAX_CHECK_THREADS: usize = 8;

/// Search steps one key gets before the checker turns to the next key, so that a key that is
/// quick to refute is found even when another key is slow.
pub const STEPS_PER_SLICE: u64 = 1 << 11;
