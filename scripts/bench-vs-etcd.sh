#!/usr/bin/env bash
# Side-by-side write benchmark: a 3-replica Singularity cluster and a 3-member etcd cluster
# (Debian's etcd-server, installed here if missing), both on loopback, both fsyncing, with their
# data on the same disk. The same closed-loop generator (`singularity bench-load`) drives each
# with the same client counts, payload size and duration; it prints writes/s and p50/p99 per
# run and the Singularity/etcd ratios. Then failover trials: SIGKILL the Singularity leader
# under load and take the time from the kill until the next write commits (and, for
# comparison, the longest gap between two commits of the run). Last, planned leadership
# transfers under the same load (`operator raft transfer-leader`): the longest gap in commits
# of each trial, against the failover's.
#
# Env: CLIENTS ("1 16 256"; empty: failover only), DURATION_S (10), PAYLOAD_BYTES (256),
#      ROUNDS (1: runs of each system per client count, alternating which goes first; with
#      more, a line per round and an "all" line: writes over the whole time, median p50/p99),
#      WARMUP_S (2: before anything is measured, each system runs this long at 16 clients and
#      the results are dropped, so neither is measured on fresh files and cold caches; 0: none),
#      FAILOVER_TRIALS (20), TRANSFER_TRIALS (10), DATA_ROOT (/var/tmp), KEEP_DATA (1: keep the data dir and the
#      replicas' logs, and print where); CPU (1: also print the CPU time per write, from /proc,
#      of each server process and of the generator, for every client count); ELECTION_MIN_MS, ELECTION_MAX_MS, HEARTBEAT_MS (unset: the
#      server's defaults, which are what this measures); SERVER_ARGS (more flags for every
#      replica, e.g. --no-early-replication).
set -euo pipefail

CLIENTS=${CLIENTS-"1 16 256"}
DURATION_S=${DURATION_S:-10}
ROUNDS=${ROUNDS:-1}
[[ "$ROUNDS" =~ ^[1-9][0-9]?$ ]] || { echo "ROUNDS must be a whole number from 1 to 99, not '$ROUNDS'" >&2; exit 2; }
PAYLOAD_BYTES=${PAYLOAD_BYTES:-256}
WARMUP_S=${WARMUP_S:-2}
[[ "$WARMUP_S" =~ ^[0-9]+$ ]] || { echo "WARMUP_S must be a whole number of seconds, not '$WARMUP_S'" >&2; exit 2; }
FAILOVER_TRIALS=${FAILOVER_TRIALS:-20}
TRANSFER_TRIALS=${TRANSFER_TRIALS:-10}
SG_TIMING=()
[ -n "${ELECTION_MIN_MS:-}" ] && SG_TIMING+=(--election-timeout-min-ms "$ELECTION_MIN_MS")
[ -n "${ELECTION_MAX_MS:-}" ] && SG_TIMING+=(--election-timeout-max-ms "$ELECTION_MAX_MS")
[ -n "${HEARTBEAT_MS:-}" ] && SG_TIMING+=(--heartbeat-interval-ms "$HEARTBEAT_MS")
read -r -a SERVER_EXTRA <<<"${SERVER_ARGS:-}"
SG_TIMING+=(${SERVER_EXTRA[@]+"${SERVER_EXTRA[@]}"})
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=${BIN:-$TARGET_DIR/release/singularity}
DATA=$(mktemp -d "${DATA_ROOT:-/var/tmp}/bench-vs-etcd.XXXXXX")
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP_DATA:-0}" = 1 ]; then echo "data and logs kept in $DATA" >&2; else rm -rf "$DATA"; fi
}
trap cleanup EXIT

if [ ! -x "$BIN" ]; then
  cargo build --release --bin singularity
fi
if ! command -v etcd >/dev/null; then
  apt-get update -qq && apt-get install -y -qq etcd-server >/dev/null
fi

# --- etcd: 3 members, default fsync behaviour (WAL fsync per commit batch).
ETCD_CLUSTER="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803"
for i in 1 2 3; do
  ETCD_UNSUPPORTED_ARCH= etcd --name "e$i" --data-dir "$DATA/etcd$i" \
    --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
    --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
    --initial-cluster "$ETCD_CLUSTER" --initial-cluster-state new --initial-cluster-token bench \
    --log-level error >"$DATA/etcd$i.log" 2>&1 &
  PIDS+=($!)
