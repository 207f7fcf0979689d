//! Jobs: what a user submits (`JobSpec`), and what the state tracks about it (`Job`): its
//! phase, its rank-to-device mapping, its checkpoint, its metadata and its SLA ledger.
//!
//! `JobSpec::validate` is the single place a submission is checked (DESIGN.md rule 9). Phase
//! changes happen only in `ClusterState`'s apply code, never here.

use crate::ids::{ActionId, DeviceRef, JobId, NodeId};
use crate::limits::*;
use crate::names::{DeviceKind, TenantName};
use crate::outcome::Rejection;
use crate::tier::Tier;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// How a job's ranks run.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunSpec {
    /// A command started once per rank as a child process (as torchrun does).
    Command {
        argv: Vec<String>,
        env: BTreeMap<String, String>,
    },
    /// A worker program built on the device-proxy runtime, run under the device proxies.
    Worker { program: String, args: Vec<String> },
}

/// Everything a user says about a job at submission.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    pub tenant: TenantName,
    pub tier: Tier,
    /// Ranks; fixed for the life of the job (splicing changes only ranks per device).
    pub world_size: u32,
    pub device_kind: DeviceKind,
    pub memory_per_rank_bytes: u64,
    pub run: RunSpec,
    /// Times the job is restarted after its ranks fail before it is marked failed.
    pub max_restarts: u32,
    /// Initial metadata (user labels; also the registers of the Jepsen register workload).
    pub metadata: BTreeMap<String, String>,
}

fn check_len(field: &str, value: &str, max_bytes: usize) -> Result<(), Rejection> {
    if value.len() > max_bytes {
        return Err(Rejection::invalid(
            field,
            format!("is {} bytes; the limit is {max_bytes}", value.len()),
        ));
    }
    if value.contains('\0') {
        return Err(Rejection::invalid(field, "contains a NUL byte"));
    }
    Ok(())
}

/// Checks one metadata key and value.
pub fn validate_metadata_entry(key: &str, value: &str) -> Result<(), Rejection> {
    if key.is_empty() {
        return Err(Rejection::invalid("metadata", "a key is empty"));
    }
    check_len("metadata key", key, MAX_METADATA_KEY_BYTES)?;
    check_len("metadata value", value, MAX_METADATA_VALUE_BYTES)
}

impl JobSpec {
    /// Checks every field; the error names the first field that is wrong and how.
    pub fn validate(&self) -> Result<(), Rejection> {
        let name = self.name.trim();
        if name.is_empty() {
            return Err(Rejection::invalid("name", "must not be empty"));
        }
        if self.name.chars().count() > MAX_JOB_NAME_CHARS {
            return Err(Rejection::invalid(
                "name",
                format!("is longer than {MAX_JOB_NAME_CHARS} characters"),
            ));
        }
        if self.name.chars().any(char::is_control) {
            return Err(Rejection::invalid("name", "contains a control character"));
        }
        self.tenant.validate("tenant")?;
        self.device_kind.validate("device_kind")?;
        if self.world_size == 0 || self.world_size > MAX_WORLD_SIZE {
            return Err(Rejection::invalid(
                "world_size",
                format!(
                    "is {}; it must be between 1 and {MAX_WORLD_SIZE}",
                    self.world_size
                ),
            ));
        }
        if self.memory_per_rank_bytes == 0 || self.memory_per_rank_bytes > MAX_MEMORY_PER_RANK_BYTES
        {
            return Err(Rejection::invalid(
                "memory_per_rank_bytes",
                format!(
                    "is {}; it must be between 1 and {MAX_MEMORY_PER_RANK_BYTES}",
                    self.memory_per_rank_bytes
                ),
            ));
        }
        if self.max_restarts > MAX_RESTARTS_LIMIT {
            return Err(Rejection::invalid(
                "max_restarts",
                format!(
                    "is {}; the limit is {MAX_RESTARTS_LIMIT}",
                    self.max_restarts
                ),
            ));
        }
        match &self.run {
            RunSpec::Command { argv, env } => {
                if argv.is_empty() || argv[0].trim().is_empty() {
                    return Err(Rejection::invalid(
                        "command",
                        "is empty; give the program to run and its arguments",
                    ));
                }
                if argv.len() > MAX_COMMAND_ARGS {
                    return Err(Rejection::invalid(
                        "command",
                        format!(
                            "has {} arguments; the limit is {MAX_COMMAND_ARGS}",
                            argv.len()
                        ),
                    ));
                }
                for arg in argv {
                    check_len("command", arg, MAX_ARG_BYTES)?;
                }
                if env.len() > MAX_ENV_VARS {
                    return Err(Rejection::invalid(
                        "env",
                        format!("has {} variables; the limit is {MAX_ENV_VARS}", env.len()),
                    ));
                }
                for (key, value) in env {
                    let key_ok = !key.is_empty()
                        && !key.starts_with(|c: char| c.is_ascii_digit())
                        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !key_ok {
                        return Err(Rejection::invalid(
                            "env",
                            format!("{key:?} is not a valid variable name (letters, digits, '_', not starting with a digit)"),
                        ));
                    }
                    check_len("env", value, MAX_ARG_BYTES)?;
                }
            }
            RunSpec::Worker { program, args } => {
                if program.trim().is_empty() {
                    return Err(Rejection::invalid("program", "must not be empty"));
                }
                check_len("program", program, MAX_ARG_BYTES)?;
                if args.len() > MAX_COMMAND_ARGS {
                    return Err(Rejection::invalid(
                        "args",
                        format!(
                            "has {} arguments; the limit is {MAX_COMMAND_ARGS}",
                            args.len()
                        ),
                    ));
                }
                for arg in args {
                    check_len("args", arg, MAX_ARG_BYTES)?;
                }
            }
        }
        if self.metadata.len() > MAX_METADATA_ENTRIES {
            return Err(Rejection::invalid(
                "metadata",
                format!(
                    "has {} entries; the limit is {MAX_METADATA_ENTRIES}",
                    self.metadata.len()
                ),
            ));
        }
        for (key, value) in &self.metadata {
            validate_metadata_entry(key, value)?;
        }
        Ok(())
    }
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum JobPhase {
    /// Waiting for devices; with a checkpoint it resumes from it (it was preempted or lost).
    Pending,
    /// A place or resume action is in flight; its devices are held.
    Starting,
    /// Ranks run on the assigned devices.
    Running,
    /// A preempt action is in flight: checkpoint, then release.
    Preempting,
    /// A migrate action is in flight: checkpoint, restore on the target devices.
    Migrating,
    /// A resize action is in flight: checkpoint, restore on more or fewer devices.
    Resizing,
    /// A stop action is in flight (the job was cancelled while it held devices).
    Stopping,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobPhase {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobPhase::Succeeded | JobPhase::Failed | JobPhase::Cancelled
        )
    }

