//! Named limits of the wire (DESIGN.md rule 8): message sizes and the client's timeouts and
//! retry bounds. Nothing here allocates or decides; each is checked where it applies.

/// Largest gRPC message a server or client accepts or sends, in bytes.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Longest a connection may take to open, in milliseconds.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Client-side deadline for one RPC, in milliseconds.
pub const CLIENT_RPC_TIMEOUT_MS: u64 = 10_000;
/// Times a client follows a leader hint or retries before giving up.
pub const MAX_CLIENT_ATTEMPTS: u32 = 60;
/// Longest pause between two attempts of a client, in milliseconds: short, so a write
/// commits soon after a new leader is elected.
pub const MAX_CLIENT_BACKOFF_MS: u64 = 100;