done

# --- Singularity: 3 replicas.
SG_CLUSTER="1=127.0.0.1:27071,2=127.0.0.1:27072,3=127.0.0.1:27073"
declare -A SG_PID
start_replica() {
  local i=$1
  "$BIN" server --node-id "$i" --listen "127.0.0.1:2707$i" --data-dir "$DATA/sg$i" \
    --initial-cluster "$SG_CLUSTER" ${SG_TIMING[@]+"${SG_TIMING[@]}"} 2>>"$DATA/sg$i.log" &
  SG_PID[$i]=$!
  PIDS+=($!)
}
for i in 1 2 3; do start_replica "$i"; done
SG_ENDPOINTS=127.0.0.1:27071,127.0.0.1:27072,127.0.0.1:27073

# The etcd leader's client URL (clients talk to the leader, as Singularity's clients do).
etcd_leader() {
  for i in 1 2 3; do
    local status
    status=$(curl -s -m 2 -X POST "http://127.0.0.1:2379$i/v3/maintenance/status" -d '{}' || true)
    if python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if s["header"]["member_id"]==s["leader"] else 1)' "$status" 2>/dev/null; then
      echo "127.0.0.1:2379$i"; return
    fi
  done
}
ETCD_LEADER=""
for _ in $(seq 1 100); do
  ETCD_LEADER=$(etcd_leader); [ -n "$ETCD_LEADER" ] && break; sleep 0.2
done
[ -n "$ETCD_LEADER" ] || { echo "etcd did not elect a leader" >&2; exit 1; }

# Warm up both (connections, first election on Singularity).
"$BIN" bench-load --target singularity --endpoints "$SG_ENDPOINTS" --clients 1 --duration-s 2 >/dev/null
"$BIN" bench-load --target etcd --endpoints "$ETCD_LEADER" --clients 1 --duration-s 2 >/dev/null

# Clock ticks of CPU (user + system) each given process has used and the context switches of
# its threads, as TICKS:SWITCHES, space-separated.
cpu_ticks() {
  local pid out=()
  for pid in "$@"; do
    out+=("$(awk '{print $14 + $15}' "/proc/$pid/stat"):$(cat /proc/"$pid"/task/*/status 2>/dev/null |
      awk '/ctxt_switches/ {n += $2} END {print n}')")
  done
  echo "${out[*]}"
}
# Runs the generator; with CPU=1 its own CPU seconds (user + system) go to "$DATA/gen_cpu".
bench() {
  if [ "${CPU:-0}" = 1 ]; then
    python3 -c '
import resource, subprocess, sys
rc = subprocess.run(sys.argv[2:]).returncode
u = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(f"{u.ru_utime + u.ru_stime}\n")
sys.exit(rc)' "$DATA/gen_cpu" "$BIN" bench-load "$@"
  else
    "$BIN" bench-load "$@"
  fi
}
# One line of CPU per write: every server process (µs each) and the generator.
cpu_line() {
  python3 - "$1" "$2" "$3" "$4" "$(cat "$DATA/gen_cpu")" "$(getconf CLK_TCK)" <<'PY'
import json, sys
name, before, after, run, gen_s, hz = sys.argv[1:]
writes = json.loads(run)["writes"]
pairs = [(a.split(":"), b.split(":")) for a, b in zip(before.split(), after.split())]
per = [(int(b[0]) - int(a[0])) / int(hz) * 1e6 / writes for a, b in pairs]
switches = sum(int(b[1]) - int(a[1]) for a, b in pairs) / writes
print(f'  cpu per write, {name}: servers {" + ".join(f"{p:.0f}" for p in per)} = {sum(per):.0f} us, '
      f'{switches:.1f} context switches; generator {float(gen_s) * 1e6 / writes:.0f} us ({writes} writes)')
PY
}

field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

if [ -n "$CLIENTS" ] && [ "$WARMUP_S" -gt 0 ]; then
  echo "warm-up: ${WARMUP_S} s of 16 clients on each system, not measured"
  for target in singularity etcd; do
    endpoints=$SG_ENDPOINTS; [ "$target" = etcd ] && endpoints=$ETCD_LEADER
    "$BIN" bench-load --target "$target" --endpoints "$endpoints" --clients 16 \
      --duration-s "$WARMUP_S" --payload-bytes "$PAYLOAD_BYTES" >/dev/null
  done
