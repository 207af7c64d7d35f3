#!/usr/bin/env bash
# `make release`: one folder a user can install ferrolb from, without this
# repository or a registry:
#   ferrolb.yaml                           everything `kubectl apply -f` needs (config/default),
#                                          the image pinned by tag
#   ferrolb-VERSION.tar                    the image as an OCI archive, tagged with the name
#                                          ferrolb.yaml pins (load it into the nodes' containerd)
#   ferrolb-VERSION.tgz                    the Helm chart
#   kubectl-ferrolb-linux-ARCH.tar.gz      the kubectl plugin, and plugin.yaml, its krew manifest
#   SHA256SUMS                             sha256sum -c SHA256SUMS checks them all
# FERROLB_RELEASE_PROFILE picks cargo's profile (release; the tests use dev),
# FERROLB_RELEASE_DIR the folder (default dist/ferrolb-VERSION).
# Prints the folder on its last line.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cargo=${CARGO:-cargo}
profile=${FERROLB_RELEASE_PROFILE:-release}
version=$(awk -F'"' '/^\[workspace.package\]/ {p = 1} p && $1 ~ /^version *= */ {print $2; exit}' Cargo.toml)
out=${FERROLB_RELEASE_DIR:-$root/dist/ferrolb-$version}
case $(uname -m) in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
image=$(awk '/^- name: / {print $3; exit}' config/default/kustomization.yaml)
tag=$(awk '/^  newTag: / {print $2; exit}' config/default/kustomization.yaml)
if [ "$tag" != "$version" ]; then
  echo "config/default pins $image:$tag but the workspace is $version: set newTag" >&2
  exit 1
fi

rm -rf "$out"
mkdir -p "$out"
"$cargo" build -q --profile "$profile" -p ferrolb-operator -p ferrolb-speaker -p ferrolb-webhook -p kubectl-ferrolb --bins
bins="$root/target/$([ "$profile" = dev ] && echo debug || echo "$profile")"
"$cargo" run -q -p ferrolb-e2e --bin ferrolb-image -- --binaries "$bins" --out "$out" --reference "$image:$tag" >/dev/null

kubectl="$(bash e2e/scripts/build-controlplane.sh | tail -1)/kubectl"
{
  echo "# ferrolb $version: kubectl apply -f ferrolb.yaml (the image $image:$tag: push"
  echo "# ferrolb-$version.tar to your registry, or load it into every node's containerd)."
  "$kubectl" kustomize config/default
} > "$out/ferrolb.yaml"

helm=$(bash e2e/scripts/build-helm.sh | tail -1)
"$helm" package charts/ferrolb --destination "$out" >/dev/null 2>&1

plugin="kubectl-ferrolb-linux-$arch.tar.gz"
staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
cp "$bins/kubectl-ferrolb" "$staging/"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$staging" -cf - kubectl-ferrolb \
  | gzip -n > "$out/$plugin"
sum=$(sha256sum "$out/$plugin" | cut -d' ' -f1)
cat > "$out/plugin.yaml" <<YAML
# krew manifest: kubectl krew install --manifest=plugin.yaml --archive=$plugin
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: ferrolb
spec:
  version: v$version
  homepage: https://github.com/ferrolb/ferrolb
  shortDescription: Explain ferrolb's load balancing in a cluster
  description: |
    doctor, status and migrate for ferrolb, the bare-metal load balancer:
    why a Service has no IP, which node announces it, and a MetalLB
    configuration converted to ferrolb's resources.
  platforms:
  - selector:
      matchLabels: {os: linux, arch: $arch}
    uri: https://github.com/ferrolb/ferrolb/releases/download/v$version/$plugin
    sha256: $sum
    bin: kubectl-ferrolb
YAML
(cd "$out" && sha256sum ferrolb.yaml "ferrolb-$version.tar" "ferrolb-$version.tgz" "$plugin" plugin.yaml > SHA256SUMS)
echo "$out"
