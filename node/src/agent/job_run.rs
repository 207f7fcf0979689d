//! `JobRun`: the rank processes of one job on this node. Each rank is a real child process in
//! its own process group, started from one long-lived launcher thread with a parent-death
//! signal, so the ranks die with the agent (a restarted agent starts them again from the log;
//! no orphan keeps a device). Stopping sends SIGTERM to every rank's group, waits the grace
//! period, then sends SIGKILL. `kill_leftovers` finds processes a killed agent left behind by
//! the work-directory variable in their environment.
//!
//! It must not talk to the control plane or decide when to stop: the supervisor does.

use super::rank_env::WORK_DIR_VAR;
use crate::error::{NodeError, Result};
use singularity_scheduler::JobId;
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Poll interval while waiting for ranks to exit.
const EXIT_POLL_MS: u64 = 20;
/// Longest wait for killed ranks to be reaped.
const REAP_TIMEOUT_MS: u64 = 5_000;

/// How one rank is started.
pub struct RankLaunch {
    pub rank: u32,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

type SpawnReply = std::result::Result<Child, std::io::Error>;

/// Spawns children from one thread that lives as long as the agent: the parent-death signal
/// fires when the forking *thread* exits, so ranks must not be forked from pool threads.
#[derive(Clone)]
pub struct Launcher {
    requests: mpsc::Sender<(Command, mpsc::Sender<SpawnReply>)>,
}

impl Launcher {
    pub fn start() -> Result<Launcher> {
        let (requests, incoming) = mpsc::channel::<(Command, mpsc::Sender<SpawnReply>)>();
        std::thread::Builder::new()
            .name("rank-launcher".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })
            .map_err(|e| NodeError::io("starting the rank launcher thread", e))?;
        Ok(Launcher { requests })
    }

    /// Spawns `command` from the launcher thread (callers set it up with `supervise`).
    pub(super) fn spawn(&self, command: Command) -> std::result::Result<Child, std::io::Error> {
        let (reply, answer) = mpsc::channel();
        self.requests
            .send((command, reply))
            .map_err(|_| std::io::Error::other("the rank launcher thread is gone"))?;
        answer
            .recv()
            .map_err(|_| std::io::Error::other("the rank launcher thread is gone"))?
    }
}

/// Makes a child its own process group leader (signals to the group reach its children too)
/// and gives it a parent-death signal, so it dies with its parent. Fork it from a thread that
/// lives as long as the parent (the agent's `Launcher` thread; `singularity dev`'s main thread).
pub fn supervise(command: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (setpgid, prctl, getppid) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died between fork and prctl: do not outlive it.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the parent exited while starting"));
            }
            Ok(())
        });
    }
}

/// One running or exited rank.
struct Rank {
    rank: u32,
    child: Child,
    exit: Option<ExitStatus>,
}

/// What the ranks of a run have done so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunProgress {
    Running,
    /// Every rank exited with status 0.
    Succeeded,
    /// A rank exited otherwise; the others may still run.
    Failed {
        reason: String,
    },
}

/// The ranks of one job on this node.
pub struct JobRun {
    pub job: JobId,
    pub started_by: Option<u64>,
    ranks: Vec<Rank>,
    /// Set when the agent stops the run: exits are then not failures.
    pub stopping: bool,
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".to_string(),
    }
}

pub(super) fn open_log(path: &Path) -> std::result::Result<fs::File, std::io::Error> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

impl JobRun {
    /// Starts every rank; if one cannot start, the ones started are killed and the error says
    /// which rank and why.
    pub fn start(
        launcher: &Launcher,
        job: JobId,
        started_by: Option<u64>,
        launches: Vec<RankLaunch>,
    ) -> Result<JobRun> {
        let mut run = JobRun {
            job,
            started_by,
            ranks: Vec::new(),
            stopping: false,
        };
        for launch in launches {
            match Self::spawn_rank(launcher, &launch) {
                Ok(child) => run.ranks.push(Rank {
                    rank: launch.rank,
                    child,
                    exit: None,
                }),
                Err(e) => {
                    run.kill_now();
                    return Err(NodeError::Config(format!(
                        "cannot start rank {} of {job} ({:?}): {e}",
                        launch.rank, launch.argv[0]
                    )));
                }
            }
        }
        Ok(run)
    }

