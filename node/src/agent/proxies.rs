//! `ProxySet`: the device proxies of this node, one `device-proxy` process per device, started
//! the first time a worker rank needs that device and kept for the agent's life (a proxy owns
//! its device's state and outlives the workers; a node that never runs a worker job runs no
//! proxy). Each proxy is a child in its own process group, forked from the agent's launcher
//! thread with a parent-death signal, and carries the agent's work-directory variable, so it
//! dies with the agent and a restarted agent's `kill_leftovers` finds it after a `kill -9`.
//! A proxy that died is started again on its next use. Sockets and proxy logs live in
//! `WORK_DIR/proxies/`.
//!
//! It must not decide which ranks run where (the supervisor follows the view) and must not talk
//! to workers: it only starts, finds and stops proxy processes.

use super::job_run::{open_log, supervise, Launcher};
use super::rank_env::WORK_DIR_VAR;
use crate::error::{NodeError, Result};
use crate::launcher::PROXY_START_TIMEOUT_MS;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Poll interval while a proxy starts or is reaped.
const PROXY_POLL_MS: u64 = 5;
/// Longest wait for a killed proxy to be reaped.
const PROXY_REAP_TIMEOUT_MS: u64 = 5_000;
/// A Unix socket path must fit `sockaddr_un.sun_path` (108 bytes with its terminating NUL).
pub const MAX_SOCKET_PATH_BYTES: usize = 107;
/// Bytes of a proxy's log quoted in the error when it exits at start.
const LOG_TAIL_BYTES: usize = 2_000;

/// One running proxy.
struct Running {
    child: Child,
    socket: PathBuf,
}

/// The proxies of this node's devices.
pub struct ProxySet {
    /// The proxy program and its leading arguments (`[singularity, device-proxy]`); `None`:
    /// this agent runs no worker job.
    command: Option<Vec<String>>,
    /// `WORK_DIR/proxies`.
    dir: PathBuf,
    work_dir: PathBuf,
    /// Memory of each device, by index, from the inventory.
    memory_bytes: BTreeMap<u16, u64>,
    launcher: Launcher,
    running: Mutex<BTreeMap<u16, Running>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(LOG_TAIL_BYTES);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].trim().to_string()
}

impl ProxySet {
    pub fn new(
        command: Option<Vec<String>>,
        work_dir: &Path,
        memory_bytes: BTreeMap<u16, u64>,
        launcher: Launcher,
    ) -> ProxySet {
        ProxySet {
            command: command.filter(|c| !c.is_empty()),
            dir: work_dir.join("proxies"),
            work_dir: work_dir.to_path_buf(),
            memory_bytes,
            launcher,
            running: Mutex::default(),
        }
    }

    /// Where the proxy of device `index` listens (whether or not it runs).
    pub fn socket_path(&self, index: u16) -> PathBuf {
        self.dir.join(format!("device-{index}.sock"))
    }

    fn log_path(&self, index: u16) -> PathBuf {
        self.dir.join(format!("device-{index}.log"))
    }

    /// The socket of device `index`'s proxy, starting the proxy (again, if it died) first.
    pub fn ensure(&self, index: u16) -> Result<PathBuf> {
        let mut running = lock(&self.running);
        if let Some(proxy) = running.get_mut(&index) {
            match proxy.child.try_wait() {
                Ok(None) => return Ok(proxy.socket.clone()),
                status => {
                    tracing::warn!(
                        device = index,
                        ?status,
                        "the device proxy died; starting it again"
                    );
                    let dead = running.remove(&index).expect("found above");
                    crate::proxy::cleanup_after(dead.child.id());
                }
            }
        }
        let proxy = self.spawn(index)?;
        let socket = proxy.socket.clone();
        running.insert(index, proxy);
        Ok(socket)
    }

