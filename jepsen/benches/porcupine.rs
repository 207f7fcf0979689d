//! Benchmarks the checker on porcupine's test data: all 102 etcd logs together and each kv
//! file, reading and checking from text in memory, and prints porcupine's time (VERDICTS.md)
//! and the ratio next to ours.
//!
//! It must not assert on times; it measures and reports.

use criterion::{black_box, Criterion};
use singularity_jepsen::porcupine_data::{data_dir, etcd_logs, KV_FILES, PORCUPINE_ETCD_TOTAL_MS};
use singularity_jepsen::{check_history, read_history, CheckOptions, ModelKind, Validity};
use std::time::Instant;

/// Repetitions of the summary's own timing (its median is printed).
const SUMMARY_RUNS: usize = 21;

fn check_text(text: &str, model: ModelKind) -> Validity {
    let history = read_history(text, None).unwrap_or_else(|e| panic!("{e}"));
    check_history(&history, &CheckOptions::new(model))
        .unwrap_or_else(|e| panic!("{e}"))
        .valid
}

fn check_all(texts: &[String], model: ModelKind) {
    for text in texts {
        black_box(check_text(text, model));
    }
}

fn median_ms(mut run: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..SUMMARY_RUNS)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let dir = data_dir().unwrap_or_else(|message| panic!("{message}"));
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let etcd: Vec<String> = etcd_logs(&dir).iter().map(|(p, _)| read(p)).collect();
    let kv: Vec<(&str, String, f64)> = KV_FILES
        .iter()
        .map(|&(name, _, ms)| (name, read(&dir.join("kv").join(name)), ms))
        .collect();

    let mut criterion = Criterion::default().configure_from_args();
    criterion.bench_function("etcd/all-102", |b| {
        b.iter(|| check_all(&etcd, ModelKind::CasRegister))
    });
    for (name, text, _) in &kv {
        criterion.bench_function(&format!("kv/{name}"), |b| {
            b.iter(|| check_all(std::slice::from_ref(text), ModelKind::Kv))
        });
    }
    criterion.final_summary();

    println!("\nsummary (median of {SUMMARY_RUNS} runs, read + check from memory):");
    println!(
        "{:<16} {:>12} {:>15} {:>8}",
        "history", "ours ms", "porcupine ms", "ratio"
    );
    let row = |name: &str, ours_ms: f64, theirs_ms: f64| {
        println!(
            "{name:<16} {ours_ms:>12.3} {theirs_ms:>15.3} {:>7.2}x",
            theirs_ms / ours_ms
        );
    };
    // A name filter given to the bench (e.g. `cargo bench -- c10`) limits the summary too.
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    if "etcd/all-102".contains(filter.as_str()) {
        let ours = median_ms(|| check_all(&etcd, ModelKind::CasRegister));
        row("etcd (102 logs)", ours, PORCUPINE_ETCD_TOTAL_MS);
    }
    for (name, text, theirs) in kv
        .iter()
        .filter(|(name, _, _)| format!("kv/{name}").contains(filter.as_str()))
    {
        let ours = median_ms(|| check_all(std::slice::from_ref(text), ModelKind::Kv));
        row(name, ours, *theirs);
    }
    println!("ratio = porcupine time / our time (above 1: we are faster)");
}
