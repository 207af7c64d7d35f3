#!/usr/bin/env bash
# Installs the Debian packages `make demo` and `make test` use when they are
# missing (as root: apt-get), or stops with the one command that does.
# Used by the Makefile and .ci/run; installs nothing that is already there.
set -euo pipefail

# command or file that shows it is there  →  package
want=(
  "ip:iproute2"
  "nsenter:util-linux"
  "arping:arping"
  "ndisc6:ndisc6"
  "python3:python3"
  "curl:curl"
  "/usr/lib/frr/frrinit.sh:frr"
  "gobgpd:gobgpd"
  "bird:bird2"
  "containerd:containerd"
  "runc:runc"
  "/usr/lib/cni/bridge:containernetworking-plugins"
  "iptables:iptables"
  "nft:nftables"
  "conntrack:conntrack"
  "cc:gcc"
  "objcopy:binutils"
  "/usr/lib/x86_64-linux-gnu/libc.a:libc6-dev"
)
missing=()
for entry in "${want[@]}"; do
  what=${entry%%:*} package=${entry#*:}
  if [[ $what == /* ]]; then
    [ -e "$what" ] && continue
  else
    command -v "$what" >/dev/null 2>&1 && continue
  fi
  missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  command="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages; as root run: $command" >&2
    exit 1
  fi
  echo "installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "Go ≥ 1.26 is needed to build the test cluster (kube-apiserver, kubelet …)" >&2; exit 1; }
command -v cargo >/dev/null || { echo "a Rust toolchain ≥ 1.95 is needed" >&2; exit 1; }
