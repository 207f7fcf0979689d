//! `singularity dev`: a whole local cluster in one command. It starts 3 control-plane replicas
//! and 2 node agents (node-a, node-b, with simulated devices) as child processes of the
//! current executable, with data in a fresh temporary directory (or a given one, which a
//! later run restarts), waits until a leader is elected and both nodes are registered, prints
//! how to reach the cluster, then prints each scheduling decision as it commits. `--demo`
//! submits a mixed-tier workload (see `demo`); `--for` stops after a while; SIGINT and SIGTERM
//! stop everything: agents first (they stop their ranks), then replicas.
//!
//! This module orchestrates processes and prints; it holds no scheduling logic and must leave
//! no process behind (bounded waits, SIGKILL for stragglers, PR_SET_PDEATHSIG on every child,
//! and children are started from the main thread, whose exit is what the kernel watches).

mod children;
mod demo;
mod events;
mod feed;
mod layout;

use anyhow::Context;
use children::Managed;
use clap::Args;
use feed::{bounded, unix_ms, Feed, Printer};
use layout::{Layout, MAX_BASE_PORT, MAX_DEVICES_PER_NODE, NODES, REPLICAS};
use singularity_proto::query;
use singularity_raft::client::Client;
use singularity_raft::server::RaftStatus;
use singularity_scheduler::{Node, NodeStatus};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Simulated devices per node unless `--devices-per-node` says otherwise.
pub const DEFAULT_DEVICES_PER_NODE: u32 = 4;
/// A node is declared down after this long without a heartbeat (short, for a laptop).
const NODE_HEARTBEAT_TIMEOUT_MS: u64 = 5_000;
/// How often agents heartbeat.
const AGENT_HEARTBEAT_INTERVAL_MS: u64 = 1_000;
/// Between SIGTERM and SIGKILL of a preempted rank.
const GRACE_PERIOD_MS: u64 = 3_000;
/// How often the leader ticks (growth of shrunk jobs, rebalancing).
const TICK_INTERVAL_MS: u64 = 1_000;
/// Bound on the start of the cluster: a leader, then both nodes registered.
const READY_TIMEOUT_MS: u64 = 60_000;
/// Bound on the agents' exit after SIGTERM: they stop their ranks first (grace period).
const AGENT_STOP_TIMEOUT_MS: u64 = GRACE_PERIOD_MS + 10_000;
/// Bound on the replicas' exit after SIGTERM.
const REPLICA_STOP_TIMEOUT_MS: u64 = 10_000;
/// How often the main loop checks its children, the log and the demo.
const LOOP_POLL_MS: u64 = 250;
/// Longest `--for`: a week.
const MAX_FOR_SECONDS: u64 = 7 * 24 * 3_600;

/// Flags of `singularity dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Keep the cluster's data here (RocksDB of each replica, agents' work dirs, checkpoints,
    /// logs) instead of in a fresh temporary directory; a later run on it restarts the same
    /// cluster, with its jobs.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Simulated devices (kind h100) on each of the two nodes [default: 4, or what --data-dir
    /// was created with].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_DEVICES_PER_NODE)))]
    pub devices_per_node: Option<u32>,
    /// Submit a mixed-tier workload of small real jobs and watch the scheduler place, shrink,
    /// preempt and resume them.
    #[arg(long)]
    pub demo: bool,
    /// Stop cleanly after this many seconds (default: run until Ctrl-C).
    #[arg(long = "for", value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=MAX_FOR_SECONDS))]
    pub for_seconds: Option<u64>,
    /// Replicas listen on BASE, BASE+1, BASE+2 and the agents' log services on BASE+3, BASE+4
    /// (default: free ports, or those --data-dir was created with).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1024..=i64::from(MAX_BASE_PORT)))]
    pub base_port: Option<u16>,
    /// Keep the temporary data directory at the end (a --data-dir is always kept).
    #[arg(long)]
    pub keep: bool,
}

/// The running children, stopped in order by `shutdown`.
#[derive(Default)]
struct Cluster {
    replicas: Vec<Managed>,
    agents: Vec<Managed>,
}

impl Cluster {
    /// The first child that has exited, with its status.
    fn exited(&mut self) -> Option<(&Managed, std::process::ExitStatus)> {
        self.replicas
            .iter_mut()
            .chain(self.agents.iter_mut())
            .find_map(|c| c.try_exit().map(|status| (&*c, status)))
    }

