#!/usr/bin/env bash
# `make e2e [TAGS=BGP,FAILOVER]`: the end-to-end tests, or only the files whose
# first doc lines carry one of the tags ([L2, BGP, IPV4, IPV6, DUALSTACK,
# WEBHOOK, FAILOVER, ALLOC, METRICS, API, DEPLOY, RBAC, E2E]).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cargo=${CARGO:-cargo}
if [ -z "${TAGS:-}" ]; then
  exec "$cargo" test -p ferrolb-e2e
fi
args=()
for file in "$root"/e2e/tests/*.rs; do
  tags=$(head -3 "$file" | grep -o '\[[A-Z0-9, ]*\]' | head -1 | tr -d '[] ')
  for wanted in ${TAGS//,/ }; do
    if [[ ",$tags," == *",$wanted,"* ]]; then
      args+=(--test "$(basename "$file" .rs)")
      break
    fi
  done
done
if [ ${#args[@]} -eq 0 ]; then
  echo "no e2e test carries the tags $TAGS" >&2
  exit 1
fi
echo "e2e tests tagged $TAGS: ${args[*]}"
exec "$cargo" test -p ferrolb-e2e "${args[@]}"
