//! The live decision feed of `singularity dev`: polls the leader's replicated log (`ReadLog`),
//! up to the leader's committed index only, and prints each new committed entry as compact
//! event lines (see `events`), with the seconds since `dev` started and, on a terminal,
//! colours.
//!
//! It only reads the cluster; every RPC is bounded by `FEED_RPC_TIMEOUT_MS`, and a failed poll
//! is retried at the next one (a leader change is followed).

use super::events::{self, Event, EventKind, JobLabel, Labels};
use anyhow::Context;
use singularity_proto::query;
use singularity_raft::client::Client;
use singularity_raft::server::RaftStatus;
use singularity_scheduler::{Entry, Job, Node};
use std::io::IsTerminal;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bound on one RPC of the feed (status, log page, name lookup).
pub const FEED_RPC_TIMEOUT_MS: u64 = 3_000;
/// Log pages read in one poll (each at most `MAX_LOG_ENTRIES_PER_READ` entries).
const MAX_PAGES_PER_POLL: usize = 16;

/// The wall clock in milliseconds since the epoch (the leader stamps entries with the same).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs `work` with the feed's RPC bound.
pub async fn bounded<T>(
    what: &str,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(Duration::from_millis(FEED_RPC_TIMEOUT_MS), work)
        .await
        .map_err(|_| anyhow::anyhow!("{what}: no answer within {FEED_RPC_TIMEOUT_MS} ms"))?
}

/// Prints event lines: time since start, a label, the text.
#[derive(Clone, Debug)]
pub struct Printer {
    pub start_unix_ms: u64,
    pub colour: bool,
}

impl Printer {
    /// Colour only on a terminal, and never with NO_COLOR set.
    pub fn new(start_unix_ms: u64) -> Printer {
        Printer {
            start_unix_ms,
            colour: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn seconds(&self, at_unix_ms: u64) -> f64 {
        at_unix_ms.saturating_sub(self.start_unix_ms) as f64 / 1000.0
    }

    /// "  12.3s  preempt  job 2 sweep (basic): preempted for ..."
    pub fn line(&self, event: &Event) -> String {
        let at = if event.leader_time_ms == 0 {
            unix_ms()
        } else {
            event.leader_time_ms
        };
        let label = format!("{:<8}", event.kind.label());
        let label = match (self.colour, colour_of(event.kind)) {
            (true, Some(code)) => format!("\x1b[{code}m{label}\x1b[0m"),
            _ => label,
        };
        format!("{:>7.1}s  {label} {}", self.seconds(at), event.text)
    }

    pub fn print(&self, event: &Event) {
        println!("{}", self.line(event));
    }

    /// A line of `dev`'s own (not from the log), with the same time column.
    pub fn note(&self, text: &str) {
        let label = if self.colour {
            "\x1b[1mdev\x1b[0m     ".to_string()
        } else {
            "dev     ".to_string()
        };
        println!("{:>7.1}s  {label} {text}", self.seconds(unix_ms()));
    }
}

/// ANSI colour of each kind of event.
fn colour_of(kind: EventKind) -> Option<&'static str> {
    Some(match kind {
        EventKind::Place | EventKind::Resume => "32",
        EventKind::Preempt | EventKind::Failure => "31",
        EventKind::Resize => "33",
        EventKind::Migrate => "36",
        EventKind::Exit => "1;32",
        EventKind::Submit | EventKind::Leader | EventKind::Node => "1",
        EventKind::Cancel | EventKind::Stop | EventKind::Progress => return None,
    })
}

/// Follows the committed log of a cluster.
pub struct Feed {
    endpoints: Vec<String>,
    /// The endpoint believed to be the leader's.
    leader: Option<String>,
    next_index: u64,
    labels: Labels,
    printer: Printer,
    lookup: Client,
}

impl Feed {
    /// A feed that starts after the cluster's current applied index.
    pub async fn start(endpoints: Vec<String>, printer: Printer) -> anyhow::Result<Feed> {
        let mut lookup = Client::new(endpoints.clone())?;
        let reply = bounded("reading the cluster's state", async {
            Ok(lookup.read(query::CLUSTER, 0, false).await?)
        })
        .await?;
        let cluster: serde_json::Value =
            serde_json::from_str(&reply.json).context("the cluster's state is not JSON")?;
        let applied = cluster["applied_index"].as_u64().unwrap_or(0);
        let committed_actions = cluster["counters"]["actions_committed"]
            .as_u64()
            .unwrap_or(0);
        let mut feed = Feed {
            endpoints,
            leader: None,
            next_index: applied + 1,
            labels: Labels::new(committed_actions + 1),
            printer,
            lookup,
        };
        feed.refresh_nodes().await?;
        Ok(feed)
    }

