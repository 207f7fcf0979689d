//! Porcupine's etcd test logs (Jepsen 0.0.x text logs, 2014):
//! `INFO  jepsen.util - <process>\t:<type>\t:<f>\t<value>`, fields split on any run of blanks.
//!
//! It must not judge operations; the history it returns carries
//! [`Semantics::PorcupineEtcd`] so the checker applies that log's meaning of `:fail` and `:info`.

use crate::edn::EdnReader;
use crate::error::{Error, Result};
use crate::format::{check_event_count, check_text_limits};
use crate::history::{History, Semantics};
use crate::op::{Op, OpType};

const EXPECTED: &str = "expected `INFO  jepsen.util - <process> :<type> :<f> <value>`";

/// Reads an etcd log as porcupine's tests do.
pub fn read_etcd_log(text: &str) -> Result<History> {
    check_text_limits(text)?;
    let mut history = History::new(Vec::new());
    history.semantics = Semantics::PorcupineEtcd;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let op = parse_line(raw, line)?;
        check_event_count(history.ops.len() + 1)?;
        history.ops.push(op);
    }
    Ok(history)
}

/// Splits off the next blank-separated field, returning it and the rest.
fn field(text: &str) -> Option<(&str, &str)> {
    let text = text.trim_start();
    if text.is_empty() {
        return None;
    }
    let end = text.find(char::is_whitespace).unwrap_or(text.len());
    Some((&text[..end], &text[end..]))
}

fn parse_line(raw: &str, line: usize) -> Result<Op> {
    let bad = |what: &str| Error::bad_op(line, format!("{what}: {EXPECTED}"));
    let (info, rest) = field(raw).ok_or_else(|| bad("empty line"))?;
    let (logger, rest) = field(rest).ok_or_else(|| bad("missing logger"))?;
    let (dash, rest) = field(rest).ok_or_else(|| bad("missing '-'"))?;
    if info != "INFO" || logger != "jepsen.util" || dash != "-" {
        return Err(bad("not a jepsen.util line"));
    }
    let (process, rest) = field(rest).ok_or_else(|| bad("missing process"))?;
    let process: i64 = process
        .parse()
        .map_err(|_| bad(&format!("process '{process}' is not an integer")))?;
    let (kind, rest) = field(rest).ok_or_else(|| bad("missing type"))?;
    let kind = kind
        .strip_prefix(':')
        .and_then(OpType::from_name)
        .ok_or_else(|| {
            bad(&format!(
                "type '{kind}' is not one of :invoke :ok :fail :info"
            ))
        })?;
    let (f, rest) = field(rest).ok_or_else(|| bad("missing function"))?;
    let f = match f.strip_prefix(':') {
        Some(name @ ("read" | "write" | "cas")) => name,
        _ => {
            return Err(bad(&format!(
                "function '{f}' is not one of :read :write :cas"
            )))
        }
    };
    let value_text = rest.trim();
    if value_text.is_empty() {
        return Err(bad("missing value"));
    }
    let value = EdnReader::parse_one(value_text)
        .map_err(|e| Error::bad_op(line, format!("bad value '{value_text}': {e}")))?;
    let mut op = Op::new(process, kind, f, value);
    op.line = line;
    Ok(op)
}
