#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, etcd and kubectl from the Go module
# proxy into an ignored cache folder, once per pin: the folder is keyed by a hash of
# the pinned go.mod/go.sum, so a rebuild happens only when the pin changes.
# Prints the folder holding the binaries on its last line.
set -euo pipefail

source "$(dirname "$0")/pin.sh"
key=$(cat "$here/go.mod" "$here/go.sum" "$0" "$(dirname "$0")/pin.sh" | sha256sum | cut -c1-16)
out="$cache/controlplane/$key"

if [ -x "$out/kube-apiserver" ] && [ -x "$out/etcd" ] && [ -x "$out/kubectl" ] \
    && [ -x "$out/kube-controller-manager" ]; then
  echo "$out"
  exit 0
fi

# The Kubernetes version the binaries report, taken from the pin itself.
kver=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$here/go.mod")
major=$(echo "${kver#v}" | cut -d. -f1)
minor=$(echo "${kver#v}" | cut -d. -f2)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$kver -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
echo "building the control plane $kver into $out (first time only)" >&2
start=$(date +%s)
cd "$here"
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl
# etcd's main package is the module root of go.etcd.io/etcd/server/v3.
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
mv "$tmp" "$out"
echo "control plane built in $(( $(date +%s) - start ))s" >&2
echo "$out"
