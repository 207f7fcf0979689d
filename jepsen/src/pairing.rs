//! Pairs each invocation with its completion, splits the history by key (P-compositionality)
//! and turns every operation into a model [`Step`] under the history's semantics.
//!
//! It must not search. Operations that cannot affect the verdict (Knossos `:fail`, reads
//! without an observed value) are dropped here and counted.

use crate::error::{Error, Result};
use crate::fast_hash::FastBuildHasher;
use crate::history::{History, Semantics};
use crate::limits::MAX_OPS_PER_KEY;
use crate::model::{ModelKind, Step, Stepper};
use crate::op::{Op, OpType};
use crate::value::Value;
use std::collections::HashMap;

/// Position given to the return of an operation that may take effect until the very end.
pub const PENDING_POS: u64 = u64::MAX;

/// An invocation with its completion, as indexes into the history's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairedOp {
    /// The invocation's record index (also its position in real-time order).
    pub invoke: usize,
    /// The completion's record index, if there was a completion.
    pub complete: Option<usize>,
    /// The position of the op's return: the completion's index, or [`PENDING_POS`] for
    /// `:info` and missing completions (the op may take effect until the very end).
    pub ret_pos: u64,
}

impl PairedOp {
    /// The invocation's position.
    pub fn call_pos(&self) -> u64 {
        self.invoke as u64
    }
}

/// Splits a record's value into (key, value): the explicit `:key`, else the tuple's parts when
/// the history uses Jepsen independent tuples, else (`nil`, the value).
pub fn split_key(op: &Op, independent: bool) -> (&Value, &Value) {
    if let Some(key) = &op.key {
        return (key, &op.value);
    }
    match (independent, op.value.as_pair()) {
        (true, Some((k, v))) => (k, v),
        _ => (&NIL, &op.value),
    }
}

static NIL: Value = Value::Nil;

/// One key's sub-history, ready to search.
pub struct KeyProblem {
    /// The key (`nil` when the history has no keys).
    pub key: Value,
    /// The operations that take part in the search, in invocation order.
    pub ops: Vec<PairedOp>,
    /// Their steps, index for index.
    pub steps: Vec<Step>,
    /// The interned values.
    pub stepper: Stepper,
    /// The initial state's id.
    pub initial: u32,
    /// Operations of this key dropped because they cannot change the verdict.
    pub dropped_ops: usize,
}

/// A history split by key.
pub struct Problems {
    /// The keys, in order of first appearance.
    pub keys: Vec<KeyProblem>,
    /// All paired operations, dropped ones included.
    pub ops_total: usize,
    /// Whether values are Jepsen independent `[key value]` tuples.
    pub independent: bool,
}

/// True when the history uses Jepsen `independent` tuples: no record has `:key`, every value
/// is a `[key value]` pair, and every cas value is a pair inside the pair.
fn uses_independent_tuples(ops: &[Op]) -> bool {
    !ops.is_empty()
        && ops.iter().all(|op| {
            op.key.is_none()
                && match op.value.as_pair() {
                    None => false,
                    Some((_, inner)) => op.f != "cas" || inner.as_pair().is_some(),
                }
        })
}

/// Splits a history by key and compiles every operation for `model`.
pub fn build_problems(history: &History, model: ModelKind, initial: &Value) -> Result<Problems> {
    model.check_initial(initial)?;
    let ops = &history.ops;
    let independent = uses_independent_tuples(ops);
    let mut open: HashMap<i64, usize, FastBuildHasher> = HashMap::default();
    let mut paired: Vec<PairedOp> = Vec::with_capacity(ops.len() / 2 + 1);
    for (index, op) in ops.iter().enumerate() {
        if op.kind == OpType::Invoke {
            if let Some(&previous) = open.get(&op.process) {
                return Err(Error::bad_op(
                    op.line,
                    format!(
                        "process {} invokes :{} while its :{} invoked at line {} has no completion; \
                         a process runs one operation at a time",
                        op.process, op.f, ops[paired[previous].invoke].f, ops[paired[previous].invoke].line
                    ),
                ));
            }
            open.insert(op.process, paired.len());
            paired.push(PairedOp {
                invoke: index,
                complete: None,
                ret_pos: PENDING_POS,
            });
            continue;
        }
        let Some(slot) = open.remove(&op.process) else {
            return Err(Error::bad_op(
                op.line,
                format!(
                    "a :{} completion of :{} for process {} that has no outstanding invocation",
                    op.kind, op.f, op.process
                ),
            ));
        };
        let entry = &mut paired[slot];
        let invoked = &ops[entry.invoke];
        if invoked.f != op.f {
            return Err(Error::bad_op(
                op.line,
                format!(
                    "process {} completes :{} but invoked :{} at line {}",
                    op.process, op.f, invoked.f, invoked.line
                ),
            ));
        }
        entry.complete = Some(index);
        if op.kind != OpType::Info {
            entry.ret_pos = index as u64;
        }
    }

    let ops_total = paired.len();
    let mut keys: Vec<KeyProblem> = Vec::new();
    let mut key_index: HashMap<&Value, usize, FastBuildHasher> = HashMap::default();
    for pair in paired {
        let (key, _) = split_key(&ops[pair.invoke], independent);
        let index = match key_index.get(key) {
            Some(&i) => i,
            None => {
                let mut stepper = Stepper::new(model);
                let initial = stepper.state_of(initial);
                keys.push(KeyProblem {
                    key: key.clone(),
                    ops: Vec::new(),
                    steps: Vec::new(),
                    stepper,
                    initial,
                    dropped_ops: 0,
                });
                key_index.insert(key, keys.len() - 1);
                keys.len() - 1
            }
        };
        let problem = &mut keys[index];
        match compile(history, &pair, independent, model, &mut problem.stepper)? {
            Some(step) => {
                if problem.ops.len() >= MAX_OPS_PER_KEY {
                    return Err(Error::Limit {
                        what: format!("the number of operations on key {}", problem.key),
                        actual: problem.ops.len() + 1,
                        limit: MAX_OPS_PER_KEY,
                        name: "MAX_OPS_PER_KEY",
                    });
                }
                problem.ops.push(pair);
                problem.steps.push(step);
            }
            None => problem.dropped_ops += 1,
        }
    }
    Ok(Problems {
        keys,
        ops_total,
        independent,
    })
}

