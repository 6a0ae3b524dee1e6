#!/usr/bin/env bash
# maven-peers.sh — the Maven workloads of ../shared/bench against nginx proxy_cache and
# pinproxy in one run on this machine: cold and warm `mvn dependency:get` of
# org.apache.xmlgraphics:fop:2.8 with a fresh local repository and --strict-checksums, warm
# pom GETs at 64 connections, warm throughput of the largest jar over 1 and 8 connections,
# and the resident memory of each peer. The resolutions run ROUNDS times, alternating peers,
# and the medians are printed at the end.
#
#   cargo build --release && benches/maven-peers.sh
# Env: LOAD_SECONDS (default 10), ROUNDS (default 3), PEERS (default "nginx-maven-cache pinproxy").
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH="${BENCH_DIR:-$ROOT/../shared/bench}"
BENCH="$(cd "$BENCH" && pwd)"
source "$BENCH/lib.sh"
export LOAD_SECONDS="${LOAD_SECONDS:-10}"
ROUNDS="${ROUNDS:-3}"
PEERS="${PEERS:-nginx-maven-cache pinproxy}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
export RESULTS="$OUT/results-pinproxy-maven-$STAMP.jsonl"
: > "$RESULTS"

peer_script() { if [ "$1" = pinproxy ]; then echo "$ROOT/benches/peer-pinproxy.sh"; else echo "$BENCH/peers/$1.sh"; fi; }
mirror_of() { if [ "$1" = pinproxy ]; then echo "$2/maven/"; else echo "$2/"; fi; }
cleanup() {
  for p in $PEERS; do "$(peer_script "$p")" stop >/dev/null 2>&1 || true; done
  "$BENCH/upstreams/maven-upstream.sh" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$BENCH/upstreams/maven-upstream.sh" start >/dev/null
export UPSTREAM_HITS_CMD="$BENCH/upstreams/hits.sh maven"
# Resolution: ROUNDS rounds, the peers alternating within each round (and the order
# reversed every other round), each round on a freshly started, empty peer: on a shared
# machine the noise drifts over minutes, and a fixed order would charge the drift to
# whichever peer runs last.
order="$PEERS"
for round in $(seq 1 "$ROUNDS"); do
  for peer in $order; do
    s="$(peer_script "$peer")"
    export PEER="$peer"
    log "== maven round $round: $peer"
    url="$("$s" start)"; mirror="$(mirror_of "$peer" "$url")"
    "$BENCH/workloads/maven.sh" get "$mirror" cold || true
    "$BENCH/workloads/maven.sh" get "$mirror" warm || true
    "$s" stop
  done
  export PEER=direct-upstream
  "$BENCH/workloads/maven.sh" get http://127.0.0.1:8081/ cold || true
  order="$(echo "$order" | tr ' ' '\n' | tac | tr '\n' ' ')"
done
# Load and memory: once per peer, warm.
for peer in $PEERS; do
  s="$(peer_script "$peer")"
  export PEER="$peer"
  log "== maven load: $peer"
  url="$("$s" start)"; mirror="$(mirror_of "$peer" "$url")"
  emit_rss "$peer" idle
  "$BENCH/workloads/maven.sh" get "$mirror" prefill >/dev/null || true
  emit_rss "$peer" after-get
  "$BENCH/workloads/maven.sh" load "$mirror" || true
  emit_rss "$peer" after-load
  "$s" stop
done
"$BENCH/report.sh" "$RESULTS" > "$OUT/report-pinproxy-maven-$STAMP.md" || true
cat "$OUT/report-pinproxy-maven-$STAMP.md" || true
echo
echo "median seconds of mvn dependency:get over $ROUNDS rounds:"
jq -rs '[.[] | select(.workload == "mvn-dependency-get" and .ok == true)]
  | group_by([.peer, .phase])[]
  | (map(.seconds) | sort) as $s
  | "\(.[0].peer) \(.[0].phase): median \($s[($s | length) / 2 | floor]) s of \($s | map(tostring) | join(", "))"' "$RESULTS" || true
# Same-round ratios: the machine's noise moves both peers of a round together.
jq -rs '[.[] | select(.workload == "mvn-dependency-get" and .ok == true)] as $r
  | ("cold", "warm") as $ph
  | [$r[] | select(.peer == "pinproxy" and .phase == $ph) | .seconds] as $p
  | [$r[] | select(.peer == "nginx-maven-cache" and .phase == $ph) | .seconds] as $n
  | [range(0; [($p | length), ($n | length)] | min) | ($p[.] / $n[.] * 100 | round / 100)] as $q
  | select($q | length > 0)
  | "pinproxy / nginx-maven-cache \($ph), same round: \($q | map(tostring) | join(" ")) (median \($q | sort | .[length / 2 | floor]))"' "$RESULTS" || true
echo "results: $RESULTS"
