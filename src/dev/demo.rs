//! The workload of `singularity dev --demo`: small real processes (`sh` scripts that count
//! steps, one per second, save their step in the job's checkpoint directory after every step
//! and resume from it) in three tiers, timed so that on two nodes the scheduler first places
//! a basic and a standard job that fill the fleet, then a premium job arrives and makes room
//! by shrinking the standard job and preempting the basic one; when the premium job is done
//! the basic job resumes from its checkpoint and the standard one grows back; when the standard
//! job is done, the basic job's node is drained for maintenance and the job migrates to the
//! freed node (the node returns to service at the end); all finish.
//!
//! It only submits jobs and reads their state through the public API; the decisions are the
//! scheduler's. Every wait is bounded (`STAGE_TIMEOUT_MS`).

use super::feed::{bounded, Feed};
use anyhow::{bail, Context};
use singularity_proto::query;
use singularity_raft::client::Client;
use singularity_scheduler::limits::DEFAULT_MAX_RESTARTS;
use singularity_scheduler::{
    Command, DeviceKind, Effect, Job, JobPhase, JobSpec, Node, NodeName, Outcome, RunSpec,
    TenantName, Tier,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What every rank of a demo job runs (`sh -c SCRIPT NAME`, with `STEPS` in its environment).
/// The step is written after every step (to a per-rank file, and by rank 0 to `step`, which the
/// agent reports with the checkpoint), so a SIGTERM loses nothing; the trap is in single quotes
/// so that `$step` is read when the signal arrives, not when the trap is set.
pub const STEP_SCRIPT: &str = r#"dir="$SINGULARITY_CHECKPOINT_DIR"; mine="$dir/step.$RANK"
step=0; [ -f "$mine" ] && step=$(cat "$mine")
if [ "$step" -gt 0 ]; then echo "rank $RANK of $WORLD_SIZE resuming at step $step on $SINGULARITY_NODE"
else echo "rank $RANK of $WORLD_SIZE starting on $SINGULARITY_NODE"; fi
trap 'echo "rank $RANK: SIGTERM at step $step, state saved"; exit 143' TERM
while [ "$step" -lt "$STEPS" ]; do
  sleep 1
  step=$((step + 1))
  echo "$step" > "$mine.tmp" && mv "$mine.tmp" "$mine"
  if [ "$RANK" = 0 ]; then echo "$step" > "$dir/step.tmp" && mv "$dir/step.tmp" "$dir/step"; fi
  echo "rank $RANK step $step/$STEPS"
done
echo "rank $RANK done after $STEPS steps"
"#;

/// The tenant of demo jobs.
const TENANT: &str = "demo";
/// Device memory one rank of a demo job asks for.
const MEMORY_PER_RANK_BYTES: u64 = 1 << 30;
/// How long the first jobs run before the premium job arrives (so they have steps to save).
const WARMUP_MS: u64 = 2_000;
/// Bound on waiting for the first jobs to run; the premium job is submitted anyway after it.
const STAGE_TIMEOUT_MS: u64 = 20_000;

/// One job of the demo.
#[derive(Clone, Debug)]
struct DemoJob {
    name: &'static str,
    tier: Tier,
    world_size: u32,
    steps: u32,
    id: Option<u64>,
}

impl DemoJob {
    fn spec(&self) -> anyhow::Result<JobSpec> {
        let mut env = BTreeMap::new();
        env.insert("STEPS".to_string(), self.steps.to_string());
        let spec = JobSpec {
            name: self.name.to_string(),
            tenant: TenantName::new(TENANT).map_err(|e| anyhow::anyhow!("{e}"))?,
            tier: self.tier,
            world_size: self.world_size,
            device_kind: DeviceKind::new("h100").map_err(|e| anyhow::anyhow!("{e}"))?,
            memory_per_rank_bytes: MEMORY_PER_RANK_BYTES,
            run: RunSpec::Command {
                argv: vec![
                    "sh".to_string(),
                    "-c".to_string(),
                    STEP_SCRIPT.to_string(),
                    self.name.to_string(),
                ],
                env,
            },
            max_restarts: DEFAULT_MAX_RESTARTS,
            metadata: BTreeMap::new(),
        };
        spec.validate()
            .map_err(|e| anyhow::anyhow!("demo job {}: {e}", self.name))?;
        Ok(spec)
    }
}

/// Where the demo is.
#[derive(Clone, Debug)]
enum Stage {
    Start,
    /// The first jobs are submitted; waiting for both to run.
    WaitRunning {
        deadline: Instant,
    },
    /// Both run; the premium job arrives at `at`.
    Warmup {
        at: Instant,
    },
    /// Everything is submitted; waiting for every job to finish. When the standard job is done
    /// while the basic one still runs, the basic one's node is drained (maintenance) so the
    /// basic job migrates to the node that was freed.
    Finishing,
    /// `node` is drained; it returns to service when every job has finished.
    Drained {
        node: NodeName,
    },
    Done,
}

/// The scheduler's counters the summary reports.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    preemptions: u64,
    resizes: u64,
    migrations: u64,
}

