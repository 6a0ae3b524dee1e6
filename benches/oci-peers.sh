#!/usr/bin/env bash
# oci-peers.sh — the OCI workloads of ../shared/bench against docker-registry in proxy mode,
# nginx proxy_cache and pinproxy, in one run on this machine, plus the static-nginx ceiling
# and a 20-client cold pull of the 200 MB blob with pinproxy's peak RSS. Prints the report
# and the ratios pinproxy / peer.
#
#   cargo build --release && benches/oci-peers.sh
# Env: LOAD_SECONDS (default 10), PEERS (default "distribution-proxy nginx-oci-cache pinproxy").
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH="${BENCH_DIR:-$ROOT/../shared/bench}"
BENCH="$(cd "$BENCH" && pwd)"
source "$BENCH/lib.sh"
export LOAD_SECONDS="${LOAD_SECONDS:-10}"
PEERS="${PEERS:-distribution-proxy nginx-oci-cache pinproxy}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
export RESULTS="$OUT/results-pinproxy-$STAMP.jsonl"
: > "$RESULTS"

peer_script() { if [ "$1" = pinproxy ]; then echo "$ROOT/benches/peer-pinproxy.sh"; else echo "$BENCH/peers/$1.sh"; fi; }
cleanup() {
  for p in $PEERS; do "$(peer_script "$p")" stop >/dev/null 2>&1 || true; done
  "$BENCH/upstreams/oci-hosted.sh" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$BENCH/upstreams/oci-hosted.sh" start >/dev/null
PEER=ceiling "$BENCH/workloads/ceiling.sh" || log "ceiling failed"
export UPSTREAM_HITS_CMD="$BENCH/upstreams/hits.sh oci"
IMAGES="$OUT/images.json"
for peer in $PEERS; do
  s="$(peer_script "$peer")"
  export PEER="$peer"
  log "== oci: $peer"
  url="$("$s" start)"; emit_rss "$peer" idle
  "$BENCH/workloads/oci.sh" pulls "$url" tag || true
  emit_rss "$peer" after-pulls; "$s" stop
  url="$("$s" start)"
  "$BENCH/workloads/oci.sh" pulls "$url" digest || true
  "$BENCH/workloads/oci.sh" load "$url" || true
  emit_rss "$peer" after-load; "$s" stop
  url="$("$s" start)"
  "$BENCH/workloads/oci.sh" coalesce "$url" || true
  emit_rss "$peer" after-coalesce; "$s" stop
  # 20 clients pull the cold 200 MB blob at once; peak RSS of the proxy.
  url="$("$s" start)"
  repo="$(jq -r .big_blob.repo "$IMAGES")"; bd="$(jq -r .big_blob.digest "$IMAGES")"
  t0="$(now)"; pids=()
  for i in $(seq 1 20); do curl -s -m 300 -o /dev/null "$url/v2/$repo/blobs/$bd" & pids+=($!); done
  wait "${pids[@]}" || true
  emit protocol=oci workload=cold-blob-20-clients item=big-layer phase=cold seconds="$(elapsed "$t0")" \
    hwm_kib="$(rss_kb "$peer" VmHWM)" ok=true
  "$s" stop
done
"$BENCH/report.sh" "$RESULTS" > "$OUT/report-pinproxy-$STAMP.md" || true
cat "$OUT/report-pinproxy-$STAMP.md" || true
echo "results: $RESULTS"
