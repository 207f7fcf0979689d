//! A self-contained HTML page for a check: the verdict, and for a non-linearizable history the
//! failing window as a timeline (one row per process, a bar from invocation to completion).
//!
//! It must not search or read input; it draws a [`CheckReport`] with inline SVG and no scripts
//! or external resources.

use crate::report::{CheckReport, FailureWindow, Validity, WindowOp};
use std::fmt::Write as _;

const ROW_HEIGHT_PX: f64 = 34.0;
const LEFT_MARGIN_PX: f64 = 110.0;
const PLOT_WIDTH_PX: f64 = 900.0;
const TOP_MARGIN_PX: f64 = 30.0;

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page for `report`, titled with `source` (e.g. the file name).
pub fn render_html(report: &CheckReport, source: &str) -> String {
    let verdict = match report.valid {
        Validity::Linearizable => "linearizable",
        Validity::NotLinearizable => "NOT linearizable",
        Validity::Unknown => "unknown (could not decide)",
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}: {verdict}</title>\
         <style>body{{font-family:sans-serif;margin:2em}} pre{{background:#f4f4f4;padding:1em}}\
         .failing{{fill:#d9534f}} .linearized{{fill:#5cb85c}} .open{{fill:#9aa5b1}}\
         .pending{{fill-opacity:0.45}} text{{font-size:11px;font-family:monospace}}\
         table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:2px 6px;font-family:monospace;font-size:12px}}</style>\
         </head><body>\n<h1>{title}</h1>\n<p><b>{verdict}</b>, model {model}, {ops} ops, {keys} key(s), {ms:.3} ms</p>\n",
        title = escape(source),
        model = escape(&report.model),
        ops = report.ops,
        keys = report.keys,
        ms = report.elapsed_ms,
    );
    if let Some(failure) = &report.failure {
        write_failure(&mut out, failure);
    } else if let Some(progress) = &report.unknown {
        let _ = writeln!(out, "<p>Stopped: {}.</p>", escape(&progress.reason));
    } else {
        out.push_str("<p>Every key has a linearization; there is no failing window.</p>\n");
    }
    let _ = write!(
        out,
        "<h2>Report</h2>\n<pre>{}</pre>\n</body></html>\n",
        escape(&report.to_text())
    );
    out
}

/// The start and end of an op on the timeline, in its own units (ns or record positions).
fn span(op: &WindowOp, use_time: bool, end_of_window: f64) -> (f64, f64) {
    if use_time {
        let start = op.invoke_time_ns.unwrap_or(0) as f64;
        let end = if op.ret_pos.is_some() {
            op.complete_time_ns.map_or(end_of_window, |t| t as f64)
        } else {
            end_of_window
        };
        (start, end)
    } else {
        let end = op.ret_pos.map_or(end_of_window, |r| r as f64);
        (op.call_pos as f64, end)
    }
}

fn write_failure(out: &mut String, failure: &FailureWindow) {
    let _ = writeln!(
        out,
        "<h2>Smallest failing window: key {}</h2>\n<p>No linearization extends past {} of the key's \
         {} operations; the model state there is <code>{}</code>. The red operation completed \
         before it could be linearized; grey ones are concurrent with it, green ones are part of \
         the deepest linearization. Faded bars never completed (<code>:info</code> or no \
         completion) and may take effect until the end.</p>",
        escape(&failure.key),
        failure.linearized_before,
        failure.ops_in_key,
        escape(&failure.state_before)
    );
    let window = &failure.window;
    let use_time = window.iter().all(|op| {
        op.invoke_time_ns.is_some() && (op.ret_pos.is_none() || op.complete_time_ns.is_some())
    });
    let mut processes: Vec<i64> = window.iter().map(|op| op.process).collect();
    processes.sort_unstable();
    processes.dedup();
    let completed_ends = window.iter().map(|op| span(op, use_time, f64::MIN).1);
    let starts = window.iter().map(|op| span(op, use_time, 0.0).0);
    let low = starts.fold(f64::MAX, f64::min);
    let high_completed = completed_ends.fold(f64::MIN, f64::max);
    let high = if high_completed > low {
        high_completed
    } else {
        low + 1.0
    };
    let end_of_window = high + (high - low) * 0.15;
    let scale = PLOT_WIDTH_PX / (end_of_window - low).max(1.0);
    let height = TOP_MARGIN_PX + ROW_HEIGHT_PX * processes.len() as f64 + 10.0;
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\">\n\
         <text x=\"{LEFT_MARGIN_PX}\" y=\"14\">time ({}) &#8594;</text>",
        LEFT_MARGIN_PX + PLOT_WIDTH_PX + 20.0,
        if use_time { "ns" } else { "history order" }
    );
    for (row, process) in processes.iter().enumerate() {
        let y = TOP_MARGIN_PX + ROW_HEIGHT_PX * row as f64;
        let _ = writeln!(
            out,
            "<text x=\"4\" y=\"{:.1}\">process {process}</text>",
            y + 16.0
        );
        for op in window.iter().filter(|op| op.process == *process) {
            let (start, end) = span(op, use_time, end_of_window);
            let x = LEFT_MARGIN_PX + (start - low) * scale;
            let width = ((end - start) * scale).max(3.0);
            let pending = if op.ret_pos.is_none() { " pending" } else { "" };
            let label = match &op.output {
                Some(v) => format!(
                    ":{} {} &#8594; {} {}",
                    op.f,
                    escape(&op.input),
                    op.completion,
                    escape(v)
                ),
                None => format!(":{} {} &#8594; {}", op.f, escape(&op.input), op.completion),
            };
            let _ = writeln!(
                out,
                "<rect class=\"{}{pending}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{width:.1}\" height=\"22\" rx=\"3\">\
                 <title>{}</title></rect><text x=\"{:.1}\" y=\"{:.1}\">{label}</text>",
                op.role,
                y + 2.0,
                escape(&op.describe()),
                x + 3.0,
                y + 17.0
            );
        }
    }
    out.push_str("</svg>\n<table><tr><th>role</th><th>operation</th></tr>\n");
    for op in window {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(&op.role),
            escape(&op.describe())
        );
    }
    out.push_str("</table>\n");
}
