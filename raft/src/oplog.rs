//! Decoding of log entries for operators (`singularity operator log`): index, term, the
//! leader's timestamp, the command's kind and its one-line summary with the decision's reasons,
//! and the raw scheduler entry for checkers that replay the log. It must not change the log; it
//! only reads entries handed to it.

use crate::proposal::Proposal;
use crate::types::LogEntry;
use openraft::EntryPayload;
use serde::{Deserialize, Serialize};
use singularity_scheduler::Entry;

/// One decoded log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub index: u64,
    pub term: u64,
    pub leader_time_ms: u64,
    pub kind: String,
    pub summary: String,
}

/// One scheduler entry's summary, with its client and sequence if it is a client write.
fn summarize(data: &Entry) -> String {
    let client = match data.client {
        Some(c) => format!(" [client {} seq {}]", c.client_id.0, c.sequence),
        None => String::new(),
    };
    format!("{}{client}", data.command.summary())
}

/// Describes one log entry (a batch of client writes is one line listing each write).
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
        EntryPayload::Normal(Proposal::One(data)) => (
            data.leader_time_ms,
            data.command.kind().to_string(),
            summarize(data),
        ),
        EntryPayload::Normal(Proposal::Batch(entries)) => {
            let each: Vec<String> = entries.iter().map(summarize).collect();
            (
                entries.first().map(|e| e.leader_time_ms).unwrap_or(0),
                "batch".to_string(),
                format!("{} client writes: {}", entries.len(), each.join("; ")),
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

/// The encoded bytes (`Entry::encode`) of each scheduler entry a log entry carries, in apply
/// order, for checkers that replay the log through `ClusterState::apply`; none for blank and
/// membership entries.
pub fn entries_bytes(
    entry: &LogEntry,
) -> Result<Vec<Vec<u8>>, singularity_scheduler::SchedulerError> {
    match &entry.payload {
        EntryPayload::Normal(proposal) => proposal.entries().iter().map(|e| e.encode()).collect(),
        EntryPayload::Blank | EntryPayload::Membership(_) => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId};
    use singularity_scheduler::{testkit, Command, Entry, Tier};

    #[test]
    fn entries_bytes_decode_to_the_logged_entries_in_order_and_are_empty_for_blank() {
        let spec = testkit::job_spec("a", Tier::Standard, 2, "h100");
        let first = Entry::system(5_000, Command::SubmitJob { spec });
        let second = Entry::system(5_001, Command::Tick);
        let normal = LogEntry {
            log_id: LogId::new(CommittedLeaderId::new(2, 1), 7),
            payload: EntryPayload::Normal(Proposal::Batch(vec![first.clone(), second.clone()])),
        };
        let bytes = entries_bytes(&normal).expect("encodes");
        let decoded: Vec<Entry> = bytes.iter().map(|b| Entry::decode(b).unwrap()).collect();
        assert_eq!(decoded, vec![first, second]);
        let blank = LogEntry {
            log_id: LogId::new(CommittedLeaderId::new(2, 1), 8),
            payload: EntryPayload::Blank,
        };
        assert!(entries_bytes(&blank).expect("blank").is_empty());
    }
}
