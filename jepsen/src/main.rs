//! The `singularity-jepsen` binary: a thin command-line front end to the library.
//!
//! It must not hold checking or harness logic; it parses flags, calls `singularity_jepsen`,
//! prints the report and maps the verdict to the exit status (`check`: 0 linearizable, 1 not,
//! 2 unknown or bad input; `test`: 0 every check valid, 1 an anomaly or undecided, 2 the run
//! could not be done).

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use singularity_jepsen::edn::EdnReader;
use singularity_jepsen::harness::{self, NemesisKind, TestOptions, WorkloadKind};
use singularity_jepsen::html::render_html;
use singularity_jepsen::{
    check_history, read_history_file, CheckOptions, Error, Format, ModelKind, Validity,
};
use std::path::PathBuf;
use std::process::ExitCode;

/// Black-box correctness harness for Singularity.
#[derive(Parser)]
#[command(name = "singularity-jepsen", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a history for linearizability (exit 0: linearizable, 1: not, 2: unknown or bad input).
    Check(CheckArgs),
    /// Run replicas in network namespaces under faults, record histories and check them
    /// (needs root; exit 0: every check valid, 1: not, 2: the run could not be done).
    Test(TestArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WorkloadArg {
    /// Per-key compare-and-set registers on job metadata, checked for linearizability.
    Register,
    /// Concurrent job submissions; acknowledged ones present exactly once at the end.
    Set,
    /// Mixed-tier submissions and cancellations on nodes; logs, digests, device exclusivity
    /// over every committed state, and no preempted job starving (first in line, yet waiting).
    Scheduler,
}

#[derive(clap::Args)]
struct TestArgs {
    /// The `singularity` binary to run as replicas. Default: next to this executable.
    #[arg(long, value_name = "PATH")]
    server_bin: Option<PathBuf>,
    /// Number of replicas.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// How long the workload runs, in seconds (setup, recovery and checks come on top).
    #[arg(long, default_value_t = 30)]
    time_limit_s: u64,
    /// Clients per workload.
    #[arg(long, default_value_t = 5)]
    concurrency: usize,
    /// Seed of the operations and the fault schedule. Default: from the clock.
    #[arg(long)]
    seed: Option<u64>,
    /// Where the run's files go. Default: results/<seed>-<unix time>.
    #[arg(long, value_name = "DIR")]
    results_dir: Option<PathBuf>,
    /// Faults to inject (comma-separated); give `--nemesis none` for none.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "partition,kill,pause"
    )]
    nemesis: Vec<NemesisArgOrNone>,
    /// Workloads to run concurrently (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "register,set"
    )]
    workload: Vec<WorkloadArg>,
    /// Registers (jobs) of the register workload.
    #[arg(long, default_value_t = 8)]
    keys: usize,
    /// Typical length of one fault, in milliseconds.
    #[arg(long, default_value_t = 4000)]
    fault_ms: u64,
    /// Healed time between faults, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    heal_ms: u64,
    /// Time after the workload, all faults healed, before the final reads, in seconds.
    #[arg(long, default_value_t = 5)]
    recovery_s: u64,
    /// Time one operation may take before it is indeterminate (:info), in milliseconds.
    #[arg(long, default_value_t = 3000)]
    op_timeout_ms: u64,
    /// Pause of each client between operations, in milliseconds.
    #[arg(long, default_value_t = 20)]
    op_delay_ms: u64,
    /// Nodes of the scheduler workload.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Simulated devices per node of the scheduler workload.
    #[arg(long, default_value_t = 4)]
    devices_per_node: u16,
    /// Run the scheduler workload's nodes as real agents (`PATH agent --servers ... --node
    /// sim-<i> --domain ... --devices sim:<count>:<bytes>:sim --work-dir ...`, one per
    /// namespace) instead of the harness playing them through the API.
    #[arg(long, value_name = "PATH")]
    agent_bin: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum NemesisArgOrNone {
    /// Partitions: random halves, majority/minority, isolated leader, bridge, ring.
    Partition,
    /// kill -9 of a random replica or the leader, restarted when the fault ends.
    Kill,
    /// SIGSTOP of a random replica or the leader, SIGCONT when the fault ends.
    Pause,
    /// A voter demoted to learner or removed (Control.ChangeMembership), restored at the end.
    Membership,
    /// Wall-clock jumps and drift on replicas (libfaketime; `apt-get install faketime`).
    Clock,
    /// Leadership handed to another voter (Control.TransferLeader).
    Transfer,
    /// Every fault above.
    All,
    /// No faults.
    None,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModelArg {
    /// A register with :read and :write (initial value nil unless --initial).
    Register,
    /// A register with :read, :write and :cas [from to] (initial value nil unless --initial).
    CasRegister,
    /// Per-key strings with :get, :put and :append (initial value "" unless --initial).
    Kv,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputArg {
    /// A few lines for people.
    Text,
    /// One JSON object with "valid": true, false or "unknown".
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    /// Tell the format from the file's first characters.
    Auto,
    /// Jepsen EDN: a vector or list of op maps, or one op map per line.
    Edn,
    /// One JSON object per line.
    Json,
    /// Porcupine's etcd logs ("INFO  jepsen.util - <process> :<type> :<f> <value>").
    EtcdLog,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// The data type the history operates on. Histories with :key or Jepsen independent
    /// tuples ([key value]) are checked per key.
    #[arg(long, value_enum)]
    model: ModelArg,

    /// Initial value of every key, as EDN (e.g. nil, 0, "\"\""). Default: nil for the
    /// registers, "" for kv.
    #[arg(long, value_name = "EDN")]
    initial: Option<String>,

    /// Give up after this many milliseconds and answer "unknown" (exit 2) with how far the
    /// search got. Default: no limit.
    #[arg(long, value_name = "MS")]
    time_limit_ms: Option<u64>,

    /// How to print the result on standard output.
    #[arg(long, value_enum, default_value = "text")]
    output: OutputArg,

    /// Also write a self-contained HTML page with the verdict and, for a non-linearizable
    /// history, the smallest failing window of operations as a timeline.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,

    /// The history's format.
    #[arg(long, value_enum, default_value = "auto")]
    format: FormatArg,

    /// The history file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

fn hint(error: &Error) -> &'static str {
    match error {
        Error::InFile { error, .. } => hint(error),
        Error::EmptyHistory => "check that the test run produced client operations",
        Error::Model { .. } => "choose the --model that matches the history's :f values",
        Error::BadInitial(_) => {
            "give --initial as EDN text, e.g. --initial nil or --initial '\"\"'"
        }
        Error::UnknownFormat(_) => "name the format with --format edn|json|etcd-log",
        Error::Limit { .. } => "split the history, or check it per key",
        Error::Io { .. } => "check the path and its permissions",
        Error::NotRoot => "run as root, e.g. `sudo singularity-jepsen test ...`",
        Error::Harness { .. } => {
            "see the replicas' server.log files in the results directory; leftovers are removed at the next start"
        }
        Error::Syntax { .. } | Error::BadOp { .. } => "fix the record at that line",
    }
}

fn run(args: &CheckArgs) -> anyhow::Result<Validity> {
    let model = match args.model {
        ModelArg::Register => ModelKind::Register,
        ModelArg::CasRegister => ModelKind::CasRegister,
        ModelArg::Kv => ModelKind::Kv,
    };
    let format = match args.format {
        FormatArg::Auto => None,
        FormatArg::Edn => Some(Format::Edn),
        FormatArg::Json => Some(Format::JsonLines),
        FormatArg::EtcdLog => Some(Format::EtcdLog),
    };
    let initial = match &args.initial {
        None => None,
        Some(text) => Some(
            EdnReader::parse_one(text)
                .map_err(|e| Error::BadInitial(format!("--initial {text:?} is not EDN: {e}")))?,
        ),
    };
    let options = CheckOptions {
        model,
        initial,
        time_limit_ms: args.time_limit_ms,
    };
    let history = read_history_file(&args.file, format)?;
    let report = check_history(&history, &options).map_err(|e| e.in_file(&args.file))?;
    match args.output {
        OutputArg::Text => print!("{}", report.to_text()),
        OutputArg::Json => println!("{}", report.to_json()),
    }
    if let Some(path) = &args.html {
        let page = render_html(&report, &args.file.display().to_string());
        std::fs::write(path, page)
            .with_context(|| format!("writing the HTML page {}", path.display()))?;
    }
    Ok(report.valid)
}

fn default_server_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding this executable's path")?;
    Ok(exe.with_file_name("singularity"))
}

fn run_test(args: &TestArgs) -> anyhow::Result<bool> {
    let seed = match args.seed {
        Some(seed) => seed,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    };
    let results_dir = match &args.results_dir {
        Some(dir) => dir.clone(),
        None => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            PathBuf::from("results").join(format!("{seed}-{secs}"))
        }
    };
    let server_bin = match &args.server_bin {
        Some(path) => path.clone(),
        None => default_server_bin()?,
    };
    let mut nemeses: Vec<NemesisKind> = Vec::new();
    for n in &args.nemesis {
        let kinds: &[NemesisKind] = match n {
            NemesisArgOrNone::Partition => &[NemesisKind::Partition],
            NemesisArgOrNone::Kill => &[NemesisKind::Kill],
            NemesisArgOrNone::Pause => &[NemesisKind::Pause],
            NemesisArgOrNone::Membership => &[NemesisKind::Membership],
            NemesisArgOrNone::Clock => &[NemesisKind::Clock],
            NemesisArgOrNone::Transfer => &[NemesisKind::Transfer],
            NemesisArgOrNone::All => &NemesisKind::ALL,
            NemesisArgOrNone::None => &[],
        };
        for kind in kinds {
            if !nemeses.contains(kind) {
                nemeses.push(*kind);
            }
        }
    }
    let workloads = args
        .workload
        .iter()
        .map(|w| match w {
            WorkloadArg::Register => WorkloadKind::Register,
            WorkloadArg::Set => WorkloadKind::Set,
            WorkloadArg::Scheduler => WorkloadKind::Scheduler,
        })
        .collect();
    eprintln!("jepsen: seed {seed}, results in {}", results_dir.display());
    let outcome = harness::run_test(TestOptions {
        server_bin,
        replicas: args.replicas,
        time_limit_s: args.time_limit_s,
        concurrency: args.concurrency,
        seed,
        results_dir,
        nemeses,
        workloads,
        keys: args.keys,
        fault_ms: args.fault_ms,
        heal_ms: args.heal_ms,
        recovery_s: args.recovery_s,
        op_timeout_ms: args.op_timeout_ms,
        op_delay_ms: args.op_delay_ms,
        nodes: args.nodes,
        devices_per_node: args.devices_per_node,
        agent_bin: args.agent_bin.clone(),
    })?;
    eprintln!("jepsen: results in {}", outcome.results_dir.display());
    println!("{}", outcome.summary);
    Ok(outcome.valid)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match &cli.command {
        Command::Check(args) => args,
        Command::Test(args) => {
            return match run_test(args) {
                Ok(true) => ExitCode::from(0),
                Ok(false) => ExitCode::from(1),
                Err(error) => {
                    eprintln!("error: {error:#}");
                    if let Some(fix) = error.downcast_ref::<Error>().map(hint) {
                        eprintln!("hint: {fix}");
                    }
                    ExitCode::from(2)
                }
            };
        }
    };
    match run(args) {
        Ok(Validity::Linearizable) => ExitCode::from(0),
        Ok(Validity::NotLinearizable) => ExitCode::from(1),
        Ok(Validity::Unknown) => ExitCode::from(2),
        Err(error) => {
            let fix = error.downcast_ref::<Error>().map(hint);
            eprintln!("error: {error:#}");
            if let Some(fix) = fix {
                eprintln!("hint: {fix}");
            }
            if args.output == OutputArg::Json {
                let json = serde_json::json!({ "valid": "unknown", "error": format!("{error:#}") });
                println!("{json}");
            }
            ExitCode::from(2)
        }
    }
}
