//! Proxied worker jobs (`RunSpec::Worker`): their ranks run as the same supervised child
//! processes as command ranks (launcher thread, process groups, log files, exit monitor), but
//! each is attached to the device proxy of its device through the worker runtime's environment,
//! several ranks per proxy when the view splices them. A preempt, migrate or resize asks the
//! job's proxies for a checkpoint-and-stop into `CHECKPOINT_ROOT/job-N/proxy-<action>`: the
//! ranks agree on a step boundary, the proxies write every buffer and host state with a
//! manifest and checksums, and the workers exit with `PREEMPTED_EXIT_CODE`. A later start
//! restores from the job's committed checkpoint, verified (every checksum) before any rank
//! starts.
//!
//! The proxies' allreduce and barrier go through a shared-memory segment on one machine
//! (`crate::collective`), so a worker job whose ranks span nodes is refused with that reason.
//!
//! It must not decide placement (the view does) nor write checkpoints itself (the proxies do).

use super::job_run::RankLaunch;
use super::rank_env::{rank_env, RankContext};
use super::supervisor::Supervisor;
use crate::checkpoint::{self, MANIFEST};
use crate::error::{NodeError, Result};
use crate::runtime::env;
use crate::shm::SHM_DIR;
use singularity_scheduler::{ActionId, CheckpointRef, JobId, NodeJob, RankPlacement};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bytes of each rank's slot in the job's collective segment (the largest buffer one
/// allreduce can sum); the runtime's own default.
pub const WORKER_COLLECTIVE_BYTES: u64 = 4 << 20;
/// Longest wait, after the checkpoint request, for every worker to reach the cut, write its
/// part and exit; then its ranks are stopped like command ranks and the job's previous
/// checkpoint stands.
pub const WORKER_CHECKPOINT_TIMEOUT_MS: u64 = 120_000;
/// Poll interval while waiting for workers to exit.
const WORKER_EXIT_POLL_MS: u64 = 20;
/// Longest wait, after a job's workers here exited, for their device proxies to drop the
/// ranks (and free their device memory); the proxies notice a worker is gone when its socket
/// closes. Past it the executor reports nothing and tries again on the next view.
pub const PROXY_RELEASE_TIMEOUT_MS: u64 = 10_000;
/// Hex digits of the work-directory token in incarnation names.
const TOKEN_HEX_DIGITS: usize = 12;
/// Prefix of collective segments in `SHM_DIR` (see `crate::collective::segment_path`).
const SEGMENT_PREFIX: &str = "singularity-coll-";

/// Reconcile starts (no action) on this process, to name their incarnations apart.
static RECONCILE_STARTS: AtomicU64 = AtomicU64::new(0);

/// The job's name for the runtime, the proxies and checkpoint manifests: fixed for the job's
/// life, so a checkpoint taken on one node restores on another.
pub fn runtime_job_name(job: JobId) -> String {
    format!("job-{}", job.0)
}

/// A token naming this work directory in incarnations: collective segments of different
/// agents (and clusters) on one machine never share a name, and a restarted agent finds its
/// predecessor's.
pub fn work_dir_token(work_dir: &Path) -> String {
    let hash = blake3::hash(work_dir.as_os_str().as_encoded_bytes());
    hash.to_hex()[..TOKEN_HEX_DIGITS].to_string()
}

/// One launch of a job's workers: the action that starts them, or a reconcile start.
fn incarnation(work_dir: &Path, started_by: Option<ActionId>) -> String {
    let token = work_dir_token(work_dir);
    match started_by {
        Some(action) => format!("{token}-a{}", action.0),
        None => format!(
            "{token}-r{}x{}",
            std::process::id(),
            RECONCILE_STARTS.fetch_add(1, Ordering::Relaxed)
        ),
    }
}

/// Removes the collective segments a killed agent's workers left in `SHM_DIR` (a job whose
/// ranks did not all attach keeps its segment). Returns what was removed.
pub fn remove_stale_segments(work_dir: &Path) -> Vec<PathBuf> {
    let marker = format!("-{}-", work_dir_token(work_dir));
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(SHM_DIR) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(SEGMENT_PREFIX)
            && name.contains(&marker)
            && std::fs::remove_file(entry.path()).is_ok()
        {
            removed.push(entry.path());
        }
    }
    removed
}

