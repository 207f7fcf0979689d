//! Named limits of the control plane (DESIGN.md rule 8): message sizes, chunk sizes, timeouts
//! and batch sizes. Nothing here allocates or decides; each is checked where it applies.

pub use singularity_proto::limits::{CONNECT_TIMEOUT_MS, MAX_GRPC_MESSAGE_BYTES};
/// Snapshot bytes sent in one install-snapshot request.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;
/// Largest client write (an encoded entry) accepted, in bytes.
pub const MAX_CLIENT_ENTRY_BYTES: usize = singularity_scheduler::limits::MAX_ENTRY_BYTES;
/// Entries returned by one `operator log` page.
pub const MAX_LOG_ENTRIES_PER_READ: u64 = 1_000;
/// Entries openraft sends in one append-entries request, at most. A new leader does not know
/// how far each follower's log matches its own, and openraft 0.9 probes for it with full
/// requests starting at the oldest entry kept: at 1,000 entries (batches of client writes,
/// megabytes) those probes delayed the first commit after a failover by 30-90 ms. Steady
/// replication sends one or two entries at a time, and each entry can hold a batch of 1,024
/// writes, so catching a follower up stays fast.
pub const MAX_ENTRIES_PER_APPEND: u64 = 64;
/// Encoded bytes of one append-entries request with more than one entry, at most. openraft
/// 0.9 gives each request one heartbeat interval; this keeps a request that catches a follower
/// up well within it (a single larger entry is still sent alone).
pub const MAX_APPEND_ENTRIES_BYTES: usize = 1024 * 1024;
/// Newest log entries each replica keeps in memory after storing them, at most, so that
/// replication and apply read them without RocksDB (older ones are read from RocksDB).
pub const MAX_CACHED_LOG_ENTRIES: usize = 1_024;
/// Encoded bytes of those entries, at most (the newest entry is kept whatever its size).
pub const MAX_CACHED_LOG_BYTES: usize = 16 * 1024 * 1024;
/// Idle append-entries links kept per peer for the next user (openraft makes a new network
/// client for each replication session and for each leadership check of a linearizable read;
/// reusing an open link saves the connection and preface round trips).
pub const MAX_IDLE_LINKS_PER_PEER: usize = 2;
/// A peer address no network client was made for in this long (a member removed from the
/// cluster) loses its shared channel and idle append-entries links, in milliseconds. A
/// replication session in progress keeps its own channel and link, so forgetting a member's
/// address that is merely quiet costs only one new connection for its next client.
pub const UNUSED_LINK_TTL_MS: u64 = 60_000;
/// The longest a leader handing its leadership over waits for the target to hold its whole
/// log, in milliseconds; past it the transfer is refused and nothing changed.
pub const TRANSFER_CATCH_UP_TIMEOUT_MS: u64 = 5_000;
/// The longest a leader waits for the target's answer to `TimeoutNow`, in milliseconds.
pub const TIMEOUT_NOW_RPC_MS: u64 = 1_000;
/// The least time a leader waits for the target to win once asked to campaign (ten election
/// timeouts when that is longer), in milliseconds.
pub const MIN_TRANSFER_ELECTION_WAIT_MS: u64 = 1_000;
/// How long a follower keeps an append-entries link on which no frame arrives, in
/// milliseconds: longer than a leader keeps an unused one (`UNUSED_LINK_TTL_MS`), so only the
/// links of leaders that vanished without closing them (a host lost) are closed this way.
pub const MAX_LINK_IDLE_MS: u64 = 2 * UNUSED_LINK_TTL_MS;
/// How long append-entries go as unary gRPC calls to a peer that did not answer the link's
/// preface (an older replica, during a rolling upgrade) before the link is tried again, in
/// milliseconds.
pub const UNARY_FALLBACK_MS: u64 = 10_000;
/// Default election timeout range, in milliseconds. With openraft 0.9 a follower that loses
/// its leader waits out the leader's lease (the max) plus its own random timeout in this range
/// (drawn once when the process starts), checked every 1.5 heartbeats, so a crashed leader is
/// replaced after about 200 to 280 ms. A follower whose earlier candidacy met a longer log
/// waits twice the max more (openraft keeps that flag until the node campaigns again), and two
/// candidates of one term cost one more timeout each: about 700 ms at worst. A leader has to be
/// silent for 195 ms before anyone campaigns. Loopback and LAN values: raise them across slower
/// links. (raft/BENCHMARKS.md has the measurements.)
pub const DEFAULT_ELECTION_TIMEOUT_MIN_MS: u64 = 75;
pub const DEFAULT_ELECTION_TIMEOUT_MAX_MS: u64 = 120;
/// Default heartbeat interval, in milliseconds (at most a third of the shortest election
/// timeout; openraft checks election timeouts every 1.5 heartbeats). openraft 0.9 also gives
/// every append-entries request this long before it gives up and sends it again, so it must
/// cover a follower's synced append on a busy disk: at 20 ms, a follower's slow fsyncs stalled
/// commits for half a second after a failover (one follower left); 25 ms is kept.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 25;
/// Applied entries after which a snapshot is taken.
pub const DEFAULT_SNAPSHOT_EVERY_ENTRIES: u64 = 10_000;
/// Log entries kept behind a snapshot for slow followers.
pub const DEFAULT_LOGS_KEPT_AFTER_SNAPSHOT: u64 = 1_000;
/// Most client writes the leader's group commit puts in one log entry.
pub const MAX_WRITES_PER_BATCH: usize = 1_024;
/// Most encoded bytes of client writes in one batch (a single larger write goes alone, up to
/// the scheduler's entry limit).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Batches of client writes proposed and not yet committed, at most. While they are in
/// flight the next writes wait and form the next batch (one fsync and one replication round
/// for all of them), so this trades pipelining against batch size.
pub const MAX_BATCHES_IN_FLIGHT: usize = 2;
/// Client writes waiting for a batch, at most; a write beyond it waits for room.
pub const MAX_QUEUED_WRITES: usize = 16_384;
