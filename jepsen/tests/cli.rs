//! End-to-end tests of the `singularity-jepsen` binary: exit status 0/1/2, the JSON `valid`
//! field, errors that name the problem, and the HTML page.

use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_singularity-jepsen");

/// Writes `text` to a file unique to this test process and returns its path.
fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("singularity-jepsen-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {BIN}: {e}"))
}

fn json_valid(output: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&output.stdout);
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    json["valid"].clone()
}

const GOOD: &str = "{:process 0, :type :invoke, :f :write, :value 1}
{:process 0, :type :ok, :f :write, :value 1}
{:process 1, :type :invoke, :f :read, :value nil}
{:process 1, :type :ok, :f :read, :value 1}
";

const BAD: &str = "{:process 0, :type :invoke, :f :write, :value 1, :time 0}
{:process 0, :type :ok, :f :write, :value 1, :time 10}
{:process 1, :type :invoke, :f :read, :value nil, :time 20}
{:process 1, :type :ok, :f :read, :value 2, :time 30}
";

#[test]
fn linearizable_exits_0() {
    let file = temp_file("good.edn", GOOD);
    let path = file.to_string_lossy();
    let output = run(&["check", "--model", "register", "--output", "json", &path]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(json_valid(&output), serde_json::Value::Bool(true));
    let text = run(&["check", "--model", "cas-register", &path]);
    assert_eq!(text.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&text.stdout).starts_with("linearizable"));
}

#[test]
fn not_linearizable_exits_1_with_window_and_html() {
    let file = temp_file("bad.edn", BAD);
    let html = file.with_extension("html");
    let output = run(&[
        "check",
        "--model",
        "register",
        "--output",
        "json",
        "--html",
        &html.to_string_lossy(),
        &file.to_string_lossy(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(json_valid(&output), serde_json::Value::Bool(false));
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json["failure"]["failing_op"]["invoke_line"], 3);
    assert_eq!(json["model"], "register");
    assert_eq!(json["ops"], 2);
    let page = std::fs::read_to_string(&html).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        page.contains("<svg") && page.contains("process 1"),
        "{page}"
    );
}

#[test]
fn time_limit_exits_2_with_unknown() {
    let mut text = String::new();
    for p in 0..40 {
        text.push_str(&format!(
            "{{:process {p}, :type :invoke, :f :write, :value {p}}}\n"
        ));
    }
    for p in 0..40 {
        text.push_str(&format!(
            "{{:process {p}, :type :ok, :f :write, :value {p}}}\n"
        ));
    }
    text.push_str("{:process 99, :type :invoke, :f :read, :value nil}\n");
    text.push_str("{:process 99, :type :ok, :f :read, :value 999}\n");
    let file = temp_file("hard.edn", &text);
    let output = run(&[
        "check",
        "--model",
        "register",
        "--time-limit-ms",
        "1",
        "--output",
        "json",
        &file.to_string_lossy(),
    ]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert_eq!(
        json_valid(&output),
        serde_json::Value::String("unknown".into())
    );
}

#[test]
fn bad_input_exits_2_naming_the_line() {
    let file = temp_file(
        "broken.edn",
        "{:process 0, :type :invoke, :f :read}\n{:process 0, :type :okay, :f :read}\n",
    );
    let output = run(&["check", "--model", "register", &file.to_string_lossy()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 2") && stderr.contains(":type"),
        "{stderr}"
    );
    let json = run(&[
        "check",
        "--model",
        "register",
        "--output",
        "json",
        &file.to_string_lossy(),
    ]);
    assert_eq!(json.status.code(), Some(2));
    assert_eq!(
        json_valid(&json),
        serde_json::Value::String("unknown".into())
    );

    let empty = temp_file("empty.edn", "");
    let output = run(&["check", "--model", "register", &empty.to_string_lossy()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("empty"));

    let wrong_model = temp_file(
        "cas.edn",
        "{:process 0, :type :invoke, :f :cas, :value [1 2]}\n",
    );
    let output = run(&[
        "check",
        "--model",
        "register",
        &wrong_model.to_string_lossy(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cas-register"));

    let missing = run(&["check", "--model", "kv", "/nonexistent/history.edn"]);
    assert_eq!(missing.status.code(), Some(2));
    let bad_initial = run(&[
        "check",
        "--model",
        "register",
        "--initial",
        "[1",
        &empty.to_string_lossy(),
    ]);
    assert_eq!(bad_initial.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_initial.stderr).contains("--initial"));
    let no_model = run(&["check", &empty.to_string_lossy()]);
    assert_eq!(no_model.status.code(), Some(2));
}

#[test]
fn help_documents_every_flag() {
    let output = run(&["check", "--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--model",
        "--initial",
        "--time-limit-ms",
        "--output",
        "--html",
        "--format",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}