fi
printf '%-8s %14s %9s %9s %14s %9s %9s %8s %8s\n' clients sg_writes/s sg_p50ms sg_p99ms etcd_writes/s etcd_p50 etcd_p99 tput_x p99_x
ETCD_PIDS=("${PIDS[@]:0:3}")
# One Singularity run and one etcd run of `c` clients, in the order given; prints their row.
run_sg() {
  local before after
  before=$(cpu_ticks "${SG_PID[1]}" "${SG_PID[2]}" "${SG_PID[3]}")
  sg=$(bench --target singularity --endpoints "$SG_ENDPOINTS" --clients "$1" --duration-s "$DURATION_S" --payload-bytes "$PAYLOAD_BYTES")
  after=$(cpu_ticks "${SG_PID[1]}" "${SG_PID[2]}" "${SG_PID[3]}")
  if [ "${CPU:-0}" = 1 ]; then sg_cpu=$(cpu_line "singularity replicas 1 + 2 + 3" "$before" "$after" "$sg"); fi
}
run_etcd() {
  local before after
  before=$(cpu_ticks "${ETCD_PIDS[@]}")
  et=$(bench --target etcd --endpoints "$ETCD_LEADER" --clients "$1" --duration-s "$DURATION_S" --payload-bytes "$PAYLOAD_BYTES")
  after=$(cpu_ticks "${ETCD_PIDS[@]}")
  if [ "${CPU:-0}" = 1 ]; then et_cpu=$(cpu_line "etcd members 1 + 2 + 3" "$before" "$after" "$et"); fi
}
for c in $CLIENTS; do
  : >"$DATA/rounds.jsonl"
  for round in $(seq 1 "$ROUNDS"); do
    # Alternate which system goes first, so a slow spell of the machine (they come and go
    # every ten seconds or so on a shared VM) does not always fall on the same one.
    if [ $((round % 2)) = 1 ]; then run_sg "$c"; run_etcd "$c"; else run_etcd "$c"; run_sg "$c"; fi
    echo "$sg" >>"$DATA/results.jsonl"; echo "$et" >>"$DATA/results.jsonl"
    echo "[$sg, $et]" >>"$DATA/rounds.jsonl"
    label=$c; [ "$ROUNDS" -gt 1 ] && label="$c#$round"
    python3 - "$label" "$sg" "$et" <<'PY'
import json, sys
c, sg, et = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
tx = sg["writes_per_s"] / max(et["writes_per_s"], 1e-9)
px = sg["p99_ms"] / max(et["p99_ms"], 1e-9)
print(f'{c:<8} {sg["writes_per_s"]:14.0f} {sg["p50_ms"]:9.2f} {sg["p99_ms"]:9.2f} {et["writes_per_s"]:14.0f} {et["p50_ms"]:9.2f} {et["p99_ms"]:9.2f} {tx:8.2f} {px:8.2f}')
PY
    if [ "${CPU:-0}" = 1 ]; then echo "$sg_cpu"; echo "$et_cpu"; fi
  done
  if [ "$ROUNDS" -gt 1 ]; then
    # All rounds together: writes over time, and the median round's p50 and p99.
    python3 - "$c" "$DATA/rounds.jsonl" <<'PY'
import json, statistics, sys
c, rounds = sys.argv[1], [json.loads(line) for line in open(sys.argv[2])]
def whole(runs):
    rate = sum(r["writes"] for r in runs) / sum(r["duration_s"] for r in runs)
    return rate, statistics.median(r["p50_ms"] for r in runs), statistics.median(r["p99_ms"] for r in runs)
(sw, s50, s99), (ew, e50, e99) = whole([r[0] for r in rounds]), whole([r[1] for r in rounds])
print(f'{c + " all":<8} {sw:14.0f} {s50:9.2f} {s99:9.2f} {ew:14.0f} {e50:9.2f} {e99:9.2f} {sw / ew:8.2f} {s99 / e99:8.2f}')
PY
  fi
done

