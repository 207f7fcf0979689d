//! Records a run's history as it happens: client invocations and completions (as `Op`s, with
//! time in nanoseconds since the start) and nemesis events, and writes them as Jepsen EDN
//! (one op map per line) and JSON lines.
//!
//! It must not judge operations; the checkers do.

use crate::edn_history::write_edn_op;
use crate::json_history::write_json_op;
use crate::op::{Op, OpType};
use crate::value::Value;
use std::sync::Mutex;
use std::time::Instant;

/// One nemesis event (`:process :nemesis`, `:type :info`).
#[derive(Debug, Clone, PartialEq)]
pub struct NemesisEvent {
    pub time_ns: i64,
    /// e.g. `start-partition-ring`, `stop`.
    pub f: String,
    /// What was done, for people.
    pub value: String,
}

/// The shared history of one workload.
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
}

impl Recorder {
    /// A history whose time 0 is `start`.
    pub fn new(start: Instant) -> Self {
        Recorder {
            start,
            ops: Mutex::new(Vec::new()),
        }
    }

    /// Nanoseconds since the start.
    pub fn now_ns(&self) -> i64 {
        i64::try_from(self.start.elapsed().as_nanos()).unwrap_or(i64::MAX)
    }

    /// Appends one record stamped now.
    pub fn record(&self, process: i64, kind: OpType, f: &str, key: Option<i64>, value: Value) {
        let mut op = Op::new(process, kind, f, value).with_time_ns(self.now_ns());
        if let Some(key) = key {
            op = op.with_key(Value::Int(key));
        }
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    /// The records so far, in the order they were made.
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn nemesis_edn(event: &NemesisEvent) -> String {
    format!(
        "{{:type :info, :f :{}, :value {}, :process :nemesis, :time {}}}",
        event.f,
        Value::Str(event.value.clone()),
        event.time_ns
    )
}

fn nemesis_json(event: &NemesisEvent) -> String {
    serde_json::json!({
        "type": "info", "f": event.f, "value": event.value, "process": "nemesis", "time": event.time_ns
    })
    .to_string()
}

/// EDN and JSON-lines texts of `ops` merged with `nemesis` by time.
pub fn render(ops: &[Op], nemesis: &[NemesisEvent]) -> (String, String) {
    let mut edn = String::new();
    let mut json = String::new();
    let mut events = nemesis.iter().peekable();
    for op in ops {
        let time_ns = op.time_ns.unwrap_or(0);
        while let Some(event) = events.next_if(|e| e.time_ns <= time_ns) {
            edn.push_str(&nemesis_edn(event));
            edn.push('\n');
            json.push_str(&nemesis_json(event));
            json.push('\n');
        }
        write_edn_op(&mut edn, op);
        if !edn.ends_with('\n') {
            edn.push('\n');
        }
        write_json_op(&mut json, op);
        if !json.ends_with('\n') {
            json.push('\n');
        }
    }
    for event in events {
        edn.push_str(&nemesis_edn(event));
        edn.push('\n');
        json.push_str(&nemesis_json(event));
        json.push('\n');
    }
    (edn, json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edn_history::read_edn;
    use crate::json_history::read_json_lines;

    #[test]
    fn rendered_history_reads_back_without_the_nemesis() {
        let recorder = Recorder::new(Instant::now());
        recorder.record(0, OpType::Invoke, "write", Some(1), Value::Int(3));
        recorder.record(0, OpType::Ok, "write", Some(1), Value::Int(3));
        recorder.record(1, OpType::Invoke, "read", Some(1), Value::Nil);
        recorder.record(1, OpType::Info, "read", Some(1), Value::Nil);
        let ops = recorder.ops();
        let nemesis = vec![NemesisEvent {
            time_ns: ops[1].time_ns.unwrap(),
            f: "start-kill-leader".into(),
            value: "killed n2".into(),
        }];
        let (edn, json) = render(&ops, &nemesis);
        assert_eq!(edn.lines().count(), 5);
        assert!(edn.contains(":process :nemesis"));
        let back = read_edn(&edn).unwrap();
        assert_eq!(back.nemesis_records_skipped, 1);
        assert_eq!(back.ops.len(), 4);
        assert_eq!(back.ops[0].key, Some(Value::Int(1)));
        assert_eq!(back.ops[3].kind, OpType::Info);
        assert_eq!(json.lines().count(), 5);
        let back = read_json_lines(&json).unwrap();
        assert_eq!(back.ops.len(), 4);
    }
}
