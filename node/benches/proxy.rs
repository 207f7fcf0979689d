//! Benchmarks of the device proxy, reported in `node/BENCHMARKS.md`:
//! round trip per call through the shared-memory channel (p50/p90/p99); the example job's
//! steady-state step time through the proxy against the same program on an in-process device;
//! checkpoint and restore throughput against the disk's own sequential write and read bandwidth
//! measured in the same run; splicing at factors 2 and 4 against the ideal 1/factor.
//!
//! Run: `cargo bench -p singularity-node --bench proxy` (set `BENCH_ONLY=rtt,step,ckpt,splice`
//! to pick sections, `BENCH_ROUNDS` to change the rounds of the splice section). It must not
//! assert on times; it prints them.

use singularity_node::example::{train, TrainConfig, TrainState};
use singularity_node::launcher::{checkpoint_job, stats, ProxyProcess};
use singularity_node::runtime::{Attachment, ProxyClient, Runtime};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

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
    }
}

/// Warm-up steps before a steady-state measurement, and steps measured.
const WARM_STEPS: u64 = 5;
const MEASURED_STEPS: u64 = 300;

/// Seconds per step in steady state: a job trains `WARM_STEPS`, then the same runtime trains
/// on to step `WARM_STEPS + MEASURED_STEPS` (the step counter continues), and only those steps
/// are timed.
fn steady_per_step(rt: &mut Runtime<TrainState>) -> (f64, Vec<f32>) {
    train(rt, &step_config(WARM_STEPS)).unwrap();
    let t = Instant::now();
    let w = train(rt, &step_config(WARM_STEPS + MEASURED_STEPS)).unwrap();
    (t.elapsed().as_secs_f64() / MEASURED_STEPS as f64, w)
}

