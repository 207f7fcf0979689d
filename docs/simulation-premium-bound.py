#!/usr/bin/env python3
"""Lower bound on the premium jobs of each ITP cluster that miss the 95% SLA target under ANY
policy, at the contended sizes of ../shared/data/README.md and the default tier mix (seed 0).

Usage: python3 docs/simulation-premium-bound.py [TRACE_DIR] [MAX_WINDOW_S]
(run from the repository root; TRACE_DIR defaults to ../shared/data/traces/microsoft-itp-2021,
MAX_WINDOW_S, the longest window examined, to one day).

The argument (docs/SIMULATION.md, "Premium demand against the fleet"):
- tiers are assigned as the simulator does: FNV-1a-64(seed as 8 little-endian bytes, then the
  job id) mod 10^6 against the cumulative shares 0.2 premium, 0.3 standard, 0.5 basic;
- premium runs whole (never spliced), so its delivered/requested device-time is its running time
  over its completion time. A premium job of duration d and world size w submitted at r reaches
  95% only if it completes by D = r + d/0.95, and it holds its w devices for at least
  q = d + START_S (its start, then its work) inside [r, D]. It may be paused (preempted) in
  between, so it need not run at any given instant;
- energetic reasoning: in a window [a, b] it must hold its devices for at least
  max(0, q - max(0, a - r) - max(0, D - b)) (what cannot be done before a or after b). If the
  premium jobs need more device-time in [a, b] than devices x (b - a), at least the fewest of
  them whose removal makes the rest fit must miss;
- windows whose sets of contributing jobs are disjoint count separately: the bound is the
  heaviest set of windows whose spans (earliest submission to latest deadline of their
  contributing jobs) do not overlap (weighted interval scheduling).
Windows start at a submission and end at a deadline, up to MAX_WINDOW_S long; any window gives a
valid bound, so examining fewer only weakens it. Checkpoints, restores and planning delays (which
every real policy pays) are left out, which also only weakens it.
"""
import bisect
import csv
import os
import sys

START_S = 10.0  # the cost model's start time of a placement (scheduler/src/sim/cost.rs)
TARGET = 0.95
MASK = (1 << 64) - 1
SIZES = {"01": 64, "02": 112, "03": 176, "04": 624, "05": 16, "06": 112, "07": 328, "08": 88,
         "09": 40, "10": 16}


def fnv1a(state, data):
    for byte in data:
        state ^= byte
        state = (state * 0x100000001B3) & MASK
    return state


SEEDED = fnv1a(0xCBF29CE484222325, (0).to_bytes(8, "little"))


def is_premium(job_id):
    return fnv1a(SEEDED, job_id.encode()) % 1_000_000 < 200_000


def premium_jobs(path):
    """(submission r, deadline D, device-holding time q, world size w), by submission."""
    jobs = []
    with open(path) as f:
        for row in csv.DictReader(f):
            if is_premium(row["job_id"]):
                r, d = float(row["submission_time"]), float(row["duration"])
                jobs.append((r, r + d / TARGET, d + START_S, int(row["num_gpu"])))
    jobs.sort()
    return jobs


def overloaded_windows(jobs, devices, max_window_s):
    """(span start, span end, jobs that must miss) of every overloaded window examined."""
    submissions = [r for r, _, _, _ in jobs]
    deadlines = sorted(d for _, d, _, _ in jobs)
    found = []
    for a in sorted(set(submissions)):
        lo = bisect.bisect_right(deadlines, a)
        hi = bisect.bisect_right(deadlines, a + max_window_s)
        for b in deadlines[lo:hi]:
            need, span_lo, span_hi = [], float("inf"), 0.0
            for r, d, q, w in jobs[: bisect.bisect_left(submissions, b)]:
                if d <= a:
                    continue
                mandatory = q - max(0.0, a - r) - max(0.0, d - b)
                if mandatory > 0:
                    need.append(w * mandatory)
                    span_lo, span_hi = min(span_lo, r), max(span_hi, d)
            capacity, total = devices * (b - a), sum(need)
            if total <= capacity:
                continue
            dropped = 0
            for x in sorted(need, reverse=True):
                dropped += 1
                total -= x
                if total <= capacity:
                    break
            found.append((span_lo, span_hi, dropped))
    return found


def bound(jobs, devices, max_window_s):
    windows = sorted(overloaded_windows(jobs, devices, max_window_s), key=lambda x: x[1])
    ends = [end for _, end, _ in windows]
    best = [0] * (len(windows) + 1)
    for i, (start, _, dropped) in enumerate(windows):
        j = bisect.bisect_left(ends, start, 0, i)  # windows that end before this one starts
        best[i + 1] = max(best[i], best[j] + dropped)
    return best[-1]


def main():
    traces = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/traces/microsoft-itp-2021"
    max_window_s = float(sys.argv[2]) if len(sys.argv) > 2 else 86_400.0
    print("| cluster | devices | premium jobs | must miss (at least) | best possible premium SLA |")
    print("|---|---|---|---|---|")
    for cluster, devices in SIZES.items():
        jobs = premium_jobs(os.path.join(traces, f"cluster{cluster}.csv"))
        missed = bound(jobs, devices, max_window_s)
        n = len(jobs)
        print(f"| cluster{cluster} | {devices} | {n} | {missed} | {100 * (n - missed) / n:.2f}% |",
              flush=True)


if __name__ == "__main__":
    main()
