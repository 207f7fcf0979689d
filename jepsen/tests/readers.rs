//! Unit tests of the history readers and writers: EDN (vector, list, per line), JSON lines,
//! the etcd log, nemesis records, errors with line numbers, and round trips.

use singularity_jepsen::edn::EdnReader;
use singularity_jepsen::edn_history::{read_edn, to_edn};
use singularity_jepsen::json_history::{read_json_lines, to_json_lines};
use singularity_jepsen::{read_history, Error, Format, History, Op, OpType, Semantics, Value};

fn without_lines(history: &History) -> Vec<Op> {
    history
        .ops
        .iter()
        .cloned()
        .map(|mut op| {
            op.line = 0;
            op
        })
        .collect()
}

fn expect_line(result: Result<History, Error>, expected_line: usize) -> String {
    match result {
        Err(e @ (Error::Syntax { line, .. } | Error::BadOp { line, .. })) => {
            assert_eq!(line, expected_line, "error {e}");
            e.to_string()
        }
        other => panic!("expected an error at line {expected_line}, got {other:?}"),
    }
}

const PER_LINE: &str = "{:process 0, :type :invoke, :f :write, :value 1, :time 10}
{:process 0, :type :ok, :f :write, :value 1, :time 20}
{:process :nemesis, :type :info, :f :start, :value nil}
{:process 1, :type :invoke, :f :cas, :value [1 2]}
{:process 1, :type :fail, :f :cas, :value [1 2]}
";

