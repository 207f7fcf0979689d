//! The models: which operations each accepts, their compact steps, and the state machine the
//! search runs them on (states and values are interned to `u32` ids).
//!
//! It must not search; `search` calls [`Stepper::step`] in its inner loop, which allocates
//! only when the kv model meets an append it has not seen from that state before.

use crate::error::{Error, Result};
use crate::fast_hash::FastBuildHasher;
use crate::limits::MAX_KV_STATES;
use crate::value::Value;
use std::collections::HashMap;

/// The data type whose linearizability is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A register: `read`, `write`.
    Register,
    /// A compare-and-set register: `read`, `write`, `cas [from to]`.
    CasRegister,
    /// Porcupine's kv store, per key: `get`, `put`, `append` on strings.
    Kv,
}

impl ModelKind {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Register => "register",
            ModelKind::CasRegister => "cas-register",
            ModelKind::Kv => "kv",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "register" => Some(ModelKind::Register),
            "cas-register" => Some(ModelKind::CasRegister),
            "kv" => Some(ModelKind::Kv),
            _ => None,
        }
    }

    /// The initial value of every key when none is given: `nil` for registers, `""` for kv.
    pub fn default_initial(self) -> Value {
        match self {
            ModelKind::Register | ModelKind::CasRegister => Value::Nil,
            ModelKind::Kv => Value::Str(String::new()),
        }
    }

    /// Checks that `initial` is a state this model can start from.
    pub fn check_initial(self, initial: &Value) -> Result<()> {
        if self == ModelKind::Kv && initial.as_str().is_none() {
            return Err(Error::BadInitial(format!(
                "the kv model's state is a string, so --initial must be an EDN string such as \"\" \
                 (found {initial})"
            )));
        }
        Ok(())
    }
}

/// One operation's effect, with its values interned. Operations that are always legal and
/// change nothing (reads with unknown output) never become steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Register read: legal iff the state is the value; the state stays.
    Read(u32),
    /// Always legal; the state becomes the given state (a value for registers, a base state
    /// for kv).
    Write(u32),
    /// Legal iff the state is `from`; the state becomes `to`.
    Cas(u32, u32),
    /// An observed failed comparison: legal iff the state is not `from`; the state stays.
    CasFailed(u32),
    /// A cas with unknown outcome: always legal; the state becomes `to` if it was `from`.
    CasMaybe(u32, u32),
    /// kv get: legal iff the state's string equals the value's; the state stays.
    Get(u32),
    /// kv append: always legal; the state becomes the state's string followed by the value's.
    Append(u32),
}

/// The kv model made `MAX_KV_STATES` states: the search must stop undecided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateLimitReached;

/// Base of the kv strings' polynomial hash (odd, so powers never vanish modulo 2^64).
const TEXT_HASH_BASE: u64 = 0x100_0000_01B3;
const NO_PARENT: u32 = u32::MAX;

/// A kv string's length and hash, and the base's power for its length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TextHash {
    len: usize,
    hash: u64,
    power: u64,
}

impl TextHash {
    fn of(text: &str) -> Self {
        let mut h = TextHash {
            len: text.len(),
            hash: 0,
            power: 1,
        };
        for &b in text.as_bytes() {
            h.hash = h
                .hash
                .wrapping_mul(TEXT_HASH_BASE)
                .wrapping_add(u64::from(b) + 1);
            h.power = h.power.wrapping_mul(TEXT_HASH_BASE);
        }
        h
    }

    fn then(self, suffix: TextHash) -> Self {
        TextHash {
            len: self.len + suffix.len,
            hash: self
                .hash
                .wrapping_mul(suffix.power)
                .wrapping_add(suffix.hash),
            power: self.power.wrapping_mul(suffix.power),
        }
    }
}

/// A kv state: a base string (initial or put) followed by a chain of appends. Equal strings
/// reached by different chains are different states; that only costs cache hits, never a
/// wrong verdict, as gets compare the strings themselves.
#[derive(Debug, Clone, Copy)]
struct KvState {
    parent: u32,
    value: u32,
    text: TextHash,
}

/// Interned values and the transition function of one key's search. Register states are
/// value ids; kv states are ids of [`KvState`]s, built without allocating strings.
pub struct Stepper {
    kv: bool,
    values: Vec<Value>,
    index: HashMap<Value, u32, FastBuildHasher>,
    texts: Vec<TextHash>,
    kv_states: Vec<KvState>,
    kv_bases: HashMap<u32, u32, FastBuildHasher>,
    kv_children: HashMap<(u32, u32), u32, FastBuildHasher>,
}

