//! The CLI against a real single-replica `singularity server` process:
//! - `node drain|undrain`: a registered node is drained and returned to service, `node list`
//!   shows it, and an unknown or malformed node name gets a clear error and a non-zero exit;
//! - `job status`: a pending job's explanation says which check turned away how many nodes, and
//!   shows its SLA attainment against its tier's target.
//!
//! Every wait is bounded; ports are picked free; the server is killed when a test ends.

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
        .env("SINGULARITY_ENDPOINTS", endpoint)
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

/// Starts a single-replica server and registers one 1-device h100 node `gpu-1` through the API.
fn server_with_one_node() -> (tempfile::TempDir, Server, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let endpoint = format!("127.0.0.1:{port}");
    let server = Server(
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
    (dir, server, endpoint)
}

#[test]
fn nodes_are_drained_and_returned_to_service_from_the_cli() {
    let (_dir, _server, endpoint) = server_with_one_node();
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

#[test]
fn job_status_explains_a_pending_job() {
    let (_dir, _server, endpoint) = server_with_one_node();
    let submitted = cli(
        &endpoint,
        &[
            "job",
            "submit",
            "--name",
            "big",
            "--world-size",
            "8",
            "--device-kind",
            "h100",
            "--tier",
            "premium",
            "--output",
            "json",
            "--",
            "sleep",
            "1",
        ],
    );
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let status = cli(&endpoint, &["job", "status", "1"]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("needs at least 8 devices"), "{text}");
    assert!(
        text.contains("1 node can take ranks, with 1 device free"),
        "{text}"
    );
    assert!(text.contains("target 95%"), "{text}");
    let missing = cli(&endpoint, &["job", "status", "99"]);
    assert!(!missing.status.success());
}
