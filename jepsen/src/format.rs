//! Input formats: detection from the content, dispatch to the readers, and the size limits
//! every reader checks.
//!
//! It must not parse records itself; the format modules do.

use crate::edn_history::read_edn;
use crate::error::{Error, Result};
use crate::etcd_log::read_etcd_log;
use crate::history::History;
use crate::json_history::read_json_lines;
use crate::limits::{MAX_HISTORY_EVENTS, MAX_INPUT_BYTES, MAX_LINE_BYTES};
use std::path::Path;

/// A history file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Jepsen EDN: a vector or list of op maps, or op maps one per line.
    Edn,
    /// One JSON object per line.
    JsonLines,
    /// Porcupine's etcd text logs.
    EtcdLog,
}

impl Format {
    /// Tells the format from the first meaningful characters of `text`. Empty text is EDN
    /// (an empty history).
    pub fn detect(text: &str) -> Result<Format> {
        let trimmed = text.trim_start();
        let mut chars = trimmed.chars();
        match chars.next() {
            None | Some('[' | '(' | ';' | '#') => Ok(Format::Edn),
            Some('{') => match chars.find(|c| !c.is_whitespace()) {
                Some('"') => Ok(Format::JsonLines),
                _ => Ok(Format::Edn),
            },
            Some('I') if trimmed.starts_with("INFO") => Ok(Format::EtcdLog),
            Some(_) => {
                let start: String = trimmed.chars().take(40).collect();
                Err(Error::UnknownFormat(format!(
                    "the text starts with '{start}'; expected Jepsen EDN ('{{:process' or '['), \
                     JSON lines ('{{\"process\"') or an etcd log ('INFO  jepsen.util')"
                )))
            }
        }
    }

    /// Reads `text` in this format.
    pub fn read(self, text: &str) -> Result<History> {
        match self {
            Format::Edn => read_edn(text),
            Format::JsonLines => read_json_lines(text),
            Format::EtcdLog => read_etcd_log(text),
        }
    }
}

/// Reads `text`, detecting its format unless one is given.
pub fn read_history(text: &str, format: Option<Format>) -> Result<History> {
    let format = match format {
        Some(f) => f,
        None => Format::detect(text)?,
    };
    format.read(text)
}

/// Reads a history file, detecting its format unless one is given; errors name the file.
pub fn read_history_file(path: &Path, format: Option<Format>) -> Result<History> {
    let size_bytes = std::fs::metadata(path)
        .map_err(|error| Error::Io {
            path: path.to_path_buf(),
            error,
        })?
        .len();
    if size_bytes > MAX_INPUT_BYTES as u64 {
        return Err(Error::Limit {
            what: "the history file's size in bytes".to_string(),
            actual: usize::try_from(size_bytes).unwrap_or(usize::MAX),
            limit: MAX_INPUT_BYTES,
            name: "MAX_INPUT_BYTES",
        }
        .in_file(path));
    }
    let text = std::fs::read_to_string(path).map_err(|error| Error::Io {
        path: path.to_path_buf(),
        error,
    })?;
    read_history(&text, format).map_err(|e| e.in_file(path))
}

/// Checks the whole-text limits: total size and the longest line.
pub(crate) fn check_text_limits(text: &str) -> Result<()> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(Error::Limit {
            what: "the history's size in bytes".to_string(),
            actual: text.len(),
            limit: MAX_INPUT_BYTES,
            name: "MAX_INPUT_BYTES",
        });
    }
    if text.len() > MAX_LINE_BYTES {
        for (index, line) in text.lines().enumerate() {
            if line.len() > MAX_LINE_BYTES {
                return Err(Error::Limit {
                    what: format!("line {}'s length in bytes", index + 1),
                    actual: line.len(),
                    limit: MAX_LINE_BYTES,
                    name: "MAX_LINE_BYTES",
                });
            }
        }
    }
    Ok(())
}

/// Checks that a history of `count` records is within the limit.
pub(crate) fn check_event_count(count: usize) -> Result<()> {
    if count > MAX_HISTORY_EVENTS {
        return Err(Error::Limit {
            what: "the number of operation records".to_string(),
            actual: count,
            limit: MAX_HISTORY_EVENTS,
            name: "MAX_HISTORY_EVENTS",
        });
    }
    Ok(())
}
