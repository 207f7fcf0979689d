//! The test network: one network namespace per replica ("host"), each with a veth link to a
//! bridge in the root namespace that also carries the harness's own address, and partitions
//! as iptables DROP rules inside the namespaces.
//!
//! Every name it creates starts with `NAME_PREFIX`, so `remove_leftovers` can clean up after
//! a crashed run; a lock file (`RUN_LOCK_PATH`) keeps a second run from doing that to a live
//! one (it waits instead). It must only address the private subnet `SUBNET_PREFIX`.0/24.

use crate::error::{Error, Result};
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The lock file of the run that owns the test network (it holds that run's pid).
pub const RUN_LOCK_PATH: &str = "/run/singularity-jepsen.lock";
/// Longest a run waits for another one to release the test network.
const RUN_LOCK_WAIT_MS: u64 = 15 * 60 * 1000;
/// Pause between two looks at the lock.
const RUN_LOCK_POLL_MS: u64 = 500;

/// Prefix of every namespace and link the harness creates.
pub const NAME_PREFIX: &str = "sjep";
/// The private /24 used only inside the test network.
pub const SUBNET_PREFIX: &str = "10.77.0";
/// The bridge's (the harness's) host number in the subnet.
const BRIDGE_HOST: u8 = 1;
/// Replica `i` (0-based) gets host number `FIRST_REPLICA_HOST + i`.
const FIRST_REPLICA_HOST: u8 = 11;
/// Most replicas the subnet layout allows.
pub const MAX_REPLICAS: usize = 9;
/// Node agent `i` (0-based) gets host number `FIRST_AGENT_HOST + i`.
const FIRST_AGENT_HOST: u8 = 31;
/// Most node agents the subnet layout allows.
pub const MAX_AGENTS: usize = 9;

/// Runs a command, failing with its stderr.
pub fn sh(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::harness(format!("{program} {}", args.join(" ")), e.to_string()))?;
    if !output.status.success() {
        return Err(Error::harness(
            format!("{program} {}", args.join(" ")),
            format!(
                "exit {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// True when the process runs with effective uid 0.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn bridge_name() -> String {
    format!("{NAME_PREFIX}-br")
}

/// The namespace of replica `i` (0-based).
pub fn namespace(i: usize) -> String {
    format!("{NAME_PREFIX}-n{}", i + 1)
}

fn veth_name(i: usize) -> String {
    format!("{NAME_PREFIX}-v{}", i + 1)
}

/// The namespace of node agent `i` (0-based).
pub fn agent_namespace(i: usize) -> String {
    format!("{NAME_PREFIX}-a{}", i + 1)
}

fn agent_veth_name(i: usize) -> String {
    format!("{NAME_PREFIX}-w{}", i + 1)
}

/// The IPv4 address of node agent `i` (0-based).
pub fn agent_ip(i: usize) -> String {
    format!("{SUBNET_PREFIX}.{}", FIRST_AGENT_HOST as usize + i)
}

/// The IPv4 address of replica `i` (0-based).
pub fn replica_ip(i: usize) -> String {
    format!("{SUBNET_PREFIX}.{}", FIRST_REPLICA_HOST as usize + i)
}

/// Removes every namespace (killing the processes in it) and link whose name starts with
/// `NAME_PREFIX`. Errors are ignored: this is best-effort cleanup.
pub fn remove_leftovers() {
    let namespaces = sh("ip", &["netns", "list"]).unwrap_or_default();
    for line in namespaces.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if !name.starts_with(NAME_PREFIX) {
            continue;
        }
        let pids = sh("ip", &["netns", "pids", name]).unwrap_or_default();
        for pid in pids.split_whitespace() {
            let _ = sh("kill", &["-CONT", pid]);
            let _ = sh("kill", &["-KILL", pid]);
        }
        let _ = sh("ip", &["netns", "del", name]);
    }
    let links = sh("ip", &["-o", "link", "show"]).unwrap_or_default();
    for line in links.lines() {
        // "12: sjep-v1@if2: <...>"
        let Some(name) = line.split(':').nth(1) else {
            continue;
        };
        let name = name.trim().split('@').next().unwrap_or("");
        if name.starts_with(NAME_PREFIX) {
            let _ = sh("ip", &["link", "del", name]);
        }
    }
}

/// Ownership of the test network by this process; released (file removed) when dropped.
pub struct RunLock {
    pid: u32,
}

impl RunLock {
    /// Takes the lock, waiting while a live process holds it (up to `RUN_LOCK_WAIT_MS`); a
    /// lock left by a dead process is taken over.
    pub fn acquire() -> Result<RunLock> {
        let pid = std::process::id();
        let deadline = Instant::now() + Duration::from_millis(RUN_LOCK_WAIT_MS);
        let mut told = false;
        // Bounded by the deadline; each pass waits RUN_LOCK_POLL_MS or returns.
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(RUN_LOCK_PATH)
            {
                Ok(mut file) => {
                    file.write_all(pid.to_string().as_bytes())
                        .map_err(|error| Error::Io {
                            path: RUN_LOCK_PATH.into(),
                            error,
                        })?;
                    return Ok(RunLock { pid });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(error) => {
                    return Err(Error::Io {
                        path: RUN_LOCK_PATH.into(),
                        error,
                    })
                }
            }
            let holder = std::fs::read_to_string(RUN_LOCK_PATH).unwrap_or_default();
            let holder = holder.trim();
            let alive = !holder.is_empty() && Path::new("/proc").join(holder).exists();
            if !alive {
                let _ = std::fs::remove_file(RUN_LOCK_PATH);
                continue;
            }
            if Instant::now() >= deadline {
                return Err(Error::harness(
                    "network",
                    format!(
                        "another singularity-jepsen run (pid {holder}) has used the test network for over {RUN_LOCK_WAIT_MS} ms; wait for it or stop it"
                    ),
                ));
            }
            if !told {
                eprintln!(
                    "jepsen: waiting for another run (pid {holder}) to release the test network"
                );
                told = true;
            }
            std::thread::sleep(Duration::from_millis(RUN_LOCK_POLL_MS));
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let holder = std::fs::read_to_string(RUN_LOCK_PATH).unwrap_or_default();
        if holder.trim() == self.pid.to_string() {
            let _ = std::fs::remove_file(RUN_LOCK_PATH);
        }
    }
}

/// One host: namespace `ns` with `ip`/24 on its `eth0`, linked by veth `veth` to `bridge`.
fn add_host(bridge: &str, ns: &str, veth: &str, ip: &str) -> Result<()> {
    let addr = format!("{ip}/24");
    sh("ip", &["netns", "add", ns])?;
    sh(
        "ip",
        &["netns", "exec", ns, "ip", "link", "set", "lo", "up"],
    )?;
    sh(
        "ip",
        &[
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ],
    )?;
    sh("ip", &["link", "set", veth, "master", bridge])?;
    sh("ip", &["link", "set", veth, "up"])?;
    sh(
        "ip",
        &[
            "netns", "exec", ns, "ip", "addr", "add", &addr, "dev", "eth0",
        ],
    )?;
    sh(
        "ip",
        &["netns", "exec", ns, "ip", "link", "set", "eth0", "up"],
    )?;
    Ok(())
}

/// The test network; dropping it removes everything it created, then releases the lock.
pub struct Network {
    replicas: usize,
    _lock: RunLock,
}

impl Network {
    /// Creates the bridge and `replicas` namespaces, after removing leftovers of earlier runs.
    pub fn create(replicas: usize) -> Result<Network> {
        Network::create_with_agents(replicas, 0)
    }

    /// Creates the bridge, `replicas` replica namespaces and `agents` node-agent namespaces
    /// (`sjep-a1`... at `10.77.0.31`...), after removing leftovers of earlier runs. Partitions
    /// only cut replicas from replicas; agents always reach every replica.
    pub fn create_with_agents(replicas: usize, agents: usize) -> Result<Network> {
        if !is_root() {
            return Err(Error::NotRoot);
        }
        if replicas == 0 || replicas > MAX_REPLICAS {
            return Err(Error::harness(
                "network",
                format!("{replicas} replicas; give between 1 and {MAX_REPLICAS}"),
            ));
        }
        if agents > MAX_AGENTS {
            return Err(Error::harness(
                "network",
                format!("{agents} node agents; give at most {MAX_AGENTS}"),
            ));
        }
        let lock = RunLock::acquire()?;
        remove_leftovers();
        let network = Network {
            replicas,
            _lock: lock,
        };
        let bridge = bridge_name();
        let bridge_addr = format!("{SUBNET_PREFIX}.{BRIDGE_HOST}/24");
        sh("ip", &["link", "add", &bridge, "type", "bridge"])?;
        sh("ip", &["addr", "add", &bridge_addr, "dev", &bridge])?;
        sh("ip", &["link", "set", &bridge, "up"])?;
        for i in 0..replicas {
            add_host(&bridge, &namespace(i), &veth_name(i), &replica_ip(i))?;
        }
        for i in 0..agents {
            add_host(
                &bridge,
                &agent_namespace(i),
                &agent_veth_name(i),
                &agent_ip(i),
            )?;
        }
        Ok(network)
    }

    /// Number of replica hosts.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Installs DROP rules: replica `a` drops packets from every replica in `grudges[a]`.
    pub fn partition(&self, grudges: &[Vec<usize>]) -> Result<()> {
        for (a, dropped) in grudges.iter().enumerate().take(self.replicas) {
            let ns = namespace(a);
            for &b in dropped {
                let source = replica_ip(b);
                sh(
                    "ip",
                    &[
                        "netns", "exec", &ns, "iptables", "-A", "INPUT", "-s", &source, "-j",
                        "DROP",
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// Removes every partition rule.
    pub fn heal(&self) -> Result<()> {
        for a in 0..self.replicas {
            sh(
                "ip",
                &["netns", "exec", &namespace(a), "iptables", "-F", "INPUT"],
            )?;
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        remove_leftovers();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_are_private_and_prefixed() {
        assert_eq!(namespace(0), "sjep-n1");
        assert_eq!(replica_ip(2), "10.77.0.13");
        assert_eq!(agent_namespace(0), "sjep-a1");
        assert_eq!(agent_ip(MAX_AGENTS - 1), "10.77.0.39");
        assert!(agent_veth_name(8).len() <= 15);
        assert!(
            veth_name(8).len() <= 15,
            "interface names are at most 15 bytes"
        );
        assert!(bridge_name().starts_with(NAME_PREFIX));
    }
}
