//! Named limits of the control plane (DESIGN.md rule 8): message sizes, chunk sizes, timeouts
//! and batch sizes. Nothing here allocates or decides; each is checked where it applies.

/// Largest gRPC message a server or client accepts or sends, in bytes.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Snapshot bytes sent in one install-snapshot request.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;
/// Largest client write (an encoded entry) accepted, in bytes.
pub const MAX_CLIENT_ENTRY_BYTES: usize = singularity_scheduler::limits::MAX_ENTRY_BYTES;
/// Entries returned by one `operator log` page.
pub const MAX_LOG_ENTRIES_PER_READ: u64 = 1_000;
/// Entries openraft sends in one append-entries request.
pub const MAX_ENTRIES_PER_APPEND: u64 = 1_000;
/// Default election timeout range, in milliseconds.
pub const DEFAULT_ELECTION_TIMEOUT_MIN_MS: u64 = 1_000;
pub const DEFAULT_ELECTION_TIMEOUT_MAX_MS: u64 = 2_000;
/// Default heartbeat interval, in milliseconds (well below the election timeout).
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 250;
/// Default time a replica-to-replica connection may take to open, in milliseconds.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Applied entries after which a snapshot is taken.
pub const DEFAULT_SNAPSHOT_EVERY_ENTRIES: u64 = 10_000;
/// Log entries kept behind a snapshot for slow followers.
pub const DEFAULT_LOGS_KEPT_AFTER_SNAPSHOT: u64 = 1_000;
/// Client-side deadline for one RPC, in milliseconds.
pub const CLIENT_RPC_TIMEOUT_MS: u64 = 10_000;
/// Times a client follows a leader hint or retries before giving up.
pub const MAX_CLIENT_ATTEMPTS: u32 = 60;
/// Longest pause between two attempts of a client, in milliseconds: short, so a write
/// commits soon after a new leader is elected.
pub const MAX_CLIENT_BACKOFF_MS: u64 = 100;
