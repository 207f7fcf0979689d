//! `Proposal`: what one Raft log entry carries. Either one scheduler `Entry` (the leader's
//! plans and ticks, or a client write that was proposed alone) or a batch of client writes
//! that the leader's group commit proposed together, so they share one log append, one fsync
//! and one replication round (openraft 0.9 appends and syncs each proposal on its own).
//! Applying a batch is applying its entries one after another, in order, exactly as if each
//! were its own log entry; each gets its own outcome.
//!
//! It must not merge, reorder or drop entries, and must not hold the leader's own plans in a
//! batch (DESIGN.md rule 3: one decision, one entry).

use serde::{Deserialize, Serialize};
use singularity_scheduler::{Entry, Outcome};

/// The application data of one log entry.
// `One` is the common case (every leader entry); boxing it would allocate for each of them.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Proposal {
    /// One entry (a leader entry, or a client write alone).
    One(Entry),
    /// Client writes committed together, applied in this order.
    Batch(Vec<Entry>),
}

/// The outcomes of applying one log entry: one per scheduler entry it carried, in order
/// (none for blank and membership entries).
pub type Outcomes = Vec<Outcome>;

impl Proposal {
    /// The scheduler entries carried, in apply order.
    pub fn entries(&self) -> &[Entry] {
        match self {
            Proposal::One(entry) => std::slice::from_ref(entry),
            Proposal::Batch(entries) => entries,
        }
    }

    /// The entries, by value, in apply order.
    pub fn into_entries(self) -> Vec<Entry> {
        match self {
            Proposal::One(entry) => vec![entry],
            Proposal::Batch(entries) => entries,
        }
    }

    /// A proposal of `entries`: `One` for a single entry, `Batch` otherwise.
    ///
    /// Panics if `entries` is empty (an empty proposal would be a log entry that changes
    /// nothing and answers no one; callers never build one).
    pub fn of(mut entries: Vec<Entry>) -> Proposal {
        assert!(!entries.is_empty(), "a proposal carries at least one entry");
        if entries.len() == 1 {
            Proposal::One(entries.pop().expect("one entry"))
        } else {
            Proposal::Batch(entries)
        }
    }
}

impl From<Entry> for Proposal {
    fn from(entry: Entry) -> Proposal {
        Proposal::One(entry)
    }
}

impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Proposal::One(entry) => write!(f, "{}", entry.command.kind()),
            Proposal::Batch(entries) => write!(f, "batch of {} client writes", entries.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use singularity_scheduler::Command;

    fn tick(ms: u64) -> Entry {
        Entry::system(ms, Command::Tick)
    }

    #[test]
    fn one_entry_is_not_a_batch_and_order_is_kept() {
        assert_eq!(Proposal::of(vec![tick(1)]), Proposal::One(tick(1)));
        let batch = Proposal::of(vec![tick(1), tick(2), tick(3)]);
        let times: Vec<u64> = batch.entries().iter().map(|e| e.leader_time_ms).collect();
        assert_eq!(times, vec![1, 2, 3]);
        assert_eq!(batch.into_entries().len(), 3);
    }

    #[test]
    #[should_panic(expected = "at least one entry")]
    fn an_empty_proposal_is_refused() {
        let _ = Proposal::of(Vec::new());
    }
}
