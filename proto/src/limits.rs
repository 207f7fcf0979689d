//! Named limits of the wire (DESIGN.md rule 8): message sizes and the client's timeouts and
//! retry bounds. Nothing here allocates or decides; each is checked where it applies.

/// Largest gRPC message a server or client accepts or sends, in bytes.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Longest a connection may take to open, in milliseconds.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Client-side deadline for one RPC, in milliseconds.
pub const CLIENT_RPC_TIMEOUT_MS: u64 = 10_000;
/// Attempts of one client call at most (leader hints followed, endpoints tried, retries).
pub const MAX_CLIENT_ATTEMPTS: u32 = 1_000;
/// Longest a client call keeps retrying before it gives up, in milliseconds: long enough to
/// ride out an election with the default timeouts many times over.
pub const MAX_CLIENT_RETRY_MS: u64 = 10_000;
/// First pause after every endpoint failed to take a call, in milliseconds; it doubles.
pub const MIN_CLIENT_BACKOFF_MS: u64 = 5;
/// Longest pause between two rounds of attempts, in milliseconds: short, so a write commits
/// soon after a new leader is elected.
pub const MAX_CLIENT_BACKOFF_MS: u64 = 50;
