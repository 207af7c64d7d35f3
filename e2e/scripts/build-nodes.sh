#!/usr/bin/env bash
# Builds what a real node runs besides ferrolb — kubelet, kube-proxy — and the
# kube-scheduler, from the same Go module pin as the test control plane, into
# an ignored cache folder keyed by that pin (built once per pin). The pin's
# go.mod/go.sum are copied into the cache first: kubelet and kube-proxy need
# packages the control plane does not, and Go records them there, never in
# e2e/kubernetes. Prints the folder holding the binaries on its last line.
set -euo pipefail

source "$(dirname "$0")/pin.sh"
key=$(cat "$here/go.mod" "$here/go.sum" "$0" "$(dirname "$0")/pin.sh" | sha256sum | cut -c1-16)
out="$cache/nodes/$key"

if [ -x "$out/kubelet" ] && [ -x "$out/kube-proxy" ] && [ -x "$out/kube-scheduler" ]; then
  echo "$out"
  exit 0
fi

kver=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$here/go.mod")
major=$(echo "${kver#v}" | cut -d. -f1)
minor=$(echo "${kver#v}" | cut -d. -f2)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$kver -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

work="$out.src.$$"
tmp="$out.tmp.$$"
rm -rf "$work" "$tmp"
mkdir -p "$work" "$tmp"
trap 'rm -rf "$work" "$tmp"' EXIT
cp "$here/go.mod" "$here/go.sum" "$here"/*.go "$work/" 2>/dev/null || cp "$here/go.mod" "$here/go.sum" "$work/"
echo "building kubelet, kube-proxy and kube-scheduler $kver into $out (first time only)" >&2
start=$(date +%s)
cd "$work"
GOFLAGS="${GOFLAGS:-} -mod=mod" CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kube-proxy \
  k8s.io/kubernetes/cmd/kube-scheduler
mv "$tmp" "$out"
echo "node binaries built in $(( $(date +%s) - start ))s" >&2
echo "$out"
