//! The nemesis: carries out one window's faults against the network, the replica processes,
//! their clocks, the Raft membership and leadership, and heals all of them.
//!
//! Membership changes and leadership transfers go through the public API only
//! (`Control.ChangeMembership`, `Control.AddLearner`, `Control.TransferLeader`), as an
//! operator's `singularity operator raft` would make them. A
//! refused change is recorded in the fault's detail, not treated as a harness failure: faults
//! combine, and a group without a quorum rightly refuses. Healing restores the full voter set
//! within a bounded time.
//!
//! It must not decide when faults happen (`schedule` does) and must not touch the workloads.

use crate::error::{Error, Result};
use crate::harness::client::Conn;
use crate::harness::cluster::{replica_endpoint, Cluster};
use crate::harness::net::Network;
use crate::harness::rng::Rng;
use crate::harness::schedule::{
    grudges, scrambled_offsets_s, ClockSkew, Fault, MembershipChange, Target,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

/// Time one membership change may take while a fault starts.
const MEMBERSHIP_CHANGE_TIMEOUT_MS: u64 = 5_000;
/// Time one leadership transfer may take (the leader bounds its own wait for the target at
/// 5 s, and the election after it at about 1 s).
const TRANSFER_TIMEOUT_MS: u64 = 8_000;
/// Time one status query may take.
const STATUS_TIMEOUT_MS: u64 = 500;
/// Pause between two attempts to restore the membership.
const RESTORE_RETRY_PAUSE_MS: u64 = 250;
/// Most attempts to restore the membership in one heal, whatever its deadline.
const MAX_RESTORE_ATTEMPTS: u32 = 200;

/// The Raft membership as a leader reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub leader: usize,
    /// Node ids of the voters.
    pub voters: Vec<u64>,
    /// Node ids of every member (voters and learners).
    pub members: Vec<u64>,
}

impl Membership {
    /// Reads it from a replica's status JSON, if that replica is the leader.
    pub fn from_status(status: &serde_json::Value) -> Option<Membership> {
        let id = status["id"].as_u64()?;
        if status["leader"].as_u64() != Some(id) {
            return None;
        }
        let members = status["members"].as_array()?;
        let mut voters = Vec::new();
        let mut all = Vec::new();
        for member in members {
            let member_id = member["id"].as_u64()?;
            all.push(member_id);
            if member["voter"].as_bool() == Some(true) {
                voters.push(member_id);
            }
        }
        voters.sort_unstable();
        all.sort_unstable();
        Some(Membership {
            leader: usize::try_from(id).ok()?.checked_sub(1)?,
            voters,
            members: all,
        })
    }

    /// True when every one of replicas `1..=n` is a voter.
    pub fn is_full(&self, n: usize) -> bool {
        self.voters == full_voters(n)
    }
}

/// Node ids of replicas `1..=n`.
pub fn full_voters(n: usize) -> Vec<u64> {
    (1..=n as u64).collect()
}

/// Injects and heals faults. Runs on the nemesis thread; async calls go through `handle`.
pub struct Nemesis {
    network: Arc<Network>,
    cluster: Arc<Mutex<Cluster>>,
    conn: Conn,
    rng: Rng,
    handle: Handle,
    replicas: usize,
    /// A membership change may have been made since the last full restore.
    membership_changed: bool,
}

