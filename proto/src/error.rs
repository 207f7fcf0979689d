//! `ClientError`, the one error type of this crate: what a client of the `Control` API meets
//! (bad configuration, transport failures, a replica's refusal, running out of attempts, an
//! answer it cannot decode). It must not hide the replica's own message.

/// Everything that can go wrong talking to a Singularity cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{endpoint} answered {code}: {message}")]
    Rpc {
        endpoint: String,
        code: String,
        message: String,
    },
    #[error("gave up after {attempts} attempts; last error: {last}")]
    Exhausted { attempts: u32, last: String },
    #[error("network: {0}")]
    Transport(String),
    #[error("cannot decode {what}: {detail}")]
    Decode { what: &'static str, detail: String },
    #[error("scheduler: {0}")]
    Scheduler(#[from] singularity_scheduler::SchedulerError),
}

impl ClientError {
    /// The gRPC status code name when a replica answered with an error (e.g. "InvalidArgument").
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Rpc { code, .. } => Some(code),
            _ => None,
        }
    }
}
