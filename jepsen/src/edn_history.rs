//! Jepsen EDN histories: reads a vector or list of op maps, or op maps one after another
//! (usually one per line), and writes one op map per line.
//!
//! It must not pair or judge operations. `:nemesis` records are skipped and counted.

use crate::edn::EdnReader;
use crate::error::{Error, Result};
use crate::format::{check_event_count, check_text_limits};
use crate::history::History;
use crate::op::{Op, OpType};
use crate::value::Value;
use std::fmt::Write as _;

/// Reads a Jepsen EDN history.
pub fn read_edn(text: &str) -> Result<History> {
    check_text_limits(text)?;
    let mut reader = EdnReader::new(text);
    let mut history = History::new(Vec::new());
    if let Some(close) = reader.open_top_collection()? {
        while let Some((line, form)) = reader.next_in_collection(close)? {
            push_form(&mut history, form, line)?;
        }
        reader.expect_end("the history's closing bracket")?;
    } else {
        while let Some((line, form)) = reader.next_form()? {
            push_form(&mut history, form, line)?;
        }
    }
    Ok(history)
}

fn push_form(history: &mut History, form: Value, line: usize) -> Result<()> {
    match op_from_value(form, line)? {
        Some(op) => {
            check_event_count(history.ops.len() + 1)?;
            history.ops.push(op);
        }
        None => history.nemesis_records_skipped += 1,
    }
    Ok(())
}

fn field_name(key: &Value) -> Option<&str> {
    match key {
        Value::Keyword(k) | Value::Str(k) | Value::Symbol(k) => Some(k),
        _ => None,
    }
}

fn name_of<'v>(value: &'v Value, field: &str, line: usize) -> Result<&'v str> {
    field_name(value).ok_or_else(|| {
        Error::bad_op(
            line,
            format!("{field} must be a keyword such as :{}, found {value}", example_for(field)),
        )
    })
}

fn example_for(field: &str) -> &'static str {
    match field {
        ":type" => "invoke",
        _ => "read",
    }
}

/// Turns an op map into an [`Op`]; `None` for a `:nemesis` record.
pub fn op_from_value(form: Value, line: usize) -> Result<Option<Op>> {
    let Value::Map(entries) = form else {
        return Err(Error::bad_op(
            line,
            format!("expected an op map like {{:process 0, :type :invoke, :f :read, :value nil}}, found {form}"),
        ));
    };
    let mut process = None;
    let mut kind = None;
    let mut f = None;
    let mut value = Value::Nil;
    let mut key = None;
    let mut time_ns = None;
    for (k, v) in entries {
        match field_name(&k) {
            Some("process") => process = Some(v),
            Some("type") => kind = Some(v),
            Some("f") => f = Some(v),
            Some("value") => value = v,
            Some("key") => key = Some(v),
            Some("time") => time_ns = Some(v),
            _ => {}
        }
    }
    let process = match process {
        None => return Err(Error::bad_op(line, "the op map has no :process")),
        Some(Value::Int(p)) => p,
        Some(ref v) if field_name(v) == Some("nemesis") => return Ok(None),
        Some(v) => {
            return Err(Error::bad_op(
                line,
                format!(":process must be an integer or :nemesis, found {v}"),
            ))
        }
    };
    let Some(kind) = kind else {
        return Err(Error::bad_op(line, "the op map has no :type (one of :invoke :ok :fail :info)"));
    };
    let kind_name = name_of(&kind, ":type", line)?;
    let Some(kind) = OpType::from_name(kind_name) else {
        return Err(Error::bad_op(
            line,
            format!(":type must be one of :invoke :ok :fail :info, found :{kind_name}"),
        ));
    };
    let Some(f) = f else {
        return Err(Error::bad_op(line, "the op map has no :f (e.g. :read, :write, :cas)"));
    };
    let f = name_of(&f, ":f", line)?.to_string();
    let time_ns = match time_ns {
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
        value,
        key,
        time_ns,
        line,
    }))
}

/// Appends one op as an EDN map (without a newline).
pub fn write_edn_op(out: &mut String, op: &Op) {
    let _ = write!(out, "{{:process {}, :type :{}, :f :{}", op.process, op.kind, op.f);
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
