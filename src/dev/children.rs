//! The child processes of `singularity dev`: replicas and agents, each a copy of the current
//! executable with its output appended to its own log file, in its own process group (so a
//! Ctrl-C at the terminal reaches `dev` alone, which then stops them in order), and killed by
//! the kernel if `dev` dies (PR_SET_PDEATHSIG).
//!
//! Every wait here is bounded; what does not exit in time is SIGKILLed and reaped. This module
//! must not decide the order of a shutdown (the caller does) and must not leave a child
//! unreaped when it is dropped.

use anyhow::Context;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Poll interval of exit waits.
const EXIT_POLL_MS: u64 = 50;
/// Lines of a log file quoted in an error about its child.
pub const LOG_TAIL_LINES: usize = 8;
/// Bytes read from the end of a log file for the tail.
const LOG_TAIL_BYTES: u64 = 8 * 1024;
/// How long a SIGKILLed child may take to be reaped.
const KILL_REAP_TIMEOUT_MS: u64 = 5_000;

/// One running child.
pub struct Managed {
    /// "replica-1", "node-a".
    pub name: String,
    pub log: PathBuf,
    child: Child,
    exited: Option<ExitStatus>,
}

impl Managed {
    /// Starts `exe args...` with stdin closed and stdout and stderr appended to `log`.
    pub fn spawn(exe: &Path, name: &str, args: &[String], log: &Path) -> anyhow::Result<Managed> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        // The command first: what to run by hand, and where one start's output begins.
        writeln!(
            file,
            "--- singularity dev starts {name}: {} {}",
            exe.display(),
            args.join(" ")
        )
        .with_context(|| format!("writing {}", log.display()))?;
        let stderr = file
            .try_clone()
            .context("duplicating the log file handle")?;
        let mut command = std::process::Command::new(exe);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr);
        // Own process group (a terminal's Ctrl-C reaches only `dev`), dies with `dev`.
        singularity_node::agent::supervise(&mut command);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({} {})", exe.display(), args.join(" ")))?;
        Ok(Managed {
            name: name.to_string(),
            log: log.to_path_buf(),
            child,
            exited: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the child has exited (reaping it).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
            }
        }
        self.exited
    }

    /// Sends `signal` unless the child has already been reaped.
    pub fn signal(&mut self, signal: libc::c_int) {
        if self.try_exit().is_none() {
            // SAFETY: kill(2) on the pid of our own unreaped child.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, signal);
            }
        }
    }

    /// SIGKILL and reap, bounded.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        wait_all(std::slice::from_mut(self), KILL_REAP_TIMEOUT_MS);
    }

    /// An error naming the child, how it exited, its log file and the log's last lines.
    pub fn exit_error(&self, status: ExitStatus, when: &str) -> anyhow::Error {
        let tail = log_tail(&self.log, LOG_TAIL_LINES);
        anyhow::anyhow!(
            "{} exited {when} ({status}); its log is {}{}",
            self.name,
            self.log.display(),
            if tail.is_empty() {
                String::new()
            } else {
                format!(", ending with:\n{tail}")
            }
        )
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            self.kill();
        }
    }
}

/// Waits until every child has exited or `timeout_ms` has passed; returns the names of those
/// still running.
pub fn wait_all(children: &mut [Managed], timeout_ms: u64) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        let running: Vec<String> = children
            .iter_mut()
            .filter_map(|c| c.try_exit().is_none().then(|| c.name.clone()))
            .collect();
        if running.is_empty() || Instant::now() >= deadline {
            return running;
        }
        std::thread::sleep(Duration::from_millis(EXIT_POLL_MS));
    }
}

/// SIGTERM to every child, a bounded wait, then SIGKILL for the stragglers. Returns the names
/// of those that had to be killed.
pub fn stop_all(children: &mut [Managed], timeout_ms: u64) -> Vec<String> {
    for child in children.iter_mut() {
        child.signal(libc::SIGTERM);
    }
    let stragglers = wait_all(children, timeout_ms);
    for child in children.iter_mut() {
        if stragglers.contains(&child.name) {
            child.kill();
        }
    }
    stragglers
}

/// The last `lines` lines of a log file, indented; empty when it cannot be read.
pub fn log_tail(path: &Path, lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if file
        .seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))
        .is_err()
    {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_that_ignores_sigterm_is_killed_and_reaped() {
        let dir =
            std::env::temp_dir().join(format!("singularity-dev-children-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let log = dir.join("stubborn.log");
        let args = vec![
            "-c".to_string(),
            "trap '' TERM; echo ready; while true; do sleep 1; done".to_string(),
        ];
        let mut children =
            vec![Managed::spawn(Path::new("/bin/sh"), "stubborn", &args, &log).expect("spawn")];
        // Only once its trap is set does it ignore SIGTERM.
        for _ in 0..200 {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.lines().any(|line| line == "ready") {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let stragglers = stop_all(&mut children, 300);
        assert_eq!(stragglers, vec!["stubborn".to_string()]);
        assert!(children[0].try_exit().is_some(), "killed and reaped");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_early_exit_names_the_child_and_quotes_its_log() {
        let dir =
            std::env::temp_dir().join(format!("singularity-dev-early-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let log = dir.join("early.log");
        let args = vec![
            "-c".to_string(),
            "echo 'error: port taken'; exit 3".to_string(),
        ];
        let mut child =
            Managed::spawn(Path::new("/bin/sh"), "replica-9", &args, &log).expect("spawn");
        assert!(wait_all(std::slice::from_mut(&mut child), 10_000).is_empty());
        let status = child.try_exit().expect("exited");
        let text = format!("{}", child.exit_error(status, "while starting"));
        assert!(text.contains("replica-9 exited while starting"), "{text}");
        assert!(text.contains("early.log"), "{text}");
        assert!(text.contains("error: port taken"), "{text}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
