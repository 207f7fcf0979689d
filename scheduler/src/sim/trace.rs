//! The job trace format of the Microsoft ITP traces (`job_id,submission_time,duration,num_gpu`,
//! one job a line, times in whole seconds) and its parser, which reads from a `&str`.
//!
//! It must not read files (the binary does) and must not panic on any input: every problem is a
//! `TraceError` naming the line and column, so a user can fix the file.

use crate::limits::{MAX_JOB_NAME_CHARS, MAX_WORLD_SIZE};
use std::fmt;

/// The header line the parser expects (the first non-empty line).
pub const TRACE_HEADER: &str = "job_id,submission_time,duration,num_gpu";
/// Jobs in one trace; a longer trace is refused rather than exhausting memory.
pub const MAX_TRACE_JOBS: usize = 1_000_000;
/// Largest submission time or duration accepted, in seconds (about 317 years).
pub const MAX_TRACE_SECONDS: u64 = 10_000_000_000;

/// One job of a trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceJob {
    /// The trace's (anonymised) id; also the key of the tier hash.
    pub id: String,
    /// 1-based line of the file, for messages.
    pub line: usize,
    pub submission_s: u64,
    /// Run time at full size (all ranks on their own device), in seconds.
    pub duration_s: u64,
    /// Devices (GPUs) the job used: its world size.
    pub num_gpu: u32,
}

/// Why a trace could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceError {
    /// 1-based line; 0 when the problem is the whole file.
    pub line: usize,
    /// 1-based column (field) number, when one field is wrong.
    pub column: Option<usize>,
    pub problem: String,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "trace: {}", self.problem),
            (line, None) => write!(f, "trace line {line}: {}", self.problem),
            (line, Some(column)) => write!(
                f,
                "trace line {line}, column {column} ({}): {}",
                column_name(column),
                self.problem
            ),
        }
    }
}

impl std::error::Error for TraceError {}

fn column_name(column: usize) -> &'static str {
    match column {
        1 => "job_id",
        2 => "submission_time",
        3 => "duration",
        4 => "num_gpu",
        _ => "extra",
    }
}

fn error(line: usize, column: Option<usize>, problem: impl Into<String>) -> TraceError {
    TraceError {
        line,
        column,
        problem: problem.into(),
    }
}

fn parse_seconds(line: usize, column: usize, field: &str) -> Result<u64, TraceError> {
    let value: u64 = field.parse().map_err(|_| {
        error(
            line,
            Some(column),
            format!("{field:?} is not a whole number of seconds"),
        )
    })?;
    if value > MAX_TRACE_SECONDS {
        return Err(error(
            line,
            Some(column),
            format!("{value} is larger than the limit of {MAX_TRACE_SECONDS} seconds"),
        ));
    }
    Ok(value)
}

fn parse_line(line: usize, text: &str) -> Result<TraceJob, TraceError> {
    let fields: Vec<&str> = text.split(',').map(str::trim).collect();
    if fields.len() != 4 {
        return Err(error(
            line,
            None,
            format!("has {} field(s); expected 4 ({TRACE_HEADER})", fields.len()),
        ));
    }
    let id = fields[0];
    if id.is_empty() {
        return Err(error(line, Some(1), "the job id is empty"));
    }
    if id.chars().count() > MAX_JOB_NAME_CHARS || id.chars().any(char::is_control) {
        return Err(error(
            line,
            Some(1),
            format!("the job id must be 1 to {MAX_JOB_NAME_CHARS} printable characters"),
        ));
    }
    let submission_s = parse_seconds(line, 2, fields[1])?;
    let duration_s = parse_seconds(line, 3, fields[2])?;
    if duration_s == 0 {
        return Err(error(
            line,
            Some(3),
            "the duration must be at least 1 second",
        ));
    }
    let num_gpu: u32 = fields[3].parse().map_err(|_| {
        error(
            line,
            Some(4),
            format!("{:?} is not a whole number of GPUs", fields[3]),
        )
    })?;
    if num_gpu == 0 || num_gpu > MAX_WORLD_SIZE {
        return Err(error(
            line,
            Some(4),
            format!("{num_gpu} GPUs; a job needs 1 to {MAX_WORLD_SIZE}"),
        ));
    }
    Ok(TraceJob {
        id: id.to_string(),
        line,
        submission_s,
        duration_s,
        num_gpu,
    })
}

/// Parses a whole trace. The first non-empty line must be the header; blank lines are skipped;
/// `\r\n` line ends are accepted. Jobs come back ordered by submission time (stable: ties keep
/// file order). Job ids must be unique (they key the tier hash).
pub fn parse_trace(text: &str) -> Result<Vec<TraceJob>, TraceError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((header_line, header)) = lines.next() else {
        return Err(error(
            0,
            None,
            format!("is empty; expected the header {TRACE_HEADER}"),
        ));
    };
    let header_fields: Vec<&str> = header.split(',').map(str::trim).collect();
    if header_fields.join(",") != TRACE_HEADER {
        return Err(error(
            header_line,
            None,
            format!("expected the header {TRACE_HEADER:?}, found {header:?}"),
        ));
    }
    let mut jobs = Vec::new();
    for (line, text) in lines {
        if jobs.len() == MAX_TRACE_JOBS {
            return Err(error(
                line,
                None,
                format!("the trace has more than {MAX_TRACE_JOBS} jobs"),
            ));
        }
        jobs.push(parse_line(line, text)?);
    }
    if jobs.is_empty() {
        return Err(error(0, None, "has a header but no jobs"));
    }
    let mut seen: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for job in &jobs {
        if let Some(first) = seen.insert(job.id.as_str(), job.line) {
            return Err(error(
                job.line,
                Some(1),
                format!("job id {:?} was already used on line {first}", job.id),
            ));
        }
    }
    jobs.sort_by_key(|job| job.submission_s);
    Ok(jobs)
}
