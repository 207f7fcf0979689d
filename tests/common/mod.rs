//! The fixture of the end-to-end agent tests: three `singularity server` replicas on free
//! ports and `singularity agent` processes with simulated devices, in one temporary directory,
//! driven through the `singularity` CLI. Every wait is bounded; every process is killed when
//! the fixture is dropped.
//!
//! Shared by several test crates, each of which uses part of it.
#![allow(dead_code)]

use singularity_scheduler::{Job, JobPhase, Node};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_singularity");
/// Upper bound of every wait in these tests (the machine may be busy).
pub const WAIT_MS: u64 = 90_000;

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Three replicas and the agents a test starts, in one temporary directory.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub endpoints: String,
    /// `--devices` of the agents started from now on.
    pub devices: String,
    _replicas: Vec<Proc>,
    agents: Vec<(String, Option<Proc>)>,
}

impl Cluster {
    pub fn start(heartbeat_timeout_ms: u64) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let addrs: Vec<String> = (0..3)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let initial: Vec<String> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect();
        let replicas = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let log = std::fs::File::create(dir.path().join(format!("replica-{}.log", i + 1)))
                    .expect("log file");
                Proc(
                    std::process::Command::new(BIN)
                        .args([
                            "server",
                            "--node-id",
                            &(i + 1).to_string(),
                            "--listen",
                            addr,
                        ])
                        .arg("--data-dir")
                        .arg(dir.path().join(format!("replica-{}", i + 1)))
                        .args(["--initial-cluster", &initial.join(",")])
                        .args([
                            "--node-heartbeat-timeout-ms",
                            &heartbeat_timeout_ms.to_string(),
                        ])
                        .args(["--tick-interval-ms", "500"])
                        .stdout(Stdio::null())
                        .stderr(log)
                        .spawn()
                        .expect("spawn replica"),
                )
            })
            .collect();
        Cluster {
            dir,
            endpoints: addrs.join(","),
            devices: "sim:2".to_string(),
            _replicas: replicas,
            agents: Vec::new(),
        }
    }

    pub fn work_dir(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("agent-{node}"))
    }

    /// Where a test marks a simulated device of `node` unhealthy.
    pub fn fault_dir(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("faults-{node}"))
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.dir.path().join("checkpoints")
    }

    pub fn spawn_agent(&self, node: &str) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("agent-{node}.log")))
            .expect("log file");
        Proc(
            std::process::Command::new(BIN)
                .args(["agent", "--servers", &self.endpoints, "--node", node])
                .args(["--devices", &self.devices])
                .arg("--work-dir")
                .arg(self.work_dir(node))
                .arg("--checkpoint-dir")
                .arg(self.checkpoints())
                .arg("--fault-dir")
                .arg(self.fault_dir(node))
                .args([
                    "--heartbeat-interval-ms",
                    "500",
                    "--grace-period-ms",
                    "3000",
                ])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn agent"),
        )
    }

    /// Starts an agent for `node` and waits until the node is registered and up.
    pub fn add_agent(&mut self, node: &str) {
        let agent = self.spawn_agent(node);
        self.agents.push((node.to_string(), Some(agent)));
        wait_until(&format!("node {node} registered"), || {
            self.nodes()
                .iter()
                .any(|n| n.name.as_str() == node && n.status.is_alive())
        });
    }

    /// SIGKILLs the agent of `node`.
    pub fn kill_agent(&mut self, node: &str) {
        let slot = self
            .agents
            .iter_mut()
            .find(|(name, _)| name == node)
            .expect("agent started");
        drop(slot.1.take());
    }

    pub fn restart_agent(&mut self, node: &str) {
        let agent = self.spawn_agent(node);
        let slot = self
            .agents
            .iter_mut()
            .find(|(name, _)| name == node)
            .expect("agent started");
        slot.1 = Some(agent);
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        std::process::Command::new(BIN)
            .args(args)
            .env("SINGULARITY_ENDPOINTS", &self.endpoints)
            .output()
            .expect("run the CLI")
    }

    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "singularity {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn nodes(&self) -> Vec<Node> {
        let out = self.cli(&["node", "list", "--output", "json"]);
        if !out.status.success() {
            return Vec::new();
        }
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    pub fn submit(&self, name: &str, tier: &str, world_size: u32, script: &str) -> u64 {
        self.submit_with(&[
            "--name",
            name,
            "--tier",
            tier,
            "--world-size",
            &world_size.to_string(),
            "--",
            "sh",
            "-c",
            script,
        ])
    }

    /// `job submit --output json ARGS...`; returns the new job's id.
    pub fn submit_with(&self, args: &[&str]) -> u64 {
        let mut all = vec!["job", "submit", "--output", "json"];
        all.extend_from_slice(args);
        let out = self.cli_ok(&all);
        let value: serde_json::Value = serde_json::from_str(&out).expect("submit JSON");
        value["outcome"]["Accepted"]["JobSubmitted"]["job"]
            .as_u64()
            .unwrap_or_else(|| panic!("unexpected submit reply {out}"))
    }

    pub fn job(&self, id: u64) -> Job {
        let out = self.cli_ok(&["job", "status", &id.to_string(), "--output", "json"]);
        serde_json::from_str(&out).expect("job JSON")
    }

    pub fn wait_phase(&self, id: u64, phase: JobPhase) -> Job {
        let mut last = None;
        let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
        while Instant::now() < deadline {
            let job = self.job(id);
            if job.phase == phase {
                return job;
            }
            last = Some(job);
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "job {id} did not reach {phase:?}; last seen {last:?}\n{}",
            self.agent_logs()
        );
    }

    /// The name of the node that holds the first device of a running job.
    pub fn node_of(&self, job: &Job) -> String {
        let id = job.assignment.first().expect("the job holds devices").node;
        self.nodes()
            .into_iter()
            .find(|n| n.id == id)
            .expect("node listed")
            .name
            .to_string()
    }

    pub fn agent_logs(&self) -> String {
        let mut text = String::new();
        for (node, _) in &self.agents {
            let path = self.dir.path().join(format!("agent-{node}.log"));
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            text.push_str(&format!("--- {node} ---\n"));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

/// Processes whose environment names `work_dir` as their agent's work directory: its ranks
/// (and, for worker jobs, its device proxies).
pub fn ranks_of(work_dir: &Path) -> Vec<u32> {
    processes_with(work_dir, &[])
}

/// Processes of the agent of `work_dir` whose environment also holds every `NAME=VALUE` of
/// `vars`. Zombies are skipped.
pub fn processes_with(work_dir: &Path, vars: &[&str]) -> Vec<u32> {
    let work_dir = std::fs::canonicalize(work_dir).unwrap_or_else(|_| work_dir.to_path_buf());
    singularity_node::agent::processes_with(&work_dir, vars)
}
