//! An SVG plot of a run: each completed operation's latency over time (ok, fail, info in
//! different colours, log scale), throughput per second, and the fault windows shaded.
//!
//! It must not read files; it turns numbers into SVG text.

use std::fmt::Write as _;

/// Plot size in pixels.
const WIDTH_PX: f64 = 1000.0;
const HEIGHT_PX: f64 = 420.0;
const MARGIN_PX: f64 = 50.0;
/// Latencies are drawn from 0.1 ms to 100 s on a log scale.
const MIN_LATENCY_MS: f64 = 0.1;
const MAX_LATENCY_MS: f64 = 100_000.0;

/// One completed operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Completion time in seconds since the start.
    pub time_s: f64,
    pub latency_ms: f64,
    /// `ok`, `fail` or `info`.
    pub kind: &'static str,
}

/// One shaded fault window.
#[derive(Debug, Clone, PartialEq)]
pub struct Shade {
    pub start_s: f64,
    pub end_s: f64,
    /// Short, drawn above the window.
    pub label: String,
    /// Longer, shown as the window's tooltip.
    pub detail: String,
}

fn colour(kind: &str) -> &'static str {
    match kind {
        "ok" => "#1f77b4",
        "fail" => "#d62728",
        _ => "#ff7f0e",
    }
}

/// The SVG document.
pub fn render_svg(title: &str, points: &[Point], shades: &[Shade], duration_s: f64) -> String {
    let duration_s = duration_s.max(1.0);
    let plot_w = WIDTH_PX - 2.0 * MARGIN_PX;
    let plot_h = HEIGHT_PX - 2.0 * MARGIN_PX;
    let x = |t: f64| MARGIN_PX + (t / duration_s).clamp(0.0, 1.0) * plot_w;
    let log_span = (MAX_LATENCY_MS / MIN_LATENCY_MS).log10();
    let y = |ms: f64| {
        let f = (ms.clamp(MIN_LATENCY_MS, MAX_LATENCY_MS) / MIN_LATENCY_MS).log10() / log_span;
        HEIGHT_PX - MARGIN_PX - f * plot_h
    };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH_PX}" height="{HEIGHT_PX}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{MARGIN_PX}" y="20" font-size="14">{}</text>"#,
        crate::html::escape(title)
    );
    for shade in shades {
        let (x0, x1) = (x(shade.start_s), x(shade.end_s));
        let _ = writeln!(
            svg,
            r##"<rect x="{x0:.1}" y="{MARGIN_PX}" width="{:.1}" height="{plot_h}" fill="#999" fill-opacity="0.25"><title>{}</title></rect>"##,
            (x1 - x0).max(1.0),
            crate::html::escape(&shade.detail)
        );
        let _ = writeln!(
            svg,
            r##"<text x="{x0:.1}" y="{:.1}" font-size="9" fill="#555">{}</text>"##,
            MARGIN_PX - 3.0,
            crate::html::escape(&shade.label)
        );
    }
    // Axes and latency grid.
    let _ = writeln!(
        svg,
        r#"<rect x="{MARGIN_PX}" y="{MARGIN_PX}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    let mut ms = MIN_LATENCY_MS;
    while ms <= MAX_LATENCY_MS {
        let _ = writeln!(
            svg,
            r##"<line x1="{MARGIN_PX}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="2" y="{:.1}">{ms} ms</text>"##,
            WIDTH_PX - MARGIN_PX,
            y(ms),
            y(ms),
            y(ms) + 4.0
        );
        ms *= 10.0;
    }
    let step_s = (duration_s / 10.0).ceil().max(1.0);
    let mut t = 0.0;
    while t <= duration_s {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}">{t:.0} s</text>"#,
            x(t) - 8.0,
            HEIGHT_PX - MARGIN_PX + 15.0
        );
        t += step_s;
    }
    for p in points {
        let _ = writeln!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="1.5" fill="{}" fill-opacity="0.6"/>"#,
            x(p.time_s),
            y(p.latency_ms),
            colour(p.kind)
        );
    }
    // Throughput of ok operations per whole second, on its own linear scale.
    let buckets = duration_s.ceil() as usize + 1;
    let mut per_second = vec![0usize; buckets];
    for p in points.iter().filter(|p| p.kind == "ok") {
        let b = (p.time_s.max(0.0) as usize).min(buckets - 1);
        per_second[b] += 1;
    }
    let peak = per_second.iter().copied().max().unwrap_or(0).max(1) as f64;
    let path: Vec<String> = per_second
        .iter()
        .enumerate()
        .map(|(s, &n)| {
            let ty = HEIGHT_PX - MARGIN_PX - (n as f64 / peak) * plot_h;
            format!("{:.1},{ty:.1}", x(s as f64 + 0.5))
        })
        .collect();
    let _ = writeln!(
        svg,
        r##"<polyline points="{}" fill="none" stroke="#2ca02c" stroke-width="1.5"/>"##,
        path.join(" ")
    );
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="35" fill="#2ca02c">throughput (ok ops/s, peak {peak:.0}) — dots: latency of ok (blue), fail (red), info (orange); grey: faults</text>"##,
        MARGIN_PX
    );
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_points_shades_and_escapes_labels() {
        let points = vec![
            Point {
                time_s: 1.0,
                latency_ms: 3.0,
                kind: "ok",
            },
            Point {
                time_s: 2.0,
                latency_ms: 2000.0,
                kind: "info",
            },
        ];
        let shades = vec![Shade {
            start_s: 1.5,
            end_s: 2.5,
            label: "kill <n1>".into(),
            detail: "kill -9 <n1>".into(),
        }];
        let svg = render_svg("t", &points, &shades, 3.0);
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("kill &lt;n1&gt;"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