async fn counts(client: &mut Client) -> anyhow::Result<Counts> {
    let reply = bounded("reading the cluster's counters", async {
        Ok(client.read(query::CLUSTER, 0, false).await?)
    })
    .await?;
    let value: serde_json::Value = serde_json::from_str(&reply.json)?;
    let counter = |name: &str| value["counters"][name].as_u64().unwrap_or(0);
    Ok(Counts {
        preemptions: counter("preemptions"),
        resizes: counter("resizes"),
        migrations: counter("migrations"),
    })
}

/// The demo's state.
pub struct Demo {
    jobs: Vec<DemoJob>,
    stage: Stage,
    baseline: Option<Counts>,
    started: Instant,
}

impl Demo {
    /// The workload for two nodes of `devices_per_node` devices: a basic and a standard job of
    /// one node each, then a premium job of one and a half nodes.
    pub fn new(devices_per_node: u32) -> Demo {
        let n = devices_per_node.max(1);
        let job = |name, tier, world_size, steps| DemoJob {
            name,
            tier,
            world_size,
            steps,
            id: None,
        };
        Demo {
            jobs: vec![
                job("sweep", Tier::Basic, n, 10),
                job("train", Tier::Standard, n, 10),
                job("urgent", Tier::Premium, (n + n / 2).max(1), 4),
            ],
            stage: Stage::Start,
            baseline: None,
            started: Instant::now(),
        }
    }

    pub fn done(&self) -> bool {
        matches!(self.stage, Stage::Done)
    }

    async fn submit(
        &mut self,
        index: usize,
        client: &mut Client,
        feed: &mut Feed,
    ) -> anyhow::Result<()> {
        let spec = self.jobs[index].spec()?;
        let name = self.jobs[index].name;
        let result = bounded("submitting a demo job", async {
            Ok(client.write(Command::SubmitJob { spec }).await?)
        })
        .await?;
        let id = match result.outcome {
            Outcome::Accepted(Effect::JobSubmitted { job })
            | Outcome::Duplicate(Effect::JobSubmitted { job }) => job.0,
            other => bail!("the cluster refused demo job {name}: {other:?}"),
        };
        self.jobs[index].id = Some(id);
        feed.label_job(id, name, &self.jobs[index].tier.to_string());
        Ok(())
    }

    async fn jobs(&self, client: &mut Client) -> anyhow::Result<Vec<Job>> {
        let reply = bounded("listing jobs", async {
            Ok(client.read(query::JOBS, 0, false).await?)
        })
        .await?;
        let jobs: Vec<Job> = serde_json::from_str(&reply.json).context("jobs are not JSON")?;
        let ours: Vec<u64> = self.jobs.iter().filter_map(|j| j.id).collect();
        Ok(jobs
            .into_iter()
            .filter(|j| ours.contains(&j.id.0))
            .collect())
    }