fn model_error(op: &Op, model: ModelKind, message: String) -> Error {
    Error::Model {
        line: op.line,
        model: model.name(),
        message,
    }
}

fn string_value<'v>(op: &Op, model: ModelKind, value: &'v Value) -> Result<&'v Value> {
    static EMPTY: Value = Value::Str(String::new());
    match value {
        Value::Str(_) => Ok(value),
        Value::Nil => Ok(&EMPTY),
        other => Err(model_error(
            op,
            model,
            format!("works on strings, but :{} has the value {other}", op.f),
        )),
    }
}

/// The step of one operation, or `None` when it cannot change the verdict.
fn compile(
    history: &History,
    pair: &PairedOp,
    independent: bool,
    model: ModelKind,
    stepper: &mut Stepper,
) -> Result<Option<Step>> {
    let op = &history.ops[pair.invoke];
    let (_, input) = split_key(op, independent);
    let completion = pair.complete.map(|i| &history.ops[i]);
    let completed = completion.map(|c| c.kind);
    let semantics = history.semantics;
    let ok = completed == Some(OpType::Ok);
    let failed = completed == Some(OpType::Fail);
    let etcd = semantics == Semantics::PorcupineEtcd;
    if failed && !(etcd && op.f == "cas") {
        // Knossos: a failed operation did not happen. (etcd logs: a failed read has an
        // unknown output, which constrains nothing either.)
        return Ok(None);
    }
    let observed = completion.map_or(&NIL, |c| split_key(c, independent).1);
    let f = match (model, op.f.as_ref()) {
        (ModelKind::Kv, "read") => "get",
        (ModelKind::Kv, "write") => "put",
        (_, f) => f,
    };
    let step = match (model, f) {
        (ModelKind::Register | ModelKind::CasRegister, "read") => {
            if !ok {
                return Ok(None);
            }
            Step::Read(stepper.intern(observed))
        }
        (ModelKind::Register | ModelKind::CasRegister, "write") => {
            Step::Write(stepper.intern(input))
        }
        (ModelKind::CasRegister, "cas") => {
            let Some((from, to)) = input.as_pair() else {
                return Err(model_error(
                    op,
                    model,
                    format!("needs :cas values [from to], found {input}"),
                ));
            };
            let from = stepper.intern(from);
            let to = stepper.intern(to);
            match (failed, ok, etcd) {
                (true, _, _) => Step::CasFailed(from),
                (false, true, _) | (false, false, false) => Step::Cas(from, to),
                (false, false, true) => Step::CasMaybe(from, to),
            }
        }
        (ModelKind::Kv, "get") => {
            if !ok {
                return Ok(None);
            }
            Step::Get(stepper.intern(string_value(op, model, observed)?))
        }
        (ModelKind::Kv, "put") => Step::Write(stepper.state_of(string_value(op, model, input)?)),
        (ModelKind::Kv, "append") => Step::Append(stepper.intern(string_value(op, model, input)?)),
        (ModelKind::Register, "cas") => {
            return Err(model_error(
                op,
                model,
                "has no :cas; use --model cas-register".to_string(),
            ))
        }
        (_, other) => {
            let known = match model {
                ModelKind::Register => ":read and :write",
                ModelKind::CasRegister => ":read, :write and :cas",
                ModelKind::Kv => ":get, :put and :append",
            };
            return Err(model_error(
                op,
                model,
                format!("knows only {known}, not :{other}"),
            ));
        }
    };
    Ok(Some(step))
}
