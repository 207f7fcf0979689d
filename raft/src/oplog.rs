//! Decoding of log entries for operators (`singularity operator log`): index, term, the
//! leader's timestamp, the command's kind and its one-line summary with the decision's reasons,
//! and the raw scheduler entry for checkers that replay the log. It must not change the log; it
//! only reads entries handed to it.

use crate::types::LogEntry;
use openraft::EntryPayload;
use serde::{Deserialize, Serialize};

/// One decoded log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub index: u64,
    pub term: u64,
    pub leader_time_ms: u64,
    pub kind: String,
    pub summary: String,
}

/// Describes one entry.
pub fn describe(entry: &LogEntry) -> LogLine {
    let (leader_time_ms, kind, summary) = match &entry.payload {
        EntryPayload::Blank => (
            0,
            "blank".to_string(),
            format!(
                "leader {} elected for term {}",
                entry.log_id.leader_id.node_id, entry.log_id.leader_id.term
            ),
        ),
        EntryPayload::Normal(data) => {
            let client = match data.client {
                Some(c) => format!(" [client {} seq {}]", c.client_id.0, c.sequence),
                None => String::new(),
            };
            (
                data.leader_time_ms,
                data.command.kind().to_string(),
                format!("{}{client}", data.command.summary()),
            )
        }
        EntryPayload::Membership(m) => {
            let configs: Vec<String> = m
                .get_joint_config()
                .iter()
                .map(|voters| {
                    let ids: Vec<String> = voters.iter().map(|id| id.to_string()).collect();
                    format!("[{}]", ids.join(","))
                })
                .collect();
            let learners: Vec<String> = m.learner_ids().map(|id| id.to_string()).collect();
            let what = if configs.len() > 1 {
                "joint membership (old and new voters must both agree)"
            } else {
                "membership"
            };
            (
                0,
                "membership".to_string(),
                format!(
                    "{what}: voters {} learners [{}]",
                    configs.join(" + "),
                    learners.join(",")
                ),
            )
        }
    };
    LogLine {
        index: entry.log_id.index,
        term: entry.log_id.leader_id.term,
        leader_time_ms,
        kind,
        summary,
    }
}

/// The scheduler entry's encoded bytes (`Entry::encode`), for checkers that replay the log
/// through `ClusterState::apply`; empty for blank and membership entries.
pub fn entry_bytes(entry: &LogEntry) -> Result<Vec<u8>, singularity_scheduler::SchedulerError> {
    match &entry.payload {
        EntryPayload::Normal(data) => data.encode(),
        EntryPayload::Blank | EntryPayload::Membership(_) => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId};
    use singularity_scheduler::{testkit, Command, Entry, Tier};

    #[test]
    fn entry_bytes_decode_to_the_logged_entry_and_are_empty_for_blank() {
        let spec = testkit::job_spec("a", Tier::Standard, 2, "h100");
        let data = Entry::system(5_000, Command::SubmitJob { spec });
        let normal = LogEntry {
            log_id: LogId::new(CommittedLeaderId::new(2, 1), 7),
            payload: EntryPayload::Normal(data.clone()),
        };
        let bytes = entry_bytes(&normal).expect("encodes");
        assert_eq!(Entry::decode(&bytes).expect("decodes"), data);
        let blank = LogEntry {
            log_id: LogId::new(CommittedLeaderId::new(2, 1), 8),
            payload: EntryPayload::Blank,
        };
        assert!(entry_bytes(&blank).expect("blank").is_empty());
    }
}
