//! `execute`: carries out one committed action on this node, exactly once. Each step (stop the
//! job's ranks here, report the checkpoint, start the ranks the action puts here, report the
//! action completed) is recorded in the work directory before the next begins, so an executor
//! started again for the same action (a new view, a reconnect, an agent restart) skips what is
//! done and re-reports what the log does not show yet.
//!
//! Order across nodes comes from the view: a node that starts ranks waits until every node
//! that stops ranks has checkpointed, and a node that does not hold rank 0 reports the
//! checkpoint the first node agreed. It must not start or stop anything the view does not ask.
//!
//! A report that can free devices (the checkpoint: a migrate or resize releases the devices it
//! gives up then; a stop's or preempt's completion) is sent only once this node's old ranks have
//! exited and, for worker jobs, their device proxies have dropped them and their memory: a job
//! placed on those devices right after the report finds them empty.

use super::supervisor::Supervisor;
use super::worker_run;
use crate::error::Result;
use singularity_scheduler::{
    ActionId, Command, JobId, NodeAction, NodeJob, Outcome, Progress, Rejection, RunSpec, Stage,
};
use std::sync::Arc;
use std::time::Duration;

/// Pause between attempts to commit a report while the control plane is unreachable.
const REPORT_RETRY_MS: u64 = 500;
/// Attempts to commit one report before the executor gives up until the next view.
const MAX_REPORT_ATTEMPTS: u32 = 120;

/// The job and this node's part of the action in the latest view; `None` once the action is
/// no longer in flight here (it finished, or failed on another node).
fn current(supervisor: &Supervisor, action: ActionId, job: JobId) -> Option<(NodeJob, NodeAction)> {
    let view = supervisor.latest_view()?;
    let job = view.jobs.iter().find(|j| j.id == job)?;
    let node_action = job.action.as_ref().filter(|a| a.id == action)?;
    Some((job.clone(), node_action.clone()))
}

/// Waits for the next view; `false` when the supervisor is gone.
async fn next_view(
    views: &mut tokio::sync::watch::Receiver<Option<Arc<singularity_scheduler::NodeView>>>,
) -> bool {
    views.changed().await.is_ok()
}

/// What happened to a report.
enum Reported {
    Committed,
    /// The action is gone (finished or failed elsewhere): stop working on it.
    ActionGone,
}

async fn report(supervisor: &Supervisor, action: ActionId, progress: Progress) -> Result<Reported> {
    let node = match supervisor.latest_view() {
        Some(view) => view.node,
        None => return Ok(Reported::ActionGone),
    };
    let mut last_error = None;
    for _ in 0..MAX_REPORT_ATTEMPTS {
        let command = Command::ReportActionProgress {
            action,
            node,
            progress: progress.clone(),
        };
        match supervisor.reporter.write(command).await {
            Ok(Outcome::Rejected(Rejection::UnknownAction { .. })) => {
                return Ok(Reported::ActionGone)
            }
            Ok(Outcome::Rejected(rejection)) => {
                // Already recorded (a repeat after a restart) or no longer applicable.
                tracing::info!(
                    action = action.0,
                    "progress {progress} refused: {rejection}"
                );
                return Ok(Reported::Committed);
            }
            Ok(_) => return Ok(Reported::Committed),
            Err(e) => {
                last_error = Some(e);
                tokio::time::sleep(Duration::from_millis(REPORT_RETRY_MS)).await;
            }
        }
    }
    Err(last_error.expect("at least one attempt failed"))
}

/// Waits until the device proxies of the devices `job`'s ranks use here (before the action)
/// hold none of them (`worker_run::wait_for_proxies_to_release`).
async fn released_here(supervisor: &Supervisor, job: &NodeJob) -> Result<()> {
    let devices = job.ranks_here.iter().map(|p| p.device_index).collect();
    worker_run::wait_for_proxies_to_release(supervisor, job.id, &devices).await
}