    fn spawn(&self, index: u16) -> Result<Running> {
        let Some(command) = &self.command else {
            return Err(NodeError::Config(
                "this agent was started without a device-proxy command, so it cannot run \
                 proxied worker jobs; start it with `singularity agent` (which runs \
                 `singularity device-proxy`) or submit a command job"
                    .into(),
            ));
        };
        let Some(&memory_bytes) = self.memory_bytes.get(&index) else {
            return Err(NodeError::Config(format!(
                "device {index} is not in this node's inventory ({} devices)",
                self.memory_bytes.len()
            )));
        };
        let socket = self.socket_path(index);
        if socket.as_os_str().len() > MAX_SOCKET_PATH_BYTES {
            return Err(NodeError::Config(format!(
                "the device proxy socket {} is longer than {MAX_SOCKET_PATH_BYTES} bytes; use a \
                 shorter --work-dir",
                socket.display()
            )));
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| NodeError::io(format!("creating {}", self.dir.display()), e))?;
        let log_path = self.log_path(index);
        let log = open_log(&log_path)
            .map_err(|e| NodeError::io(format!("opening {}", log_path.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| NodeError::io(format!("opening {}", log_path.display()), e))?;
        let mut cmd = Command::new(&command[0]);
        cmd.args(&command[1..])
            .arg("--socket")
            .arg(&socket)
            .args([
                "--device-index",
                &index.to_string(),
                "--memory-bytes",
                &memory_bytes.to_string(),
            ])
            .env(WORK_DIR_VAR, &self.work_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        supervise(&mut cmd);
        let child = self
            .launcher
            .spawn(cmd)
            .map_err(|e| NodeError::io(format!("starting the device proxy {:?}", command[0]), e))?;
        let mut proxy = Running { child, socket };
        let deadline = Instant::now() + Duration::from_millis(PROXY_START_TIMEOUT_MS);
        while !crate::proxy::is_listening(&proxy.socket) {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                return Err(NodeError::Proxy(format!(
                    "the proxy of device {index} exited at start ({status}): {}",
                    log_tail(&log_path)
                )));
            }
            if Instant::now() >= deadline {
                stop(&mut proxy);
                return Err(NodeError::Timeout {
                    what: format!("the proxy of device {index} to listen on its socket"),
                    timeout_ms: PROXY_START_TIMEOUT_MS,
                });
            }
            std::thread::sleep(Duration::from_millis(PROXY_POLL_MS));
        }
        tracing::info!(
            device = index,
            pid = proxy.child.id(),
            memory_bytes,
            socket = %proxy.socket.display(),
            "device proxy started"
        );
        Ok(proxy)
    }

    /// Process ids of the running proxies, by device.
    pub fn pids(&self) -> BTreeMap<u16, u32> {
        lock(&self.running)
            .iter()
            .map(|(index, p)| (*index, p.child.id()))
            .collect()
    }

    /// The socket of device `index`'s proxy if one runs now; `None` when none does (a proxy
    /// that never started or died holds no rank and no device memory).
    pub fn live_socket(&self, index: u16) -> Option<PathBuf> {
        let mut running = lock(&self.running);
        let proxy = running.get_mut(&index)?;
        matches!(proxy.child.try_wait(), Ok(None)).then(|| proxy.socket.clone())
    }

    /// Kills every proxy (the agent is stopping).
    pub fn stop_all(&self) {
        let running = std::mem::take(&mut *lock(&self.running));
        for (_, mut proxy) in running {
            stop(&mut proxy);
        }
    }
}

/// SIGKILL to the proxy's process group, reap it (bounded), remove its files.
fn stop(proxy: &mut Running) {
    let pid = proxy.child.id();
    // SAFETY: signals the proxy's own process group (its pid, set by setpgid).
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_millis(PROXY_REAP_TIMEOUT_MS);
    while !matches!(proxy.child.try_wait(), Ok(Some(_)) | Err(_)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(PROXY_POLL_MS));
    }
    crate::proxy::cleanup_after(pid);
    let _ = std::fs::remove_file(&proxy.socket);
}

impl Drop for ProxySet {
    fn drop(&mut self) {
        self.stop_all();
    }
}
