//! The crate's one error type, for what is not a command's outcome: bytes that do not decode,
//! and a state that breaks an invariant. Rejected commands are `Rejection`s, not errors.

use crate::invariants::InvariantViolation;

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("{what} is {len} bytes; the limit is {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} is too short to hold a format version ({len} bytes)")]
    Truncated { what: &'static str, len: usize },
    #[error("{what} has format version {found}; this build reads version {supported}")]
    UnsupportedVersion {
        what: &'static str,
        found: u16,
        supported: u16,
    },
    #[error("{what} does not decode: {detail}")]
    Decode { what: &'static str, detail: String },
    #[error("{what} has {extra} unexpected trailing bytes")]
    TrailingBytes { what: &'static str, extra: usize },
    #[error("encoding {what} failed: {detail}")]
    Encode { what: &'static str, detail: String },
    #[error("state invariant broken: {0}")]
    Invariant(#[from] InvariantViolation),
}