    /// Agents first (each stops its ranks within the grace period), then replicas; SIGKILL
    /// for whatever does not exit in time.
    fn shutdown(&mut self) {
        if !self.agents.is_empty() {
            println!(
                "stopping the agents (their ranks get SIGTERM, then SIGKILL after {} s)",
                GRACE_PERIOD_MS / 1_000
            );
            for name in children::stop_all(&mut self.agents, AGENT_STOP_TIMEOUT_MS) {
                println!("  {name} did not stop within {AGENT_STOP_TIMEOUT_MS} ms: killed");
            }
        }
        if !self.replicas.is_empty() {
            println!("stopping the replicas");
            for name in children::stop_all(&mut self.replicas, REPLICA_STOP_TIMEOUT_MS) {
                println!("  {name} did not stop within {REPLICA_STOP_TIMEOUT_MS} ms: killed");
            }
        }
        let count = self.agents.len() + self.replicas.len();
        if count > 0 {
            println!(
                "stopped {} agent(s) and {} replica(s)",
                self.agents.len(),
                self.replicas.len()
            );
        }
    }
}

/// Why the cluster should stop, once it should.
struct StopWatch {
    signal: watch::Receiver<Option<&'static str>>,
    deadline: Option<Instant>,
    for_seconds: Option<u64>,
}

impl StopWatch {
    fn reason(&self) -> Option<String> {
        if let Some(signal) = *self.signal.borrow() {
            return Some(format!("{signal} received"));
        }
        match (self.deadline, self.for_seconds) {
            (Some(deadline), Some(seconds)) if Instant::now() >= deadline => {
                Some(format!("--for {seconds} elapsed"))
            }
            _ => None,
        }
    }

    /// Sleeps `ms`, or less if a signal arrives.
    async fn sleep(&mut self, ms: u64) {
        tokio::select! {
            _ = self.signal.changed() => {},
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {},
        }
    }
}

/// Installs the SIGINT and SIGTERM handlers; the receiver names the first signal.
fn install_signals(
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<watch::Receiver<Option<&'static str>>> {
    use tokio::signal::unix::{signal, SignalKind};
    let _guard = runtime.enter();
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let (tx, rx) = watch::channel(None);
    runtime.spawn(async move {
        let which = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        let _ = tx.send(Some(which));
        // Later signals are absorbed: the shutdown under way is bounded.
        loop {
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
            }
        }
    });
    Ok(rx)
}

/// Runs `singularity dev`.
pub fn run(args: DevArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let start_unix_ms = unix_ms();
    let exe = std::env::current_exe().context("finding the singularity executable")?;
    if !exe.is_file() {
        anyhow::bail!(
            "the singularity executable {} is gone (rebuilt or deleted while running?); \
             build it again (./scripts/run.sh dev) and retry",
            exe.display()
        );
    }
    let (root, temporary) = match &args.data_dir {
        Some(dir) => (dir.clone(), false),
        None => (layout::fresh_temp_dir()?, true),
    };
    let remove_root = |root: &Path| {
        if temporary && !args.keep {
            match std::fs::remove_dir_all(root) {
                Ok(()) => println!("removed {}", root.display()),
                Err(e) => eprintln!("warning: could not remove {}: {e}", root.display()),
            }
        } else {
            println!("data kept in {}", root.display());
        }
    };
    let layout = match Layout::open(&root, args.base_port, args.devices_per_node) {
        Ok(layout) => layout,
        Err(e) => {
            if temporary {
                let _ = std::fs::remove_dir_all(&root);
            }
            return Err(e);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut stop = StopWatch {
        signal: install_signals(&runtime)?,
        deadline: args.for_seconds.map(|s| started + Duration::from_secs(s)),
        for_seconds: args.for_seconds,
    };
    let mut cluster = Cluster::default();
    let printer = Printer::new(start_unix_ms);
    let result = run_cluster(
        &args,
        &exe,
        &layout,
        &runtime,
        &mut stop,
        &mut cluster,
        printer,
    );
    cluster.shutdown();
    drop(runtime);
    remove_root(&root);
    result
}

/// The `singularity` to show in example commands: the bare name if it is on PATH.
fn command_name(exe: &Path) -> String {
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::canonicalize(dir.join("singularity")).ok() == std::fs::canonicalize(exe).ok()
        })
    });
    if on_path {
        "singularity".to_string()
    } else {
        exe.display().to_string()
    }
}

fn replica_args(layout: &Layout, index: usize) -> Vec<String> {
    vec![
        "server".into(),
        "--node-id".into(),
        (index + 1).to_string(),
        "--listen".into(),
        layout.replica_addr(index).to_string(),
        "--data-dir".into(),
        layout.replica_dir(index).display().to_string(),
        "--initial-cluster".into(),
        layout.initial_cluster(),
        "--node-heartbeat-timeout-ms".into(),
        NODE_HEARTBEAT_TIMEOUT_MS.to_string(),
        "--tick-interval-ms".into(),
        TICK_INTERVAL_MS.to_string(),
    ]
}

