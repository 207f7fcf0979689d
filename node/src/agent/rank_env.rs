//! The environment of one rank of a process job, as torchrun sets it (`RANK`, `WORLD_SIZE`,
//! `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`), the visible device, and
//! Singularity's own variables (the job's checkpoint directory above all: a job that saves its
//! state there resumes where it stopped, wherever it is placed next).
//!
//! Pure: it computes names and values, it must not read the environment or start anything.

use singularity_scheduler::{JobId, RankPlacement};
use std::collections::BTreeMap;
use std::path::Path;

/// Set in every rank: the agent's work directory. A restarted agent finds the processes a
/// previous incarnation left behind by it.
pub const WORK_DIR_VAR: &str = "SINGULARITY_AGENT_WORK_DIR";
/// The job's checkpoint directory: it survives preemption and moves with the job.
pub const CHECKPOINT_DIR_VAR: &str = "SINGULARITY_CHECKPOINT_DIR";
/// A job may write the step it checkpointed at here (a decimal number) in its checkpoint
/// directory; the agent reports it with the checkpoint.
pub const STEP_FILE: &str = "step";
/// The first port `MASTER_PORT` is drawn from, and how many there are.
pub const MASTER_PORT_BASE: u16 = 29_500;
pub const MASTER_PORT_SPAN: u16 = 20_000;

/// Everything a rank's environment is computed from.
pub struct RankContext<'a> {
    pub job: JobId,
    pub job_name: &'a str,
    pub world_size: u32,
    /// How many of the job's ranks run on this node.
    pub local_world_size: u32,
    pub placement: RankPlacement,
    /// Host of rank 0: this node's loopback when rank 0 is here, else its node name.
    pub master_host: &'a str,
    pub node: &'a str,
    pub restarts: u32,
    pub checkpoint_dir: &'a Path,
    pub work_dir: &'a Path,
    /// The job's own variables from its spec; Singularity's win on a clash.
    pub job_env: &'a BTreeMap<String, String>,
}

/// The port rank 0 listens on for the job's rendezvous: fixed per job, so every node agrees
/// without talking to each other.
pub fn master_port(job: JobId) -> u16 {
    MASTER_PORT_BASE + (job.0.wrapping_mul(7_919) % u64::from(MASTER_PORT_SPAN)) as u16
}

/// The full environment added to a rank's inherited one, in name order.
pub fn rank_env(ctx: &RankContext<'_>) -> BTreeMap<String, String> {
    let mut env = ctx.job_env.clone();
    let device = ctx.placement.device_index.to_string();
    let ours = [
        ("RANK", ctx.placement.rank.to_string()),
        ("WORLD_SIZE", ctx.world_size.to_string()),
        ("LOCAL_RANK", ctx.placement.local_rank.to_string()),
        ("LOCAL_WORLD_SIZE", ctx.local_world_size.to_string()),
        ("MASTER_ADDR", ctx.master_host.to_string()),
        ("MASTER_PORT", master_port(ctx.job).to_string()),
        ("CUDA_VISIBLE_DEVICES", device.clone()),
        ("SINGULARITY_VISIBLE_DEVICES", device),
        ("SINGULARITY_JOB_ID", ctx.job.0.to_string()),
        ("SINGULARITY_JOB_NAME", ctx.job_name.to_string()),
        ("SINGULARITY_NODE", ctx.node.to_string()),
        ("SINGULARITY_RESTART_COUNT", ctx.restarts.to_string()),
        (CHECKPOINT_DIR_VAR, ctx.checkpoint_dir.display().to_string()),
        (WORK_DIR_VAR, ctx.work_dir.display().to_string()),
    ];
    for (name, value) in ours {
        env.insert(name.to_string(), value);
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchrun_variables_and_ours_win_over_the_jobs() {
        let mut job_env = BTreeMap::new();
        job_env.insert("RANK".to_string(), "99".to_string());
        job_env.insert("LR".to_string(), "0.1".to_string());
        let ctx = RankContext {
            job: JobId(12),
            job_name: "train",
            world_size: 4,
            local_world_size: 2,
            placement: RankPlacement {
                rank: 3,
                device_index: 1,
                local_rank: 1,
            },
            master_host: "gpu-0",
            node: "gpu-1",
            restarts: 2,
            checkpoint_dir: Path::new("/ckpt/job-12"),
            work_dir: Path::new("/var/lib/agent"),
            job_env: &job_env,
        };
        let env = rank_env(&ctx);
        assert_eq!(env["RANK"], "3");
        assert_eq!(env["LR"], "0.1");
        assert_eq!(env["WORLD_SIZE"], "4");
        assert_eq!(env["LOCAL_RANK"], "1");
        assert_eq!(env["LOCAL_WORLD_SIZE"], "2");
        assert_eq!(env["MASTER_ADDR"], "gpu-0");
        assert_eq!(env["MASTER_PORT"], master_port(JobId(12)).to_string());
        assert_eq!(env["CUDA_VISIBLE_DEVICES"], "1");
        assert_eq!(env[CHECKPOINT_DIR_VAR], "/ckpt/job-12");
        assert_eq!(env["SINGULARITY_RESTART_COUNT"], "2");
    }

    #[test]
    fn master_ports_stay_in_their_range() {
        for job in 0..50_000 {
            let port = master_port(JobId(job));
            assert!((MASTER_PORT_BASE..MASTER_PORT_BASE + MASTER_PORT_SPAN).contains(&port));
        }
        assert_ne!(master_port(JobId(1)), master_port(JobId(2)));
    }
}
