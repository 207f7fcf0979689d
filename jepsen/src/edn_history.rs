//! Jepsen EDN histories: reads a vector or list of op maps, or op maps one after another
//! (usually one per line), and writes one op map per line.
//!
//! It must not pair or judge operations. `:nemesis` records are skipped and counted.

use crate::edn::{EdnReader, Item};
use crate::error::{Error, Result};
use crate::format::{check_event_count, check_text_limits};
use crate::history::History;
use crate::limits::MAX_HISTORY_EVENTS;
use crate::op::{function_name, Op, OpType};
use crate::value::Value;
use std::fmt::Write as _;

/// Reads a Jepsen EDN history.
pub fn read_edn(text: &str) -> Result<History> {
    check_text_limits(text)?;
    let mut reader = EdnReader::new(text);
    // One op map per line is the usual layout: size the vector for it.
    let lines = text.bytes().filter(|&b| b == b'\n').count() + 1;
    let mut history = History::new(Vec::with_capacity(lines.min(MAX_HISTORY_EVENTS)));
    match reader.open_top_collection()? {
        Some(close) => {
            while !reader.try_close(close)? {
                push_op(&mut history, read_op(&mut reader)?)?;
            }
            reader.expect_end("the history's closing bracket")?;
        }
        None => {
            while !reader.at_end()? {
                push_op(&mut history, read_op(&mut reader)?)?;
            }
        }
    }
    Ok(history)
}

fn push_op(history: &mut History, op: Option<Op>) -> Result<()> {
    match op {
        Some(op) => {
            check_event_count(history.ops.len() + 1)?;
            history.ops.push(op);
        }
        None => history.nemesis_records_skipped += 1,
    }
    Ok(())
}

/// Reads one op map straight from the text (keywords are not allocated).
fn read_op(reader: &mut EdnReader<'_>) -> Result<Option<Op>> {
    let line = reader.line();
    if !reader.open_map()? {
        let form = reader.read_value()?;
        return Err(not_an_op_map(&form, line));
    }
    let mut builder = OpBuilder::default();
    while !reader.try_close(b'}')? {
        let key = reader.read_item()?;
        if reader.try_close(b'}')? {
            return Err(
                reader.error_here("a map needs an even number of forms (a value for every key)")
            );
        }
        let value = reader.read_item()?;
        builder.set(key.name(), value);
    }
    builder.finish(line)
}

fn not_an_op_map(form: &Value, line: usize) -> Error {
    Error::bad_op(
        line,
        format!("expected an op map like {{:process 0, :type :invoke, :f :read, :value nil}}, found {form}"),
    )
}

/// Collects the fields of one op map, from EDN or JSON.
#[derive(Default)]
pub struct OpBuilder<'a> {
    process: Option<Item<'a>>,
    kind: Option<Item<'a>>,
    f: Option<Item<'a>>,
    value: Option<Item<'a>>,
    key: Option<Item<'a>>,
    time: Option<Item<'a>>,
}

impl<'a> OpBuilder<'a> {
    /// Records the field `name` (other fields, like `:index`, are ignored).
    pub fn set(&mut self, name: Option<&str>, value: Item<'a>) {
        let slot = match name {
            Some("process") => &mut self.process,
            Some("type") => &mut self.kind,
            Some("f") => &mut self.f,
            Some("value") => &mut self.value,
            Some("key") => &mut self.key,
            Some("time") => &mut self.time,
            _ => return,
        };
        *slot = Some(value);
    }

    /// The op, or `None` for a `:nemesis` record; errors name `line`.
    pub fn finish(self, line: usize) -> Result<Option<Op>> {
        let process = match self.process {
            None => return Err(Error::bad_op(line, "the op map has no :process")),
            Some(Item::Value(Value::Int(p))) => p,
            Some(ref item) if item.name() == Some("nemesis") => return Ok(None),
            Some(item) => {
                return Err(Error::bad_op(
                    line,
                    format!(
                        ":process must be an integer or :nemesis, found {}",
                        item.into_value()
                    ),
                ))
            }
        };
        let Some(kind) = self.kind else {
            return Err(Error::bad_op(
                line,
                "the op map has no :type (one of :invoke :ok :fail :info)",
            ));
        };
        let Some(kind) = kind.name().and_then(OpType::from_name) else {
            return Err(Error::bad_op(
                line,
                format!(
                    ":type must be one of :invoke :ok :fail :info, found {}",
                    kind.into_value()
                ),
            ));
        };
        let Some(f) = self.f else {
            return Err(Error::bad_op(
                line,
                "the op map has no :f (e.g. :read, :write, :cas)",
            ));
        };
        let Some(f) = f.name().map(function_name) else {
            return Err(Error::bad_op(
                line,
                format!(
                    ":f must be a keyword such as :read, found {}",
                    f.into_value()
                ),
            ));
        };
        let time_ns = match self.time.map(Item::into_value) {
            None | Some(Value::Nil) => None,
            Some(Value::Int(t)) => Some(t),
            Some(v) => {
                return Err(Error::bad_op(
                    line,
                    format!(":time must be an integer number of nanoseconds, found {v}"),
                ))
            }
        };
        Ok(Some(Op {
            process,
            kind,
            f,
            value: self.value.map_or(Value::Nil, Item::into_value),
            key: self.key.map(Item::into_value),
            time_ns,
            line,
        }))
    }
}

/// Turns an op map value into an [`Op`]; `None` for a `:nemesis` record.
pub fn op_from_value(form: Value, line: usize) -> Result<Option<Op>> {
    let Value::Map(entries) = form else {
        return Err(not_an_op_map(&form, line));
    };
    let mut builder = OpBuilder::default();
    for (k, v) in entries {
        let name = Item::Value(k);
        builder.set(name.name(), Item::Value(v));
    }
    builder.finish(line)
}

/// Appends one op as an EDN map (without a newline).
pub fn write_edn_op(out: &mut String, op: &Op) {
    let _ = write!(
        out,
        "{{:process {}, :type :{}, :f :{}",
        op.process, op.kind, op.f
    );
    if let Some(key) = &op.key {
        let _ = write!(out, ", :key {key}");
    }
    let _ = write!(out, ", :value {}", op.value);
    if let Some(t) = op.time_ns {
        let _ = write!(out, ", :time {t}");
    }
    out.push('}');
}

/// The history as EDN, one op map per line.
pub fn to_edn(history: &History) -> String {
    let mut out = String::new();
    for op in &history.ops {
        write_edn_op(&mut out, op);
        out.push('\n');
    }
    out
}
