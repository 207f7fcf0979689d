//! Byte encodings of log entries and state snapshots: a 2-byte little-endian format version,
//! then the value encoded with bincode 2 (serde, standard configuration).
//!
//! Decoding untrusted bytes is bounded (`MAX_ENTRY_BYTES`, `MAX_SNAPSHOT_BYTES`) and fails with
//! a `SchedulerError`, never a panic. Changing what these bytes look like for an existing version
//! is a bug; `tests/golden.rs` guards it.

use crate::command::{ClientRequest, Command, Entry, FORMAT_VERSION};
use crate::error::SchedulerError;
use crate::limits::MAX_ENTRY_BYTES;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_FORMAT_VERSION: u16 = 1;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `value` behind a version prefix.
pub(crate) fn encode_versioned<T: Serialize>(
    what: &'static str,
    version: u16,
    value: &T,
) -> Result<Vec<u8>, SchedulerError> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&version.to_le_bytes());
    bincode::serde::encode_into_std_write(value, &mut out, config()).map_err(|e| {
        SchedulerError::Encode {
            what,
            detail: e.to_string(),
        }
    })?;
    Ok(out)
}

/// Decodes a value written by `encode_versioned`, checking size, version and trailing bytes.
pub(crate) fn decode_versioned<T: DeserializeOwned>(
    what: &'static str,
    supported: u16,
    max_bytes: usize,
    bytes: &[u8],
) -> Result<T, SchedulerError> {
    if bytes.len() > max_bytes {
        return Err(SchedulerError::TooLarge {
            what,
            len: bytes.len(),
            max: max_bytes,
        });
    }
    if bytes.len() < 2 {
        return Err(SchedulerError::Truncated {
            what,
            len: bytes.len(),
        });
    }
    let found = u16::from_le_bytes([bytes[0], bytes[1]]);
    if found != supported {
        return Err(SchedulerError::UnsupportedVersion {
            what,
            found,
            supported,
        });
    }
    let body = &bytes[2..];
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(body, config()).map_err(|e| {
        SchedulerError::Decode {
            what,
            detail: e.to_string(),
        }
    })?;
    if used != body.len() {
        return Err(SchedulerError::TrailingBytes {
            what,
            extra: body.len() - used,
        });
    }
    Ok(value)
}

impl Entry {
    /// The bytes stored in the log for this entry.
    pub fn encode(&self) -> Result<Vec<u8>, SchedulerError> {
        if self.format_version != FORMAT_VERSION {
            return Err(SchedulerError::UnsupportedVersion {
                what: "log entry",
                found: self.format_version,
                supported: FORMAT_VERSION,
            });
        }
        let body = EntryBodyRef {
            client: self.client,
            leader_time_ms: self.leader_time_ms,
            command: &self.command,
        };
        let bytes = encode_versioned("log entry", FORMAT_VERSION, &body)?;
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(SchedulerError::TooLarge {
                what: "log entry",
                len: bytes.len(),
                max: MAX_ENTRY_BYTES,
            });
        }
        Ok(bytes)
    }

    /// Reads an entry from the log's bytes.
    pub fn decode(bytes: &[u8]) -> Result<Entry, SchedulerError> {
        let body: EntryBody =
            decode_versioned("log entry", FORMAT_VERSION, MAX_ENTRY_BYTES, bytes)?;
        Ok(Entry {
            format_version: FORMAT_VERSION,
            client: body.client,
            leader_time_ms: body.leader_time_ms,
            command: body.command,
        })
    }
}

/// The encoded part of an entry; the version travels in the prefix.
#[derive(serde::Deserialize)]
struct EntryBody {
    client: Option<ClientRequest>,
    leader_time_ms: u64,
    command: Command,
}

/// The same fields as `EntryBody`, borrowed, so encoding does not copy the command.
#[derive(serde::Serialize)]
struct EntryBodyRef<'a> {
    client: Option<ClientRequest>,
    leader_time_ms: u64,
    command: &'a Command,
}