    fn spawn_rank(
        launcher: &Launcher,
        launch: &RankLaunch,
    ) -> std::result::Result<Child, std::io::Error> {
        fs::create_dir_all(&launch.cwd)?;
        let stdout = open_log(&launch.stdout)?;
        let stderr = open_log(&launch.stderr)?;
        let mut command = Command::new(&launch.argv[0]);
        command
            .args(&launch.argv[1..])
            .envs(&launch.env)
            .current_dir(&launch.cwd)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        supervise(&mut command);
        launcher.spawn(command)
    }

    pub fn ranks(&self) -> Vec<u32> {
        self.ranks.iter().map(|r| r.rank).collect()
    }

    /// Process ids of the ranks still running.
    pub fn pids(&self) -> Vec<u32> {
        self.ranks
            .iter()
            .filter(|r| r.exit.is_none())
            .map(|r| r.child.id())
            .collect()
    }

    /// Reaps exited ranks and says where the run stands.
    pub fn poll(&mut self) -> RunProgress {
        for rank in &mut self.ranks {
            if rank.exit.is_none() {
                if let Ok(Some(status)) = rank.child.try_wait() {
                    rank.exit = Some(status);
                }
            }
        }
        if let Some(failed) = self
            .ranks
            .iter()
            .find(|r| r.exit.is_some_and(|s| !s.success()))
        {
            return RunProgress::Failed {
                reason: format!(
                    "rank {} {}",
                    failed.rank,
                    describe(failed.exit.expect("found above"))
                ),
            };
        }
        if self.ranks.iter().all(|r| r.exit.is_some()) {
            RunProgress::Succeeded
        } else {
            RunProgress::Running
        }
    }

    /// Whether every rank has exited.
    pub fn all_exited(&mut self) -> bool {
        self.poll();
        self.ranks.iter().all(|r| r.exit.is_some())
    }

    fn signal(&self, signal: libc::c_int) {
        for rank in self.ranks.iter().filter(|r| r.exit.is_none()) {
            // SAFETY: signals the rank's own process group (its pid, set by setpgid).
            unsafe {
                libc::kill(-(rank.child.id() as libc::pid_t), signal);
            }
        }
    }

    /// SIGKILL to every rank's group, then reap them (bounded).
    pub fn kill_now(&mut self) {
        self.stopping = true;
        self.signal(libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_millis(REAP_TIMEOUT_MS);
        while !self.all_exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(EXIT_POLL_MS));
        }
    }

    /// SIGTERM, up to `grace_ms` for the ranks to exit (a job saves its checkpoint then), then
    /// SIGKILL. Returns whether the ranks exited within the grace period.
    pub async fn stop(&mut self, grace_ms: u64) -> bool {
        self.stopping = true;
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_millis(grace_ms);
        while Instant::now() < deadline {
            if self.all_exited() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(EXIT_POLL_MS)).await;
        }
        self.signal(libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_millis(REAP_TIMEOUT_MS);
        while !self.all_exited() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(EXIT_POLL_MS)).await;
        }
        false
    }
}

impl Drop for JobRun {
    fn drop(&mut self) {
        if !self.ranks.iter().all(|r| r.exit.is_some()) {
            self.kill_now();
        }
    }
}

/// Live processes whose environment names `work_dir` as their agent's work directory: the
/// ranks (and their children) of the agent that owns it, or that a killed agent left behind.
pub fn processes_of(work_dir: &Path) -> Vec<u32> {
    processes_with(work_dir, &[])
}