# One line for a series of trials: NAME: N trials, p50, p99, max (ms); trials with no value
# ("nan") are counted apart.
trial_summary() {
  python3 - "$1" "$2" <<'PY'
import math, sys
name, text = sys.argv[1], sys.argv[2]
values = sorted(float(v) for v in text.split())
lost = sum(1 for v in values if math.isnan(v))
values = [v for v in values if not math.isnan(v)]
if values:
    p = lambda q: values[min(len(values) - 1, round((len(values) - 1) * q))]
    print(f"{name}: {len(values)} trials, p50 {p(0.5):.0f} ms, p99 {p(0.99):.0f} ms, "
          f"max {values[-1]:.0f} ms" + (f" ({lost} with no commit after the kill)" if lost else ""))
PY
}

# --- Failover: SIGKILL the leader under 16 clients of load (the leader is looked up just
# before the kill) and take the time from the kill until the next write commits.
# The leader most replicas agree on, so that one replica's stale view does not decide it.
sg_leader() {
  "$BIN" operator raft status --endpoints "$SG_ENDPOINTS" --output json 2>/dev/null | python3 -c '
import collections, json, sys
views = collections.Counter(s["status"]["leader"] for s in json.load(sys.stdin)
                            if s.get("status") and s["status"].get("leader"))
if views:
    leader, votes = views.most_common(1)[0]
    if votes >= 2:
        print(leader)'
}
RECOVERY=()
GAPS=()
for t in $(seq 1 "$FAILOVER_TRIALS"); do
  out="$DATA/failover$t.json"
  times="$DATA/failover$t.times"
  "$BIN" bench-load --target singularity --endpoints "$SG_ENDPOINTS" --clients 16 --duration-s 5 \
    --commit-times-file "$times" >"$out" &
  load=$!
  sleep 2
  leader=$(sg_leader)
  if [ -z "$leader" ]; then
    wait "$load" || true
    echo "failover trial $t: no leader found; skipped"
    sleep 1; continue
  fi
  killed_at=$(date +%s.%N)
  { kill -9 "${SG_PID[$leader]}"; wait "${SG_PID[$leader]}"; } 2>/dev/null || true
  wait "$load" || true
  # Writes in flight when the leader died may still be answered just after the kill; the
  # failover is the longest pause in commits that ends after the kill, measured from the kill.
  recovery=$(python3 - "$times" "$killed_at" <<'PY'
import sys
killed = float(sys.argv[2]) * 1000.0
times = [float(l) for l in open(sys.argv[1])]
gaps = [(b - a, b) for a, b in zip(times, times[1:]) if b > killed]
print(f"{max(gaps)[1] - killed:.1f}" if gaps else "nan")
PY
)
  gap=$(field "$(cat "$out")" max_commit_gap_ms)
  RECOVERY+=("$recovery")
  GAPS+=("$gap")
  echo "failover trial $t: killed leader $leader at $killed_at; writes resumed ${recovery} ms after the kill (longest gap ${gap} ms)"
  start_replica "$leader"
  sleep 2
done
trial_summary "failover kill to writes resumed" "${RECOVERY[*]:-}"
trial_summary "failover longest commit gap" "${GAPS[*]:-}"

# --- Planned transfer: under 16 clients of load, hand leadership to the next replica by id;
# the pause is the longest gap between two commits of the trial.
PAUSES=()
for t in $(seq 1 "$TRANSFER_TRIALS"); do
  out="$DATA/transfer$t.json"
  "$BIN" bench-load --target singularity --endpoints "$SG_ENDPOINTS" --clients 16 --duration-s 4 >"$out" &
  load=$!
  sleep 2
  leader=$(sg_leader)
  if [ -z "$leader" ]; then
    wait "$load" || true
    echo "transfer trial $t: no leader found; skipped"
    continue
  fi
  to=$((leader % 3 + 1))
  said=$("$BIN" operator raft transfer-leader --endpoints "$SG_ENDPOINTS" --to "$to" 2>&1) || true
  wait "$load" || true
  gap=$(field "$(cat "$out")" max_commit_gap_ms)
  PAUSES+=("$gap")
  echo "transfer trial $t: $leader -> $to: $said; longest commit gap ${gap} ms"
done
trial_summary "transfer longest commit gap" "${PAUSES[*]:-}"
