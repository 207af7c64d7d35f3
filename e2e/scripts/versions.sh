#!/usr/bin/env bash
# The older supported Kubernetes minors (`make test` runs the newest, 1.37,
# with every test first): on each, the apiserver tier (the CRDs with their
# CEL rules, the webhook, the operator's allocation and conditions, the
# plugin, the deploy manifests), and on the oldest the real-cluster tier
# (kubelet nodes, kubectl apply -k, Helm; the upgrade lane runs on 1.37). Each pin is
# built once into the cache (e2e/kubernetes/<minor>). Prints the time each
# version took.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cargo=${CARGO:-cargo}
older=${FERROLB_OLDER_KUBERNETES:-1.35 1.36}
oldest=$(echo "$older" | tr ' ' '\n' | sort -V | head -1)
apiserver_tier=(--test api --test webhook --test allocation --test plugin
  --test lifecycle --test deploy --test announce)
real_tier=(--test real --test helm)
for version in $older; do
  start=$(date +%s)
  export FERROLB_KUBERNETES=$version
  bash "$root/e2e/scripts/build-controlplane.sh" >/dev/null
  built=$(date +%s)
  tests=("${apiserver_tier[@]}")
  if [ "$version" = "$oldest" ]; then
    bash "$root/e2e/scripts/build-nodes.sh" >/dev/null
    built=$(date +%s)
    tests+=("${real_tier[@]}")
  fi
  echo "Kubernetes $version: ${tests[*]}"
  "$cargo" test -p ferrolb-e2e "${tests[@]}"
  echo "FIGURE KUBERNETES $version: builds $(( built - start ))s, tests $(( $(date +%s) - built ))s"
done
