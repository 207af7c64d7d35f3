#!/usr/bin/env bash
# Builds the Helm CLI (helm.sh/helm/v4, pinned in e2e/helm/go.mod) from the Go
# module proxy into an ignored cache folder, once per pin, as the control plane
# is built. Prints the path of the binary on its last line.
set -euo pipefail

here=$(cd "$(dirname "$0")/../helm" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${FERROLB_CACHE:-$root/.cache}
key=$(cat "$here/go.mod" "$here/go.sum" "$0" | sha256sum | cut -c1-16)
out="$cache/helm/$key"

if [ -x "$out/helm" ]; then
  echo "$out/helm"
  exit 0
fi

ver=$(awk '{for (i = 1; i < NF; i++) if ($i == "helm.sh/helm/v4") {print $(i + 1); exit}}' "$here/go.mod")
tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
echo "building helm $ver into $out (first time only)" >&2
start=$(date +%s)
cd "$here"
CGO_ENABLED=0 go build -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$ver" \
  -o "$tmp/helm" helm.sh/helm/v4/cmd/helm
mv "$tmp" "$out"
echo "helm built in $(( $(date +%s) - start ))s" >&2
echo "$out/helm"