/// Where the proxies write the checkpoint `action` takes of `job`.
pub fn proxy_checkpoint_dir(supervisor: &Supervisor, job: JobId, action: ActionId) -> PathBuf {
    supervisor
        .checkpoint_dir(job)
        .join(format!("proxy-{}", action.0))
}

/// The checkpoint a start of `job` restores from: the action's agreed cut (migrate, resize) or
/// the job's committed one (resume, restart). `None`: start fresh (no checkpoint, or one at
/// step 0 that holds no manifest: the job was stopped before any checkpoint existed).
fn restore_dir(job: &NodeJob) -> Result<Option<PathBuf>> {
    let cut = job
        .action
        .as_ref()
        .and_then(|a| a.checkpoint.clone())
        .or_else(|| job.checkpoint.clone());
    let Some(cut) = cut else { return Ok(None) };
    let dir = PathBuf::from(&cut.location);
    if !dir.join(MANIFEST).exists() {
        if cut.step == 0 {
            return Ok(None);
        }
        return Err(NodeError::BadCheckpoint {
            path: dir,
            detail: format!(
                "the job's checkpoint at step {} has no {MANIFEST} (is the checkpoint directory \
                 shared with the node that wrote it?); refusing to start from scratch",
                cut.step
            ),
        });
    }
    let manifest = checkpoint::verify(&dir)?;
    let name = runtime_job_name(job.id);
    if manifest.job != name || manifest.world_size != job.world_size || manifest.step != cut.step {
        return Err(NodeError::BadCheckpoint {
            path: dir,
            detail: format!(
                "holds {} (world size {}) at step {}, but {} (world size {}) committed step {}",
                manifest.job, manifest.world_size, manifest.step, name, job.world_size, cut.step
            ),
        });
    }
    Ok(Some(dir))
}

/// Starts `ranks` of worker job `job` on this node's proxies (started as needed).
pub(super) fn start(
    supervisor: &Supervisor,
    job: &NodeJob,
    ranks: &[RankPlacement],
    started_by: Option<ActionId>,
    program: &str,
    args: &[String],
) -> Result<()> {
    if ranks.len() as u32 != job.world_size {
        return Err(NodeError::Config(format!(
            "proxied worker {} has {} of its {} ranks on this node: the device proxies' \
             allreduce and barrier use a shared-memory segment on one machine, so a worker job \
             must run all its ranks on one node (give it a world size one node's devices can \
             hold, spliced if need be, or submit it as a command job)",
            job.id,
            ranks.len(),
            job.world_size
        )));
    }
    let restore = restore_dir(job)?;
    let checkpoint_dir = supervisor.checkpoint_dir(job.id);
    std::fs::create_dir_all(&checkpoint_dir)
        .map_err(|e| NodeError::io(format!("creating {}", checkpoint_dir.display()), e))?;
    let name = runtime_job_name(job.id);
    let incarnation = incarnation(supervisor.work.root(), started_by);
    let argv: Vec<String> = std::iter::once(program.to_string())
        .chain(args.iter().cloned())
        .collect();
    let no_env = BTreeMap::new();
    let mut launches = Vec::with_capacity(ranks.len());
    for placement in ranks {
        let socket = supervisor.proxies.ensure(placement.device_index)?;
        let mut env = rank_env(&RankContext {
            job: job.id,
            job_name: &job.name,
            world_size: job.world_size,
            local_world_size: ranks.len() as u32,
            placement: *placement,
            master_host: "127.0.0.1",
            node: &supervisor.config.node,
            restarts: job.restarts,
            checkpoint_dir: &checkpoint_dir,
            work_dir: supervisor.work.root(),
            job_env: &no_env,
        });
        let restore_value = restore
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        for (var, value) in [
            (env::JOB, name.clone()),
            (env::INCARNATION, incarnation.clone()),
            (env::RANK, placement.rank.to_string()),
            (env::WORLD_SIZE, job.world_size.to_string()),
            (env::PROXY_SOCKET, socket.display().to_string()),
            (env::COLLECTIVE_BYTES, WORKER_COLLECTIVE_BYTES.to_string()),
            // Empty means none to the runtime, and hides one the agent may have inherited.
            (env::RESTORE_DIR, restore_value),
        ] {
            env.insert(var.to_string(), value);
        }
        launches.push(RankLaunch {
            rank: placement.rank,
            argv: argv.clone(),
            env,
            cwd: supervisor.work.job_dir(job.id),
            stdout: supervisor.work.log_path(job.id, placement.rank, false),
            stderr: supervisor.work.log_path(job.id, placement.rank, true),
        });
    }
    let devices: BTreeSet<u16> = ranks.iter().map(|p| p.device_index).collect();
    tracing::info!(
        job = job.id.0,
        %incarnation,
        devices = ?devices,
        ranks_per_device = ranks.len() / devices.len().max(1),
        restore = ?restore,
        "starting proxied worker ranks"
    );
    supervisor.start_run(job.id, started_by, launches)
}

