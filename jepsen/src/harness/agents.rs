//! Real node agents for the scheduler workload: one `singularity agent` process per node, each
//! in its own network namespace (`sjep-a<i>`, see `net`), started as
//! `singularity agent --servers <replicas> --node sim-<i> --domain domain-<i/2>
//! --devices sim:<count>:<memory bytes>:sim --work-dir <results>/a<i>/work`. It is the `NodeFleet` that replaces `fleet::PlayedNodes` once
//! the agent exists (`--agent-bin`). Dropping it kills every process it started.
//!
//! It must not talk to the replicas' APIs: the agents do.

use crate::error::{Error, Result};
use crate::harness::fleet::{
    node_domain, node_name, FleetOptions, NodeFleet, SIM_DEVICE_KIND, SIM_DEVICE_MEMORY_BYTES,
};
use crate::harness::net::{agent_namespace, sh};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Time an agent has to come up before an early exit counts as a failure to start.
const AGENT_START_GRACE_MS: u64 = 1_000;
/// Time an agent has to stop after SIGTERM before it is killed.
const AGENT_STOP_MS: u64 = 3_000;
/// Pause between two looks at a stopping agent.
const AGENT_POLL_MS: u64 = 50;
/// Bytes of an agent's log quoted in an error.
const LOG_TAIL_BYTES: usize = 2_000;

/// The `singularity agent` arguments of node `i`.
pub fn agent_args(servers: &[String], i: usize, devices: u16, work_dir: &Path) -> Vec<String> {
    vec![
        "agent".into(),
        "--servers".into(),
        servers.join(","),
        "--node".into(),
        node_name(i),
        "--domain".into(),
        node_domain(i),
        "--devices".into(),
        // `sim:COUNT:MEMORY:KIND`: the workload's jobs ask for kind `sim`.
        format!("sim:{devices}:{SIM_DEVICE_MEMORY_BYTES}:{SIM_DEVICE_KIND}"),
        "--work-dir".into(),
        work_dir.display().to_string(),
    ]
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(LOG_TAIL_BYTES);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].trim().to_string()
}

/// `singularity agent` processes, one per node, each in its own namespace.
pub struct AgentProcesses {
    agent_bin: PathBuf,
    servers: Vec<String>,
    options: FleetOptions,
    dir: PathBuf,
    children: Vec<Child>,
    exited_early: Vec<String>,
}

impl AgentProcesses {
    /// Agents for `options.nodes` nodes of the replicas at `servers`; logs and work dirs go to
    /// `<dir>/a<i>`. The namespaces must exist (`Network::create_with_agents`).
    pub fn new(
        agent_bin: &Path,
        servers: Vec<String>,
        options: FleetOptions,
        dir: &Path,
    ) -> Result<AgentProcesses> {
        if !agent_bin.is_file() {
            return Err(Error::harness(
                "agent binary",
                format!(
                    "{} does not exist; give the `singularity` binary that has the `agent` subcommand with --agent-bin",
                    agent_bin.display()
                ),
            ));
        }
        Ok(AgentProcesses {
            agent_bin: agent_bin.to_path_buf(),
            servers,
            options,
            dir: dir.to_path_buf(),
            children: Vec::new(),
            exited_early: Vec::new(),
        })
    }

    fn work_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("a{}", i + 1))
    }
}

impl NodeFleet for AgentProcesses {
    fn start(&mut self) -> Result<()> {
        for i in 0..self.options.nodes {
            let work_dir = self.work_dir(i);
            std::fs::create_dir_all(&work_dir).map_err(|error| Error::Io {
                path: work_dir.clone(),
                error,
            })?;
            let log_path = work_dir.join("agent.log");
            let open = |path: &Path| {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|error| Error::Io {
                        path: path.to_path_buf(),
                        error,
                    })
            };
            let (log, log_err) = (open(&log_path)?, open(&log_path)?);
            let child = Command::new("ip")
                .args(["netns", "exec", &agent_namespace(i)])
                .arg(&self.agent_bin)
                .args(agent_args(
                    &self.servers,
                    i,
                    self.options.devices_per_node,
                    &work_dir.join("work"),
                ))
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .map_err(|e| Error::harness(format!("starting agent {}", i + 1), e.to_string()))?;
            self.children.push(child);
        }
        std::thread::sleep(Duration::from_millis(AGENT_START_GRACE_MS));
        for (i, child) in self.children.iter_mut().enumerate() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::harness(
                    format!("agent {}", i + 1),
                    format!(
                        "exited at start ({status}); its log ends with: {}",
                        log_tail(&self.dir.join(format!("a{}", i + 1)).join("agent.log"))
                    ),
                ));
            }
        }
        Ok(())
    }

    fn stop(&mut self) {
        for (i, child) in self.children.iter_mut().enumerate() {
            if let Ok(Some(status)) = child.try_wait() {
                self.exited_early
                    .push(format!("agent {} exited during the run ({status})", i + 1));
                continue;
            }
            let _ = sh("kill", &["-TERM", &child.id().to_string()]);
        }
        let deadline = Instant::now() + Duration::from_millis(AGENT_STOP_MS);
        for child in &mut self.children {
            // Bounded by the deadline; then kill -9.
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(AGENT_POLL_MS));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }

    fn describe(&self) -> String {
        format!(
            "{} `{} agent` processes of {} simulated devices, in namespaces sjep-a1..",
            self.options.nodes,
            self.agent_bin.display(),
            self.options.devices_per_node
        )
    }

    fn stats(&self) -> serde_json::Value {
        serde_json::json!({
            "agent_logs": (0..self.options.nodes)
                .map(|i| self.work_dir(i).join("agent.log").display().to_string())
                .collect::<Vec<_>>(),
            "exited_early": self.exited_early,
        })
    }
}

impl Drop for AgentProcesses {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_arguments_name_servers_node_devices_and_work_dir() {
        let servers = vec!["10.77.0.11:7070".to_string(), "10.77.0.12:7070".to_string()];
        let args = agent_args(&servers, 1, 4, Path::new("/r/a2/work"));
        assert_eq!(
            args,
            vec![
                "agent",
                "--servers",
                "10.77.0.11:7070,10.77.0.12:7070",
                "--node",
                "sim-2",
                "--domain",
                "domain-0",
                "--devices",
                "sim:4:17179869184:sim",
                "--work-dir",
                "/r/a2/work"
            ]
        );
    }

    #[test]
    fn a_missing_agent_binary_is_a_clear_error() {
        let result = AgentProcesses::new(
            Path::new("/nonexistent/singularity"),
            Vec::new(),
            FleetOptions {
                nodes: 1,
                devices_per_node: 1,
            },
            Path::new("/tmp"),
        );
        let message = result.err().expect("refused").to_string();
        assert!(message.contains("--agent-bin"), "{message}");
    }
}
