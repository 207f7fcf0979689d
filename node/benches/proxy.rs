//! Benchmarks of the device proxy, reported in `node/BENCHMARKS.md`:
//! round trip per call through the shared-memory channel (p50/p90/p99); the example job's
//! steady-state step time through the proxy against the same program on an in-process device;
//! checkpoint and restore throughput against the disk's own sequential write and read bandwidth
//! measured in the same run; splicing at factors 2 and 4 against the ideal 1/factor.
//!
//! Run: `cargo bench -p singularity-node --bench proxy` (set `BENCH_ONLY=rtt,step,ckpt,splice`
//! to pick sections, `BENCH_ROUNDS` to change the rounds of the splice section, `BENCH_PROXY`
//! to run another proxy binary, e.g. an older build, under the same harness, `BENCH_HINTS=0` to
//! run the example without its liveness hints, `BENCH_PIN_CPU=n` to pin the bench, its ranks
//! and the proxy to core `n` alone, so that no work overlaps another's). Step and splice
//! keep their runtimes attached and alternate short chunks (A/B/A/B), so load that changes over
//! seconds moves both sides of a comparison alike; each section prints the load average after
//! it. It must not assert on times; it prints them.

use singularity_node::example::{train, TrainConfig, TrainState};
use singularity_node::launcher::{checkpoint_job, stats, ProxyProcess};
use singularity_node::runtime::{Attachment, ProxyClient, Runtime};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The proxy binary of this build; `BENCH_PROXY` names another one (an older build, for an
/// A/B of the proxy side with the same harness).
const PROXY: &str = env!("CARGO_BIN_EXE_singularity-device-proxy");
const ROUNDS: usize = 5;

fn attachment(socket: &Path, job: &str, incarnation: &str, rank: u32, world: u32) -> Attachment {
    Attachment {
        job: job.to_string(),
        incarnation: incarnation.to_string(),
        rank,
        world_size: world,
        proxy_socket: socket.to_path_buf(),
        restore_dir: None,
        collective_bytes: 1 << 20,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn rtt(socket: &Path) {
    let (mut c, _, _) = ProxyClient::attach(&attachment(socket, "bench-rtt", "a", 0, 1)).unwrap();
    for _ in 0..20_000 {
        c.noop().unwrap();
    }
    let mut p50s = Vec::new();
    for round in 0..ROUNDS {
        let mut ns: Vec<u64> = (0..100_000)
            .map(|_| {
                let t = Instant::now();
                c.noop().unwrap();
                t.elapsed().as_nanos() as u64
            })
            .collect();
        ns.sort_unstable();
        let q = |p: f64| ns[((ns.len() as f64) * p) as usize] as f64 / 1000.0;
        println!(
            "rtt round {round}: p50 {:.2} us  p90 {:.2} us  p99 {:.2} us",
            q(0.5),
            q(0.9),
            q(0.99)
        );
        p50s.push(q(0.5));
    }
    println!(
        "rtt: median of round p50s {:.2} us (target <= 5 us)",
        median(p50s)
    );
}

fn step_config(steps: u64) -> TrainConfig {
    TrainConfig {
        steps,
        seed: 3,
        features: 512,
        outputs: 64,
        batch: 128,
        learning_rate: 0.001,
        // `BENCH_HINTS=0`: the example declares no buffer dead (the baseline of the hints).
        no_liveness_hints: std::env::var("BENCH_HINTS").is_ok_and(|v| v == "0"),
    }
}

/// Warm-up steps before a steady-state measurement, and steps measured.
const WARM_STEPS: u64 = 5;

/// Chunks of the step section and steps per chunk: both runtimes stay attached, and chunks of
/// in-process and proxied steps alternate (A/B, B/A, ...), so a load that changes over seconds
/// moves both sides of each pair alike.
const STEP_CHUNKS: usize = 60;
const CHUNK_STEPS: u64 = 50;

fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn step(socket: &Path) {
    let mut rt_in = Runtime::in_process(|r, _| TrainState::new(3, r));
    let a = attachment(socket, "bench-step", "s", 0, 1);
    let mut rt_px = Runtime::attach(&a, |r, _| TrainState::new(3, r)).unwrap();
    train(&mut rt_in, &step_config(WARM_STEPS)).unwrap();
    train(&mut rt_px, &step_config(WARM_STEPS)).unwrap();
    let run = |rt: &mut Runtime<TrainState>, to: u64| {
        let t = Instant::now();
        let w = train(rt, &step_config(to)).unwrap();
        (t.elapsed().as_secs_f64() / CHUNK_STEPS as f64, w)
    };
    let (mut ratios, mut sum_in, mut sum_px) = (Vec::new(), 0.0, 0.0);
    let (mut best_in, mut best_px) = (f64::MAX, f64::MAX);
    let mut to = WARM_STEPS;
    for chunk in 0..STEP_CHUNKS {
        to += CHUNK_STEPS;
        let ((t_in, w_in), (t_px, w_px)) = if chunk % 2 == 0 {
            let i = run(&mut rt_in, to);
            (i, run(&mut rt_px, to))
        } else {
            let p = run(&mut rt_px, to);
            (run(&mut rt_in, to), p)
        };
        assert_eq!(w_in, w_px, "proxy and in-process results are bit-identical");
        ratios.push(t_px / t_in);
        (sum_in, sum_px) = (sum_in + t_in, sum_px + t_px);
        (best_in, best_px) = (best_in.min(t_in), best_px.min(t_px));
    }
    rt_px.finish().unwrap();
    println!(
        "step: {STEP_CHUNKS} alternating pairs of {CHUNK_STEPS}-step chunks: in-process {:.3} ms/step, proxy {:.3} ms/step (means); ratio of totals {:.4}",
        sum_in / STEP_CHUNKS as f64 * 1e3,
        sum_px / STEP_CHUNKS as f64 * 1e3,
        sum_px / sum_in
    );
    println!(
        "step: pair ratios proxy/in-process: median {:.4}, quartiles {:.4} .. {:.4}, range {:.4} .. {:.4}; best chunk {:.3} vs {:.3} ms = {:.4} (target <= 1.03)",
        quantile(&ratios, 0.5),
        quantile(&ratios, 0.25),
        quantile(&ratios, 0.75),
        quantile(&ratios, 0.0),
        quantile(&ratios, 1.0),
        best_px * 1e3,
        best_in * 1e3,
        best_px / best_in
    );
}

fn drop_caches() -> bool {
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

const CHUNK: usize = 8 << 20;

fn disk_write(path: &Path, bytes: usize) -> f64 {
    let buf = vec![0x5Au8; CHUNK];
    let t = Instant::now();
    let mut f = std::fs::File::create(path).unwrap();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK);
        f.write_all(&buf[..n]).unwrap();
        left -= n;
    }
    f.sync_all().unwrap();
    bytes as f64 / t.elapsed().as_secs_f64()
}

fn disk_read(path: &Path) -> f64 {
    let mut buf = vec![0u8; CHUNK];
    let t = Instant::now();
    let mut f = std::fs::File::open(path).unwrap();
    let mut total = 0usize;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    total as f64 / t.elapsed().as_secs_f64()
}

/// Lets the disk settle before a timed transfer: the previous one was fsynced, but a virtual
/// disk's host may still be writing it back, which would slow whichever transfer comes next.
fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(SETTLE_MS));
}
const SETTLE_MS: u64 = 1000;