impl Stepper {
    /// An empty table for `model`.
    pub fn new(model: ModelKind) -> Self {
        Stepper {
            kv: model == ModelKind::Kv,
            values: Vec::new(),
            index: HashMap::default(),
            texts: Vec::new(),
            kv_states: Vec::new(),
            kv_bases: HashMap::default(),
            kv_children: HashMap::default(),
        }
    }

    /// The id of `value`, adding it if new.
    pub fn intern(&mut self, value: &Value) -> u32 {
        if let Some(&id) = self.index.get(value) {
            return id;
        }
        let id = self.values.len() as u32;
        self.values.push(value.clone());
        self.texts.push(TextHash::of(value.as_str().unwrap_or("")));
        self.index.insert(value.clone(), id);
        id
    }

    /// The state in which the data holds `value`: the value's id for registers, a base kv
    /// state for kv (non-strings count as "").
    pub fn state_of(&mut self, value: &Value) -> u32 {
        let id = self.intern(value);
        if !self.kv {
            return id;
        }
        if let Some(&state) = self.kv_bases.get(&id) {
            return state;
        }
        let state = self.kv_states.len() as u32;
        self.kv_states.push(KvState {
            parent: NO_PARENT,
            value: id,
            text: self.texts[id as usize],
        });
        self.kv_bases.insert(id, state);
        state
    }

    /// A state as EDN text, for reports.
    pub fn state_text(&self, state: u32) -> String {
        if !self.kv {
            return self
                .values
                .get(state as usize)
                .map_or_else(|| "?".to_string(), ToString::to_string);
        }
        let mut parts = Vec::new();
        let mut current = state;
        while let Some(node) = self.kv_states.get(current as usize) {
            parts.push(self.values[node.value as usize].as_str().unwrap_or(""));
            current = node.parent;
        }
        parts.reverse();
        Value::Str(parts.concat()).to_string()
    }

    /// Applies `step` to `state`: the new state, or `None` if the step is not legal there.
    /// `Err` only when the kv model would make more than `MAX_KV_STATES` states.
    #[inline]
    pub fn step(
        &mut self,
        state: u32,
        step: Step,
    ) -> std::result::Result<Option<u32>, StateLimitReached> {
        Ok(match step {
            Step::Read(v) => (state == v).then_some(state),
            Step::Write(v) => Some(v),
            Step::Cas(from, to) => (state == from).then_some(to),
            Step::CasFailed(from) => (state != from).then_some(state),
            Step::CasMaybe(from, to) => Some(if state == from { to } else { state }),
            Step::Get(v) => self.kv_equals(state, v).then_some(state),
            Step::Append(v) => Some(self.append(state, v)?),
        })
    }

    /// True when kv state `state` spells the string of value `v`: hashes first, then the
    /// bytes, chunk by chunk from the end.
    fn kv_equals(&self, state: u32, v: u32) -> bool {
        let Some(node) = self.kv_states.get(state as usize) else {
            return false;
        };
        let expected = self.texts[v as usize];
        if node.text.len != expected.len || node.text.hash != expected.hash {
            return false;
        }
        let target = self.values[v as usize].as_str().unwrap_or("").as_bytes();
        let mut end = target.len();
        let mut current = state;
        while let Some(node) = self.kv_states.get(current as usize) {
            let piece = self.values[node.value as usize]
                .as_str()
                .unwrap_or("")
                .as_bytes();
            if piece.len() > end || target[end - piece.len()..end] != *piece {
                return false;
            }
            end -= piece.len();
            current = node.parent;
        }
        end == 0
    }

    fn append(&mut self, state: u32, v: u32) -> std::result::Result<u32, StateLimitReached> {
        if let Some(&next) = self.kv_children.get(&(state, v)) {
            return Ok(next);
        }
        if self.kv_states.len() >= MAX_KV_STATES {
            return Err(StateLimitReached);
        }
        let parent_text = self
            .kv_states
            .get(state as usize)
            .map_or(TextHash::of(""), |n| n.text);
        let next = self.kv_states.len() as u32;
        self.kv_states.push(KvState {
            parent: state,
            value: v,
            text: parent_text.then(self.texts[v as usize]),
        });
        self.kv_children.insert((state, v), next);
        Ok(next)
    }
}
