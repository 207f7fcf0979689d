//! `singularity node drain|undrain` against a real single-replica `singularity server` process:
//! a registered node is drained and returned to service through the CLI, `node list` shows it,
//! and an unknown or malformed node name gets a clear error and a non-zero exit. Every wait is
//! bounded; the port is picked free; the server is killed at the end.

use singularity_raft::client::Client;
use singularity_scheduler::testkit::H100_MEMORY_BYTES;
use singularity_scheduler::{
    Command, DeviceHealth, DeviceKind, DeviceSpec, LocalityDomain, Node, NodeName, NodeStatus,
};
use std::net::TcpListener;
use std::process::{Child, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_singularity");

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cli(endpoint: &str, args: &[&str]) -> Output {
    std::process::Command::new(BIN)
        .args(args)
        .args(["--endpoints", endpoint])
        .output()
        .expect("run the CLI")
}

fn node_status(endpoint: &str) -> NodeStatus {
    let out = cli(endpoint, &["node", "list", "--output", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nodes: Vec<Node> = serde_json::from_slice(&out.stdout).expect("node list JSON");
    nodes[0].status
}

#[test]
fn nodes_are_drained_and_returned_to_service_from_the_cli() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let endpoint = format!("127.0.0.1:{port}");
    let _server = Server(
        std::process::Command::new(BIN)
            .args(["server", "--node-id", "1", "--listen", &endpoint])
            .arg("--data-dir")
            .arg(dir.path().join("node-1"))
            .args(["--initial-cluster", &format!("1={endpoint}")])
            .args(["--node-heartbeat-timeout-ms", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn server"),
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut client = Client::new(vec![endpoint.clone()]).expect("client");
        let registered = client
            .write(Command::RegisterNode {
                name: NodeName::new("gpu-1").unwrap(),
                domain: LocalityDomain::new("rack-1").unwrap(),
                devices: vec![DeviceSpec {
                    kind: DeviceKind::new("h100").unwrap(),
                    memory_bytes: H100_MEMORY_BYTES,
                    uuid: String::new(),
                    health: DeviceHealth::Healthy,
                }],
            })
            .await
            .expect("register (the client retries until the replica is up)");
        assert!(registered.outcome.is_accepted(), "{:?}", registered.outcome);
    });

    let drained = cli(&endpoint, &["node", "drain", "gpu-1"]);
    assert!(
        drained.status.success(),
        "{}",
        String::from_utf8_lossy(&drained.stderr)
    );
    assert_eq!(node_status(&endpoint), NodeStatus::Draining);

    let back = cli(&endpoint, &["node", "undrain", "gpu-1"]);
    assert!(
        back.status.success(),
        "{}",
        String::from_utf8_lossy(&back.stderr)
    );
    assert_eq!(node_status(&endpoint), NodeStatus::Up);

    let unknown = cli(&endpoint, &["node", "drain", "gpu-9"]);
    assert!(!unknown.status.success());
    let message = String::from_utf8_lossy(&unknown.stderr);
    assert!(message.contains("no node named \"gpu-9\""), "{message}");

    let malformed = cli(&endpoint, &["node", "drain", "GPU 1"]);
    assert!(!malformed.status.success());
    let message = String::from_utf8_lossy(&malformed.stderr);
    assert!(message.contains("invalid node"), "{message}");
}