fn ckpt(socket: &Path, scratch: &Path) {
    const BUFFERS: usize = 4;
    const ELEMS: usize = 16 << 20; // 64 MiB each
                                   // An even number of rounds: as many with the checkpoint written first as second.
    const CKPT_ROUNDS: usize = 6;
    let bytes = BUFFERS * ELEMS * 4;
    let cold = drop_caches();
    println!(
        "ckpt: {} MiB per checkpoint; page cache dropped before reads: {cold}; {SETTLE_MS} ms pause before each timed transfer",
        bytes >> 20
    );
    let (mut wr, mut rd) = (Vec::new(), Vec::new());
    let mut best = [0f64; 4];
    for round in 0..CKPT_ROUNDS {
        let dir = scratch.join(format!("ckpt-{round}"));
        let disk_file = scratch.join(format!("disk-{round}.bin"));
        // Alternate which write goes first, so neither always follows the other's writeback.
        let disk_first = round % 2 == 1;
        let disk_w_before = disk_first.then(|| {
            settle();
            disk_write(&disk_file, bytes)
        });
        let job = format!("bench-ckpt{round}");
        let a = attachment(socket, &job, "w", 0, 1);
        let mut rt = Runtime::attach(&a, |r, _| TrainState::new(1, r)).unwrap();
        for i in 0..BUFFERS {
            rt.buffer(&format!("big{i}"), ELEMS, || {
                (0..ELEMS).map(|j| (j ^ i) as f32).collect()
            })
            .unwrap();
        }
        let g = rt.buffer("g", 16, || vec![1.0; 16]).unwrap();
        rt.next_step(u64::MAX).unwrap();
        checkpoint_job(&job, &[socket.to_path_buf()], &dir, false).unwrap();
        rt.allreduce_sum(g).unwrap();
        settle();
        let t = Instant::now();
        rt.next_step(u64::MAX).unwrap();
        let ckpt_bw = bytes as f64 / t.elapsed().as_secs_f64();
        let disk_w = disk_w_before.unwrap_or_else(|| {
            settle();
            disk_write(&disk_file, bytes)
        });

        // Reads in the same alternating order.
        let mut r = a.clone();
        r.incarnation = "r".into();
        r.restore_dir = Some(dir.clone());
        let restore = || {
            drop_caches();
            settle();
            let t = Instant::now();
            let (c, step, _) = ProxyClient::attach(&r).unwrap();
            let bw = bytes as f64 / t.elapsed().as_secs_f64();
            assert_eq!(step, 1);
            drop(c);
            bw
        };
        let read_disk = || {
            drop_caches();
            settle();
            disk_read(&disk_file)
        };
        let (restore_bw, disk_r) = if disk_first {
            let d = read_disk();
            (restore(), d)
        } else {
            let c = restore();
            (c, read_disk())
        };
        rt.finish().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&disk_file);
        let gb = |b: f64| b / 1e9;
        println!(
            "ckpt round {round} ({} first): checkpoint {:.2} GB/s vs disk write {:.2} GB/s (ratio {:.2}); restore {:.2} GB/s vs disk read {:.2} GB/s (ratio {:.2})",
            if disk_first { "disk" } else { "checkpoint" },
            gb(ckpt_bw), gb(disk_w), ckpt_bw / disk_w, gb(restore_bw), gb(disk_r), restore_bw / disk_r
        );
        for (b, v) in best.iter_mut().zip([ckpt_bw, disk_w, restore_bw, disk_r]) {
            *b = b.max(v);
        }
        wr.push(ckpt_bw / disk_w);
        rd.push(restore_bw / disk_r);
    }
    // Pairs of rounds (one of each order): the geometric mean cancels the order effect.
    let pairs = |v: &[f64]| -> Vec<f64> { v.chunks(2).map(|p| (p[0] * p[1]).sqrt()).collect() };
    println!(
        "ckpt: median ratios write {:.2}, read {:.2}; median over order-balanced pairs write {:.2}, read {:.2} (target >= 0.8)",
        median(wr.clone()),
        median(rd.clone()),
        median(pairs(&wr)),
        median(pairs(&rd))
    );
    println!(
        "ckpt: best-of-rounds checkpoint {:.2} vs disk write {:.2} GB/s = {:.2}; restore {:.2} vs disk read {:.2} GB/s = {:.2}",
        best[0] / 1e9,
        best[1] / 1e9,
        best[0] / best[1],
        best[2] / 1e9,
        best[3] / 1e9,
        best[2] / best[3]
    );
    let t = Instant::now();
    let fresh: Vec<Vec<f32>> = (0..BUFFERS).map(|_| vec![1.0f32; ELEMS]).collect();
    println!(
        "ckpt: first touch of {} MiB of fresh memory (what restore pays to create device buffers): {:.2} GB/s",
        bytes >> 20,
        bytes as f64 / t.elapsed().as_secs_f64() / 1e9
    );
    let t = Instant::now();
    for f in &fresh {
        std::hint::black_box(singularity_node::device::digest(
            singularity_node::shm::f32s_as_bytes(f),
        ));
    }
    println!(
        "ckpt: BLAKE3 on one core: {:.2} GB/s",
        bytes as f64 / t.elapsed().as_secs_f64() / 1e9
    );
    let t = Instant::now();
    for f in &fresh {
        std::hint::black_box(crc32c::crc32c(singularity_node::shm::f32s_as_bytes(f)));
    }
    println!(
        "ckpt: CRC32C (the checkpoint's data checksum) on one core: {:.2} GB/s",
        bytes as f64 / t.elapsed().as_secs_f64() / 1e9
    );
    drop(fresh);
}

