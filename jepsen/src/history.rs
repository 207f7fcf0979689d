//! A history: the client operation records of one test, in real-time order, and where they
//! came from.
//!
//! It must not check anything; it is the data the readers produce and the writers consume.

use crate::op::Op;

/// Which semantics the records follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Semantics {
    /// Knossos: `:fail` did not happen, `:info` may happen at any time after its invocation
    /// or never, a read's `:ok` value is what it observed.
    Knossos,
    /// Porcupine's reading of the 2014 etcd logs: a failed cas observed a different value, a
    /// failed read has an unknown output, `:info` stays pending to the end.
    PorcupineEtcd,
}

/// The client records of a history, in the order they happened.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// The records, invocations and completions interleaved in real-time order.
    pub ops: Vec<Op>,
    /// How to interpret `:fail` and `:info`.
    pub semantics: Semantics,
    /// How many `:nemesis` records the reader skipped.
    pub nemesis_records_skipped: usize,
}

impl History {
    /// A Knossos-semantics history of `ops`.
    pub fn new(ops: Vec<Op>) -> Self {
        History {
            ops,
            semantics: Semantics::Knossos,
            nemesis_records_skipped: 0,
        }
    }

    /// True when there is no client record.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