/// Checkpoints the ranks of worker job `job` on this node through their proxies and stops
/// them (for `action`). If the proxies cannot take it (the workers already ended, a rank
/// failed, the cut did not come in time) the ranks are stopped anyway and the job's previous
/// checkpoint stands: `checkpoint_ref` then reports that one.
pub(super) async fn checkpoint_and_stop(
    supervisor: &Supervisor,
    job: &NodeJob,
    action: ActionId,
    why: String,
) -> Result<()> {
    let Some(mut run) = supervisor.take_run(job.id) else {
        return Ok(());
    };
    // From here the workers' exits (75 after the checkpoint) are not failures.
    run.stopping = true;
    let dir = proxy_checkpoint_dir(supervisor, job.id, action);
    let devices: BTreeSet<u16> = job.ranks_here.iter().map(|p| p.device_index).collect();
    let sockets: Vec<PathBuf> = devices
        .iter()
        .map(|d| supervisor.proxies.socket_path(*d))
        .collect();
    let name = runtime_job_name(job.id);
    let request_dir = dir.clone();
    let requested = tokio::task::spawn_blocking(move || {
        crate::launcher::checkpoint_job(&name, &sockets, &request_dir, true)
    })
    .await
    .map_err(|e| NodeError::Proxy(format!("the checkpoint request task failed: {e}")))
    .and_then(|r| r);
    let mut exited = false;
    match requested {
        Ok(()) => {
            let deadline = Instant::now() + Duration::from_millis(WORKER_CHECKPOINT_TIMEOUT_MS);
            while Instant::now() < deadline {
                if run.all_exited() {
                    exited = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(WORKER_EXIT_POLL_MS)).await;
            }
            if !exited {
                tracing::error!(
                    job = job.id.0,
                    action = action.0,
                    "the workers did not checkpoint and exit within \
                     {WORKER_CHECKPOINT_TIMEOUT_MS} ms; stopping them"
                );
            }
        }
        Err(e) => tracing::error!(
            job = job.id.0,
            action = action.0,
            "the proxies did not take the checkpoint ({e}); stopping the workers"
        ),
    }
    // A worker alive after SIGKILL keeps the run (`stop_run`): nothing is reported, the devices
    // stay the job's, and the next attempt stops it again.
    let run = if exited {
        run
    } else {
        supervisor.stop_run(run).await?.0
    };
    tracing::info!(
        job = job.id.0,
        action = action.0,
        dir = %dir.display(),
        "worker ranks stopped ({why})"
    );
    supervisor.record_stopped(&run, why)
}