fn agent_args(layout: &Layout, index: usize) -> Vec<String> {
    let node = NODES[index];
    vec![
        "agent".into(),
        "--servers".into(),
        layout.endpoints().join(","),
        "--node".into(),
        node.into(),
        "--devices".into(),
        format!("sim:{}", layout.state.devices_per_node),
        "--work-dir".into(),
        layout.agent_dir(node).display().to_string(),
        "--checkpoint-dir".into(),
        layout.checkpoint_dir().display().to_string(),
        "--listen".into(),
        layout.agent_listen(index).to_string(),
        "--heartbeat-interval-ms".into(),
        AGENT_HEARTBEAT_INTERVAL_MS.to_string(),
        "--grace-period-ms".into(),
        GRACE_PERIOD_MS.to_string(),
    ]
}

fn port_hint(args: &DevArgs, layout: &Layout) -> String {
    if args.base_port.is_some() {
        "pick another --base-port".to_string()
    } else if layout.reused {
        format!(
            "another process holds it (an earlier `singularity dev --data-dir {}` still \
             running?); stop it, or use another --data-dir",
            layout.root.display()
        )
    } else {
        "it was free a moment ago; run again".to_string()
    }
}

/// Checks every child; an exit at this point is an error naming it and its log.
fn check_children(cluster: &mut Cluster, when: &str) -> anyhow::Result<()> {
    match cluster.exited() {
        Some((child, status)) => Err(child.exit_error(status, when)),
        None => Ok(()),
    }
}

/// The replica that leads, by asking each for its status.
async fn find_leader(client: &mut Client, endpoints: &[String]) -> Option<u64> {
    for endpoint in endpoints {
        let status = bounded("replica status", async {
            Ok(client.status_of(endpoint).await?)
        })
        .await
        .ok()
        .and_then(|json| serde_json::from_str::<RaftStatus>(&json).ok());
        if let Some(status) = status {
            if status.leader == Some(status.id) {
                return Some(status.id);
            }
        }
    }
    None
}

/// Registered nodes that are up, by name.
async fn nodes_up(client: &mut Client) -> anyhow::Result<Vec<String>> {
    let reply = bounded("listing nodes", async {
        Ok(client.read(query::NODES, 0, false).await?)
    })
    .await?;
    let nodes: Vec<Node> = serde_json::from_str(&reply.json)?;
    Ok(nodes
        .iter()
        .filter(|n| n.status == NodeStatus::Up)
        .map(|n| n.name.to_string())
        .collect())
}

