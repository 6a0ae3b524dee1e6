#!/usr/bin/env bash
# npm-peers.sh — the npm workloads of ../shared/bench against Verdaccio and pinproxy in one
# run on this machine, plus a direct `npm ci` from the upstream (reference), warm packument
# load, and the peak RSS of each proxy while 16 clients fetch one ~20 MB packument at once.
#
#   cargo build --release && benches/npm-peers.sh
# Env: LOAD_SECONDS (default 10), BIG_PACKAGE (default next: a full document of about 20
# MB on the public registry), PEERS (default "verdaccio pinproxy").
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH="${BENCH_DIR:-$ROOT/../shared/bench}"
BENCH="$(cd "$BENCH" && pwd)"
source "$BENCH/lib.sh"
export LOAD_SECONDS="${LOAD_SECONDS:-10}"
PEERS="${PEERS:-verdaccio pinproxy}"
BIG="${BIG_PACKAGE:-next}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
export RESULTS="$OUT/results-pinproxy-npm-$STAMP.jsonl"
: > "$RESULTS"

peer_script() { if [ "$1" = pinproxy ]; then echo "$ROOT/benches/peer-pinproxy.sh"; else echo "$BENCH/peers/$1.sh"; fi; }
registry_of() { if [ "$1" = pinproxy ]; then echo "$2/npm/"; else echo "$2/"; fi; }
cleanup() { for p in $PEERS; do "$(peer_script "$p")" stop >/dev/null 2>&1 || true; done; }
trap cleanup EXIT

# 16 clients fetch the big full packument at once; the proxy's peak RSS meanwhile.
big_packument() {
  local name="$1" reg="$2" pid t0 i pids=() sizes
  curl -s -o /dev/null -m 300 -H 'Accept: application/json' "$reg$BIG"   # fill the cache
  pid="$(pid_of "$name")"
  for p in $(_descendants "$pid"); do echo 5 > "/proc/$p/clear_refs" 2>/dev/null || true; done
  t0="$(now)"
  for i in $(seq 1 16); do
    curl -s -o "$RUNDIR/big.$i" -m 300 -H 'Accept: application/json' "$reg$BIG" & pids+=($!)
  done
  wait "${pids[@]}" || true
  sizes="$(stat -c %s "$RUNDIR"/big.* | sort -u | tr '\n' ' ')"
  emit protocol=npm workload=big-packument-16-clients item="$BIG" phase=warm seconds="$(elapsed "$t0")" \
    hwm_kib="$(rss_kb "$name" VmHWM)" body_bytes="$sizes" ok=true
  rm -f "$RUNDIR"/big.*
}

for peer in $PEERS; do
  s="$(peer_script "$peer")"
  export PEER="$peer"
  log "== npm: $peer"
  url="$("$s" start)"; reg="$(registry_of "$peer" "$url")"
  emit_rss "$peer" idle
  "$BENCH/workloads/npm.sh" ci "$reg" cold || true
  "$BENCH/workloads/npm.sh" ci "$reg" warm || true
  emit_rss "$peer" after-ci
  "$BENCH/workloads/npm.sh" load "$reg" express || true
  emit_rss "$peer" after-load
  big_packument "$peer" "$reg" || true
  "$s" stop
done
export PEER=direct-upstream
"$BENCH/workloads/npm.sh" ci "$(npm_upstream)" cold || true
"$BENCH/report.sh" "$RESULTS" > "$OUT/report-pinproxy-npm-$STAMP.md" || true
cat "$OUT/report-pinproxy-npm-$STAMP.md" || true
echo "results: $RESULTS"
