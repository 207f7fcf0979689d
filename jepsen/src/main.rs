//! The `singularity-jepsen` binary: a thin command-line front end to the library.
//!
//! It must not hold checking logic; it parses flags, calls `singularity_jepsen`, prints the
//! report and maps the verdict to the exit status (0 linearizable, 1 not, 2 unknown or bad
//! input).

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use singularity_jepsen::edn::EdnReader;
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Check(args) = &cli.command;
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
