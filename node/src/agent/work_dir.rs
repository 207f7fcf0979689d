//! `WorkDir`: the agent's durable memory on its machine. It holds the agent's identity (which
//! node this directory belongs to), an exclusive lock (one agent per directory), one record per
//! action it has worked on (what it already did, so an action seen twice runs once), one record
//! per job run it started (so a restarted agent knows what should be running), and the ranks'
//! log files.
//!
//! Records are small JSON files replaced atomically (write to a temporary file, fsync, rename,
//! fsync the directory). It must not decide anything: the supervisor and executors do.

use crate::error::{NodeError, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use singularity_scheduler::{ActionId, CheckpointRef, JobId};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// What this agent has done for one action, so it is done once (DESIGN.md rule 7).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub action: u64,
    pub job: u64,
    /// The job's ranks on this node were stopped for this action.
    pub stopped: bool,
    /// The checkpoint this node reported, once it did.
    pub checkpoint_reported: Option<CheckpointRef>,
    /// The ranks this action starts here were started.
    pub started: bool,
    /// This node reported the action completed (or failed): nothing is left to do.
    pub finished: bool,
}

/// How a run of a job on this node ended, as far as this agent knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunState {
    Running,
    /// Stopped by an action (preempt, migrate, resize, stop) or because the log no longer
    /// has the job here.
    Stopped {
        why: String,
    },
    Succeeded,
    Failed {
        reason: String,
    },
}

/// One run of a job's ranks on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub job: u64,
    /// The action that started this run (none when reconcile started it).
    pub started_by: Option<u64>,
    pub ranks: Vec<u32>,
    pub state: RunState,
    /// The exit was committed to the log (success or failure of the ranks).
    pub exit_reported: bool,
}

/// The directory; holds its lock for as long as it lives.
pub struct WorkDir {
    root: PathBuf,
    _lock: File,
}

#[derive(Serialize, Deserialize)]
struct Identity {
    node: String,
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| NodeError::io(format!("syncing directory {}", dir.display()), e))
}

/// Writes `value` as JSON to `path` atomically and durably.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| NodeError::json(path.display().to_string(), e))?;
    let tmp = path.with_extension("tmp");
    let mut file =
        File::create(&tmp).map_err(|e| NodeError::io(format!("creating {}", tmp.display()), e))?;
    file.write_all(&bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| NodeError::io(format!("writing {}", tmp.display()), e))?;
    fs::rename(&tmp, path).map_err(|e| NodeError::io(format!("renaming {}", tmp.display()), e))?;
    fsync_dir(path.parent().expect("records live in a directory"))
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| NodeError::json(format!("record {}", path.display()), e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NodeError::io(format!("reading {}", path.display()), e)),
    }
}

impl WorkDir {
    /// Opens (creating) `root` for node `node`: refuses a directory another agent holds or
    /// one that belongs to a different node.
    pub fn open(root: &Path, node: &str) -> Result<WorkDir> {
        for sub in ["actions", "runs", "logs", "jobs"] {
            fs::create_dir_all(root.join(sub))
                .map_err(|e| NodeError::io(format!("creating {}", root.join(sub).display()), e))?;
        }
        let lock_path = root.join("agent.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| NodeError::io(format!("opening {}", lock_path.display()), e))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            return Err(NodeError::Config(format!(
                "another agent is running with --work-dir {}; stop it or use another directory",
                root.display()
            )));
        }
        let identity_path = root.join("agent.json");
        match read_json::<Identity>(&identity_path)? {
            Some(identity) if identity.node != node => {
                return Err(NodeError::Config(format!(
                    "--work-dir {} belongs to node {:?}, not {node:?}; use that node name or another directory",
                    root.display(),
                    identity.node
                )))
            }
            Some(_) => {}
            None => write_json(
                &identity_path,
                &Identity {
                    node: node.to_string(),
                },
            )?,
        }
        Ok(WorkDir {
            root: root.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn action_path(&self, action: ActionId) -> PathBuf {
        self.root
            .join("actions")
            .join(format!("action-{}.json", action.0))
    }

    fn run_path(&self, job: JobId) -> PathBuf {
        self.root.join("runs").join(format!("job-{}.json", job.0))
    }

    /// The record of `action`, or a fresh one.
    pub fn action(&self, action: ActionId, job: JobId) -> Result<ActionRecord> {
        Ok(
            read_json(&self.action_path(action))?.unwrap_or(ActionRecord {
                action: action.0,
                job: job.0,
                ..ActionRecord::default()
            }),
        )
    }

    pub fn save_action(&self, record: &ActionRecord) -> Result<()> {
        write_json(&self.action_path(ActionId(record.action)), record)
    }

    /// The latest run of `job` on this node, if this agent ever started one.
    pub fn run(&self, job: JobId) -> Result<Option<RunRecord>> {
        read_json(&self.run_path(job))
    }

    pub fn save_run(&self, record: &RunRecord) -> Result<()> {
        write_json(&self.run_path(JobId(record.job)), record)
    }

    /// Every run record in the directory, in job order.
    pub fn runs(&self) -> Result<Vec<RunRecord>> {
        let dir = self.root.join("runs");
        let mut records = Vec::new();
        let entries = fs::read_dir(&dir)
            .map_err(|e| NodeError::io(format!("listing {}", dir.display()), e))?;
        for entry in entries {
            let path = entry
                .map_err(|e| NodeError::io(format!("listing {}", dir.display()), e))?
                .path();
            if path.extension().is_some_and(|e| e == "json") {
                if let Some(record) = read_json::<RunRecord>(&path)? {
                    records.push(record);
                }
            }
        }
        records.sort_by_key(|r| r.job);
        Ok(records)
    }

    /// The stdout or stderr file of one rank of a job.
    pub fn log_path(&self, job: JobId, rank: u32, stderr: bool) -> PathBuf {
        let stream = if stderr { "stderr" } else { "stdout" };
        self.root
            .join("logs")
            .join(format!("job-{}", job.0))
            .join(format!("rank-{rank}.{stream}"))
    }

    /// The working directory of a job's ranks on this node.
    pub fn job_dir(&self, job: JobId) -> PathBuf {
        self.root.join("jobs").join(format!("job-{}", job.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_agent_per_directory_and_one_node_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = WorkDir::open(dir.path(), "node-a").unwrap();
        let err = WorkDir::open(dir.path(), "node-a")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("another agent"), "{err}");
        drop(first);
        let err = WorkDir::open(dir.path(), "node-b")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("belongs to node \"node-a\""), "{err}");
        WorkDir::open(dir.path(), "node-a").unwrap();
    }

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let wd = WorkDir::open(dir.path(), "n").unwrap();
        let mut rec = wd.action(ActionId(7), JobId(3)).unwrap();
        assert!(!rec.stopped && !rec.finished);
        rec.stopped = true;
        wd.save_action(&rec).unwrap();
        wd.save_run(&RunRecord {
            job: 3,
            started_by: Some(7),
            ranks: vec![0, 1],
            state: RunState::Running,
            exit_reported: false,
        })
        .unwrap();
        drop(wd);
        let wd = WorkDir::open(dir.path(), "n").unwrap();
        assert!(wd.action(ActionId(7), JobId(3)).unwrap().stopped);
        let runs = wd.runs().unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].ranks, vec![0, 1]);
        assert!(wd.run(JobId(4)).unwrap().is_none());
    }
}