fn node_list(nodes: &[usize]) -> String {
    nodes
        .iter()
        .map(|i| format!("n{}", i + 1))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Nemesis {
    pub fn new(
        network: Arc<Network>,
        cluster: Arc<Mutex<Cluster>>,
        conn: Conn,
        seed: u64,
        handle: Handle,
    ) -> Nemesis {
        let replicas = network.replicas();
        Nemesis {
            network,
            cluster,
            conn,
            rng: Rng::new(seed ^ 0xFA_17),
            handle,
            replicas,
            membership_changed: false,
        }
    }

    /// The index of the current leader, if a majority of answering replicas names one.
    pub fn leader(&mut self) -> Option<usize> {
        self.handle.block_on(self.conn.leader())
    }

    /// The membership as the current leader reports it.
    pub fn membership(&mut self) -> Option<Membership> {
        let leader = self.leader()?;
        let status = self
            .handle
            .block_on(
                self.conn
                    .status_of(leader, Duration::from_millis(STATUS_TIMEOUT_MS)),
            )
            .ok()?;
        Membership::from_status(&status)
    }

    fn pick(&mut self, target: Target, leader: Option<usize>) -> usize {
        match (target, leader) {
            (Target::Leader, Some(l)) => l,
            _ => self.rng.below(self.replicas as u64) as usize,
        }
    }

    fn lock_cluster(&self) -> std::sync::MutexGuard<'_, Cluster> {
        self.cluster.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `fault`; returns what was done, in words, for the timeline.
    pub fn inject(&mut self, fault: Fault, leader: Option<usize>) -> Result<String> {
        let n = self.replicas;
        match fault {
            Fault::Partition(kind) => {
                let g = grudges(kind, n, leader, &mut self.rng);
                let detail = g
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| !d.is_empty())
                    .map(|(a, d)| format!("n{} drops {}", a + 1, node_list(d)))
                    .collect::<Vec<_>>()
                    .join("; ");
                self.network.partition(&g)?;
                Ok(detail)
            }
            Fault::Kill(target) => {
                let i = self.pick(target, leader);
                self.lock_cluster().kill(i)?;
                Ok(format!("kill -9 n{}", i + 1))
            }
            Fault::Pause(target) => {
                let i = self.pick(target, leader);
                self.lock_cluster().pause(i)?;
                Ok(format!("SIGSTOP n{}", i + 1))
            }
            Fault::Clock(_, Target::All) => {
                let offsets = scrambled_offsets_s(&mut self.rng, n);
                let mut parts = Vec::with_capacity(n);
                let cluster = self.lock_cluster();
                for (i, offset_s) in offsets.iter().enumerate() {
                    let spec = ClockSkew::Offset {
                        offset_s: *offset_s,
                    }
                    .faketime_spec();
                    cluster.set_clock(i, &spec)?;
                    parts.push(format!("n{} {spec}s", i + 1));
                }
                Ok(format!("wall clocks {}", parts.join(", ")))
            }
            Fault::Clock(skew, target) => {
                let i = self.pick(target, leader);
                let spec = skew.faketime_spec();
                self.lock_cluster().set_clock(i, &spec)?;
                Ok(format!("n{} wall clock {spec:?} (libfaketime)", i + 1))
            }
            Fault::Membership(change, target) => Ok(self.change_membership(change, target, leader)),
            Fault::Transfer => Ok(self.transfer_leader(leader)),
        }
    }

    /// Asks the leader to hand leadership to a random other replica; says what came of it.
    fn transfer_leader(&mut self, leader: Option<usize>) -> String {
        let Some(from) = leader else {
            return "no leader known; nothing asked".to_string();
        };
        if self.replicas < 2 {
            return "a single replica; nothing asked".to_string();
        }
        let others: Vec<usize> = (0..self.replicas).filter(|i| *i != from).collect();
        let to = others[self.rng.below(others.len() as u64) as usize];
        let timeout = Duration::from_millis(TRANSFER_TIMEOUT_MS);
        let result = self
            .handle
            .block_on(self.conn.transfer_leader(to as u64 + 1, timeout));
        let what = format!("leadership n{} -> n{}", from + 1, to + 1);
        match result {
            Ok(()) => what,
            Err(e) => format!("{what}: not confirmed ({})", e.message()),
        }
    }

    fn change_membership(
        &mut self,
        change: MembershipChange,
        target: Target,
        leader: Option<usize>,
    ) -> String {
        let n = self.replicas;
        let i = self.pick(target, leader);
        let id = i as u64 + 1;
        let voters: Vec<u64> = full_voters(n).into_iter().filter(|v| *v != id).collect();
        if voters.is_empty() {
            return format!("n{} is the only voter; nothing changed", i + 1);
        }
        let retain = change == MembershipChange::Demote;
        self.membership_changed = true;
        let timeout = Duration::from_millis(MEMBERSHIP_CHANGE_TIMEOUT_MS);
        let result =
            self.handle
                .block_on(self.conn.change_membership(voters.clone(), retain, timeout));
        let what = if retain {
            format!("n{} demoted to learner, voters {voters:?}", i + 1)
        } else {
            format!("n{} removed from the group, voters {voters:?}", i + 1)
        };
        match result {
            Ok(()) => what,
            Err(e) => format!("{what}: not confirmed ({})", e.message()),
        }
    }

    /// Restores every replica as a voter, adding removed ones back as learners first, and
    /// always ends with a committed `ChangeMembership` to all of them: a change the group could
    /// not finish (its client gave up) may have left a joint configuration, whose voters
    /// `Status` lists as the union, so a status that looks full is not enough. Bounded by
    /// `timeout` and a count of attempts.
    pub fn restore_membership(&mut self, timeout: Duration) -> Result<String> {
        let n = self.replicas;
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no attempt made");
        let mut actions = Vec::new();
        for _ in 0..MAX_RESTORE_ATTEMPTS {
            if Instant::now() >= deadline {
                break;
            }
            let call_timeout = Duration::from_millis(MEMBERSHIP_CHANGE_TIMEOUT_MS)
                .min(deadline.saturating_duration_since(Instant::now()));
            match self.membership() {
                Some(m) => {
                    let missing: Vec<u64> = full_voters(n)
                        .into_iter()
                        .filter(|id| !m.members.contains(id))
                        .collect();
                    let mut ok = true;
                    for id in missing {
                        let addr = replica_endpoint(id as usize - 1);
                        match self
                            .handle
                            .block_on(self.conn.add_learner(id, &addr, call_timeout))
                        {
                            Ok(()) => actions.push(format!("n{id} added as learner")),
                            Err(e) => {
                                last = format!("add learner n{id}: {}", e.message());
                                ok = false;
                            }
                        }
                    }
                    if ok {
                        match self.handle.block_on(self.conn.change_membership(
                            full_voters(n),
                            false,
                            call_timeout,
                        )) {
                            Ok(()) => {
                                actions.push(format!("voters {:?}", full_voters(n)));
                                if self.membership().is_some_and(|m| m.is_full(n)) {
                                    self.membership_changed = false;
                                    return Ok(actions.join("; "));
                                }
                                last = "the leader does not list every replica as a voter".into();
                            }
                            Err(e) => last = format!("change membership: {}", e.message()),
                        }
                    }
                }
                None => last = "no leader reports the membership".to_string(),
            }
            std::thread::sleep(Duration::from_millis(RESTORE_RETRY_PAUSE_MS));
        }
        Err(Error::harness(
            "restoring the membership",
            format!(
                "the voters were not all of 1..={n} within {} ms: {last}",
                timeout.as_millis()
            ),
        ))
    }

    /// Heals everything: partitions, processes, clocks, then (if a change was made) the
    /// membership, within `membership_timeout`.
    pub fn heal(&mut self, membership_timeout: Duration) -> Result<String> {
        self.network.heal()?;
        {
            let mut cluster = self.lock_cluster();
            cluster.heal()?;
            cluster.reset_clocks()?;
        }
        if self.membership_changed {
            self.restore_membership(membership_timeout)
        } else {
            Ok("healed".to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_is_read_from_the_leader_status_only() {
        let status = serde_json::json!({
            "id": 2, "leader": 2, "state": "Leader",
            "members": [
                {"id": 1, "addr": "a:1", "voter": true},
                {"id": 2, "addr": "a:2", "voter": true},
                {"id": 3, "addr": "a:3", "voter": false},
            ]
        });
        let m = Membership::from_status(&status).expect("leader");
        assert_eq!(m.leader, 1);
        assert_eq!(m.voters, vec![1, 2]);
        assert_eq!(m.members, vec![1, 2, 3]);
        assert!(!m.is_full(3));
        let follower = serde_json::json!({"id": 1, "leader": 2, "members": []});
        assert_eq!(Membership::from_status(&follower), None);
        let full = serde_json::json!({
            "id": 1, "leader": 1,
            "members": [{"id": 2, "voter": true}, {"id": 1, "voter": true}]
        });
        assert!(Membership::from_status(&full).unwrap().is_full(2));
        assert_eq!(full_voters(3), vec![1, 2, 3]);
    }
}