    /// Phases in which the job holds devices (its `assignment` is not empty).
    pub fn holds_devices(self) -> bool {
        matches!(
            self,
            JobPhase::Starting
                | JobPhase::Running
                | JobPhase::Preempting
                | JobPhase::Migrating
                | JobPhase::Resizing
                | JobPhase::Stopping
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobPhase::Pending => "pending",
            JobPhase::Starting => "starting",
            JobPhase::Running => "running",
            JobPhase::Preempting => "preempting",
            JobPhase::Migrating => "migrating",
            JobPhase::Resizing => "resizing",
            JobPhase::Stopping => "stopping",
            JobPhase::Succeeded => "succeeded",
            JobPhase::Failed => "failed",
            JobPhase::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A consistent checkpoint of all ranks at one step boundary.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CheckpointRef {
    /// Where it is (a directory the agents share, or an agent's address and path).
    pub location: String,
    /// The step boundary all ranks reached.
    pub step: u64,
}

/// Requested and delivered device-time of one job, accrued on leader time.
///
/// A job requests `world_size` devices from submission until it finishes; it is delivered the
/// devices it runs on while running (a spliced job on D of W devices gets D/W of its request).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SlaLedger {
    pub requested_device_ms: u64,
    pub delivered_device_ms: u64,
    /// Leader time up to which this ledger is accrued.
    pub accrued_until_ms: u64,
}

impl SlaLedger {
    /// Delivered over requested, in parts per million (a job that requested nothing: 1,000,000).
    pub fn attainment_ppm(&self) -> u32 {
        if self.requested_device_ms == 0 {
            return 1_000_000;
        }
        let ppm =
            u128::from(self.delivered_device_ms) * 1_000_000 / u128::from(self.requested_device_ms);
        ppm.min(1_000_000) as u32
    }
}

/// A job as the state tracks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub spec: JobSpec,
    pub phase: JobPhase,
    /// Bumped by every metadata update; the compare-and-set version.
    pub version: u64,
    pub metadata: BTreeMap<String, String>,
    /// Devices held, in rank order: rank `r` runs on `assignment[r / ranks_per_device]`.
    pub assignment: Vec<DeviceRef>,
    /// The action in flight for this job, if any (at most one at a time).
    pub action: Option<ActionId>,
    pub checkpoint: Option<CheckpointRef>,
    pub ledger: SlaLedger,
    pub submitted_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    /// Restarts after failures so far (bounded by `spec.max_restarts`).
    pub restarts: u32,
    pub preemptions: u32,
    /// A client asked to cancel while an action was in flight; the job stops when it settles.
    pub cancel_requested: bool,
    /// Nodes whose ranks of this job have exited successfully (the job succeeds when all have).
    pub exited_nodes: BTreeSet<NodeId>,
    /// Why the job is where it is, in words (the last decision or failure that moved it).
    pub last_reason: String,
}

impl Job {
    /// Ranks per device under the current assignment (the splicing factor); 0 when it holds none.
    pub fn ranks_per_device(&self) -> u32 {
        if self.assignment.is_empty() {
            0
        } else {
            self.spec.world_size / self.assignment.len() as u32
        }
    }

    /// The device rank `rank` runs on, if the job holds devices.
    pub fn rank_device(&self, rank: u32) -> Option<DeviceRef> {
        let per_device = self.ranks_per_device();
        if per_device == 0 || rank >= self.spec.world_size {
            return None;
        }
        self.assignment.get((rank / per_device) as usize).copied()
    }

    /// Distinct nodes of the current assignment, in order.
    pub fn nodes(&self) -> BTreeSet<NodeId> {
        self.assignment.iter().map(|d| d.node).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attainment_is_bounded() {
        let ledger = SlaLedger {
            requested_device_ms: 1000,
            delivered_device_ms: 950,
            accrued_until_ms: 0,
        };
        assert_eq!(ledger.attainment_ppm(), 950_000);
        assert_eq!(SlaLedger::default().attainment_ppm(), 1_000_000);
    }
}
