//! `Supervisor`: what one agent knows and runs. It holds the live job runs, the work
//! directory, the latest `NodeView`, and the executors of in-flight actions. `reconcile` compares
//! each new view with what runs (start the ranks the log says should run here and do not, stop
//! the ones it no longer places here, start one executor per action); `monitor_exits` reaps rank
//! processes and commits how each run ended, in a loop.
//!
//! It must not decide placement: every start and stop follows the view, i.e. the committed log.

use super::executor;
use super::job_run::{JobRun, Launcher, RankLaunch, RunProgress};
use super::proxies::ProxySet;
use super::rank_env::{rank_env, RankContext, STEP_FILE};
use super::reporter::Reporter;
use super::work_dir::{RunRecord, RunState, WorkDir};
use super::worker_run;
use crate::error::{NodeError, Result};
use singularity_scheduler::{
    ActionId, CheckpointRef, Command, JobExit, JobId, JobPhase, NodeJob, NodeView, Outcome,
    RankPlacement, RunSpec,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often rank processes are reaped.
const EXIT_POLL_MS: u64 = 25;

/// Settings the supervisor needs.
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    pub node: String,
    /// SIGTERM to SIGKILL, in milliseconds.
    pub grace_period_ms: u64,
    /// Where jobs' checkpoint directories live (shared by the agents a job can move between).
    pub checkpoint_root: PathBuf,
    /// The device proxy program and its leading arguments; `None`: no worker jobs here.
    pub proxy_command: Option<Vec<String>>,
    /// Memory of each device of this node, by index (from the inventory), for its proxy.
    pub device_memory_bytes: BTreeMap<u16, u64>,
}

/// State shared by the agent's tasks.
pub struct Supervisor {
    pub config: SupervisorConfig,
    pub work: WorkDir,
    pub reporter: Reporter,
    launcher: Launcher,
    /// The device proxies that worker jobs' ranks attach to.
    pub(super) proxies: ProxySet,
    runs: Mutex<BTreeMap<JobId, JobRun>>,
    executors: Mutex<BTreeMap<ActionId, JoinHandle<()>>>,
    view_tx: watch::Sender<Option<Arc<NodeView>>>,
    /// Exits of runs not yet committed (the control plane was unreachable), retried.
    unreported: Mutex<BTreeSet<JobId>>,
    /// Exits being committed right now (reconcile must not queue them a second time).
    reporting: Mutex<BTreeSet<JobId>>,
}

impl Supervisor {
    pub fn new(config: SupervisorConfig, work: WorkDir, reporter: Reporter) -> Result<Self> {
        let (view_tx, _) = watch::channel(None);
        let launcher = Launcher::start()?;
        let proxies = ProxySet::new(
            config.proxy_command.clone(),
            work.root(),
            config.device_memory_bytes.clone(),
            launcher.clone(),
        );
        Ok(Supervisor {
            config,
            work,
            reporter,
            launcher,
            proxies,
            runs: Mutex::default(),
            executors: Mutex::default(),
            view_tx,
            unreported: Mutex::default(),
            reporting: Mutex::default(),
        })
    }

    pub fn views(&self) -> watch::Receiver<Option<Arc<NodeView>>> {
        self.view_tx.subscribe()
    }

    pub fn latest_view(&self) -> Option<Arc<NodeView>> {
        self.view_tx.borrow().clone()
    }

    /// The checkpoint directory of `job` (created on first use).
    pub fn checkpoint_dir(&self, job: JobId) -> PathBuf {
        self.config.checkpoint_root.join(format!("job-{}", job.0))
    }

    /// The checkpoint this node reports for a process job: its directory, and the step the
    /// job wrote in its `step` file (0 when it wrote none).
    pub fn checkpoint_ref(&self, job: JobId) -> CheckpointRef {
        let dir = self.checkpoint_dir(job);
        let step = std::fs::read_to_string(dir.join(STEP_FILE))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        CheckpointRef {
            location: dir.display().to_string(),
            step,
        }
    }

