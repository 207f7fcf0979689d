//! Byte encodings of what the stores keep: log records (the log id, and for client and leader
//! entries the scheduler's own `Entry::encode` bytes, one per entry of a batch), votes and log
//! ids. Each record starts
//! with a format version. Decoding is bounded and fails with a `RaftError`, never a panic.

use crate::error::RaftError;
use crate::limits::{MAX_BATCH_BYTES, MAX_WRITES_PER_BATCH};
use crate::proposal::Proposal;
use crate::types::{LogEntry, LogId, NodeId};
use openraft::{BasicNode, EntryPayload, Membership};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use singularity_scheduler::limits::MAX_ENTRY_BYTES;
use singularity_scheduler::Entry;

/// The log record format this build writes and reads. (Batches were added as a new payload
/// variant at the end, so records written before them still decode.)
pub const LOG_RECORD_VERSION: u16 = 1;
/// Bytes a record adds around its entries: the log id, the payload tag, and a length prefix
/// per entry of a batch.
const RECORD_OVERHEAD_BYTES: usize = 4096 + 16 * MAX_WRITES_PER_BATCH;
/// Largest stored value decoded, in bytes: the largest single entry or batch, with overhead.
pub const MAX_RECORD_BYTES: usize = if MAX_ENTRY_BYTES > MAX_BATCH_BYTES {
    MAX_ENTRY_BYTES + RECORD_OVERHEAD_BYTES
} else {
    MAX_BATCH_BYTES + RECORD_OVERHEAD_BYTES
};

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `value` behind a 2-byte version.
pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, RaftError> {
    let mut out = LOG_RECORD_VERSION.to_le_bytes().to_vec();
    bincode::serde::encode_into_std_write(value, &mut out, config()).map_err(|e| {
        RaftError::Encode {
            what,
            detail: e.to_string(),
        }
    })?;
    Ok(out)
}

/// Decodes a value written by `encode`, checking its size, version and trailing bytes.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, RaftError> {
    decode_bounded(what, bytes, MAX_RECORD_BYTES)
}

/// `decode` with an explicit size limit.
pub fn decode_bounded<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
    max_bytes: usize,
) -> Result<T, RaftError> {
    let fail = |detail: String| RaftError::Decode { what, detail };
    if bytes.len() > max_bytes {
        return Err(fail(format!(
            "{} bytes; the limit is {max_bytes}",
            bytes.len()
        )));
    }
    if bytes.len() < 2 {
        return Err(fail(format!("truncated at {} bytes", bytes.len())));
    }
    let version = u16::from_le_bytes([bytes[0], bytes[1]]);
    if version != LOG_RECORD_VERSION {
        return Err(fail(format!(
            "format version {version}; this build reads {LOG_RECORD_VERSION}"
        )));
    }
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(&bytes[2..], config())
        .map_err(|e| fail(e.to_string()))?;
    if used != bytes.len() - 2 {
        return Err(fail(format!("{} trailing bytes", bytes.len() - 2 - used)));
    }
    Ok(value)
}

/// What a log record holds besides its id.
#[derive(Serialize, Deserialize)]
enum RecordPayload {
    Blank,
    /// `Entry::encode` bytes.
    Normal(Vec<u8>),
    Membership(Membership<NodeId, BasicNode>),
    /// `Entry::encode` bytes of each client write of a batch, in apply order.
    Batch(Vec<Vec<u8>>),
}

#[derive(Serialize, Deserialize)]
struct Record {
    log_id: LogId,
    payload: RecordPayload,
}

/// The big-endian key of a log index, so RocksDB orders the log by index.
pub fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Reads an index back from its key.
pub fn key_index(key: &[u8]) -> Result<u64, RaftError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| RaftError::Decode {
        what: "log key",
        detail: format!("{} bytes, expected 8", key.len()),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// Encodes a log entry for the log column family.
pub fn encode_entry(entry: &LogEntry) -> Result<Vec<u8>, RaftError> {
    let payload = match &entry.payload {
        EntryPayload::Blank => RecordPayload::Blank,
        EntryPayload::Normal(Proposal::One(data)) => RecordPayload::Normal(data.encode()?),
        EntryPayload::Normal(Proposal::Batch(entries)) => RecordPayload::Batch(
            entries
                .iter()
                .map(Entry::encode)
                .collect::<Result<_, _>>()?,
        ),
        EntryPayload::Membership(m) => RecordPayload::Membership(m.clone()),
    };
    encode(
        "log record",
        &Record {
            log_id: entry.log_id,
            payload,
        },
    )
}

/// Decodes a log entry from the log column family.
pub fn decode_entry(bytes: &[u8]) -> Result<LogEntry, RaftError> {
    let record: Record = decode("log record", bytes)?;
    let payload = match record.payload {
        RecordPayload::Blank => EntryPayload::Blank,
        RecordPayload::Normal(data) => EntryPayload::Normal(Proposal::One(Entry::decode(&data)?)),
        RecordPayload::Batch(entries) => {
            if entries.is_empty() || entries.len() > MAX_WRITES_PER_BATCH {
                return Err(RaftError::Decode {
                    what: "log record",
                    detail: format!(
                        "a batch of {} entries; a batch holds 1 to {MAX_WRITES_PER_BATCH}",
                        entries.len()
                    ),
                });
            }
            EntryPayload::Normal(Proposal::Batch(
                entries
                    .iter()
                    .map(|bytes| Entry::decode(bytes))
                    .collect::<Result<_, _>>()?,
            ))
        }
        RecordPayload::Membership(m) => EntryPayload::Membership(m),
    };
    Ok(LogEntry {
        log_id: record.log_id,
        payload,
    })
}
