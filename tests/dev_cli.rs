//! `singularity dev` as a user runs it, as a real process with real children:
//! - `--demo --for 30`: exits 0; its output shows placements, a preemption or a resize, and the
//!   demo's jobs succeeding; its temporary data dir is removed and no process of it remains;
//! - without `--demo`: after it printed its endpoints, a job of ours runs on it; SIGINT stops
//!   everything (the job's rank included), exit 0, the given `--data-dir` is kept and no
//!   process of it remains.
//!
//! "No process of it remains" is checked in /proc: no process whose command line or
//! environment names the run's data dir (replicas and agents have it in their flags, ranks in
//! their environment). Every wait is bounded; a test that fails kills what it started.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_singularity");
/// Bound on the whole of one `dev` run: start (up to a minute on a loaded machine), its
/// `--for`, and a shutdown (agents within 13 s, replicas within 10 s).
const RUN_BOUND_MS: u64 = 180_000;
/// Bound on seeing a line of output.
const LINE_BOUND_MS: u64 = 90_000;
/// Polls of /proc for leftover processes, 100 ms apart (a killed process may take a moment to
/// be reaped by init).
const MAX_LEFTOVER_POLLS: u32 = 50;

/// A running `singularity dev` whose stdout lines arrive on a channel; killed (with its
/// process group) if the test ends early.
struct Dev {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Dev {
    fn start(args: &[&str]) -> Dev {
        let mut child = std::process::Command::new(BIN)
            .arg("dev")
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn singularity dev");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        let err_tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if err_tx.send(format!("stderr: {line}")).is_err() {
                    break;
                }
            }
        });
        Dev {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one contains `text`; returns it.
    fn wait_for_line(&mut self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_millis(LINE_BOUND_MS);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no line with {text:?} within {LINE_BOUND_MS} ms; output so far:\n{}",
                    self.seen.join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "dev closed its output before a line with {text:?}:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for the exit (bounded) and collects the rest of the output.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_millis(RUN_BOUND_MS);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "dev did not exit within {RUN_BOUND_MS} ms; output so far:\n{}",
                self.seen.join("\n")
            );
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line);
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        // The reader threads end when the pipes close (every child of dev is gone by then).
        let drain_deadline = Instant::now() + Duration::from_millis(LINE_BOUND_MS);
        loop {
            let left = drain_deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("dev's output did not close"),
            }
        }
        status
    }

    fn output(&self) -> String {
        self.seen.join("\n")
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Its children die with it (PR_SET_PDEATHSIG).
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Pids of processes (other than this test) whose command line or environment contains
/// `needle`.
fn processes_naming(needle: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        for file in ["cmdline", "environ"] {
            let Ok(bytes) = std::fs::read(entry.path().join(file)) else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes).replace('\0', " ");
            if text.contains(needle) {
                let cmdline = std::fs::read(entry.path().join("cmdline"))
                    .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                    .unwrap_or_default();
                found.push((pid, cmdline));
                break;
            }
        }
    }
    found
}

/// Asserts that no process names `dir`, allowing a moment for reaping.
fn assert_nothing_left(dir: &str) {
    let mut left = processes_naming(dir);
    for _ in 0..MAX_LEFTOVER_POLLS {
        if left.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
        left = processes_naming(dir);
    }
    panic!("processes of the dev cluster in {dir} remain: {left:?}");
}

/// The event label of an event line ("   4.1s  preempt  job 1 ..."), if it is one.
fn label(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    let time = words.next()?;
    let seconds = time.strip_suffix('s')?;
    seconds.parse::<f64>().ok()?;
    words.next()
}

#[test]
fn the_demo_places_preempts_or_resizes_and_finishes_its_jobs_then_leaves_nothing() {
    let mut dev = Dev::start(&["--demo", "--for", "30"]);
    let first = dev.wait_for_line("cluster in ");
    let data_dir = first
        .split("cluster in ")
        .nth(1)
        .expect("the data dir")
        .trim()
        .to_string();
    assert!(Path::new(&data_dir).is_dir(), "{data_dir}");
    let status = dev.wait_exit();
    let output = dev.output();
    assert!(status.success(), "{status}\n{output}");

    let labels: Vec<&str> = output.lines().filter_map(label).collect();
    let count = |l: &str| labels.iter().filter(|&&x| x == l).count();
    assert!(count("place") >= 1, "no placement:\n{output}");
    assert!(
        count("preempt") + count("resize") >= 1,
        "no preemption or resize:\n{output}"
    );
    assert!(
        output.contains("exited successfully"),
        "no job exit:\n{output}"
    );
    assert!(
        output.contains("demo finished") && output.contains("3 of 3 jobs succeeded"),
        "the demo's jobs did not all succeed within --for 30:\n{output}"
    );
    assert!(
        output.contains("stopped 2 agent(s) and 3 replica(s)"),
        "{output}"
    );
    // A temporary data dir goes away with the cluster, and so does every process.
    assert!(!Path::new(&data_dir).exists(), "{data_dir} was not removed");
    assert_nothing_left(&data_dir);
}

#[test]
fn sigint_stops_the_cluster_and_its_ranks_and_keeps_the_data_dir() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let data_dir = scratch.path().join("cluster");
    let data = data_dir.display().to_string();
    let mut dev = Dev::start(&["--data-dir", &data]);
    let export = dev.wait_for_line("export SINGULARITY_ENDPOINTS=");
    let endpoints = export
        .split('=')
        .nth(1)
        .expect("endpoints")
        .trim()
        .to_string();

    // A job that would run for minutes: SIGINT must stop its rank too.
    let submit = std::process::Command::new(BIN)
        .args([
            "job",
            "submit",
            "--name",
            "sleeper",
            "--",
            "sh",
            "-c",
            "sleep 300",
        ])
        .env("SINGULARITY_ENDPOINTS", &endpoints)
        .output()
        .expect("job submit");
    assert!(
        submit.status.success(),
        "{}",
        String::from_utf8_lossy(&submit.stderr)
    );
    dev.wait_for_line("place of job 1 sleeper (standard) on");
    // The rank runs (its environment names the data dir): the check below can see it.
    let mut rank_seen = false;
    for _ in 0..MAX_LEFTOVER_POLLS {
        rank_seen = processes_naming(&data)
            .iter()
            .any(|(_, cmdline)| cmdline.contains("sleep 300"));
        if rank_seen {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        rank_seen,
        "the sleeper's rank is not running: {:?}",
        processes_naming(&data)
    );

    // SAFETY: kill(2) on the pid of our own child.
    let rc = unsafe { libc::kill(dev.child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0, "SIGINT");
    let status = dev.wait_exit();
    let output = dev.output();
    assert!(status.success(), "{status}\n{output}");
    assert!(output.contains("SIGINT received; stopping"), "{output}");
    let agents_at = output.find("stopping the agents").expect("agents stopped");
    let replicas_at = output
        .find("stopping the replicas")
        .expect("replicas stopped");
    assert!(agents_at < replicas_at, "agents stop first:\n{output}");
    assert!(
        output.contains("stopped 2 agent(s) and 3 replica(s)"),
        "{output}"
    );
    assert!(output.contains(&format!("data kept in {data}")), "{output}");
    assert!(data_dir.join("dev.json").is_file());
    assert_nothing_left(&data);
}
