#!/usr/bin/env bash
# `make demo-lite-down`: stops what `make demo-lite` started — ferrolb's processes, FRR,
# the HTTP stand-ins, the network namespaces and their links, the control
# plane — and removes their folder. Safe to run twice.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${CLUSTER_DIR:-$root/.cache/cluster}
state="$dir/demo"
if [ -d "$state" ]; then
  for pidfile in "$state"/*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
  done
  sleep 1
  for pidfile in "$state"/*.pid; do
    [ -f "$pidfile" ] || continue
    kill -KILL "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
fi
if ip netns list 2>/dev/null | grep -q '^fld-router'; then
  ip netns exec fld-router /usr/lib/frr/frrinit.sh stop fld-router >/dev/null 2>&1 || true
fi
rm -rf /etc/frr/fld-router /var/run/frr/fld-router
for ns in fld-node-a fld-node-b fld-node-c fld-router fld-client fld-switch; do
  if ip netns list 2>/dev/null | grep -q "^$ns\b"; then
    # Whatever still runs inside (the HTTP stand-ins) goes with it.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns"
  fi
done
if [ -x "$root/target/debug/ferrolb-cluster" ]; then
  "$root/target/debug/ferrolb-cluster" --dir "$dir" down >/dev/null 2>&1 || true
fi
rm -rf "$state"
