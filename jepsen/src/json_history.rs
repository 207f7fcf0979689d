//! JSON-lines histories: one JSON object per line, e.g.
//! `{"process":3,"type":"invoke","f":"cas","value":[1,2],"time":123}`.
//!
//! Values that JSON cannot hold exactly (keywords, symbols, maps, sets, non-finite floats)
//! are written as `{"edn": "<EDN text>"}` and read back from it, so EDN -> JSON -> EDN keeps
//! every value. It must not pair or judge operations.

use crate::edn::EdnReader;
use crate::edn_history::op_from_value;
use crate::error::{Error, Result};
use crate::format::{check_event_count, check_text_limits};
use crate::history::History;
use crate::op::Op;
use crate::value::Value;
use serde_json::Value as Json;

/// Reads a JSON-lines history.
pub fn read_json_lines(text: &str) -> Result<History> {
    check_text_limits(text)?;
    let mut history = History::new(Vec::new());
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let json: Json = serde_json::from_str(raw).map_err(|e| Error::Syntax {
            line,
            column: e.column(),
            message: format!("not a JSON object: {e}"),
        })?;
        let Json::Object(fields) = json else {
            return Err(Error::bad_op(line, "expected one JSON object per line"));
        };
        let mut entries = Vec::with_capacity(fields.len());
        for (name, field) in fields {
            entries.push((Value::Keyword(name), value_from_json(field, line)?));
        }
        match op_from_value(Value::Map(entries), line)? {
            Some(op) => {
                check_event_count(history.ops.len() + 1)?;
                history.ops.push(op);
            }
            None => history.nemesis_records_skipped += 1,
        }
    }
    Ok(history)
}

/// Converts a JSON value to an EDN value (`{"edn": "..."}` is read as EDN text).
pub fn value_from_json(json: Json, line: usize) -> Result<Value> {
    Ok(match json {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::Str(s),
        Json::Array(items) => Value::Vector(
            items
                .into_iter()
                .map(|item| value_from_json(item, line))
                .collect::<Result<_>>()?,
        ),
        Json::Object(fields) => {
            if fields.len() == 1 {
                if let Some(Json::String(text)) = fields.get("edn") {
                    return EdnReader::parse_one(text).map_err(|e| {
                        Error::bad_op(line, format!("bad EDN inside {{\"edn\": ...}}: {e}"))
                    });
                }
            }
            let mut entries = Vec::with_capacity(fields.len());
            for (name, field) in fields {
                entries.push((Value::Str(name), value_from_json(field, line)?));
            }
            Value::Map(entries)
        }
    })
}

/// Converts an EDN value to JSON (see the module header for the `{"edn": ...}` escape).
pub fn value_to_json(value: &Value) -> Json {
    match value {
        Value::Nil => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(x) if x.is_finite() => Json::from(*x),
        Value::Str(s) => Json::String(s.clone()),
        Value::Vector(items) => Json::Array(items.iter().map(value_to_json).collect()),
        other => {
            let mut map = serde_json::Map::new();
            map.insert("edn".to_string(), Json::String(other.to_string()));
            Json::Object(map)
        }
    }
}

/// Appends one op as a JSON object (without a newline).
pub fn write_json_op(out: &mut String, op: &Op) {
    let text = |v: &Json| v.to_string();
    out.push_str(&format!(
        "{{\"process\":{},\"type\":\"{}\",\"f\":{}",
        op.process,
        op.kind,
        text(&Json::String(op.f.to_string()))
    ));
    if let Some(key) = &op.key {
        out.push_str(&format!(",\"key\":{}", text(&value_to_json(key))));
    }
    out.push_str(&format!(",\"value\":{}", text(&value_to_json(&op.value))));
    if let Some(t) = op.time_ns {
        out.push_str(&format!(",\"time\":{t}"));
    }
    out.push('}');
}

/// The history as JSON lines.
pub fn to_json_lines(history: &History) -> String {
    let mut out = String::new();
    for op in &history.ops {
        write_json_op(&mut out, op);
        out.push('\n');
    }
    out
}