/// Starts everything, waits until it is ready, prints how to reach it, then follows the log
/// (and runs the demo) until a stop. The caller shuts the children down whatever happens.
fn run_cluster(
    args: &DevArgs,
    exe: &Path,
    layout: &Layout,
    runtime: &tokio::runtime::Runtime,
    stop: &mut StopWatch,
    cluster: &mut Cluster,
    printer: Printer,
) -> anyhow::Result<()> {
    for dir in [
        layout.log_dir(),
        layout.checkpoint_dir(),
        layout.root.join("replicas"),
        layout.root.join("agents"),
    ] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    println!(
        "singularity dev: {} cluster in {}",
        if layout.reused {
            "restarting the"
        } else {
            "a new"
        },
        layout.root.display()
    );
    // Every port before any child: a taken one fails fast, with nothing to undo.
    let hint = port_hint(args, layout);
    for index in 0..REPLICAS {
        let name = format!("replica-{}", index + 1);
        layout::check_port_free(layout.replica_addr(index), &name, &hint)?;
    }
    for (index, node) in NODES.iter().enumerate() {
        let what = format!("the log service of {node}");
        layout::check_port_free(layout.agent_listen(index), &what, &hint)?;
    }
    let endpoints = layout.endpoints();
    for index in 0..REPLICAS {
        let name = format!("replica-{}", index + 1);
        let addr = layout.replica_addr(index);
        let log = layout.log_file(&name);
        let child = Managed::spawn(exe, &name, &replica_args(layout, index), &log)?;
        println!(
            "  started {name:<9} pid {:<7} gRPC {addr}  log {}",
            child.pid(),
            log.display()
        );
        cluster.replicas.push(child);
    }

    // A leader first: agents register through it.
    let mut client = Client::new(endpoints.clone())?;
    let deadline = Instant::now() + Duration::from_millis(READY_TIMEOUT_MS);
    let leader = runtime.block_on(async {
        loop {
            check_children(cluster, "while starting")?;
            if let Some(reason) = stop.reason() {
                return Ok::<_, anyhow::Error>(Err(reason));
            }
            if let Some(leader) = find_leader(&mut client, &endpoints).await {
                return Ok(Ok(leader));
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "no leader was elected within {READY_TIMEOUT_MS} ms; see the replicas' \
                     logs in {}",
                    layout.log_dir().display()
                );
            }
            stop.sleep(LOOP_POLL_MS).await;
        }
    })?;
    let leader = match leader {
        Ok(leader) => leader,
        Err(reason) => {
            println!("{reason}; stopping");
            return Ok(());
        }
    };
    println!("  replica {leader} is the leader");

    for (index, node) in NODES.iter().enumerate() {
        let log = layout.log_file(node);
        let child = Managed::spawn(exe, node, &agent_args(layout, index), &log)?;
        println!(
            "  started {node:<9} pid {:<7} {} simulated h100  log {}",
            child.pid(),
            layout.state.devices_per_node,
            log.display()
        );
        cluster.agents.push(child);
    }
    let ready = runtime.block_on(async {
        loop {
            check_children(cluster, "while starting")?;
            if let Some(reason) = stop.reason() {
                return Ok::<_, anyhow::Error>(Some(reason));
            }
            let up = nodes_up(&mut client).await.unwrap_or_default();
            if NODES.iter().all(|n| up.iter().any(|u| u == n)) {
                return Ok(None);
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "the nodes did not register within {READY_TIMEOUT_MS} ms (up: {}); see \
                     the agents' logs in {}",
                    if up.is_empty() {
                        "none".to_string()
                    } else {
                        up.join(", ")
                    },
                    layout.log_dir().display()
                );
            }
            stop.sleep(LOOP_POLL_MS).await;
        }
    })?;
    if let Some(reason) = ready {
        println!("{reason}; stopping");
        return Ok(());
    }
    // The feed starts from the state before the banner: nothing a reader of the banner does
    // can commit before the feed's first index.
    let mut feed = runtime.block_on(bounded(
        "starting the decision feed",
        Feed::start(endpoints.clone(), printer),
    ))?;
    print_banner(args, exe, layout, stop);

    runtime.block_on(async {
        let mut demo = args
            .demo
            .then(|| demo::Demo::new(layout.state.devices_per_node));
        loop {
            if let Some(reason) = stop.reason() {
                feed.poll().await;
                feed.printer().note(&format!("{reason}; stopping"));
                break;
            }
            check_children(cluster, "unexpectedly")?;
            feed.poll().await;
            if let Some(demo) = demo.as_mut() {
                if !demo.done() {
                    demo.step(&mut client, &mut feed).await?;
                }
            }
            stop.sleep(LOOP_POLL_MS).await;
        }
        if let Some(demo) = demo.as_mut() {
            if demo.started() && !demo.done() {
                if let Err(e) = demo.summary(&mut client, &mut feed).await {
                    eprintln!("warning: no demo summary: {e:#}");
                }
            }
        }
        Ok(())
    })
}

/// How to reach the cluster.
fn print_banner(args: &DevArgs, exe: &Path, layout: &Layout, stop: &StopWatch) {
    let endpoints = layout.endpoints().join(",");
    let s = command_name(exe);
    let logs = layout.log_dir();
    println!();
    println!(
        "The cluster is up: 3 replicas, and nodes {} with {} simulated h100 devices each.",
        NODES.join(" and "),
        layout.state.devices_per_node
    );
    println!("  endpoints  {endpoints}");
    println!(
        "  data       {}{}",
        layout.root.display(),
        if args.data_dir.is_none() && !args.keep {
            " (removed at exit; --keep or --data-dir keeps it)"
        } else {
            ""
        }
    );
    println!(
        "  logs       {}/{{replica-1,replica-2,replica-3,{}}}.log",
        logs.display(),
        NODES.join(",")
    );
    println!();
    println!("In another terminal:");
    println!("  export SINGULARITY_ENDPOINTS={endpoints}");
    println!(
        "  {s} job submit --name hello --world-size 2 -- sh -c 'echo rank $RANK of $WORLD_SIZE'"
    );
    println!("  {s} job list");
    println!("  {s} job status 1");
    println!("  {s} job logs 1 --rank 0 --follow");
    println!("  {s} node list");
    println!("  {s} operator log");
    println!();
    match stop.for_seconds {
        Some(seconds) => {
            println!("Ctrl-C stops everything (it stops by itself {seconds} s after it started).")
        }
        None => println!("Ctrl-C stops everything."),
    }
    println!("Decisions as they commit (seconds since start):");
}
