//! Named limits on everything the scheduler state holds or accepts (DESIGN.md rule 8).
//!
//! Every limit here is checked where input enters `ClusterState::apply`, and a breach is
//! rejected with `Rejection::LimitExceeded` naming the limit. Nothing here allocates or decides.

/// Largest encoded log entry accepted by `Entry::decode`, in bytes.
pub const MAX_ENTRY_BYTES: usize = 4 * 1024 * 1024;
/// Largest encoded snapshot accepted by `ClusterState::decode_snapshot`, in bytes.
pub const MAX_SNAPSHOT_BYTES: usize = 1024 * 1024 * 1024;

/// Nodes registered at once.
pub const MAX_NODES: usize = 50_000;
/// Devices on one node.
pub const MAX_DEVICES_PER_NODE: usize = 64;
/// Largest device memory accepted, in bytes (4 TiB).
pub const MAX_DEVICE_MEMORY_BYTES: u64 = 4 << 40;

/// Jobs that are not finished (pending, starting, running, moving, stopping).
pub const MAX_ACTIVE_JOBS: usize = 1_000_000;
/// Active jobs of one tenant.
pub const MAX_ACTIVE_JOBS_PER_TENANT: usize = 100_000;
/// Finished jobs kept in the state for `job status`; older ones are forgotten (the log keeps them).
pub const MAX_FINISHED_JOBS_RETAINED: usize = 10_000;
/// Ranks of one job.
pub const MAX_WORLD_SIZE: u32 = 4_096;
/// Largest memory need of one rank, in bytes (4 TiB).
pub const MAX_MEMORY_PER_RANK_BYTES: u64 = 4 << 40;
/// Restarts a job may ask for after failures of its ranks.
pub const MAX_RESTARTS_LIMIT: u32 = 100;
/// Restarts a job gets when its spec does not say.
pub const DEFAULT_MAX_RESTARTS: u32 = 3;

/// Characters in a job name.
pub const MAX_JOB_NAME_CHARS: usize = 128;
/// Characters in a node, tenant, device-kind or locality-domain name.
pub const MAX_NAME_CHARS: usize = 64;
/// Arguments of a job's command.
pub const MAX_COMMAND_ARGS: usize = 256;
/// Bytes in one command argument or environment value.
pub const MAX_ARG_BYTES: usize = 4_096;
/// Environment variables of a job.
pub const MAX_ENV_VARS: usize = 128;

/// Metadata keys on one job.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Bytes in one metadata key.
pub const MAX_METADATA_KEY_BYTES: usize = 128;
/// Bytes in one metadata value.
pub const MAX_METADATA_VALUE_BYTES: usize = 4_096;

/// Actions in one plan (one log entry).
pub const MAX_ACTIONS_PER_PLAN: usize = 4_096;
/// Actions in flight at once.
pub const MAX_ACTIONS_IN_FLIGHT: usize = 1_000_000;
/// Bytes in an action's human-readable reason.
pub const MAX_REASON_BYTES: usize = 1_024;
/// Bytes in a checkpoint reference.
pub const MAX_CHECKPOINT_REF_BYTES: usize = 1_024;

/// Client sessions remembered for exactly-once retries; the least recently seen is forgotten first.
pub const MAX_CLIENT_SESSIONS: usize = 100_000;
