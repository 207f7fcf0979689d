//! The replicas as real `singularity server` processes, one per network namespace: start,
//! kill -9, restart, pause and resume. Dropping the cluster kills every process it started.
//!
//! It must not talk to the replicas' APIs; `client` does.

use crate::error::{Error, Result};
use crate::harness::net::{namespace, replica_ip};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The gRPC port every replica listens on, inside its own namespace.
pub const REPLICA_PORT: u16 = 7070;

/// One replica process.
struct Replica {
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// The replica processes of one run.
pub struct Cluster {
    server_bin: PathBuf,
    initial_cluster: String,
    replicas: Vec<Replica>,
}

/// The `host:port` of replica `i` (0-based).
pub fn replica_endpoint(i: usize) -> String {
    format!("{}:{REPLICA_PORT}", replica_ip(i))
}

impl Cluster {
    /// Prepares `n` replicas with data dirs and logs under `results_dir`; starts none.
    pub fn new(server_bin: &Path, n: usize, results_dir: &Path) -> Result<Cluster> {
        if !server_bin.is_file() {
            return Err(Error::harness(
                "server binary",
                format!(
                    "{} does not exist; build it with `cargo build --release --bin singularity` or give --server-bin",
                    server_bin.display()
                ),
            ));
        }
        let initial_cluster = (0..n)
            .map(|i| format!("{}={}", i + 1, replica_endpoint(i)))
            .collect::<Vec<_>>()
            .join(",");
        let mut replicas = Vec::with_capacity(n);
        for i in 0..n {
            let dir = results_dir.join(format!("n{}", i + 1));
            std::fs::create_dir_all(&dir).map_err(|error| Error::Io {
                path: dir.clone(),
                error,
            })?;
            replicas.push(Replica {
                data_dir: dir.join("data"),
                log_path: dir.join("server.log"),
                child: None,
                paused: false,
            });
        }
        Ok(Cluster {
            server_bin: server_bin.to_path_buf(),
            initial_cluster,
            replicas,
        })
    }

    /// Number of replicas.
    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    /// True when there is no replica.
    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    /// Starts replica `i` if it is not running.
    pub fn start(&mut self, i: usize) -> Result<()> {
        let server_bin = self.server_bin.clone();
        let initial_cluster = self.initial_cluster.clone();
        let replica = &mut self.replicas[i];
        if replica.child.is_some() {
            return Ok(());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&replica.log_path)
            .map_err(|error| Error::Io {
                path: replica.log_path.clone(),
                error,
            })?;
        let log_err = log.try_clone().map_err(|error| Error::Io {
            path: replica.log_path.clone(),
            error,
        })?;
        let node_id = (i + 1).to_string();
        let listen = replica_endpoint(i);
        // `ip netns exec` enters the namespace and execs the server, so the child's pid is
        // the server's own.
        let child = Command::new("ip")
            .args(["netns", "exec", &namespace(i)])
            .arg(&server_bin)
            .args(["server", "--node-id", &node_id, "--listen", &listen])
            .arg("--data-dir")
            .arg(&replica.data_dir)
            .args(["--initial-cluster", &initial_cluster])
            .args(["--node-heartbeat-timeout-ms", "0"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| Error::harness(format!("starting replica {}", i + 1), e.to_string()))?;
        replica.child = Some(child);
        replica.paused = false;
        Ok(())
    }

    /// Starts every replica.
    pub fn start_all(&mut self) -> Result<()> {
        for i in 0..self.replicas.len() {
            self.start(i)?;
        }
        Ok(())
    }

    fn signal(&self, i: usize, signal: &str) -> Result<()> {
        if let Some(child) = &self.replicas[i].child {
            let pid = child.id().to_string();
            crate::harness::net::sh("kill", &[signal, &pid])?;
        }
        Ok(())
    }

    /// kill -9 of replica `i` (a no-op when it is not running).
    pub fn kill(&mut self, i: usize) -> Result<()> {
        let replica = &mut self.replicas[i];
        if let Some(mut child) = replica.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        replica.paused = false;
        Ok(())
    }

    /// SIGSTOP of replica `i`.
    pub fn pause(&mut self, i: usize) -> Result<()> {
        self.signal(i, "-STOP")?;
        self.replicas[i].paused = self.replicas[i].child.is_some();
        Ok(())
    }

    /// SIGCONT of replica `i`.
    pub fn resume(&mut self, i: usize) -> Result<()> {
        self.signal(i, "-CONT")?;
        self.replicas[i].paused = false;
        Ok(())
    }

    /// Resumes paused replicas and restarts killed or exited ones.
    pub fn heal(&mut self) -> Result<()> {
        for i in 0..self.replicas.len() {
            if self.replicas[i].paused {
                self.resume(i)?;
            }
            let exited = match self.replicas[i].child.as_mut() {
                Some(child) => matches!(child.try_wait(), Ok(Some(_))),
                None => true,
            };
            if exited {
                self.replicas[i].child = None;
                self.start(i)?;
            }
        }
        Ok(())
    }

    /// Kills every replica.
    pub fn stop_all(&mut self) {
        for i in 0..self.replicas.len() {
            let _ = self.resume(i);
            let _ = self.kill(i);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}