/// Waits until the device proxies of `devices` (indices on this node) have no rank attached:
/// the job's workers there exited and the proxies dropped their ranks and device memory, so a
/// job placed on these devices next finds them empty. Bounded by `PROXY_RELEASE_TIMEOUT_MS`;
/// an error means a proxy still holds a rank (or cannot be asked), and nothing may be reported.
pub(super) async fn wait_for_proxies_to_release(
    supervisor: &Supervisor,
    job: JobId,
    devices: &BTreeSet<u16>,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_millis(PROXY_RELEASE_TIMEOUT_MS);
    let mut waiting: Vec<u16> = devices.iter().copied().collect();
    loop {
        let sockets: Vec<(u16, PathBuf)> = waiting
            .iter()
            .filter_map(|&d| supervisor.proxies.live_socket(d).map(|s| (d, s)))
            .collect();
        // The proxies answer on their control sockets: blocking calls, off the async threads.
        let answers = tokio::task::spawn_blocking(move || {
            sockets
                .into_iter()
                .map(|(d, socket)| (d, crate::launcher::stats(&socket)))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| NodeError::Proxy(format!("the proxy stats task failed: {e}")))?;
        let mut still = Vec::new();
        let mut last_error = None;
        for (device, answer) in answers {
            match answer {
                Ok(stats) if stats.ranks_attached == 0 => {}
                Ok(_) => still.push(device),
                Err(e) => {
                    still.push(device);
                    last_error = Some(e);
                }
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let why = last_error.map_or_else(
                || "ranks are still attached".to_string(),
                |e| format!("cannot ask them: {e}"),
            );
            return Err(NodeError::Timeout {
                what: format!(
                    "the device proxies of devices {still:?} to release the ranks of {job} ({why})"
                ),
                timeout_ms: PROXY_RELEASE_TIMEOUT_MS,
            });
        }
        waiting = still;
        tokio::time::sleep(Duration::from_millis(WORKER_EXIT_POLL_MS)).await;
    }
}

/// The checkpoint this node reports for `action` of worker job `job`: the proxies' checkpoint
/// of this action if it is complete and intact (every checksum verified), else the job's
/// previous committed checkpoint, else a fresh start (the job's checkpoint directory, step 0,
/// no manifest).
pub(super) async fn checkpoint_ref(
    supervisor: &Supervisor,
    job: &NodeJob,
    action: ActionId,
) -> CheckpointRef {
    let dir = proxy_checkpoint_dir(supervisor, job.id, action);
    let verify_dir = dir.clone();
    let verified = tokio::task::spawn_blocking(move || checkpoint::verify(&verify_dir))
        .await
        .map_err(|e| NodeError::Proxy(format!("the verification task failed: {e}")))
        .and_then(|r| r);
    let name = runtime_job_name(job.id);
    match verified {
        Ok(m) if m.job == name && m.world_size == job.world_size => {
            return CheckpointRef {
                location: dir.display().to_string(),
                step: m.step,
            }
        }
        Ok(m) => tracing::error!(
            job = job.id.0,
            "checkpoint {} holds {} (world size {}), not this job",
            dir.display(),
            m.job,
            m.world_size
        ),
        Err(e) => tracing::warn!(
            job = job.id.0,
            action = action.0,
            "no usable proxy checkpoint for this action ({e})"
        ),
    }
    let fallback = job.checkpoint.clone().unwrap_or_else(|| CheckpointRef {
        location: supervisor.checkpoint_dir(job.id).display().to_string(),
        step: 0,
    });
    tracing::warn!(
        job = job.id.0,
        "reporting the job's previous checkpoint instead: step {} at {}",
        fallback.step,
        fallback.location
    );
    fallback
}
