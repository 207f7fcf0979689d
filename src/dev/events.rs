//! Turning decoded log entries (index, kind, one-line summary, as `ReadLog` returns them) into
//! the compact event lines `singularity dev --demo` prints: placements, preemptions, resizes
//! and migrations with their reasons, action progress, job exits, leader and node changes.
//! Jobs are labelled with their name and tier, nodes with their names.
//!
//! Pure: it parses and formats text handed to it; the caller reads the log and resolves the
//! names of jobs and nodes it has not seen (`mentioned_jobs`). It must not print.
//!
//! Action ids are not in a plan's summary: apply numbers the actions it commits one after
//! another, so `Labels` numbers a plan's actions from the counter it was seeded with. A plan
//! action that apply rejects (rare: the leader plans on its own applied state) would shift the
//! numbering of later progress lines; the decisions themselves are always printed as committed.

use singularity_scheduler::ActionKind;
use std::collections::BTreeMap;

/// What an event line is about (for its label and colour).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Leader,
    Node,
    Submit,
    Cancel,
    Place,
    Resume,
    Preempt,
    Migrate,
    Resize,
    Stop,
    Progress,
    Exit,
    Failure,
}

impl EventKind {
    /// The label printed before the event's text.
    pub fn label(self) -> &'static str {
        match self {
            EventKind::Leader => "leader",
            EventKind::Node => "node",
            EventKind::Submit => "submit",
            EventKind::Cancel => "cancel",
            EventKind::Place => "place",
            EventKind::Resume => "resume",
            EventKind::Preempt => "preempt",
            EventKind::Migrate => "migrate",
            EventKind::Resize => "resize",
            EventKind::Stop => "stop",
            EventKind::Progress => "progress",
            EventKind::Exit => "exit",
            EventKind::Failure => "failed",
        }
    }

    /// The kind of an action named as the log's summaries name it ("resize").
    fn of_action(word: &str) -> Option<EventKind> {
        let kind = ActionKind::ALL
            .into_iter()
            .find(|k| k.to_string() == word)?;
        Some(match kind {
            ActionKind::Place => EventKind::Place,
            ActionKind::Resume => EventKind::Resume,
            ActionKind::Preempt => EventKind::Preempt,
            ActionKind::Migrate => EventKind::Migrate,
            ActionKind::Resize => EventKind::Resize,
            ActionKind::Stop => EventKind::Stop,
        })
    }
}

/// One printable event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The leader's time of the entry (0 where the entry has none).
    pub leader_time_ms: u64,
    pub kind: EventKind,
    pub text: String,
}

/// A job's name and tier, for labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobLabel {
    pub name: String,
    pub tier: String,
}

/// What the formatter knows about names and action ids.
#[derive(Clone, Debug, Default)]
pub struct Labels {
    pub jobs: BTreeMap<u64, JobLabel>,
    /// Node id to name.
    pub nodes: BTreeMap<u64, String>,
    /// Action id to (its kind word, its job).
    actions: BTreeMap<u64, (String, u64)>,
    /// The id apply gives the next action it commits.
    next_action_id: u64,
    /// The last exit line printed per job, until the job's next action: an agent may report
    /// the same exit twice (a retry after a lost reply), which says nothing new.
    last_exit: BTreeMap<u64, String>,
}

/// Actions remembered for progress lines; the oldest are forgotten beyond this.
const MAX_REMEMBERED_ACTIONS: usize = 4_096;

impl Labels {
    /// Labels whose next committed action gets `next_action_id`.
    pub fn new(next_action_id: u64) -> Labels {
        Labels {
            next_action_id,
            ..Labels::default()
        }
    }

    fn job(&self, id: u64) -> String {
        match self.jobs.get(&id) {
            Some(label) => format!("job {id} {} ({})", label.name, label.tier),
            None => format!("job {id}"),
        }
    }