    /// Whether ranks of `job` run here now.
    pub fn is_running(&self, job: JobId) -> bool {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&job)
    }

    /// Takes the live run of `job` out of the supervisor (to stop it).
    pub fn take_run(&self, job: JobId) -> Option<JobRun> {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&job)
    }

    /// Puts a run taken with `take_run` back (its ranks could not be stopped).
    fn put_back_run(&self, run: JobRun) {
        let job = run.job;
        let previous = self
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job, run);
        assert!(previous.is_none(), "put back a run of {job} over another");
    }

    /// Stops the ranks of a run taken with `take_run` (SIGTERM, then SIGKILL after the grace
    /// period) and hands it back with whether they exited within the grace. An error when a
    /// rank is still alive after SIGKILL and the reap timeout: the run is put back (so the next
    /// attempt stops it again) and the caller must not report the ranks stopped.
    pub(super) async fn stop_run(&self, mut run: JobRun) -> Result<(JobRun, bool)> {
        let in_grace = run.stop(self.config.grace_period_ms).await;
        if !in_grace && !run.all_exited() {
            let (job, pids) = (run.job, run.pids());
            self.put_back_run(run);
            return Err(NodeError::Proxy(format!(
                "ranks of {job} (pids {pids:?}) did not exit after SIGKILL; not reporting the stop"
            )));
        }
        Ok((run, in_grace))
    }

    /// Stops the ranks of `job` here, if any run, and records why. An error when a rank
    /// outlives SIGKILL (`stop_run`): the caller must not report the ranks stopped.
    pub async fn stop_job(&self, job: JobId, why: String) -> Result<()> {
        if let Some(run) = self.take_run(job) {
            let (run, in_grace) = self.stop_run(run).await?;
            tracing::info!(
                job = job.0,
                in_grace,
                "stopped ranks ({why}){}",
                if in_grace {
                    ""
                } else {
                    "; SIGKILL after the grace period"
                }
            );
            self.record_stopped(&run, why)?;
        }
        Ok(())
    }

    /// Records that `run` was stopped, and why.
    pub(super) fn record_stopped(&self, run: &JobRun, why: String) -> Result<()> {
        self.work.save_run(&RunRecord {
            job: run.job.0,
            started_by: run.started_by,
            ranks: run.ranks(),
            state: RunState::Stopped { why },
            exit_reported: true,
        })
    }

    /// Starts `ranks` of `job` here; `master` is rank 0's node after this start.
    pub fn start_job(
        &self,
        job: &NodeJob,
        ranks: &[RankPlacement],
        master: Option<&str>,
        started_by: Option<ActionId>,
    ) -> Result<()> {
        let (argv, env) = match &job.run {
            RunSpec::Command { argv, env } => (argv, env),
            RunSpec::Worker { program, args } => {
                return worker_run::start(self, job, ranks, started_by, program, args)
            }
        };
        let checkpoint_dir = self.checkpoint_dir(job.id);
        std::fs::create_dir_all(&checkpoint_dir)
            .map_err(|e| NodeError::io(format!("creating {}", checkpoint_dir.display()), e))?;
        let node = self.config.node.as_str();
        let master_host = match master {
            Some(m) if m != node => m,
            _ => "127.0.0.1",
        };
        let launches = ranks
            .iter()
            .map(|placement| {
                let env = rank_env(&RankContext {
                    job: job.id,
                    job_name: &job.name,
                    world_size: job.world_size,
                    local_world_size: ranks.len() as u32,
                    placement: *placement,
                    master_host,
                    node,
                    restarts: job.restarts,
                    checkpoint_dir: &checkpoint_dir,
                    work_dir: self.work.root(),
                    job_env: env,
                });
                RankLaunch {
                    rank: placement.rank,
                    argv: argv.clone(),
                    env,
                    cwd: self.work.job_dir(job.id),
                    stdout: self.work.log_path(job.id, placement.rank, false),
                    stderr: self.work.log_path(job.id, placement.rank, true),
                }
            })
            .collect();
        self.start_run(job.id, started_by, launches)
    }

    /// Starts the processes of one run of `job` and records it.
    pub(super) fn start_run(
        &self,
        job: JobId,
        started_by: Option<ActionId>,
        launches: Vec<RankLaunch>,
    ) -> Result<()> {
        let run = JobRun::start(&self.launcher, job, started_by.map(|a| a.0), launches)?;
        tracing::info!(
            job = job.0,
            ranks = ?run.ranks(),
            pids = ?run.pids(),
            "started ranks"
        );
        self.work.save_run(&RunRecord {
            job: job.0,
            started_by: started_by.map(|a| a.0),
            ranks: run.ranks(),
            state: RunState::Running,
            exit_reported: false,
        })?;
        let previous = self
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job, run);
        assert!(previous.is_none(), "started {job} twice on this node");
        Ok(())
    }

    /// Publishes a new view and acts on it.
    pub async fn reconcile(self: &Arc<Self>, view: NodeView) -> Result<()> {
        let view = Arc::new(view);
        self.view_tx.send_replace(Some(view.clone()));
        // Executors, one per in-flight action involving this node, run once each.
        {
            let mut executors = self.executors.lock().unwrap_or_else(|p| p.into_inner());
            executors.retain(|_, handle| !handle.is_finished());
            for job in &view.jobs {
                let Some(action) = &job.action else { continue };
                if executors.contains_key(&action.id) {
                    continue;
                }
                if self.work.action(action.id, job.id)?.finished {
                    continue;
                }
                let supervisor = self.clone();
                let (action_id, job_id) = (action.id, job.id);
                executors.insert(
                    action_id,
                    tokio::spawn(async move {
                        if let Err(e) = executor::execute(supervisor, action_id, job_id).await {
                            tracing::error!(action = action_id.0, "executing: {e}");
                        }
                    }),
                );
            }
        }
        // Ranks the log says should run here and do not (e.g. after an agent restart).
        for job in &view.jobs {
            if job.action.is_some() || job.phase != JobPhase::Running || job.ranks_here.is_empty() {
                continue;
            }
            if self.is_running(job.id) || self.is_reporting(job.id) {
                continue;
            }
            let record = self.work.run(job.id)?;
            let restart = match &record {
                None => true,
                Some(r) => matches!(r.state, RunState::Running | RunState::Stopped { .. }),
            };
            if restart {
                tracing::warn!(
                    job = job.id.0,
                    "reconcile: the log runs this job here but no rank does; starting its ranks \
                     (they resume from the job's checkpoint directory)"
                );
                if let Err(e) = self.start_job(
                    job,
                    &job.ranks_here,
                    job.master_node.as_ref().map(|n| n.as_str()),
                    None,
                ) {
                    self.report_exit(
                        job.id,
                        JobExit::Failed {
                            reason: e.to_string(),
                        },
                    )
                    .await;
                }
            } else if record.is_some_and(|r| !r.exit_reported) {
                self.unreported
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(job.id);
            }
        }
        // Ranks of jobs the log no longer places here (the node was declared down and the job
        // moved, or the job ended elsewhere).
        let expected: BTreeSet<JobId> = view
            .jobs
            .iter()
            .filter(|j| {
                !j.ranks_here.is_empty()
                    || j.action
                        .as_ref()
                        .is_some_and(|a| a.stops_here || !a.start_ranks.is_empty())
            })
            .map(|j| j.id)
            .collect();
        let strays: Vec<JobId> = self
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .filter(|job| !expected.contains(job))
            .copied()
            .collect();
        for job in strays {
            tracing::warn!(
                job = job.0,
                "the log no longer runs this job here; stopping its ranks"
            );
            // In the background: a grace period must not hold up the next view.
            let supervisor = self.clone();
            tokio::spawn(async move {
                let why = "the log no longer places the job on this node".to_string();
                if let Err(e) = supervisor.stop_job(job, why).await {
                    tracing::error!(job = job.0, "stopping: {e}");
                }
            });
        }
        Ok(())
    }

    /// Commits how a job's ranks here ended; returns whether it was committed (accepted or
    /// refused with a reason: either way there is nothing more to say).
    fn is_reporting(&self, job: JobId) -> bool {
        self.reporting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&job)
    }

    fn set_reporting(&self, job: JobId, reporting: bool) {
        let mut set = self.reporting.lock().unwrap_or_else(|p| p.into_inner());
        if reporting {
            set.insert(job);
        } else {
            set.remove(&job);
        }
    }

    async fn report_exit(&self, job: JobId, exit: JobExit) -> bool {
        let Some(view) = self.latest_view() else {
            return false;
        };
        let command = Command::ReportJobExit {
            job,
            node: view.node,
            exit,
        };
        match self.reporter.write(command).await {
            Ok(Outcome::Rejected(rejection)) => {
                tracing::info!(job = job.0, "exit report refused: {rejection}");
                true
            }
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(job = job.0, "exit report not committed yet: {e}");
                false
            }
        }
    }

    /// Reaps rank processes forever: a run whose ranks all succeeded, or one of whose ranks
    /// failed (the others are killed: a gang runs together), is committed as the job's exit.
    pub async fn monitor_exits(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(EXIT_POLL_MS)).await;
            let ended: Vec<(JobRun, RunProgress)> = {
                let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
                let done: Vec<(JobId, RunProgress)> = runs
                    .iter_mut()
                    .filter(|(_, run)| !run.stopping)
                    .map(|(job, run)| (*job, run.poll()))
                    .filter(|(_, progress)| *progress != RunProgress::Running)
                    .collect();
                // Marked as being reported before the runs lock is released: reconcile never
                // sees such a run as neither running nor reported (it would start it again).
                let mut reporting = self.reporting.lock().unwrap_or_else(|p| p.into_inner());
                done.into_iter()
                    .filter_map(|(job, progress)| {
                        reporting.insert(job);
                        runs.remove(&job).map(|run| (run, progress))
                    })
                    .collect()
            };
            for (mut run, progress) in ended {
                let (state, exit) = match progress {
                    RunProgress::Failed { reason } => {
                        run.kill_now();
                        (
                            RunState::Failed {
                                reason: reason.clone(),
                            },
                            JobExit::Failed { reason },
                        )
                    }
                    _ => (RunState::Succeeded, JobExit::Succeeded),
                };
                tracing::info!(job = run.job.0, ?state, "ranks ended");
                let mut record = RunRecord {
                    job: run.job.0,
                    started_by: run.started_by,
                    ranks: run.ranks(),
                    state,
                    exit_reported: false,
                };
                if let Err(e) = self.work.save_run(&record) {
                    tracing::error!("recording the end of {}: {e}", run.job);
                }
                if self.report_exit(run.job, exit).await {
                    record.exit_reported = true;
                    if let Err(e) = self.work.save_run(&record) {
                        tracing::error!("recording the end of {}: {e}", run.job);
                    }
                } else {
                    self.unreported
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(run.job);
                }
                self.set_reporting(run.job, false);
            }
            self.retry_unreported().await;
        }
    }

    async fn retry_unreported(&self) {
        let pending: Vec<JobId> = {
            let mut set = self.unreported.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *set).into_iter().collect()
        };
        for job in pending {
            let Ok(Some(mut record)) = self.work.run(job) else {
                continue;
            };
            let exit = match &record.state {
                RunState::Succeeded => JobExit::Succeeded,
                RunState::Failed { reason } => JobExit::Failed {
                    reason: reason.clone(),
                },
                _ => continue,
            };
            self.set_reporting(job, true);
            let committed = self.report_exit(job, exit).await;
            if committed {
                record.exit_reported = true;
                let _ = self.work.save_run(&record);
            }
            self.set_reporting(job, false);
            if !committed {
                self.unreported
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(job);
            }
        }
    }

    /// Stops every executor and every rank (the agent is shutting down).
    pub async fn stop_all(&self) {
        for (_, handle) in
            std::mem::take(&mut *self.executors.lock().unwrap_or_else(|p| p.into_inner()))
        {
            handle.abort();
        }
        let jobs: Vec<JobId> = self
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        for job in jobs {
            if let Err(e) = self.stop_job(job, "the agent stopped".into()).await {
                tracing::error!("stopping {job}: {e}");
            }
        }
        self.proxies.stop_all();
    }
}
