//! The one error type of the crate: what was wrong in the input, and where.
//!
//! It must not format verdicts: a non-linearizable history is a result, not an error.

use std::path::PathBuf;

/// Everything that can go wrong while reading, writing or checking a history.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is not valid in its format (EDN, JSON lines or the etcd log).
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column (in characters) of the problem.
        column: usize,
        /// What was expected or found.
        message: String,
    },
    /// A well-formed record that is not a valid operation (missing field, wrong type, ...).
    #[error("line {line}: {message}")]
    BadOp {
        /// 1-based line of the record.
        line: usize,
        /// What is wrong with it and how to fix it.
        message: String,
    },
    /// The operations do not fit the chosen model.
    #[error("line {line}: the {model} model {message}")]
    Model {
        /// 1-based line of the operation.
        line: usize,
        /// The model's name as given on the command line.
        model: &'static str,
        /// What the model cannot do with the operation.
        message: String,
    },
    /// A named limit was exceeded.
    #[error("{what} is {actual}, more than the limit of {limit} ({name})")]
    Limit {
        /// What was measured.
        what: String,
        /// Its value.
        actual: usize,
        /// The limit.
        limit: usize,
        /// The limit's constant in `limits`.
        name: &'static str,
    },
    /// The input holds no client operation at all.
    #[error(
        "the history is empty: it holds no client operation, so there is nothing to check \
         (an empty history usually means the test run failed before any client ran)"
    )]
    EmptyHistory,
    /// The format could not be told from the content.
    #[error("cannot tell the history's format: {0}")]
    UnknownFormat(String),
    /// An initial value that the model cannot use.
    #[error("bad initial value: {0}")]
    BadInitial(String),
    /// Reading or writing a file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// An error inside a named file.
    #[error("{path}: {error}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// The error inside it.
        error: Box<Error>,
    },
    /// The test harness needs root (network namespaces, veth, iptables).
    #[error("singularity-jepsen test needs root to create network namespaces, veth links and iptables rules; run it as root (e.g. sudo)")]
    NotRoot,
    /// A step of the test harness failed (a command, a process, the cluster never came up).
    #[error("{step}: {message}")]
    Harness {
        /// What the harness was doing.
        step: String,
        /// What went wrong.
        message: String,
    },
}

impl Error {
    /// Shorthand for [`Error::BadOp`].
    pub fn bad_op(line: usize, message: impl Into<String>) -> Self {
        Error::BadOp {
            line,
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::Harness`].
    pub fn harness(step: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Harness {
            step: step.into(),
            message: message.into(),
        }
    }

    /// Wraps this error with the file it came from.
    pub fn in_file(self, path: impl Into<PathBuf>) -> Self {
        Error::InFile {
            path: path.into(),
            error: Box::new(self),
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
