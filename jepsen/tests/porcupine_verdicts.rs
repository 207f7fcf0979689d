//! Reproduces all 108 expected verdicts of porcupine's test data (102 etcd logs, 6 kv files)
//! and the clear "empty history" error of etcd_095.log.

use singularity_jepsen::porcupine_data::{data_dir, etcd_logs, KV_FILES, LINEARIZABLE_ETCD};
use singularity_jepsen::{check_file, CheckOptions, Error, ModelKind, Validity};
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    data_dir().unwrap_or_else(|message| panic!("{message}"))
}

fn expected(linearizable: bool) -> Validity {
    if linearizable {
        Validity::Linearizable
    } else {
        Validity::NotLinearizable
    }
}

fn verdict(path: &Path, model: ModelKind) -> Validity {
    match check_file(path, &CheckOptions::new(model)) {
        Ok(report) => report.valid,
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

#[test]
fn all_102_etcd_verdicts() {
    let logs = etcd_logs(&dir());
    assert_eq!(logs.len(), 102);
    let wrong: Vec<String> = logs
        .iter()
        .filter_map(|(path, linearizable)| {
            let got = verdict(path, ModelKind::CasRegister);
            (got != expected(*linearizable)).then(|| {
                format!(
                    "{}: expected linearizable={linearizable}, got {got:?}",
                    path.display()
                )
            })
        })
        .collect();
    assert!(wrong.is_empty(), "wrong verdicts:\n{}", wrong.join("\n"));
}

#[test]
fn etcd_095_is_an_empty_history() {
    let path = dir().join("jepsen/etcd_095.log");
    match check_file(&path, &CheckOptions::new(ModelKind::CasRegister)) {
        Err(Error::InFile { error, .. }) => {
            assert!(matches!(*error, Error::EmptyHistory), "got {error}")
        }
        other => panic!("expected an empty-history error, got {other:?}"),
    }
}

#[test]
fn all_6_kv_verdicts() {
    for (name, linearizable, _) in KV_FILES {
        let path = dir().join("kv").join(name);
        assert_eq!(
            verdict(&path, ModelKind::Kv),
            expected(linearizable),
            "{name}"
        );
    }
}

/// A refuted history names its failing key and a window holding the failing op.
#[test]
fn refuted_kv_history_has_a_failing_window() {
    let path = dir().join("kv/c10-bad.txt");
    let report =
        check_file(&path, &CheckOptions::new(ModelKind::Kv)).unwrap_or_else(|e| panic!("{e}"));
    let failure = report
        .failure
        .unwrap_or_else(|| panic!("no failure window"));
    assert!(failure.key.starts_with('"'), "key {}", failure.key);
    assert!(failure.window.iter().any(|op| op.role == "failing"));
    assert!(failure.linearized_before < failure.ops_in_key);
}

/// The hard-coded verdicts agree with VERDICTS.md's table.
#[test]
fn verdict_table_agrees_with_verdicts_md() {
    let text = std::fs::read_to_string(dir().join("VERDICTS.md"))
        .unwrap_or_else(|e| panic!("VERDICTS.md: {e}"));
    let mut rows = 0;
    for line in text.lines().filter(|l| l.starts_with("| jepsen/etcd_")) {
        let n: u32 = line[14..17]
            .parse()
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        if n == 95 {
            continue;
        }
        rows += 1;
        let linearizable = line.contains("| **linearizable** |");
        assert_eq!(linearizable, LINEARIZABLE_ETCD.contains(&n), "{line}");
    }
    assert_eq!(rows, 102);
}
