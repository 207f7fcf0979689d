//! Where porcupine's test histories lie relative to this crate, their expected verdicts and
//! porcupine's own times on them (from VERDICTS.md), shared by the tests and the benchmark.
//!
//! It must not be used by the checker: it only names test data.

use std::path::PathBuf;

/// The data directory, relative to this crate (the repository is cloned with `shared/` beside
/// it).
pub const DATA_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/data/linearizability/porcupine"
);

/// The etcd logs porcupine's test expects to be linearizable (the other 79 are not;
/// `etcd_095.log` is empty and has no verdict).
pub const LINEARIZABLE_ETCD: [u32; 23] = [
    2, 5, 7, 18, 25, 31, 38, 45, 48, 49, 51, 53, 56, 67, 75, 76, 80, 87, 92, 98, 100, 101, 102,
];

/// The empty etcd log.
pub const EMPTY_ETCD: u32 = 95;

/// Porcupine's total time for the 102 etcd logs, in milliseconds (VERDICTS.md).
pub const PORCUPINE_ETCD_TOTAL_MS: f64 = 613.0;

/// The kv files: name, expected linearizable, porcupine's time in milliseconds (partitioned).
pub const KV_FILES: [(&str, bool, f64); 6] = [
    ("c01-bad.txt", false, 0.080),
    ("c01-ok.txt", true, 0.129),
    ("c10-bad.txt", false, 0.545),
    ("c10-ok.txt", true, 1.137),
    ("c50-bad.txt", false, 21.129),
    ("c50-ok.txt", true, 210.016),
];

/// The data directory, or a message saying where it was looked for.
pub fn data_dir() -> Result<PathBuf, String> {
    let dir = PathBuf::from(DATA_DIR);
    if dir.join("jepsen").is_dir() && dir.join("kv").is_dir() {
        Ok(dir)
    } else {
        Err(format!(
            "porcupine test data not found at {DATA_DIR}: clone the shared data beside the \
             repository (shared/data/linearizability/porcupine with jepsen/ and kv/)"
        ))
    }
}

/// The 102 non-empty etcd logs with their expected verdict (true = linearizable).
pub fn etcd_logs(dir: &std::path::Path) -> Vec<(PathBuf, bool)> {
    (0..=102u32)
        .filter(|&n| n != EMPTY_ETCD)
        .map(|n| {
            (
                dir.join(format!("jepsen/etcd_{n:03}.log")),
                LINEARIZABLE_ETCD.contains(&n),
            )
        })
        .collect()
}
