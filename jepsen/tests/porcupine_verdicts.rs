//! Reproduces all 108 expected verdicts of porcupine's test data (102 etcd logs, 6 kv files)
//! and the clear "empty history" error of etcd_095.log.

use singularity_jepsen::{check_file, CheckOptions, Error, ModelKind, Validity};
use std::path::{Path, PathBuf};

const DATA_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/data/linearizability/porcupine"
);

/// The etcd logs porcupine's test expects to be linearizable (all others are not).
const LINEARIZABLE_ETCD: [u32; 23] = [
    2, 5, 7, 18, 25, 31, 38, 45, 48, 49, 51, 53, 56, 67, 75, 76, 80, 87, 92, 98, 100, 101, 102,
];

fn data_dir() -> PathBuf {
    let dir = Path::new(DATA_DIR);
    assert!(
        dir.join("jepsen").is_dir() && dir.join("kv").is_dir(),
        "porcupine test data not found at {DATA_DIR}: clone the shared data beside the repository \
         (shared/data/linearizability/porcupine with jepsen/ and kv/)"
    );
    dir.to_path_buf()
}

fn verdict(path: &Path, model: ModelKind) -> Validity {
    match check_file(path, &CheckOptions::new(model)) {
        Ok(report) => report.valid,
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

#[test]
fn all_102_etcd_verdicts() {
    let dir = data_dir().join("jepsen");
    let mut wrong = Vec::new();
    let mut checked = 0;
    for n in 0..=102u32 {
        if n == 95 {
            continue;
        }
        let path = dir.join(format!("etcd_{n:03}.log"));
        let expected = if LINEARIZABLE_ETCD.contains(&n) {
            Validity::Linearizable
        } else {
            Validity::NotLinearizable
        };
        let got = verdict(&path, ModelKind::CasRegister);
        checked += 1;
        if got != expected {
            wrong.push(format!("etcd_{n:03}.log: expected {expected:?}, got {got:?}"));
        }
    }
    assert_eq!(checked, 102);
    assert!(wrong.is_empty(), "wrong verdicts:\n{}", wrong.join("\n"));
}

#[test]
fn etcd_095_is_an_empty_history() {
    let path = data_dir().join("jepsen/etcd_095.log");
    match check_file(&path, &CheckOptions::new(ModelKind::CasRegister)) {
        Err(Error::InFile { source, .. }) => {
            assert!(matches!(*source, Error::EmptyHistory), "got {source}")
        }
        other => panic!("expected an empty-history error, got {other:?}"),
    }
}

#[test]
fn all_6_kv_verdicts() {
    let dir = data_dir().join("kv");
    for clients in ["c01", "c10", "c50"] {
        for (suffix, expected) in [
            ("ok", Validity::Linearizable),
            ("bad", Validity::NotLinearizable),
        ] {
            let path = dir.join(format!("{clients}-{suffix}.txt"));
            assert_eq!(verdict(&path, ModelKind::Kv), expected, "{}", path.display());
        }
    }
}

/// The hard-coded verdicts above agree with VERDICTS.md's table.
#[test]
fn verdict_table_agrees_with_verdicts_md() {
    let text = std::fs::read_to_string(data_dir().join("VERDICTS.md"))
        .unwrap_or_else(|e| panic!("VERDICTS.md: {e}"));
    let mut rows = 0;
    for line in text.lines().filter(|l| l.starts_with("| jepsen/etcd_")) {
        let n: u32 = line[14..17].parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        if n == 95 {
            continue;
        }
        rows += 1;
        let linearizable = line.contains("| **linearizable** |");
        assert_eq!(linearizable, LINEARIZABLE_ETCD.contains(&n), "{line}");
    }
    assert_eq!(rows, 102);
}