/// Runs action `action` of job `job` on this node to its end here.
pub async fn execute(supervisor: Arc<Supervisor>, action: ActionId, job: JobId) -> Result<()> {
    let mut record = supervisor.work.action(action, job)?;
    if record.finished {
        return Ok(());
    }
    let mut views = supervisor.views();
    let Some((first_job, first)) = current(&supervisor, action, job) else {
        return Ok(());
    };
    // Worker jobs are checkpointed through their device proxies, not by themselves.
    let proxied = matches!(first_job.run, RunSpec::Worker { .. });
    tracing::info!(
        action = action.0,
        job = job.0,
        kind = %first.kind,
        "executing: {}",
        first.reason
    );

    // 1. Stop this node's ranks of the job.
    if first.stops_here && !record.stopped {
        let why = format!("{} for {}", first.kind, action);
        if proxied && first.checkpoints {
            worker_run::checkpoint_and_stop(&supervisor, &first_job, action, why).await?;
        } else {
            supervisor.stop_job(job, why).await?;
        }
        record.stopped = true;
        supervisor.work.save_action(&record)?;
    }

    // 2. Report the checkpoint: the node of rank 0 names it, the others repeat the agreed one.
    if first.checkpoints && record.checkpoint_reported.is_none() {
        let cut = loop {
            let Some((job_now, now)) = current(&supervisor, action, job) else {
                return Ok(());
            };
            if now.stage_here >= Stage::Checkpointed {
                break now.checkpoint.clone();
            }
            if let Some(agreed) = now.checkpoint.clone() {
                break Some(agreed);
            }
            if now.reports_checkpoint_first && proxied {
                break Some(worker_run::checkpoint_ref(&supervisor, &job_now, action).await);
            }
            if now.reports_checkpoint_first {
                break Some(supervisor.checkpoint_ref(job));
            }
            if !next_view(&mut views).await {
                return Ok(());
            }
        };
        if let Some(cut) = cut {
            let now = current(&supervisor, action, job);
            if let Some((job_now, _)) = now
                .as_ref()
                .filter(|(_, a)| a.stage_here < Stage::Checkpointed)
            {
                if proxied && first.stops_here {
                    released_here(&supervisor, job_now).await?;
                }
                let progress = Progress::Checkpointed {
                    checkpoint: cut.clone(),
                };
                if let Reported::ActionGone = report(&supervisor, action, progress).await? {
                    return Ok(());
                }
            }
            record.checkpoint_reported = Some(cut);
            supervisor.work.save_action(&record)?;
        }
    }

    // 3. Start the ranks this action puts here, once every source has stopped.
    if !first.start_ranks.is_empty() && !record.started {
        let (job_now, now) = loop {
            let Some((job_now, now)) = current(&supervisor, action, job) else {
                return Ok(());
            };
            if now.sources_stopped() {
                break (job_now, now);
            }
            if !next_view(&mut views).await {
                return Ok(());
            }
        };
        if let Err(e) = supervisor.start_job(
            &job_now,
            &now.start_ranks,
            now.start_master_node.as_ref().map(|n| n.as_str()),
            Some(action),
        ) {
            tracing::error!(action = action.0, "cannot start ranks: {e}");
            report(
                &supervisor,
                action,
                Progress::Failed {
                    reason: e.to_string(),
                },
            )
            .await?;
            record.finished = true;
            supervisor.work.save_action(&record)?;
            return Ok(());
        }
        record.started = true;
        supervisor.work.save_action(&record)?;
    }

    // 4. Done here (a stop, which takes no checkpoint, frees the devices with this report).
    if let Some((job_now, now)) = current(&supervisor, action, job) {
        if now.stage_here < Stage::Completed {
            if proxied && first.stops_here && !first.checkpoints {
                released_here(&supervisor, &job_now).await?;
            }
            report(&supervisor, action, Progress::Completed).await?;
        }
    }
    record.finished = true;
    supervisor.work.save_action(&record)?;
    tracing::info!(action = action.0, job = job.0, "action done on this node");
    Ok(())
}
