//! The small API the node agent (issue 5) will drive: start a device proxy process, launch a
//! job's workers on a set of proxies with a splicing factor (optionally restoring from a
//! checkpoint directory), ask the job's proxies for a checkpoint, wait for the workers.
//! "Checkpoint job J to DIR" is `checkpoint_job`; "restore job J from DIR on these devices with
//! this splicing factor" is `launch` with `restore_dir`.
//!
//! It must not decide placement or policy (the scheduler does) and must bound every wait.

use crate::checkpoint;
use crate::control::{self, ControlReply, ControlRequest, ProxyStats};
use crate::error::{NodeError, Result};
use crate::runtime::{env, PREEMPTED_EXIT_CODE};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long control requests to a proxy may take.
pub const CONTROL_TIMEOUT_MS: u64 = 10_000;
/// How long `ProxyProcess::spawn` waits for the socket to accept connections.
pub const PROXY_START_TIMEOUT_MS: u64 = 20_000;
/// Poll interval of bounded waits.
const POLL_MS: u64 = 5;

/// A device proxy child process; killed (and its leftovers removed) on drop.
pub struct ProxyProcess {
    child: Child,
    pub socket: PathBuf,
}

impl ProxyProcess {
    /// Starts `program` (a binary whose arguments are `ProxyArgs`; `prefix_args` come first,
    /// e.g. `device-proxy` for the `singularity` binary) and waits until it listens.
    pub fn spawn(
        program: &Path,
        prefix_args: &[&str],
        socket: &Path,
        device_index: u32,
        memory_bytes: u64,
    ) -> Result<Self> {
        let child = Command::new(program)
            .args(prefix_args)
            .arg("--socket")
            .arg(socket)
            .args([
                "--device-index",
                &device_index.to_string(),
                "--memory-bytes",
                &memory_bytes.to_string(),
            ])
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| NodeError::io(format!("starting proxy {}", program.display()), e))?;
        let mut p = ProxyProcess {
            child,
            socket: socket.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_millis(PROXY_START_TIMEOUT_MS);
        while !crate::proxy::is_listening(socket) {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(NodeError::Proxy(format!("proxy exited at start: {status}")));
            }
            if Instant::now() >= deadline {
                return Err(NodeError::Timeout {
                    what: format!("proxy socket {}", socket.display()),
                    timeout_ms: PROXY_START_TIMEOUT_MS,
                });
            }
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
        Ok(p)
    }

    /// The proxy's counters.
    pub fn stats(&self) -> Result<ProxyStats> {
        stats(&self.socket)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        crate::proxy::cleanup_after(self.child.id());
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// A proxy's counters.
pub fn stats(socket: &Path) -> Result<ProxyStats> {
    match control::request(socket, &ControlRequest::Stats, CONTROL_TIMEOUT_MS)? {
        ControlReply::Stats(s) => Ok(s),
        other => Err(NodeError::Proxy(format!(
            "unexpected stats reply {other:?}"
        ))),
    }
}

/// What to run: a worker program and its arguments, for a job of `world_size` ranks.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub job: String,
    pub world_size: u32,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub collective_bytes: u64,
}

/// How a job's workers ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Completed,
    Preempted,
}

/// A launched job: one worker process per rank.
pub struct RunningJob {
    workers: Vec<Child>,
    pub incarnation: String,
}

/// Launches every rank of `spec`; rank `r` runs on `proxies[r / factor]` where
/// `factor = world_size / proxies.len()` is the splicing factor. With `restore_dir`, every rank
/// continues from that checkpoint, which is verified (every checksum) before any worker starts.
pub fn launch(
    spec: &JobSpec,
    proxies: &[PathBuf],
    incarnation: &str,
    restore_dir: Option<&Path>,
) -> Result<RunningJob> {
    let devices = proxies.len() as u32;
    if devices == 0 || spec.world_size % devices != 0 {
        return Err(NodeError::Config(format!(
            "world size {} is not a multiple of {devices} devices",
            spec.world_size
        )));
    }
    if let Some(dir) = restore_dir {
        let m = checkpoint::verify(dir)?;
        if m.world_size != spec.world_size || m.job != spec.job {
            return Err(NodeError::BadCheckpoint {
                path: dir.to_path_buf(),
                detail: format!("holds job {} world size {}", m.job, m.world_size),
            });
        }
    }
    let factor = spec.world_size / devices;
    let mut job = RunningJob {
        workers: Vec::new(),
        incarnation: incarnation.to_string(),
    };
    for rank in 0..spec.world_size {
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .env(env::JOB, &spec.job)
            .env(env::INCARNATION, incarnation)
            .env(env::RANK, rank.to_string())
            .env(env::WORLD_SIZE, spec.world_size.to_string())
            .env(env::PROXY_SOCKET, &proxies[(rank / factor) as usize])
            .env(env::COLLECTIVE_BYTES, spec.collective_bytes.to_string())
            .env_remove(env::RESTORE_DIR)
            .stdin(Stdio::null());
        if let Some(dir) = restore_dir {
            cmd.env(env::RESTORE_DIR, dir);
        }
        job.workers.push(cmd.spawn().map_err(|e| {
            NodeError::io(format!("starting worker {}", spec.program.display()), e)
        })?);
    }
    Ok(job)
}

impl RunningJob {
    /// Waits for every worker; all must complete, or all must be preempted.
    pub fn wait(&mut self, timeout_ms: u64) -> Result<JobOutcome> {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let mut codes = vec![None; self.workers.len()];
        while codes.iter().any(Option::is_none) {
            for (i, w) in self.workers.iter_mut().enumerate() {
                if codes[i].is_none() {
                    if let Some(status) = w
                        .try_wait()
                        .map_err(|e| NodeError::io("waiting for a worker", e))?
                    {
                        codes[i] = Some(status.code().unwrap_or(-1));
                    }
                }
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(NodeError::Timeout {
                    what: "the job's workers".into(),
                    timeout_ms,
                });
            }
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
        let codes: Vec<i32> = codes.into_iter().flatten().collect();
        if codes.iter().all(|c| *c == 0) {
            Ok(JobOutcome::Completed)
        } else if codes.iter().all(|c| *c == PREEMPTED_EXIT_CODE) {
            Ok(JobOutcome::Preempted)
        } else {
            Err(NodeError::Proxy(format!(
                "workers exited with codes {codes:?}"
            )))
        }
    }

    /// Kills every worker still running.
    pub fn kill(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Asks each of the job's proxies for a checkpoint of `job` into `dir` at the next step
/// boundary all ranks reach (`stop`: then end the workers). Retries while ranks are still
/// attaching, up to `CONTROL_TIMEOUT_MS`.
pub fn checkpoint_job(job: &str, proxies: &[PathBuf], dir: &Path, stop: bool) -> Result<()> {
    let mut unique: Vec<&PathBuf> = proxies.iter().collect();
    unique.sort();
    unique.dedup();
    for socket in unique {
        let req = ControlRequest::Checkpoint {
            job: job.to_string(),
            dir: dir.to_path_buf(),
            stop,
        };
        let deadline = Instant::now() + Duration::from_millis(CONTROL_TIMEOUT_MS);
        loop {
            match control::request(socket, &req, CONTROL_TIMEOUT_MS) {
                Ok(_) => break,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(POLL_MS)),
            }
        }
    }
    Ok(())
}
