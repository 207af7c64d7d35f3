# Sourced by build-controlplane.sh and build-nodes.sh: the Kubernetes pin they
# build. One pin per supported minor, in e2e/kubernetes/<minor>;
# FERROLB_KUBERNETES picks one (the newest by default). Sets version, root,
# here (the pin's folder) and cache.
version=${FERROLB_KUBERNETES:-1.37}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here="$root/e2e/kubernetes/$version"
if [ ! -f "$here/go.mod" ]; then
  echo "no Kubernetes pin for FERROLB_KUBERNETES=$version: the pins are $(ls "$root/e2e/kubernetes" | tr '\n' ' ')" >&2
  exit 1
fi
cache=${FERROLB_CACHE:-$root/.cache}
