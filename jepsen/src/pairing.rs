//! Pairs each invocation with its completion, splits the history by key (P-compositionality)
//! and turns every operation into a model [`Step`] under the history's semantics.
//!
//! It must not search. Operations that cannot affect the verdict (Knossos `:fail`, reads
//! without an observed value) are dropped here and counted.

use crate::error::{Error, Result};
use crate::history::{History, Semantics};
use crate::limits::MAX_OPS_PER_KEY;
use crate::model::{ModelKind, Step, Stepper};
use crate::op::{Op, OpType};
use crate::value::Value;
use std::collections::HashMap;

/// Position given to the return of an operation that may take effect until the very end.
pub const PENDING_POS: u64 = u64::MAX;

/// An invocation with its completion, as the search and the reports see it.
#[derive(Debug, Clone, PartialEq)]
pub struct PairedOp {
    /// The client process.
    pub process: i64,
    /// The function, e.g. `cas`.
    pub f: String,
    /// The invocation's value (without the key of an independent tuple).
    pub input: Value,
    /// The completion's value, if there was a completion.
    pub output: Option<Value>,
    /// The completion's type; `None` when the history ended before it.
    pub completion: Option<OpType>,
    /// The invocation's position in the history (record index).
    pub call_pos: u64,
    /// The completion's position, or [`PENDING_POS`] for `:info` and missing completions.
    pub ret_pos: u64,
    /// The invocation's source line.
    pub invoke_line: usize,
    /// The completion's source line, if any.
    pub complete_line: Option<usize>,
    /// The invocation's time, if recorded.
    pub invoke_time_ns: Option<i64>,
    /// The completion's time, if recorded.
    pub complete_time_ns: Option<i64>,
}

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
}

struct Open {
    op: PairedOp,
    key: Value,
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
    let independent = uses_independent_tuples(&history.ops);
    let split = |op: &Op| -> (Value, Value) {
        if let Some(key) = &op.key {
            return (key.clone(), op.value.clone());
        }
        match (independent, op.value.as_pair()) {
            (true, Some((k, v))) => (k.clone(), v.clone()),
            _ => (Value::Nil, op.value.clone()),
        }
    };
    let mut open: HashMap<i64, Open> = HashMap::new();
    let mut paired: Vec<(Value, PairedOp)> = Vec::new();
    for (pos, op) in history.ops.iter().enumerate() {
        let (key, value) = split(op);
        if op.kind == OpType::Invoke {
            if let Some(previous) = open.get(&op.process) {
                return Err(Error::bad_op(
                    op.line,
                    format!(
                        "process {} invokes :{} while its :{} invoked at line {} has no completion; \
                         a process runs one operation at a time",
                        op.process, op.f, previous.op.f, previous.op.invoke_line
                    ),
                ));
            }
            let paired_op = PairedOp {
                process: op.process,
                f: op.f.clone(),
                input: value,
                output: None,
                completion: None,
                call_pos: pos as u64,
                ret_pos: PENDING_POS,
                invoke_line: op.line,
                complete_line: None,
                invoke_time_ns: op.time_ns,
                complete_time_ns: None,
            };
            open.insert(op.process, Open { op: paired_op, key });
            continue;
        }
        let Some(mut entry) = open.remove(&op.process) else {
            return Err(Error::bad_op(
                op.line,
                format!(
                    "a :{} completion of :{} for process {} that has no outstanding invocation",
                    op.kind, op.f, op.process
                ),
            ));
        };
        if entry.op.f != op.f {
            return Err(Error::bad_op(
                op.line,
                format!(
                    "process {} completes :{} but invoked :{} at line {}",
                    op.process, op.f, entry.op.f, entry.op.invoke_line
                ),
            ));
        }
        entry.op.output = Some(value);
        entry.op.completion = Some(op.kind);
        entry.op.complete_line = Some(op.line);
        entry.op.complete_time_ns = op.time_ns;
        if op.kind != OpType::Info {
            entry.op.ret_pos = pos as u64;
        }
        paired.push((entry.key, entry.op));
    }
    let mut rest: Vec<Open> = open.into_values().collect();
    rest.sort_by_key(|o| o.op.call_pos);
    paired.extend(rest.into_iter().map(|o| (o.key, o.op)));
    paired.sort_by_key(|(_, op)| op.call_pos);

    let ops_total = paired.len();
    let mut keys: Vec<KeyProblem> = Vec::new();
    let mut key_index: HashMap<Value, usize> = HashMap::new();
    for (key, op) in paired {
        let index = match key_index.get(&key) {
            Some(&i) => i,
            None => {
                let mut stepper = Stepper::new();
                let initial = stepper.intern(initial);
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
        match compile(&op, model, history.semantics, &mut problem.stepper)? {
            Some(step) => {
                if problem.ops.len() >= MAX_OPS_PER_KEY {
                    return Err(Error::Limit {
                        what: format!("the number of operations on key {}", problem.key),
                        actual: problem.ops.len() + 1,
                        limit: MAX_OPS_PER_KEY,
                        name: "MAX_OPS_PER_KEY",
                    });
                }
                problem.ops.push(op);
                problem.steps.push(step);
            }
            None => problem.dropped_ops += 1,
        }
    }
    Ok(Problems { keys, ops_total })
}

fn model_error(op: &PairedOp, model: ModelKind, message: String) -> Error {
    Error::Model {
        line: op.invoke_line,
        model: model.name(),
        message,
    }
}

fn string_value(op: &PairedOp, model: ModelKind, value: &Value) -> Result<Value> {
    match value {
        Value::Str(_) => Ok(value.clone()),
        Value::Nil => Ok(Value::Str(String::new())),
        other => Err(model_error(
            op,
            model,
            format!("works on strings, but :{} has the value {other}", op.f),
        )),
    }
}

/// The step of one operation, or `None` when it cannot change the verdict.
fn compile(
    op: &PairedOp,
    model: ModelKind,
    semantics: Semantics,
    stepper: &mut Stepper,
) -> Result<Option<Step>> {
    let completed = op.completion;
    let ok = completed == Some(OpType::Ok);
    let failed = completed == Some(OpType::Fail);
    let etcd = semantics == Semantics::PorcupineEtcd;
    if failed && !(etcd && op.f == "cas") {
        // Knossos: a failed operation did not happen. (etcd logs: a failed read has an
        // unknown output, which constrains nothing either.)
        return Ok(None);
    }
    let observed = op.output.as_ref().unwrap_or(&Value::Nil);
    let f = match (model, op.f.as_str()) {
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
            Step::Write(stepper.intern(&op.input))
        }
        (ModelKind::CasRegister, "cas") => {
            let Some((from, to)) = op.input.as_pair() else {
                return Err(model_error(
                    op,
                    model,
                    format!("needs :cas values [from to], found {}", op.input),
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
            Step::Read(stepper.intern(&string_value(op, model, observed)?))
        }
        (ModelKind::Kv, "put") => Step::Write(stepper.intern(&string_value(op, model, &op.input)?)),
        (ModelKind::Kv, "append") => {
            Step::Append(stepper.intern(&string_value(op, model, &op.input)?))
        }
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
