#!/usr/bin/env bash
# Replays all ten Microsoft ITP clusters at their contended sizes (../shared/data/README.md)
# under every policy with the default tier mix, and writes docs/simulation-results.json and
# docs/simulation-jct.svg (the plot in docs/SIMULATION.md).
#
# Usage: scripts/simulate-all.sh [--limit-jobs N] [--clusters "01 05 10"] [--policies "fifo ..."]
# Environment: SINGULARITY (the binary; default: the release build), TRACES (the trace folder),
# PARALLEL (runs at once; default 2).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-/var/tmp/singularity-target}"
bin="${SINGULARITY:-$target/release/singularity}"
traces="${TRACES:-$root/../shared/data/traces/microsoft-itp-2021}"
parallel="${PARALLEL:-2}"
limit=""
clusters="01 02 03 04 05 06 07 08 09 10"
policies="singularity fifo backfill tiresias"

while [ $# -gt 0 ]; do
  case "$1" in
    --limit-jobs) limit="$2"; shift 2 ;;
    --clusters) clusters="$2"; shift 2 ;;
    --policies) policies="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

# Contended size (GPUs) of each cluster, from ../shared/data/README.md.
declare -A size=(
  [01]=64 [02]=112 [03]=176 [04]=624 [05]=16 [06]=112 [07]=328 [08]=88 [09]=40 [10]=16
)

[ -x "$bin" ] || { echo "no binary at $bin: run cargo build --release first" >&2; exit 1; }
[ -d "$traces" ] || { echo "no traces at $traces (set TRACES)" >&2; exit 1; }

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

run_one() {
  local cluster="$1" policy="$2"
  local args=(simulate --trace "$traces/cluster$cluster.csv" --devices "${size[$cluster]}"
    --policy "$policy" --output json --quiet)
  [ -n "$limit" ] && args+=(--limit-jobs "$limit")
  local started=$SECONDS
  if "$bin" "${args[@]}" > "$out/$cluster-$policy.json" 2> "$out/$cluster-$policy.err"; then
    echo "cluster$cluster $policy: done in $((SECONDS - started)) s" >&2
  else
    echo "cluster$cluster $policy: FAILED: $(tail -n 3 "$out/$cluster-$policy.err")" >&2
    rm -f "$out/$cluster-$policy.json"
  fi
}

for cluster in $clusters; do
  for policy in $policies; do
    while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n || true; done
    run_one "$cluster" "$policy" &
  done
done
wait

python3 - "$out" "$root/docs" "${limit:-all}" <<'PY'
import json, os, sys

out, docs, limit = sys.argv[1], sys.argv[2], sys.argv[3]
runs = []
for name in sorted(os.listdir(out)):
    if not name.endswith(".json"):
        continue
    cluster, policy = name[:-5].split("-", 1)
    with open(os.path.join(out, name)) as f:
        report = json.load(f)
    runs.append({"cluster": "cluster" + cluster, "policy": policy, "report": report})
os.makedirs(docs, exist_ok=True)
with open(os.path.join(docs, "simulation-results.json"), "w") as f:
    json.dump({"limit_jobs": limit, "runs": runs}, f, indent=1, sort_keys=True)
    f.write("\n")

# The plot: average JCT per cluster, one bar per policy, normalised to FIFO's.
policies = ["singularity", "fifo", "backfill", "tiresias"]
colors = {"singularity": "#1b9e77", "fifo": "#7570b3", "backfill": "#d95f02", "tiresias": "#e7298a"}
clusters = sorted({r["cluster"] for r in runs})
by = {(r["cluster"], r["policy"]): r["report"] for r in runs}
w, h, left, top, bottom = 900, 380, 60, 40, 60
plot_h = h - top - bottom
group = (w - left - 20) / max(len(clusters), 1)
bar = group / (len(policies) + 1)
ymax = 1.0
for c in clusters:
    base = by.get((c, "fifo"))
    for p in policies:
        r = by.get((c, p))
        if base and r and base["overall"]["completion"]["mean_s"] > 0:
            ymax = max(ymax, r["overall"]["completion"]["mean_s"] / base["overall"]["completion"]["mean_s"])
ymax = min(ymax * 1.1, 3.0)
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
       f'<rect width="{w}" height="{h}" fill="white"/>',
       f'<text x="{w/2}" y="18" text-anchor="middle" font-size="14">Average job completion time relative to FIFO (lower is better)</text>']
for i in range(0, 7):
    v = ymax * i / 6
    y = top + plot_h - plot_h * v / ymax
    svg.append(f'<line x1="{left}" x2="{w-20}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
    svg.append(f'<text x="{left-6}" y="{y+4:.1f}" text-anchor="end">{v:.2f}</text>')
for ci, c in enumerate(clusters):
    base = by.get((c, "fifo"))
    x0 = left + ci * group + bar / 2
    for pi, p in enumerate(policies):
        r = by.get((c, p))
        if not (base and r) or base["overall"]["completion"]["mean_s"] <= 0:
            continue
        v = min(r["overall"]["completion"]["mean_s"] / base["overall"]["completion"]["mean_s"], ymax)
        bh = plot_h * v / ymax
        svg.append(f'<rect x="{x0 + pi*bar:.1f}" y="{top + plot_h - bh:.1f}" width="{bar*0.9:.1f}" height="{bh:.1f}" fill="{colors[p]}"><title>{c} {p}: {r["overall"]["completion"]["mean_s"]:.0f} s</title></rect>')
    svg.append(f'<text x="{left + ci*group + group/2:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{c.replace("cluster", "c")}</text>')
for pi, p in enumerate(policies):
    x = left + pi * 150
    svg.append(f'<rect x="{x}" y="{h-22}" width="12" height="12" fill="{colors[p]}"/><text x="{x+16}" y="{h-12}">{p}</text>')
svg.append("</svg>")
with open(os.path.join(docs, "simulation-jct.svg"), "w") as f:
    f.write("\n".join(svg) + "\n")

# The results table (Markdown), printed for docs/SIMULATION.md.
print("| cluster | policy | util. | avg JCT (h) | p99 JCT (h) | avg queue (h) | premium SLA | preempt / migrate / resize |")
print("|---|---|---|---|---|---|---|---|")
for c in clusters:
    for p in policies:
        r = by.get((c, p))
        if not r:
            print(f"| {c} | {p} | failed | | | | | |")
            continue
        prem = next(t for t in r["tiers"] if t["tier"] == "premium")
        k = r["counts"]
        print(f'| {c} | {p} | {r["utilization"]*100:.1f}% | {r["overall"]["completion"]["mean_s"]/3600:.2f} | '
              f'{r["overall"]["completion"]["p99_s"]/3600:.1f} | {r["overall"]["queueing"]["mean_s"]/3600:.2f} | '
              f'{(prem["sla_attainment"] or 0)*100:.1f}% | {k["preemptions"]} / {k["migrations"]} / {k["resizes"]} |')
PY