    /// Moves the demo on by one step: submits what is due, notices when everything finished
    /// (and prints the summary then).
    pub async fn step(&mut self, client: &mut Client, feed: &mut Feed) -> anyhow::Result<()> {
        match self.stage {
            Stage::Start => {
                self.started = Instant::now();
                self.baseline = Some(counts(client).await?);
                feed.printer().note(&format!(
                    "demo: a basic and a standard job of {} ranks each fill both nodes",
                    self.jobs[0].world_size
                ));
                self.submit(0, client, feed).await?;
                self.submit(1, client, feed).await?;
                self.stage = Stage::WaitRunning {
                    deadline: Instant::now() + Duration::from_millis(STAGE_TIMEOUT_MS),
                };
            }
            Stage::WaitRunning { deadline } => {
                let jobs = self.jobs(client).await?;
                let running = jobs.iter().filter(|j| j.phase == JobPhase::Running).count();
                if running == 2 || Instant::now() >= deadline {
                    self.stage = Stage::Warmup {
                        at: Instant::now() + Duration::from_millis(WARMUP_MS),
                    };
                }
            }
            Stage::Warmup { at } => {
                if Instant::now() >= at {
                    feed.printer().note(&format!(
                        "demo: a premium job of {} ranks arrives; the fleet is full",
                        self.jobs[2].world_size
                    ));
                    self.submit(2, client, feed).await?;
                    self.stage = Stage::Finishing;
                }
            }
            Stage::Finishing | Stage::Drained { .. } => {
                let jobs = self.jobs(client).await?;
                if matches!(self.stage, Stage::Finishing) {
                    if let Some(node) = self.node_to_drain(client, &jobs).await? {
                        feed.printer().note(&format!(
                            "demo: {node} is drained for maintenance; its job moves to the node \
                             the standard job left"
                        ));
                        set_draining(client, &node, true).await?;
                        self.stage = Stage::Drained { node };
                        return Ok(());
                    }
                }
                if jobs.len() == self.jobs.len() && jobs.iter().all(|j| j.phase.is_terminal()) {
                    if let Stage::Drained { node } = &self.stage {
                        set_draining(client, node, false).await?;
                    }
                    self.summary(client, feed).await?;
                    self.stage = Stage::Done;
                    let first = self.jobs[0].id.unwrap_or(1);
                    feed.printer().note(&format!(
                        "the cluster stays up until Ctrl-C or --for: try `job list`, `job status \
                         {first}`, `job logs {first} --rank 0` (the resumed ranks say where they \
                         resumed), `operator log`"
                    ));
                }
            }
            Stage::Done => {}
        }
        Ok(())
    }

    /// The node to drain: the basic job's, once the standard job has succeeded and the basic
    /// one runs on a single node.
    async fn node_to_drain(
        &self,
        client: &mut Client,
        jobs: &[Job],
    ) -> anyhow::Result<Option<NodeName>> {
        let phase_of = |index: usize| {
            let id = self.jobs[index].id?;
            jobs.iter().find(|j| j.id.0 == id)
        };
        let (Some(basic), Some(standard), Some(premium)) = (phase_of(0), phase_of(1), phase_of(2))
        else {
            return Ok(None);
        };
        let ready = standard.phase == JobPhase::Succeeded
            && premium.phase.is_terminal()
            && basic.phase == JobPhase::Running
            && basic.nodes().len() == 1;
        if !ready {
            return Ok(None);
        }
        let node_id = basic.assignment[0].node;
        let reply = bounded("listing nodes", async {
            Ok(client.read(query::NODES, 0, false).await?)
        })
        .await?;
        let nodes: Vec<Node> = serde_json::from_str(&reply.json).context("nodes are not JSON")?;
        Ok(nodes.into_iter().find(|n| n.id == node_id).map(|n| n.name))
    }