    /// Names a job the feed has submitted itself.
    pub fn label_job(&mut self, id: u64, name: &str, tier: &str) {
        self.labels.jobs.insert(
            id,
            JobLabel {
                name: name.to_string(),
                tier: tier.to_string(),
            },
        );
    }

    pub fn printer(&self) -> &Printer {
        &self.printer
    }

    async fn refresh_nodes(&mut self) -> anyhow::Result<()> {
        let lookup = &mut self.lookup;
        let reply = bounded("listing nodes", async {
            Ok(lookup.read(query::NODES, 0, false).await?)
        })
        .await?;
        let nodes: Vec<Node> = serde_json::from_str(&reply.json).context("nodes are not JSON")?;
        for node in nodes {
            self.labels
                .nodes
                .insert(u64::from(node.id.0), node.name.to_string());
        }
        Ok(())
    }

    async fn label_unknown_jobs(&mut self, summary: &str) {
        for id in events::mentioned_jobs(summary) {
            if self.labels.jobs.contains_key(&id) {
                continue;
            }
            let lookup = &mut self.lookup;
            let found = bounded("reading a job", async {
                Ok(lookup.read(query::JOB, id, true).await?)
            })
            .await
            .ok()
            .and_then(|reply| serde_json::from_str::<Job>(&reply.json).ok());
            if let Some(job) = found {
                self.label_job(id, &job.spec.name, &job.spec.tier.to_string());
            }
        }
    }

    /// The leader's endpoint and committed index, asking each replica until one is the leader.
    async fn leader_commit(&mut self) -> Option<(String, u64)> {
        let mut candidates: Vec<String> = self.leader.iter().cloned().collect();
        candidates.extend(self.endpoints.iter().cloned());
        for endpoint in candidates {
            let lookup = &mut self.lookup;
            let status = bounded("replica status", async {
                Ok(lookup.status_of(&endpoint).await?)
            })
            .await
            .ok()
            .and_then(|json| serde_json::from_str::<RaftStatus>(&json).ok());
            if let Some(status) = status {
                if status.leader == Some(status.id) {
                    self.leader = Some(endpoint.clone());
                    return Some((endpoint, status.committed_index.unwrap_or(0)));
                }
            }
        }
        self.leader = None;
        None
    }

    /// Prints the entries committed since the last poll. Returns how many events it printed.
    pub async fn poll(&mut self) -> usize {
        let Some((leader, committed)) = self.leader_commit().await else {
            return 0;
        };
        let Ok(mut client) = Client::new(vec![leader]) else {
            return 0;
        };
        let mut printed = 0;
        for _ in 0..MAX_PAGES_PER_POLL {
            if self.next_index > committed {
                break;
            }
            let from = self.next_index;
            let page = bounded("reading the log", async {
                Ok(client.read_log(from, committed).await?)
            })
            .await;
            let Ok(page) = page else {
                break;
            };
            let Some(last) = page.entries.last().map(|e| e.index) else {
                break;
            };
            for entry in &page.entries {
                // One line per scheduler entry: a log entry may carry a batch of client writes
                // (group commit); blank and membership entries carry none.
                let lines: Vec<(String, String, u64)> = if entry.entries.is_empty() {
                    vec![(
                        entry.kind.clone(),
                        entry.summary.clone(),
                        entry.leader_time_ms,
                    )]
                } else {
                    entry
                        .entries
                        .iter()
                        .filter_map(|bytes| Entry::decode(bytes).ok())
                        .map(|e| {
                            (
                                e.command.kind().to_string(),
                                e.command.summary(),
                                e.leader_time_ms,
                            )
                        })
                        .collect()
                };
                for (kind, summary, leader_time_ms) in lines {
                    if kind == "register_node" {
                        let _ = self.refresh_nodes().await;
                    }
                    if matches!(kind.as_str(), "plan" | "job_exit" | "cancel_job") {
                        self.label_unknown_jobs(&summary).await;
                    }
                    for event in events::events(&kind, &summary, leader_time_ms, &mut self.labels) {
                        self.printer.print(&event);
                        printed += 1;
                    }
                }
            }
            self.next_index = last + 1;
        }
        printed
    }
}
