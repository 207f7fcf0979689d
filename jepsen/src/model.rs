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
    /// Legal iff the state is the value; the state stays.
    Read(u32),
    /// Always legal; the state becomes the value.
    Write(u32),
    /// Legal iff the state is `from`; the state becomes `to`.
    Cas(u32, u32),
    /// An observed failed comparison: legal iff the state is not `from`; the state stays.
    CasFailed(u32),
    /// A cas with unknown outcome: always legal; the state becomes `to` if it was `from`.
    CasMaybe(u32, u32),
    /// kv append: always legal; the state becomes the state's string followed by the value's.
    Append(u32),
}

/// Interned values and the transition function of one key's search.
pub struct Stepper {
    values: Vec<Value>,
    index: HashMap<Value, u32, FastBuildHasher>,
    append_memo: HashMap<(u32, u32), u32, FastBuildHasher>,
}

impl Default for Stepper {
    fn default() -> Self {
        Self::new()
    }
}

impl Stepper {
    /// An empty table.
    pub fn new() -> Self {
        Stepper {
            values: Vec::new(),
            index: HashMap::default(),
            append_memo: HashMap::default(),
        }
    }

    /// The id of `value`, adding it if new.
    pub fn intern(&mut self, value: &Value) -> u32 {
        if let Some(&id) = self.index.get(value) {
            return id;
        }
        let id = self.values.len() as u32;
        self.values.push(value.clone());
        self.index.insert(value.clone(), id);
        id
    }

    /// The value of an id.
    pub fn value(&self, id: u32) -> &Value {
        &self.values[id as usize]
    }

    /// Applies `step` to `state`: the new state, or `None` if the step is not legal there.
    /// `Err` only when the kv model would intern more than `MAX_KV_STATES` states.
    #[inline]
    pub fn step(&mut self, state: u32, step: Step) -> std::result::Result<Option<u32>, ()> {
        Ok(match step {
            Step::Read(v) => (state == v).then_some(state),
            Step::Write(v) => Some(v),
            Step::Cas(from, to) => (state == from).then_some(to),
            Step::CasFailed(from) => (state != from).then_some(state),
            Step::CasMaybe(from, to) => Some(if state == from { to } else { state }),
            Step::Append(v) => Some(self.append(state, v)?),
        })
    }

    fn append(&mut self, state: u32, v: u32) -> std::result::Result<u32, ()> {
        if let Some(&next) = self.append_memo.get(&(state, v)) {
            return Ok(next);
        }
        if self.values.len() >= MAX_KV_STATES {
            return Err(());
        }
        let mut text = self.values[state as usize].as_str().unwrap_or("").to_string();
        text.push_str(self.values[v as usize].as_str().unwrap_or(""));
        let next = self.intern(&Value::Str(text));
        self.append_memo.insert((state, v), next);
        Ok(next)
    }
}