#[test]
fn edn_one_op_per_line_with_nemesis_skipped() {
    let history = read_edn(PER_LINE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(history.ops.len(), 4);
    assert_eq!(history.nemesis_records_skipped, 1);
    assert_eq!(history.semantics, Semantics::Knossos);
    let first = &history.ops[0];
    assert_eq!(
        (first.process, first.kind, first.f.as_ref()),
        (0, OpType::Invoke, "write")
    );
    assert_eq!(first.value, Value::Int(1));
    assert_eq!(first.time_ns, Some(10));
    assert_eq!(history.ops[2].line, 4);
    assert_eq!(history.ops[3].kind, OpType::Fail);
    assert_eq!(
        history.ops[3].value,
        Value::Vector(vec![Value::Int(1), Value::Int(2)])
    );
}

#[test]
fn edn_vector_and_list_give_the_same_history() {
    let maps = "{:process 0, :type :invoke, :f :read, :value nil}\n \
                {:process 0, :type :ok, :f :read, :value 3}";
    let per_line = read_edn(maps).unwrap_or_else(|e| panic!("{e}"));
    let vector = read_edn(&format!("[{maps}]")).unwrap_or_else(|e| panic!("{e}"));
    let list = read_edn(&format!("; a comment\n({maps}\n)\n")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(without_lines(&per_line), without_lines(&vector));
    assert_eq!(without_lines(&per_line), without_lines(&list));
    assert_eq!(list.ops[0].line, 2);
    assert_eq!(list.ops[1].line, 3);
}

#[test]
fn edn_op_map_spanning_lines_and_tagged() {
    let text = "#jepsen.history.Op{:index 0, :time 5,\n :type :invoke, :process 2, :f :get, :key \"k\"\n :value nil}\n";
    let history = read_edn(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(history.ops.len(), 1);
    assert_eq!(history.ops[0].key, Some(Value::Str("k".into())));
    assert_eq!(history.ops[0].line, 1);
}

#[test]
fn edn_values() {
    let parse = |text: &str| EdnReader::parse_one(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(parse("-12"), Value::Int(-12));
    assert_eq!(parse("1.5"), Value::Float(1.5));
    assert_eq!(parse("\"a\\\"b\\n\""), Value::Str("a\"b\n".into()));
    assert_eq!(parse(":timed-out"), Value::keyword("timed-out"));
    assert_eq!(parse("#{1}"), Value::Set(vec![Value::Int(1)]));
    assert_eq!(
        parse("[1 #_ 2 3]"),
        Value::Vector(vec![Value::Int(1), Value::Int(3)])
    );
    assert_eq!(parse("(1 2)"), parse("[1 2]"));
    assert_eq!(
        parse("{:a [nil true]}"),
        Value::Map(vec![(
            Value::keyword("a"),
            Value::Vector(vec![Value::Nil, Value::Bool(true)])
        )])
    );
    assert!(EdnReader::parse_one("99999999999999999999").is_err());
    assert!(EdnReader::parse_one("[1 2").is_err());
}

#[test]
fn edn_errors_name_the_line() {
    let message = expect_line(
        read_edn("{:process 0, :type :invoke, :f :read, :value nil}\n{:process 0, :type :done, :f :read}\n"),
        2,
    );
    assert!(message.contains(":type must be one of"), "{message}");
    let message = expect_line(read_edn("\n\n{:process 0, :f :read, :value nil}\n"), 3);
    assert!(message.contains("no :type"), "{message}");
    let message = expect_line(
        read_edn("{:process 0, :type :invoke, :f :read}\n{:process 1 :type}\n"),
        2,
    );
    assert!(message.contains("even number"), "{message}");
    let message = expect_line(
        read_edn("{:process 0, :type :invoke, :f :read, :value \"x}\n"),
        1,
    );
    assert!(message.contains("string"), "{message}");
    let message = expect_line(read_edn("[{:process 0, :type :invoke, :f :read}\n 42]"), 2);
    assert!(message.contains("expected an op map"), "{message}");
    expect_line(read_edn("{:process \"p\", :type :invoke, :f :read}"), 1);
}

#[test]
fn format_detection() {
    assert_eq!(Format::detect("  {:process 1}").ok(), Some(Format::Edn));
    assert_eq!(Format::detect("[").ok(), Some(Format::Edn));
    assert_eq!(
        Format::detect("{\"process\": 1}").ok(),
        Some(Format::JsonLines)
    );
    assert_eq!(
        Format::detect("INFO  jepsen.util - 0\t:invoke\t:read\tnil").ok(),
        Some(Format::EtcdLog)
    );
    assert!(matches!(
        Format::detect("hello"),
        Err(Error::UnknownFormat(_))
    ));
    assert!(read_history("", None)
        .map(|h| h.is_empty())
        .unwrap_or(false));
}

#[test]
fn etcd_log_lines() {
    let text = "INFO  jepsen.util - 3\t:invoke\t:cas\t[1 2]\nINFO  jepsen.util - 3   :fail   :cas   [1 2]\n\
                INFO  jepsen.util - 4\t:info\t:write\t:timed-out\n";
    let history = read_history(text, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(history.semantics, Semantics::PorcupineEtcd);
    assert_eq!(history.ops.len(), 3);
    assert_eq!(history.ops[1].kind, OpType::Fail);
    assert_eq!(history.ops[2].value, Value::keyword("timed-out"));
    let bad = read_history(
        "INFO  jepsen.util - 3\t:invoke\t:cas\t[1 2]\nINFO  jepsen.util - x\t:ok\t:cas\t[1 2]\n",
        None,
    );
    expect_line(bad, 2);
}

#[test]
fn json_lines_read_and_errors() {
    let text = "{\"process\":0,\"type\":\"invoke\",\"f\":\"cas\",\"value\":[1,2],\"time\":7}\n\
                {\"process\":\"nemesis\",\"type\":\"info\",\"f\":\"kill\"}\n\
                {\"process\":0,\"type\":\"info\",\"f\":\"cas\",\"value\":{\"edn\":\":timed-out\"}}\n";
    let history = read_json_lines(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(history.ops.len(), 2);
    assert_eq!(history.nemesis_records_skipped, 1);
    assert_eq!(history.ops[1].value, Value::keyword("timed-out"));
    assert_eq!(history.ops[1].line, 3);
    expect_line(
        read_json_lines("{\"process\":0,\"type\":\"invoke\",\"f\":\"read\"}\n{\"process\":0,"),
        2,
    );
}

fn sample_history() -> History {
    let ops = vec![
        Op::new(
            0,
            OpType::Invoke,
            "cas",
            Value::Vector(vec![Value::Int(1), Value::Int(2)]),
        )
        .with_time_ns(100),
        Op::new(1, OpType::Invoke, "get", Value::Nil).with_key(Value::Str("k \"1\"".into())),
        Op::new(0, OpType::Info, "cas", Value::keyword("timed-out")).with_time_ns(250),
        Op::new(1, OpType::Ok, "get", Value::Str("x\ty".into())).with_key(Value::Int(-3)),
        Op::new(
            2,
            OpType::Fail,
            "txn",
            Value::Map(vec![(
                Value::keyword("a"),
                Value::Set(vec![Value::Float(0.5)]),
            )]),
        ),
    ];
    History::new(ops)
}

#[test]
fn edn_round_trip() {
    let history = sample_history();
    let back = read_edn(&to_edn(&history)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(without_lines(&back), history.ops);
}

#[test]
fn json_round_trip_and_edn_json_edn() {
    let history = sample_history();
    let back = read_json_lines(&to_json_lines(&history)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(without_lines(&back), history.ops);
    let edn = to_edn(&history);
    let via_json = read_json_lines(&to_json_lines(
        &read_edn(&edn).unwrap_or_else(|e| panic!("{e}")),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(to_edn(&via_json), edn);
}
