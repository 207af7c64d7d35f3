#!/usr/bin/env bash
# `make demo-down`: stops what `make demo` started — FRR in the router, the
# cluster's nodes, Pods and control plane — and removes every process,
# namespace, mount, cgroup, route and file of it. Safe to run twice.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${DEMO_DIR:-$root/.cache/demo}
if [ -f "$dir/slot" ]; then
  router=flr$(cat "$dir/slot")-router
  if ip netns list 2>/dev/null | grep -q "^$router\b"; then
    ip netns exec "$router" /usr/lib/frr/frrinit.sh stop "$router" >/dev/null 2>&1 || true
    for pid in $(ip netns pids "$router" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  fi
  rm -rf "/etc/frr/$router" "/var/run/frr/$router"
fi
if [ -x "$root/target/debug/ferrolb-realcluster" ]; then
  "$root/target/debug/ferrolb-realcluster" --dir "$dir" down 2>/dev/null || true
fi
rm -f "$dir.env" "$dir.log"