/// A job of `world` ranks (threads of this process) attached to the one proxy for the whole
/// splice section; `run_to(step)` makes every rank train on to `step` and returns the wall time.
struct SplicedJob {
    go: Vec<std::sync::mpsc::Sender<u64>>,
    done: std::sync::mpsc::Receiver<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
    step: u64,
}

impl SplicedJob {
    fn start(socket: &Path, world: u32) -> Self {
        let (done_tx, done) = std::sync::mpsc::channel();
        let mut go = Vec::new();
        let threads = (0..world)
            .map(|rank| {
                let a = attachment(socket, &format!("bench-splice{world}"), "x", rank, world);
                let (tx, rx) = std::sync::mpsc::channel::<u64>();
                go.push(tx);
                let done = done_tx.clone();
                std::thread::spawn(move || {
                    let mut rt = Runtime::attach(&a, |r, _| TrainState::new(3, r)).unwrap();
                    for to in rx {
                        train(&mut rt, &step_config(to)).unwrap();
                        // The job's barrier lets go of the device (the last copy-out took it),
                        // so the next job to run does not wait for this one.
                        rt.barrier().unwrap();
                        done.send(()).unwrap();
                    }
                    rt.finish().unwrap();
                })
            })
            .collect();
        let mut job = SplicedJob {
            go,
            done,
            threads,
            step: 0,
        };
        job.run_to(WARM_STEPS);
        job
    }

