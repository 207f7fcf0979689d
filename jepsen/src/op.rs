//! One record of a history: an invocation or a completion of a client operation.
//!
//! It must not pair invocations with completions or judge them; `pairing` and the models do.

use crate::value::Value;
use std::borrow::Cow;
use std::fmt;

/// A function name, shared (not allocated) when it is one the models know.
pub fn function_name(name: &str) -> Cow<'static, str> {
    const KNOWN: [&str; 6] = ["read", "write", "cas", "get", "put", "append"];
    match KNOWN.iter().find(|&&known| known == name) {
        Some(&known) => Cow::Borrowed(known),
        None => Cow::Owned(name.to_string()),
    }
}

/// Jepsen's `:type` of an operation record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpType {
    /// The client started the operation.
    Invoke,
    /// The operation took effect; the value is its result.
    Ok,
    /// The operation certainly did not take effect.
    Fail,
    /// Indeterminate: the operation may or may not have taken effect.
    Info,
}

impl OpType {
    /// The name Jepsen writes (without the colon).
    pub fn name(self) -> &'static str {
        match self {
            OpType::Invoke => "invoke",
            OpType::Ok => "ok",
            OpType::Fail => "fail",
            OpType::Info => "info",
        }
    }

    /// Parses a name as Jepsen writes it (without the colon).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "invoke" => Some(OpType::Invoke),
            "ok" => Some(OpType::Ok),
            "fail" => Some(OpType::Fail),
            "info" => Some(OpType::Info),
            _ => None,
        }
    }
}

impl fmt::Display for OpType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One record of a client operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    /// The client process (Jepsen's `:process`); nemesis records are not kept.
    pub process: i64,
    /// Invocation or completion kind.
    pub kind: OpType,
    /// The function (`:f`), without its colon: `read`, `write`, `cas`, `get`, `put`, `append`.
    pub f: Cow<'static, str>,
    /// The operation's value (`:value`).
    pub value: Value,
    /// The explicit key (`:key`), if the record has one.
    pub key: Option<Value>,
    /// The time of the record in nanoseconds since the test started (`:time`), if known.
    pub time_ns: Option<i64>,
    /// The 1-based line of the record in its source, or 0 for a record made in memory.
    pub line: usize,
}

impl Op {
    /// A record without key, time or line.
    pub fn new(process: i64, kind: OpType, f: &str, value: Value) -> Self {
        Op {
            process,
            kind,
            f: function_name(f),
            value,
            key: None,
            time_ns: None,
            line: 0,
        }
    }

    /// The same record with an explicit key.
    pub fn with_key(mut self, key: Value) -> Self {
        self.key = Some(key);
        self
    }

    /// The same record with a time.
    pub fn with_time_ns(mut self, time_ns: i64) -> Self {
        self.time_ns = Some(time_ns);
        self
    }
}
