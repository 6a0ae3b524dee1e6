#!/usr/bin/env bash
# peer-pinproxy.sh start|stop — pinproxy as a peer of ../shared/bench: release build on
# 127.0.0.1:5003 pulling through from the hosted registry at 127.0.0.1:5000 (OCI) and from
# the npm registry `npm config get registry` names (read at run time; npm at /npm/), and from
# the bench's Maven upstream at 127.0.0.1:8081 (Maven at /maven/), empty
# store on every start. Uses the bench's lib.sh (PID file in $RUNDIR/pids/pinproxy.pid, so emit_rss
# samples it like the other peers).
BENCH="${BENCH_DIR:-$(cd "$(dirname "$0")/../../shared/bench" && pwd)}"
source "$BENCH/lib.sh"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${PINPROXY_BIN:-$ROOT/target/release/pinproxy}"
NAME=pinproxy
case "${1:-}" in
start)
  [ -x "$BIN" ] || die "$BIN missing: cargo build --release"
  rm -rf "$RUNDIR/peer-pinproxy"; mkdir -p "$RUNDIR/peer-pinproxy"
  wait_port_free 5003
  PINPROXY_LOG="${PINPROXY_LOG:-warn}" start_bg "$NAME" "$BIN" serve --listen 127.0.0.1:5003 \
    --data-dir "$RUNDIR/peer-pinproxy" --oci-upstream hosted.bench=http://127.0.0.1:5000 \
    --npm-upstream "$(npm_upstream)" --maven-upstream bench=http://127.0.0.1:8081/
  wait_http http://127.0.0.1:5003/healthz 30
  echo http://127.0.0.1:5003 ;;
stop) stop_bg "$NAME" ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
