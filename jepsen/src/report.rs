//! The checker's result: verdict, counts, and for a refuted history the failing window; with
//! text and JSON renderings.
//!
//! It must not search or read input. JSON's `valid` is `true`, `false` or `"unknown"`.

use crate::history::History;
use crate::op::OpType;
use crate::pairing::{split_key, PairedOp, PENDING_POS};
use serde::{Serialize, Serializer};
use std::fmt::Write as _;

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// A linearization exists for every key.
    Linearizable,
    /// Some key has no linearization.
    NotLinearizable,
    /// The checker could not decide (time or memory limit).
    Unknown,
}

impl Serialize for Validity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Validity::Linearizable => serializer.serialize_bool(true),
            Validity::NotLinearizable => serializer.serialize_bool(false),
            Validity::Unknown => serializer.serialize_str("unknown"),
        }
    }
}

/// An operation as a report shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowOp {
    /// The client process.
    pub process: i64,
    /// The function.
    pub f: String,
    /// The invocation's value, as EDN.
    pub input: String,
    /// The completion's value, as EDN, if there was a completion.
    pub output: Option<String>,
    /// `ok`, `fail`, `info`, or `pending` when the history ended first.
    pub completion: String,
    /// The invocation's position in the history (record index).
    pub call_pos: u64,
    /// The completion's position, or `None` when the op may take effect until the end.
    pub ret_pos: Option<u64>,
    /// The invocation's source line.
    pub invoke_line: usize,
    /// The completion's source line.
    pub complete_line: Option<usize>,
    /// The invocation's time in ns, if recorded.
    pub invoke_time_ns: Option<i64>,
    /// The completion's time in ns, if recorded.
    pub complete_time_ns: Option<i64>,
    /// `failing` (could not be linearized), `linearized` (part of the deepest linearization)
    /// or `open` (concurrent with the failing op and not linearized).
    pub role: String,
}

impl WindowOp {
    /// The report view of a paired op of `history` (`independent`: values are
    /// `[key value]` tuples).
    pub fn from_paired(history: &History, independent: bool, pair: &PairedOp, role: &str) -> Self {
        let invoke = &history.ops[pair.invoke];
        let complete = pair.complete.map(|i| &history.ops[i]);
        WindowOp {
            process: invoke.process,
            f: invoke.f.to_string(),
            input: split_key(invoke, independent).1.to_string(),
            output: complete.map(|c| split_key(c, independent).1.to_string()),
            completion: complete
                .map_or("pending", |c| OpType::name(c.kind))
                .to_string(),
            call_pos: pair.call_pos(),
            ret_pos: (pair.ret_pos != PENDING_POS).then_some(pair.ret_pos),
            invoke_line: invoke.line,
            complete_line: complete.map(|c| c.line),
            invoke_time_ns: invoke.time_ns,
            complete_time_ns: complete.and_then(|c| c.time_ns),
            role: role.to_string(),
        }
    }

    /// One line of text: `process 3 :cas [1 2] -> ok [1 2] (lines 10-14)`.
    pub fn describe(&self) -> String {
        let lines = match self.complete_line {
            Some(end) => format!("lines {}-{}", self.invoke_line, end),
            None => format!("line {}", self.invoke_line),
        };
        let result = match &self.output {
            Some(v) => format!("{} {v}", self.completion),
            None => self.completion.clone(),
        };
        format!(
            "process {} :{} {} -> {} ({lines})",
            self.process, self.f, self.input, result
        )
    }
}

/// Where a non-linearizable key's search got stuck.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureWindow {
    /// The key, as EDN (`nil` for an unkeyed history).
    pub key: String,
    /// Operations of the key that took part in the search.
    pub ops_in_key: usize,
    /// Operations in the deepest linearization found.
    pub linearized_before: usize,
    /// The model state after that linearization, as EDN.
    pub state_before: String,
    /// The operation whose completion came before it could be linearized.
    pub failing_op: WindowOp,
    /// The failing op, the ops concurrent with it, and the last linearized ops before it, in
    /// invocation order.
    pub window: Vec<WindowOp>,
}

/// How far an undecided check got.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    /// Why it stopped.
    pub reason: String,
    /// Keys decided (all linearizable, or it would not be unknown).
    pub keys_decided: usize,
    /// The first undecided key, as EDN.
    pub key: Option<String>,
    /// Operations of that key.
    pub ops_in_key: usize,
    /// The most operations of that key linearized at once.
    pub max_linearized: usize,
}

/// The result of checking one history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    /// The verdict.
    pub valid: Validity,
    /// The model's name.
    pub model: String,
    /// Paired operations (invocations) in the history.
    pub ops: usize,
    /// Operations that took part in the search (the others cannot change the verdict).
    pub ops_searched: usize,
    /// Keys (sub-histories).
    pub keys: usize,
    /// Keys with a verdict.
    pub keys_decided: usize,
    /// `:nemesis` records skipped.
    pub nemesis_records_skipped: usize,
    /// Time taken by the check (pairing and search), in milliseconds.
    pub elapsed_ms: f64,
    /// The time limit, if any.
    pub time_limit_ms: Option<u64>,
    /// For a non-linearizable history: the failing key's window.
    pub failure: Option<FailureWindow>,
    /// For an undecided check: how far it got.
    pub unknown: Option<Progress>,
}

impl CheckReport {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The report as text for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let verdict = match self.valid {
            Validity::Linearizable => "linearizable",
            Validity::NotLinearizable => "NOT linearizable",
            Validity::Unknown => "unknown (could not decide)",
        };
        let _ = writeln!(
            out,
            "{verdict}: model {}, {} ops ({} searched), {} key(s), {} decided, {:.3} ms",
            self.model, self.ops, self.ops_searched, self.keys, self.keys_decided, self.elapsed_ms
        );
        if let Some(failure) = &self.failure {
            let _ = writeln!(
                out,
                "key {}: no linearization extends past {} of its {} ops; model state there: {}",
                failure.key, failure.linearized_before, failure.ops_in_key, failure.state_before
            );
            let _ = writeln!(
                out,
                "could not be linearized: {}",
                failure.failing_op.describe()
            );
            let _ = writeln!(
                out,
                "window ({} ops, invocation order):",
                failure.window.len()
            );
            for op in &failure.window {
                let _ = writeln!(out, "  [{:<10}] {}", op.role, op.describe());
            }
        }
        if let Some(progress) = &self.unknown {
            let _ = writeln!(
                out,
                "stopped: {}; {} key(s) decided; key {} had {} of {} ops linearized at most",
                progress.reason,
                progress.keys_decided,
                progress.key.as_deref().unwrap_or("-"),
                progress.max_linearized,
                progress.ops_in_key
            );
        }
        out
    }
}