/// `processes_of(work_dir)` whose environment also holds every `NAME=VALUE` of `vars`.
pub fn processes_with(work_dir: &Path, vars: &[&str]) -> Vec<u32> {
    let marker = format!("{WORK_DIR_VAR}={}", work_dir.display());
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Zombies are dead already; their parent reaps them.
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if pid == me || stat.contains(") Z ") {
            continue;
        }
        let Ok(environ) = fs::read(entry.path().join("environ")) else {
            continue;
        };
        let has = |wanted: &str| {
            environ
                .split(|b| *b == 0)
                .any(|var| var == wanted.as_bytes())
        };
        if has(&marker) && vars.iter().all(|v| has(v)) {
            found.push(pid);
        }
    }
    found
}

/// Kills every process of `processes_of(work_dir)`: what a previous agent left behind.
/// Returns their pids.
pub fn kill_leftovers(work_dir: &Path) -> Vec<u32> {
    let pids = processes_of(work_dir);
    for &pid in &pids {
        // SAFETY: sends a signal to a process id read from /proc.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(dir: &Path, rank: u32, script: &str) -> RankLaunch {
        RankLaunch {
            rank,
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: BTreeMap::from([("R".to_string(), rank.to_string())]),
            cwd: dir.to_path_buf(),
            stdout: dir.join(format!("r{rank}.out")),
            stderr: dir.join(format!("r{rank}.err")),
        }
    }

    async fn settle(run: &mut JobRun) -> RunProgress {
        for _ in 0..500 {
            let progress = run.poll();
            if progress != RunProgress::Running {
                return progress;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("ranks did not finish in 5 s");
    }

    #[tokio::test]
    async fn ranks_run_with_their_env_and_logs() {
        let dir = tempfile::tempdir().unwrap();
        let launcher = Launcher::start().unwrap();
        let launches = (0..2)
            .map(|r| launch(dir.path(), r, "echo rank $R; echo err >&2"))
            .collect();
        let mut run = JobRun::start(&launcher, JobId(1), Some(5), launches).unwrap();
        assert_eq!(settle(&mut run).await, RunProgress::Succeeded);
        assert_eq!(
            fs::read_to_string(dir.path().join("r1.out")).unwrap(),
            "rank 1\n"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("r0.err")).unwrap(),
            "err\n"
        );
    }

    #[tokio::test]
    async fn a_failing_rank_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let launcher = Launcher::start().unwrap();
        let launches = vec![
            launch(dir.path(), 0, "exit 0"),
            launch(dir.path(), 1, "exit 3"),
        ];
        let mut run = JobRun::start(&launcher, JobId(1), None, launches).unwrap();
        match settle(&mut run).await {
            RunProgress::Failed { reason } => assert_eq!(reason, "rank 1 exited with status 3"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn stop_sends_sigterm_first_and_sigkill_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let launcher = Launcher::start().unwrap();
        // Rank 0 saves on SIGTERM and exits; rank 1 ignores SIGTERM.
        let polite = "trap 'echo saved > saved; exit 0' TERM; while true; do sleep 0.05; done";
        let stubborn = "trap '' TERM; while true; do sleep 0.05; done";
        let launches = vec![
            launch(dir.path(), 0, polite),
            launch(dir.path(), 1, stubborn),
        ];
        let mut run = JobRun::start(&launcher, JobId(1), None, launches).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(run.pids().len(), 2);
        let in_grace = run.stop(300).await;
        assert!(!in_grace, "rank 1 ignores SIGTERM");
        assert!(run.all_exited());
        assert_eq!(
            fs::read_to_string(dir.path().join("saved")).unwrap(),
            "saved\n"
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let launcher = Launcher::start().unwrap();
        let mut bad = launch(dir.path(), 0, "true");
        bad.argv = vec!["/nonexistent/trainer".into()];
        let err = JobRun::start(&launcher, JobId(9), None, vec![bad])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cannot start rank 0 of job 9"), "{err}");
        assert!(err.contains("/nonexistent/trainer"), "{err}");
    }
}
