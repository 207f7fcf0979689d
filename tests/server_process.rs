//! Real `singularity server` processes on loopback: kill -9 of every replica and a restart
//! lose no acknowledged write; SIGTERM stops a replica cleanly (exit 0); a data dir of another
//! cluster is refused with a clear message. Every wait is bounded; ports are picked free.

use singularity_proto::query;
use singularity_raft::client::Client;
use singularity_scheduler::testkit;
use singularity_scheduler::{Command, Effect, Job, JobId, Outcome, Tier};
use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_singularity");
/// Polls of a process's exit and 50 ms apart.
const MAX_EXIT_POLLS: u32 = 400;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn spawn(id: u64, port: u16, dir: &Path, initial: &str, cluster: &str) -> Child {
    std::process::Command::new(BIN)
        .args(["server", "--node-id", &id.to_string()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.join(format!("node-{id}")))
        .args(["--initial-cluster", initial, "--cluster-name", cluster])
        .args([
            "--election-timeout-min-ms",
            "300",
            "--election-timeout-max-ms",
            "600",
        ])
        .args(["--heartbeat-interval-ms", "100", "--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server")
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..MAX_EXIT_POLLS {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().ok();
    panic!("process did not exit in time");
}

async fn submit(client: &mut Client, name: &str) -> JobId {
    let spec = testkit::job_spec(name, Tier::Basic, 1, "h100");
    match client
        .write(Command::SubmitJob { spec })
        .await
        .expect("write")
        .outcome
    {
        Outcome::Accepted(Effect::JobSubmitted { job }) => job,
        other => panic!("{other:?}"),
    }
}

#[test]
fn kill_9_of_all_replicas_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let initial = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let endpoints: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let start_all = || -> Vec<Child> {
        (0..3)
            .map(|i| spawn(i as u64 + 1, ports[i], dir.path(), &initial, "test"))
            .collect()
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    let mut children = start_all();
    let acked: Vec<JobId> = runtime.block_on(async {
        let mut client = Client::new(endpoints.clone()).expect("client");
        let mut acked = Vec::new();
        for i in 0..25 {
            acked.push(submit(&mut client, &format!("durable-{i}")).await);
        }
        acked
    });
    for child in &mut children {
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    // Another cluster's name on the same data dir is refused with a clear message.
    let mut foreign = spawn(1, ports[0], dir.path(), &initial, "other-cluster");
    let status = wait_exit(&mut foreign);
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(foreign.stderr.as_mut().expect("stderr"), &mut stderr).ok();
    assert!(stderr.contains("belongs to"), "{stderr}");

    let mut children = start_all();
    runtime.block_on(async {
        let mut client = Client::new(endpoints.clone()).expect("client");
        let reply = client.read(query::JOBS, 0, false).await.expect("read");
        let jobs: Vec<Job> = serde_json::from_str(&reply.json).expect("json");
        let present: BTreeSet<JobId> = jobs.iter().map(|j| j.id).collect();
        for job in &acked {
            assert!(
                present.contains(job),
                "acknowledged {job} lost after kill -9"
            );
        }
        // Writes go on after the restart.
        submit(&mut client, "after-restart").await;
    });

    // SIGTERM stops each replica cleanly.
    for child in &mut children {
        let pid = child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
        let status = wait_exit(child);
        assert!(
            status.success(),
            "replica exited with {status:?} after SIGTERM"
        );
    }
}