    fn run_to(&mut self, step: u64) -> f64 {
        let t = Instant::now();
        for g in &self.go {
            g.send(step).unwrap();
        }
        for _ in &self.go {
            self.done.recv().unwrap();
        }
        self.step = step;
        t.elapsed().as_secs_f64()
    }

    fn finish(self) {
        drop(self.go);
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

/// Steps per timed chunk of the splice section.
const SPLICE_CHUNK_STEPS: u64 = 50;

fn splice(socket: &Path) {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    type Stats = singularity_node::control::ProxyStats;
    // Jobs of world size 1, 2 and 4 stay attached; chunks of their steps alternate.
    let mut jobs = [1u32, 2, 4].map(|w| SplicedJob::start(socket, w));
    let mut totals: [Stats; 3] = Default::default();
    let mut chunk = |j: usize, totals: &mut [Stats; 3]| {
        let before = stats(socket).unwrap();
        let to = jobs[j].step + SPLICE_CHUNK_STEPS;
        let t = jobs[j].run_to(to) / SPLICE_CHUNK_STEPS as f64;
        let after = stats(socket).unwrap();
        let d = &mut totals[j];
        d.swaps += after.swaps - before.swaps;
        d.swap_bytes += after.swap_bytes - before.swap_bytes;
        d.naive_swap_bytes += after.naive_swap_bytes - before.naive_swap_bytes;
        d.swap_ns += after.swap_ns - before.swap_ns;
        d.device_wait_ns += after.device_wait_ns - before.device_wait_ns;
        t
    };
    let (mut r2, mut r4) = (Vec::new(), Vec::new());
    let mut sums = [0f64; 3];
    for round in 0..rounds {
        // Factors in the order 1, 2, 4, 4, 2, 1: each factor's mean has the same centre in time,
        // so a machine that gets busier or quieter during the round biases none of them.
        let mut t = [0f64; 3];
        for j in [0, 1, 2, 2, 1, 0] {
            t[j] += chunk(j, &mut totals) / 2.0;
        }
        r2.push(t[1] / (2.0 * t[0]));
        r4.push(t[2] / (4.0 * t[0]));
        for (s, v) in sums.iter_mut().zip(t) {
            *s += v;
        }
        println!(
            "splice round {round}: factor 1 {:.3} ms/step; factor 2 {:.3} ms/step = {:.4} x ideal; factor 4 {:.3} ms/step = {:.4} x ideal",
            t[0] * 1e3,
            t[1] * 1e3,
            r2[round],
            t[2] * 1e3,
            r4[round]
        );
    }
    for job in jobs {
        job.finish();
    }
    let steps = 2.0 * rounds as f64 * SPLICE_CHUNK_STEPS as f64;
    let mib = |b: u64| b as f64 / 1048576.0;
    for (f, d) in [(2, &totals[1]), (4, &totals[2])] {
        println!(
            "splice factor {f}: {:.2} swaps/step, swapping {:.3} ms/step, ranks waiting for the device {:.3} ms/step; swapped {:.1} MiB of naive {:.1} MiB ({:.2})",
            d.swaps as f64 / steps,
            d.swap_ns as f64 / steps / 1e6,
            d.device_wait_ns as f64 / steps / 1e6,
            mib(d.swap_bytes),
            mib(d.naive_swap_bytes),
            d.swap_bytes as f64 / d.naive_swap_bytes.max(1) as f64
        );
    }
    println!(
        "splice: {rounds} rounds of {SPLICE_CHUNK_STEPS}-step chunks (1,2,4,4,2,1); x ideal: factor 2 median {:.4} (quartiles {:.4} .. {:.4}), factor 4 median {:.4} (quartiles {:.4} .. {:.4}); ratio of totals factor 2 {:.4}, factor 4 {:.4} (target <= 1.03)",
        quantile(&r2, 0.5),
        quantile(&r2, 0.25),
        quantile(&r2, 0.75),
        quantile(&r4, 0.5),
        quantile(&r4, 0.25),
        quantile(&r4, 0.75),
        sums[1] / (2.0 * sums[0]),
        sums[2] / (4.0 * sums[0])
    );
}

/// Pins this process (its threads made later, and the proxy it spawns, inherit it) to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls only read it.
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    assert!(
        ok,
        "pinning to core {cpu}: {}",
        std::io::Error::last_os_error()
    );
    println!("pinned to core {cpu}: bench, ranks and proxy share it");
}

fn main() {
    if let Some(cpu) = std::env::var("BENCH_PIN_CPU")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        pin_to(cpu);
    }
    let only = std::env::var("BENCH_ONLY").unwrap_or_else(|_| "rtt,step,ckpt,splice".into());
    let scratch = tempfile::tempdir_in("/var/tmp").unwrap();
    let socket: PathBuf = scratch.path().join("proxy.sock");
    let proxy_bin = std::env::var("BENCH_PROXY").unwrap_or_else(|_| PROXY.to_string());
    let proxy = ProxyProcess::spawn(Path::new(&proxy_bin), &[], &socket, 0, 4 << 30).unwrap();
    println!("proxy binary: {proxy_bin}");
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load().trim());
    for section in only.split(',') {
        match section {
            "rtt" => rtt(&socket),
            "step" => step(&socket),
            "ckpt" => ckpt(&socket, scratch.path()),
            "splice" => splice(&socket),
            other => println!("unknown section {other}"),
        }
        println!("load average after {section}: {}", load().trim());
    }
    drop(proxy);
}