fn step(socket: &Path) {
    const STEP_ROUNDS: usize = 10;
    let mut ratios = Vec::new();
    let (mut mins_in, mut mins_px) = (f64::MAX, f64::MAX);
    for round in 0..STEP_ROUNDS {
        let in_process = || steady_per_step(&mut Runtime::in_process(|r, _| TrainState::new(3, r)));
        let proxied = || {
            let a = attachment(socket, "bench-step", &format!("s{round}"), 0, 1);
            let mut rt = Runtime::attach(&a, |r, _| TrainState::new(3, r)).unwrap();
            let out = steady_per_step(&mut rt);
            rt.finish().unwrap();
            out
        };
        // Alternate which goes first, so neither always runs on a warmer or quieter machine.
        let ((t_in, w_in), (t_px, w_px)) = if round % 2 == 0 {
            let i = in_process();
            (i, proxied())
        } else {
            let p = proxied();
            (in_process(), p)
        };
        assert_eq!(w_in, w_px, "proxy and in-process results are bit-identical");
        println!(
            "step round {round}: in-process {:.3} ms, proxy {:.3} ms, ratio {:.4}",
            t_in * 1e3,
            t_px * 1e3,
            t_px / t_in
        );
        ratios.push(t_px / t_in);
        mins_in = mins_in.min(t_in);
        mins_px = mins_px.min(t_px);
    }
    println!(
        "step: median ratio proxy/in-process {:.4}; best-of-rounds {:.3} ms vs {:.3} ms = {:.4} (target <= 1.03)",
        median(ratios),
        mins_px * 1e3,
        mins_in * 1e3,
        mins_px / mins_in
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
    drop(fresh);
}

/// Seconds per step in steady state of a job of `world` ranks (threads of this process) on the
/// one proxy: every rank trains `WARM_STEPS`, then all start together and the wall time of the
/// next `MEASURED_STEPS` is taken.
fn spliced_per_step(socket: &Path, world: u32, incarnation: &str) -> f64 {
    let start = std::sync::Arc::new(std::sync::Barrier::new(world as usize + 1));
    let threads: Vec<_> = (0..world)
        .map(|rank| {
            let a = attachment(socket, "bench-splice", incarnation, rank, world);
            let start = std::sync::Arc::clone(&start);
            std::thread::spawn(move || {
                let mut rt = Runtime::attach(&a, |r, _| TrainState::new(3, r)).unwrap();
                train(&mut rt, &step_config(WARM_STEPS)).unwrap();
                // The job's barrier lets go of the device, which the last copy-out took.
                rt.barrier().unwrap();
                start.wait();
                train(&mut rt, &step_config(WARM_STEPS + MEASURED_STEPS)).unwrap();
                rt.finish().unwrap();
            })
        })
        .collect();
    start.wait();
    let t = Instant::now();
    for th in threads {
        th.join().unwrap();
    }
    t.elapsed().as_secs_f64() / MEASURED_STEPS as f64
}

fn splice(socket: &Path) {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS);
    let mut n = 0;
    let mut per_step = |world: u32| {
        n += 1;
        let before = stats(socket).unwrap();
        let t = spliced_per_step(socket, world, &format!("x{n}"));
        (t, before, stats(socket).unwrap())
    };
    let mut ratios = [Vec::new(), Vec::new()];
    let mut best = [f64::MAX; 3];
    for round in 0..rounds {
        // Factors in the order 1, 2, 4, 4, 2, 1: each factor's mean has the same centre in time,
        // so a machine that gets busier or quieter during the round biases none of them.
        let (a1, _, _) = per_step(1);
        let (a2, s2a, e2a) = per_step(2);
        let (a4, s4a, e4a) = per_step(4);
        let (b4, s4b, e4b) = per_step(4);
        let (b2, s2b, e2b) = per_step(2);
        let (b1, _, _) = per_step(1);
        let (t1, t2, t4) = ((a1 + b1) / 2.0, (a2 + b2) / 2.0, (a4 + b4) / 2.0);
        type Stats = singularity_node::control::ProxyStats;
        let delta = |pairs: [(&Stats, &Stats); 2]| {
            let mut d = Stats::default();
            for (a, b) in pairs {
                d.swaps += b.swaps - a.swaps;
                d.swap_bytes += b.swap_bytes - a.swap_bytes;
                d.naive_swap_bytes += b.naive_swap_bytes - a.naive_swap_bytes;
                d.swap_ns += b.swap_ns - a.swap_ns;
                d.device_wait_ns += b.device_wait_ns - a.device_wait_ns;
            }
            d
        };
        let d2 = delta([(&s2a, &e2a), (&s2b, &e2b)]);
        let d4 = delta([(&s4a, &e4a), (&s4b, &e4b)]);
        // Counters cover warm-up and attach too: per step means per step of the whole runs.
        let steps = 2.0 * (WARM_STEPS + MEASURED_STEPS) as f64;
        let timing = |d: &Stats| {
            format!(
                "{:.2} swaps/step, swapping {:.3} ms/step, ranks waiting for the device {:.3} ms/step",
                d.swaps as f64 / steps,
                d.swap_ns as f64 / steps / 1e6,
                d.device_wait_ns as f64 / steps / 1e6
            )
        };
        println!(
            "splice round {round} proxy time: factor 2 {}; factor 4 {}",
            timing(&d2),
            timing(&d4)
        );
        let mib = |b: u64| b as f64 / 1048576.0;
        println!(
            "splice round {round}: factor 1 {:.3} ms/step; factor 2 {:.3} ms/step = {:.4} x ideal (swapped {:.1} MiB of naive {:.1} MiB); factor 4 {:.3} ms/step = {:.4} x ideal (swapped {:.1} MiB of naive {:.1} MiB)",
            t1 * 1e3,
            t2 * 1e3,
            t2 / (2.0 * t1),
            mib(d2.swap_bytes),
            mib(d2.naive_swap_bytes),
            t4 * 1e3,
            t4 / (4.0 * t1),
            mib(d4.swap_bytes),
            mib(d4.naive_swap_bytes)
        );
        for (b, t) in best.iter_mut().zip([t1, t2, t4]) {
            *b = b.min(t);
        }
        ratios[0].push(t2 / (2.0 * t1));
        ratios[1].push(t4 / (4.0 * t1));
    }
    let [r2, r4] = ratios;
    println!(
        "splice: median x ideal: factor 2 {:.4}, factor 4 {:.4}; best-of-rounds {:.3} / {:.3} / {:.3} ms/step: factor 2 {:.4}, factor 4 {:.4} x ideal (target <= 1.03)",
        median(r2),
        median(r4),
        best[0] * 1e3,
        best[1] * 1e3,
        best[2] * 1e3,
        best[1] / (2.0 * best[0]),
        best[2] / (4.0 * best[0])
    );
}

fn main() {
    let only = std::env::var("BENCH_ONLY").unwrap_or_else(|_| "rtt,step,ckpt,splice".into());
    let scratch = tempfile::tempdir_in("/var/tmp").unwrap();
    let socket: PathBuf = scratch.path().join("proxy.sock");
    let proxy = ProxyProcess::spawn(Path::new(PROXY), &[], &socket, 0, 4 << 30).unwrap();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.trim());
    for section in only.split(',') {
        match section {
            "rtt" => rtt(&socket),
            "step" => step(&socket),
            "ckpt" => ckpt(&socket, scratch.path()),
            "splice" => splice(&socket),
            other => println!("unknown section {other}"),
        }
    }
    drop(proxy);
}
