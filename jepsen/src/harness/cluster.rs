//! The replicas as real `singularity server` processes, one per network namespace: start,
//! kill -9, restart, pause and resume, and (with libfaketime preloaded) skew each one's wall
//! clock through its own control file. Dropping the cluster kills every process it started.
//!
//! Clock skew fakes only the wall clock (`CLOCK_REALTIME`): `FAKETIME_DONT_FAKE_MONOTONIC=1`
//! leaves the monotonic clocks that tokio's timers, openraft's election timeouts and leases
//! use alone, as a skewed NTP clock would. `FAKETIME_NO_CACHE=1` makes a change of the control
//! file take effect on the next clock read.
//!
//! It must not talk to the replicas' APIs; `client` does.

use crate::error::{Error, Result};
use crate::harness::net::{namespace, replica_ip};
use crate::harness::schedule::FAKETIME_REAL;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The gRPC port every replica listens on, inside its own namespace.
pub const REPLICA_PORT: u16 = 7070;

/// Where Debian's `libfaketime` package puts the multi-threaded library, by architecture.
pub const LIBFAKETIME_CANDIDATES: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
];

/// The installed libfaketime, or an error saying how to install it.
pub fn find_libfaketime() -> Result<PathBuf> {
    LIBFAKETIME_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::harness(
                "clock nemesis",
                format!(
                    "libfaketime not found (looked at {}); install it with `apt-get install faketime` or leave out --nemesis clock",
                    LIBFAKETIME_CANDIDATES.join(", ")
                ),
            )
        })
}

/// How the replicas are started.
#[derive(Debug, Clone, Default)]
pub struct ReplicaOptions {
    /// Extra `singularity server` flags (timeouts, snapshot policy).
    pub extra_args: Vec<String>,
    /// Preload this libfaketime so the clock nemesis can skew wall clocks.
    pub libfaketime: Option<PathBuf>,
}

/// One replica process.
struct Replica {
    data_dir: PathBuf,
    log_path: PathBuf,
    /// The libfaketime control file (`FAKETIME_TIMESTAMP_FILE`).
    clock_path: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// The replica processes of one run.
pub struct Cluster {
    server_bin: PathBuf,
    initial_cluster: String,
    options: ReplicaOptions,
    replicas: Vec<Replica>,
}

/// Removes the shared-memory files libfaketime leaves behind for a process that was killed.
fn remove_faketime_leftovers(pid: u32) {
    for name in [
        format!("/dev/shm/faketime_shm_{pid}"),
        format!("/dev/shm/sem.faketime_sem_{pid}"),
    ] {
        let _ = std::fs::remove_file(name);
    }
}

/// The `host:port` of replica `i` (0-based).
pub fn replica_endpoint(i: usize) -> String {
    format!("{}:{REPLICA_PORT}", replica_ip(i))
}

impl Cluster {
    /// Prepares `n` replicas with data dirs and logs under `results_dir`; starts none.
    pub fn new(
        server_bin: &Path,
        n: usize,
        results_dir: &Path,
        options: ReplicaOptions,
    ) -> Result<Cluster> {
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
            let replica = Replica {
                data_dir: dir.join("data"),
                log_path: dir.join("server.log"),
                clock_path: dir.join("faketime.rc"),
                child: None,
                paused: false,
            };
            if options.libfaketime.is_some() {
                write_clock_file(&replica.clock_path, FAKETIME_REAL)?;
            }
            replicas.push(replica);
        }
        Ok(Cluster {
            server_bin: server_bin.to_path_buf(),
            initial_cluster,
            options,
            replicas,
        })
    }

    /// True when the replicas run with libfaketime, so clocks can be skewed.
    pub fn clocks_controllable(&self) -> bool {
        self.options.libfaketime.is_some()
    }

    /// Sets replica `i`'s wall clock to the libfaketime `spec` (`+5`, `-3`, `+0 x2.00`).
    pub fn set_clock(&self, i: usize, spec: &str) -> Result<()> {
        if !self.clocks_controllable() {
            return Err(Error::harness(
                "clock nemesis",
                "the replicas were started without libfaketime",
            ));
        }
        write_clock_file(&self.replicas[i].clock_path, spec)
    }

    /// Puts every replica's wall clock back to real time.
    pub fn reset_clocks(&self) -> Result<()> {
        if !self.clocks_controllable() {
            return Ok(());
        }
        for i in 0..self.replicas.len() {
            self.set_clock(i, FAKETIME_REAL)?;
        }
        Ok(())
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
        let replica = &self.replicas[i];
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
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &namespace(i)]);
        if let Some(lib) = &self.options.libfaketime {
            // `env` execs the server, so the pid stays the server's; only the server (not
            // `ip`) has libfaketime preloaded.
            command
                .arg("env")
                .arg(format!("LD_PRELOAD={}", lib.display()))
                .arg(format!(
                    "FAKETIME_TIMESTAMP_FILE={}",
                    replica.clock_path.display()
                ))
                .args(["FAKETIME_NO_CACHE=1", "FAKETIME_DONT_FAKE_MONOTONIC=1"]);
        }
        let child = command
            .arg(&server_bin)
            .args(["server", "--node-id", &node_id, "--listen", &listen])
            .arg("--data-dir")
            .arg(&replica.data_dir)
            .args(["--initial-cluster", &initial_cluster])
            .args(&self.options.extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| Error::harness(format!("starting replica {}", i + 1), e.to_string()))?;
        let replica = &mut self.replicas[i];
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
            remove_faketime_leftovers(child.id());
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
                if let Some(child) = self.replicas[i].child.take() {
                    remove_faketime_leftovers(child.id());
                }
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

/// Replaces a clock control file in one rename, so libfaketime never reads half a line.
fn write_clock_file(path: &Path, spec: &str) -> Result<()> {
    let tmp = path.with_extension("rc.tmp");
    std::fs::write(&tmp, format!("{spec}\n")).map_err(|error| Error::Io {
        path: tmp.clone(),
        error,
    })?;
    std::fs::rename(&tmp, path).map_err(|error| Error::Io {
        path: path.to_path_buf(),
        error,
    })
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}