    fn remember_action(&mut self, kind: &str, job: u64) {
        self.last_exit.remove(&job);
        self.actions
            .insert(self.next_action_id, (kind.to_string(), job));
        self.next_action_id += 1;
        while self.actions.len() > MAX_REMEMBERED_ACTIONS {
            self.actions.pop_first();
        }
    }
}

/// Drops the " [client ID seq N]" suffix `operator log` adds to client writes.
fn strip_client(summary: &str) -> &str {
    match summary.rfind(" [client ") {
        Some(at) if summary.ends_with(']') => &summary[..at],
        _ => summary,
    }
}

/// The number at the start of `text`, and the rest.
fn leading_number(text: &str) -> Option<(u64, &str)> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let n = text[..digits].parse().ok()?;
    Some((n, &text[digits..]))
}

/// Replaces every `node#ID` by the node's name where it is known.
fn rename_nodes(text: &str, labels: &Labels) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("node#") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "node#".len()..];
        match leading_number(after) {
            Some((id, tail)) => {
                match labels.nodes.get(&id) {
                    Some(name) => out.push_str(name),
                    None => out.push_str(&format!("node#{id}")),
                }
                rest = tail;
            }
            None => {
                out.push_str("node#");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Every job id an entry mentions ("job N" as a word), so the caller can resolve their names.
pub fn mentioned_jobs(summary: &str) -> Vec<u64> {
    let mut jobs = Vec::new();
    let mut rest = summary;
    let mut previous: Option<char> = None;
    while let Some(at) = rest.find("job ") {
        let before = rest[..at].chars().last().or(previous);
        let after = &rest[at + "job ".len()..];
        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            if let Some((id, _)) = leading_number(after) {
                if !jobs.contains(&id) {
                    jobs.push(id);
                }
            }
        }
        previous = Some(' ');
        rest = after;
    }
    jobs
}

/// Splits a plan's action list on "; " where the next action starts ("resize job 3 ..."):
/// reasons contain "; " themselves.
fn split_actions(list: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut search = 0;
    while let Some(found) = list[search..].find("; ") {
        let at = search + found;
        let next = &list[at + 2..];
        let starts_action = next.split_once(' ').is_some_and(|(word, tail)| {
            EventKind::of_action(word).is_some() && tail.starts_with("job ")
        });
        if starts_action {
            parts.push(&list[start..at]);
            start = at + 2;
        }
        search = at + 2;
    }
    parts.push(&list[start..]);
    parts
}

/// One action of a plan: "resize job 3 on node#2[0-1]: shrunk ..." to an event.
fn plan_action(text: &str, labels: &mut Labels, leader_time_ms: u64) -> Option<Event> {
    let (word, rest) = text.split_once(' ')?;
    let kind = EventKind::of_action(word)?;
    let (job, rest) = leading_number(rest.strip_prefix("job ")?)?;
    labels.remember_action(word, job);
    let (devices, reason) = match rest.strip_prefix(" on ") {
        Some(tail) => match tail.split_once(": ") {
            Some((devices, reason)) => (Some(devices), reason),
            None => (Some(tail), ""),
        },
        None => (None, rest.strip_prefix(": ").unwrap_or(rest)),
    };
    let subject = labels.job(job);
    let text = match devices {
        Some(devices) => format!("{subject} -> {devices}: {reason}"),
        None => format!("{subject}: {reason}"),
    };
    Some(Event {
        leader_time_ms,
        kind,
        text: rename_nodes(&text, labels),
    })
}

/// "action 5 on node#1: checkpointed at step 3 to DIR" to an event.
fn progress(summary: &str, labels: &Labels, leader_time_ms: u64) -> Option<Event> {
    let (action, rest) = leading_number(summary.strip_prefix("action ")?)?;
    let (node, what) = rest.strip_prefix(" on ")?.split_once(": ")?;
    // The checkpoint's location is long and the same for every step; the step is the news.
    let what = match what.split_once(" to ") {
        Some((head, _)) if what.starts_with("checkpointed") => head,
        _ => what,
    };
    let subject = match labels.actions.get(&action) {
        Some((kind, job)) => format!("{kind} of {}", labels.job(*job)),
        None => format!("action {action}"),
    };
    let kind = if what.starts_with("failed") {
        EventKind::Failure
    } else {
        EventKind::Progress
    };
    Some(Event {
        leader_time_ms,
        kind,
        text: rename_nodes(&format!("{subject} on {node}: {what}"), labels),
    })
}

/// The events of one log entry (none for heartbeats, ticks and metadata updates).
pub fn events(kind: &str, summary: &str, leader_time_ms: u64, labels: &mut Labels) -> Vec<Event> {
    let summary = strip_client(summary);
    let event = |kind: EventKind, text: String| Event {
        leader_time_ms,
        kind,
        text,
    };
    match kind {
        "blank" => {
            // "leader 2 elected for term 3"
            let text = summary
                .strip_prefix("leader ")
                .and_then(|rest| rest.split_once(" elected for term "))
                .map(|(id, term)| format!("replica {id} is the leader (term {term})"))
                .unwrap_or_else(|| summary.to_string());
            vec![event(EventKind::Leader, text)]
        }
        "register_node" | "deregister_node" | "node_draining" | "node_down" => {
            vec![event(EventKind::Node, rename_nodes(summary, labels))]
        }
        "node_health" if !summary.starts_with("heartbeat from") => {
            vec![event(EventKind::Node, rename_nodes(summary, labels))]
        }
        "submit_job" => vec![event(
            EventKind::Submit,
            summary
                .strip_prefix("submit ")
                .unwrap_or(summary)
                .to_string(),
        )],
        "cancel_job" => {
            let text = mentioned_jobs(summary)
                .first()
                .map(|&job| labels.job(job))
                .unwrap_or_else(|| summary.to_string());
            vec![event(EventKind::Cancel, text)]
        }
        "plan" => {
            // "plan for TRIGGER (computed at index N): ACTION; ACTION"
            let Some(at) = summary.find(" (computed at index ") else {
                return vec![];
            };
            let Some(list) = summary[at..].split_once("): ").map(|(_, list)| list) else {
                return vec![];
            };
            split_actions(list)
                .into_iter()
                .filter_map(|action| plan_action(action, labels, leader_time_ms))
                .collect()
        }
        "action_progress" => progress(summary, labels, leader_time_ms)
            .into_iter()
            .collect(),
        "job_exit" => {
            // "job 4 ranks on node#1 exited successfully" / "... failed: REASON"
            let Some((job, rest)) = summary.strip_prefix("job ").and_then(leading_number) else {
                return vec![];
            };
            let kind = if rest.contains(" failed: ") {
                EventKind::Failure
            } else {
                EventKind::Exit
            };
            let text = rename_nodes(&format!("{}{rest}", labels.job(job)), labels);
            if labels.last_exit.get(&job) == Some(&text) {
                return vec![];
            }
            labels.last_exit.insert(job, text.clone());
            while labels.last_exit.len() > MAX_REMEMBERED_ACTIONS {
                labels.last_exit.pop_first();
            }
            vec![event(kind, text)]
        }
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_kind_is_recognised_by_its_logged_name_and_labelled_with_it() {
        for kind in ActionKind::ALL {
            let event = EventKind::of_action(&kind.to_string());
            assert_eq!(event.map(EventKind::label), Some(kind.to_string().as_str()));
        }
        assert_eq!(EventKind::of_action("progress"), None);
    }

    fn labels() -> Labels {
        let mut labels = Labels::new(4);
        labels.nodes.insert(1, "node-a".into());
        labels.nodes.insert(2, "node-b".into());
        for (id, name, tier) in [
            (2, "sweep", "basic"),
            (3, "train", "standard"),
            (4, "urgent", "premium"),
        ] {
            labels.jobs.insert(
                id,
                JobLabel {
                    name: name.into(),
                    tier: tier.into(),
                },
            );
        }
        labels
    }

    /// The summary of a real plan entry, as `operator log` printed it.
    const PLAN: &str = "plan for job 4 submitted (computed at index 169): resize job 3 on \
        node#2[0-1]: shrunk from 4 to 2 devices (2 ranks per device) for job 4 (premium): \
        shrinking is preferred to preempting; victims go lowest tier first, then most SLA slack \
        (tier standard, SLA attainment 96% vs target 70%), then most attained service; preempt \
        job 2: preempted for job 4 (tier premium): shrinking was not enough; victims go lowest \
        tier first, then most SLA slack (tier basic, SLA attainment 93% (best effort)), then \
        most attained service";

    #[test]
    fn a_plan_gives_one_event_per_action_with_its_whole_reason() {
        let mut labels = labels();
        let events = events("plan", PLAN, 1_000, &mut labels);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0].kind, EventKind::Resize);
        assert!(
            events[0]
                .text
                .starts_with("job 3 train (standard) -> node-b[0-1]: shrunk from 4 to 2 devices"),
            "{}",
            events[0].text
        );
        assert!(events[0].text.ends_with("then most attained service"));
        assert!(events[0]
            .text
            .contains("preferred to preempting; victims go"));
        assert_eq!(events[1].kind, EventKind::Preempt);
        assert!(
            events[1]
                .text
                .starts_with("job 2 sweep (basic): preempted for job 4 (tier premium)"),
            "{}",
            events[1].text
        );
        // Their action ids follow the seed: 4 and 5.
        let done = super::events(
            "action_progress",
            "action 5 on node#1: checkpointed at step 3 to /tmp/x/checkpoints/job-2 [client 7 seq 9]",
            2_000,
            &mut labels,
        );
        assert_eq!(
            done,
            vec![Event {
                leader_time_ms: 2_000,
                kind: EventKind::Progress,
                text: "preempt of job 2 sweep (basic) on node-a: checkpointed at step 3".into()
            }]
        );
    }

    #[test]
    fn heartbeats_and_ticks_are_quiet_and_exits_are_labelled() {
        let mut labels = labels();
        assert!(events(
            "node_health",
            "heartbeat from node node-a [client 1 seq 2]",
            0,
            &mut labels
        )
        .is_empty());
        assert!(events("tick", "tick", 0, &mut labels).is_empty());
        let exit = events(
            "job_exit",
            "job 4 ranks on node#2 exited successfully [client 1 seq 3]",
            5,
            &mut labels,
        );
        assert_eq!(exit[0].kind, EventKind::Exit);
        assert_eq!(
            exit[0].text,
            "job 4 urgent (premium) ranks on node-b exited successfully"
        );
        // The same report again (an agent's retry) says nothing new.
        let again = events(
            "job_exit",
            "job 4 ranks on node#2 exited successfully",
            6,
            &mut labels,
        );
        assert!(again.is_empty(), "{again:?}");
        let failed = events(
            "job_exit",
            "job 9 ranks on node#7 failed: exit code 1",
            5,
            &mut labels,
        );
        assert_eq!(failed[0].kind, EventKind::Failure);
        assert_eq!(failed[0].text, "job 9 ranks on node#7 failed: exit code 1");
        let leader = events("blank", "leader 2 elected for term 3", 0, &mut labels);
        assert_eq!(leader[0].text, "replica 2 is the leader (term 3)");
    }

    #[test]
    fn mentioned_jobs_finds_whole_words_only() {
        assert_eq!(mentioned_jobs(PLAN), vec![4, 3, 2]);
        assert_eq!(mentioned_jobs("subjob 7, job 12 and job x"), vec![12]);
    }

    #[test]
    fn unknown_nodes_and_actions_stay_numbered() {
        let mut labels = Labels::new(1);
        let events = events(
            "action_progress",
            "action 40 on node#12: failed: no such device",
            0,
            &mut labels,
        );
        assert_eq!(events[0].kind, EventKind::Failure);
        assert_eq!(
            events[0].text,
            "action 40 on node#12: failed: no such device"
        );
    }
}