    /// Prints what happened to the demo's jobs and what the scheduler did for them.
    pub async fn summary(&mut self, client: &mut Client, feed: &mut Feed) -> anyhow::Result<()> {
        let jobs = self.jobs(client).await?;
        let now = counts(client).await?;
        let base = self.baseline.unwrap_or_default();
        let succeeded = jobs
            .iter()
            .filter(|j| j.phase == JobPhase::Succeeded)
            .count();
        let finished = self.done() || jobs.iter().all(|j| j.phase.is_terminal());
        let printer = feed.printer();
        printer.note(&format!(
            "demo {} after {:.1}s: {succeeded} of {} jobs succeeded; the scheduler committed \
             {} preemption(s), {} resize(s), {} migration(s)",
            if finished { "finished" } else { "stopped" },
            self.started.elapsed().as_secs_f64(),
            self.jobs.len(),
            now.preemptions.saturating_sub(base.preemptions),
            now.resizes.saturating_sub(base.resizes),
            now.migrations.saturating_sub(base.migrations),
        ));
        for demo_job in &self.jobs {
            let Some(id) = demo_job.id else {
                println!("           {:<7} not submitted", demo_job.name);
                continue;
            };
            let (phase, preemptions) = jobs
                .iter()
                .find(|j| j.id.0 == id)
                .map(|j| (j.phase.to_string(), j.preemptions))
                .unwrap_or_else(|| ("unknown".to_string(), 0));
            println!(
                "           job {id} {:<7} {:<8} {} ranks, {:>2} steps: {phase}, preempted {preemptions} time(s)",
                demo_job.name, demo_job.tier.to_string(), demo_job.world_size, demo_job.steps
            );
        }
        Ok(())
    }

    /// Whether any job was submitted (a summary means something).
    pub fn started(&self) -> bool {
        !matches!(self.stage, Stage::Start)
    }
}

/// Drains `node` or returns it to service.
async fn set_draining(client: &mut Client, node: &NodeName, draining: bool) -> anyhow::Result<()> {
    let name = node.clone();
    let result = bounded("draining a node", async {
        Ok(client
            .write(Command::SetNodeDraining { name, draining })
            .await?)
    })
    .await?;
    if let Outcome::Rejected(rejection) = result.outcome {
        bail!("the cluster refused to change {node}'s draining: {rejection}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_fits_two_nodes_and_needs_room_for_the_premium_job() {
        for n in [1, 2, 4, 8] {
            let demo = Demo::new(n);
            let fleet = 2 * n;
            let first: u32 = demo.jobs[..2].iter().map(|j| j.world_size).sum();
            assert_eq!(first, fleet, "the first two fill the fleet");
            assert!(demo.jobs[2].world_size <= fleet);
            for job in &demo.jobs {
                job.spec().expect("valid spec");
            }
        }
    }

    /// The script really counts, saves on SIGTERM and resumes where it stopped.
    #[test]
    fn the_step_script_resumes_from_its_checkpoint() {
        let dir =
            std::env::temp_dir().join(format!("singularity-dev-script-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("step.0"), "2").expect("seed a checkpoint");
        let out = std::process::Command::new("sh")
            .args(["-c", STEP_SCRIPT, "test"])
            .env("SINGULARITY_CHECKPOINT_DIR", &dir)
            .env("RANK", "0")
            .env("WORLD_SIZE", "1")
            .env("SINGULARITY_NODE", "node-t")
            .env("STEPS", "3")
            .output()
            .expect("run the script");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(stdout.contains("resuming at step 2"), "{stdout}");
        assert!(stdout.contains("rank 0 step 3/3"), "{stdout}");
        assert!(!stdout.contains("step 1/3"), "{stdout}");
        assert_eq!(
            std::fs::read_to_string(dir.join("step"))
                .expect("step")
                .trim(),
            "3"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
