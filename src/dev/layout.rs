//! Where a `singularity dev` cluster keeps its files, and which ports it uses.
//!
//! A data dir holds `dev.json` (the ports and device count it was created with, so a restart on
//! the same dir finds the replicas at the addresses their Raft membership records), one RocksDB
//! dir per replica, one work dir per agent, the shared checkpoint dir, and one log file per
//! child. This module only computes paths and picks ports; it must not start processes.

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

/// Replicas of a dev cluster (Raft needs 3 to survive the loss of one).
pub const REPLICAS: usize = 3;
/// The nodes a dev cluster runs, one agent each.
pub const NODES: [&str; 2] = ["node-a", "node-b"];
/// The file that records how a data dir was created.
const STATE_FILE: &str = "dev.json";
/// Simulated devices a node may have (the agent's own limit for `sim:COUNT`).
pub const MAX_DEVICES_PER_NODE: u32 = 64;
/// Highest `--base-port`: it needs `REPLICAS + NODES.len()` consecutive ports.
pub const MAX_BASE_PORT: u16 = u16::MAX - (REPLICAS + NODES.len()) as u16;

/// What `dev.json` records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevState {
    /// The gRPC port of replica `i + 1`.
    pub replica_ports: Vec<u16>,
    /// The log-service port of each agent (0: a free one at each start).
    pub agent_ports: Vec<u16>,
    pub devices_per_node: u32,
}

/// The files and addresses of one dev cluster.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
    pub state: DevState,
    /// Whether `root` already held a cluster (a restart).
    pub reused: bool,
}

impl Layout {
    /// Opens `root`: reuses the cluster recorded there, or records a new one. `base_port` and
    /// `devices_per_node` must agree with a recorded cluster when given.
    pub fn open(
        root: &Path,
        base_port: Option<u16>,
        devices_per_node: Option<u32>,
    ) -> anyhow::Result<Layout> {
        let state_path = root.join(STATE_FILE);
        if state_path.exists() {
            let text = std::fs::read_to_string(&state_path)
                .with_context(|| format!("reading {}", state_path.display()))?;
            let state: DevState = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not a dev cluster's record; use another --data-dir",
                    state_path.display()
                )
            })?;
            if state.replica_ports.len() != REPLICAS || state.agent_ports.len() != NODES.len() {
                bail!(
                    "{} records {} replica and {} agent ports, expected {REPLICAS} and {}; \
                     use another --data-dir",
                    state_path.display(),
                    state.replica_ports.len(),
                    state.agent_ports.len(),
                    NODES.len()
                );
            }
            if let Some(base) = base_port {
                if state.replica_ports[0] != base {
                    bail!(
                        "{} holds a cluster created on port {}; drop --base-port (or give \
                         --base-port {}) to restart it, or use another --data-dir",
                        root.display(),
                        state.replica_ports[0],
                        state.replica_ports[0]
                    );
                }
            }
            if let Some(count) = devices_per_node {
                if count != state.devices_per_node {
                    bail!(
                        "{} holds a cluster with {} devices per node; drop \
                         --devices-per-node to restart it, or use another --data-dir",
                        root.display(),
                        state.devices_per_node
                    );
                }
            }
            return Ok(Layout {
                root: root.to_path_buf(),
                state,
                reused: true,
            });
        }
        if root.exists() {
            let mut entries =
                std::fs::read_dir(root).with_context(|| format!("reading {}", root.display()))?;
            if entries.next().is_some() {
                bail!(
                    "{} is not empty and holds no dev cluster ({STATE_FILE} is missing); give a \
                     new or empty directory",
                    root.display()
                );
            }
        }
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        let state = DevState {
            replica_ports: match base_port {
                Some(base) => (0..REPLICAS as u16).map(|i| base + i).collect(),
                None => free_ports(REPLICAS)?,
            },
            agent_ports: match base_port {
                Some(base) => (0..NODES.len() as u16)
                    .map(|i| base + REPLICAS as u16 + i)
                    .collect(),
                None => vec![0; NODES.len()],
            },
            devices_per_node: devices_per_node.unwrap_or(super::DEFAULT_DEVICES_PER_NODE),
        };
        let text = serde_json::to_string_pretty(&state)?;
        std::fs::write(&state_path, text)
            .with_context(|| format!("writing {}", state_path.display()))?;
        Ok(Layout {
            root: root.to_path_buf(),
            state,
            reused: false,
        })
    }

    pub fn replica_addr(&self, index: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.state.replica_ports[index]))
    }

    /// `HOST:PORT` of every replica, in id order.
    pub fn endpoints(&self) -> Vec<String> {
        (0..REPLICAS)
            .map(|i| self.replica_addr(i).to_string())
            .collect()
    }

    /// `1=HOST:PORT,2=...` for `--initial-cluster`.
    pub fn initial_cluster(&self) -> String {
        (0..REPLICAS)
            .map(|i| format!("{}={}", i + 1, self.replica_addr(i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn agent_listen(&self, index: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.state.agent_ports[index]))
    }

    pub fn replica_dir(&self, index: usize) -> PathBuf {
        self.root.join("replicas").join((index + 1).to_string())
    }

    pub fn agent_dir(&self, node: &str) -> PathBuf {
        self.root.join("agents").join(node)
    }

    pub fn checkpoint_dir(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn log_file(&self, child: &str) -> PathBuf {
        self.log_dir().join(format!("{child}.log"))
    }
}

/// `count` distinct free loopback ports (all bound at once, then released).
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").context("finding a free port on 127.0.0.1"))
        .collect::<anyhow::Result<_>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// Fails with a clear message when `addr` cannot be bound (another process holds it).
pub fn check_port_free(addr: SocketAddr, what: &str, hint: &str) -> anyhow::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    TcpListener::bind(addr)
        .map(drop)
        .with_context(|| format!("port {} for {what} is taken; {hint}", addr.port()))
}

/// A fresh directory under the system's temporary dir, for a cluster that is removed at the
/// end.
pub fn fresh_temp_dir() -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "singularity-dev-{}-{nanos:08x}",
        std::process::id()
    ));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "singularity-dev-layout-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_reopened_dir_keeps_its_ports_and_refuses_other_ones() {
        let dir = scratch("reopen");
        let first = Layout::open(&dir, Some(41_000), Some(2)).expect("new");
        assert!(!first.reused);
        assert_eq!(first.state.replica_ports, vec![41_000, 41_001, 41_002]);
        assert_eq!(first.state.agent_ports, vec![41_003, 41_004]);
        assert_eq!(
            first.initial_cluster(),
            "1=127.0.0.1:41000,2=127.0.0.1:41001,3=127.0.0.1:41002"
        );
        let again = Layout::open(&dir, None, None).expect("reopen");
        assert!(again.reused);
        assert_eq!(again.state, first.state);
        let err = Layout::open(&dir, Some(42_000), None).unwrap_err();
        assert!(
            format!("{err:#}").contains("created on port 41000"),
            "{err:#}"
        );
        let err = Layout::open(&dir, None, Some(8)).unwrap_err();
        assert!(format!("{err:#}").contains("2 devices per node"), "{err:#}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_non_empty_foreign_dir_is_refused() {
        let dir = scratch("foreign");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("notes.txt"), "mine").expect("write");
        let err = Layout::open(&dir, None, None).unwrap_err();
        assert!(format!("{err:#}").contains("not empty"), "{err:#}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(REPLICAS).expect("ports");
        let unique: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), REPLICAS);
    }
}
