//! The scheduler core must stay pure (DESIGN.md, "Workspace"): its dependency tree may not
//! contain tokio, tonic, rocksdb or openraft. This asks cargo for the tree and fails if any of
//! them (or a crate built on them) appears.

use std::process::Command;

#[test]
fn scheduler_depends_on_no_runtime_network_or_storage_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let output = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--package",
            "singularity-scheduler",
            "--edges",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        tree.contains("singularity-scheduler"),
        "unexpected tree output:\n{tree}"
    );
    let forbidden = [
        "tokio",
        "tonic",
        "rocksdb",
        "openraft",
        "librocksdb-sys",
        "hyper",
        "mio",
    ];
    for line in tree.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        assert!(
            !forbidden.contains(&name),
            "the scheduler crate depends on {name}; it must stay pure:\n{tree}"
        );
    }
}
