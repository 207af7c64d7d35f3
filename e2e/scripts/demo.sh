#!/usr/bin/env bash
# `make demo`: the local control plane with ferrolb's CRDs, the samples, the
# operator, and three Services that get their IPs. `make demo-down` ends it.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${CLUSTER_DIR:-$root/.cache/cluster}
cluster="$root/target/debug/ferrolb-cluster"
bin=$("$cluster" --dir "$dir" bin)
kubectl() { "$bin/kubectl" --kubeconfig "$dir/kubeconfig" "$@"; }

if [ -f "$dir/operator.pid" ]; then kill "$(cat "$dir/operator.pid")" 2>/dev/null || true; fi
"$cluster" --dir "$dir" up >/dev/null
kubectl apply -f "$root/crds/" >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
kubectl create namespace ferrolb-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null

echo "== kubectl apply -f config/samples/"
kubectl apply -f "$root/config/samples/"

echo
echo "== ferrolb-operator starts (log: $dir/operator.log)"
KUBECONFIG="$dir/kubeconfig" nohup "$root/target/debug/ferrolb-operator" \
  --metrics-addr 127.0.0.1:19090 --identity demo >"$dir/operator.log" 2>&1 &
echo $! >"$dir/operator.pid"

echo
echo "== kubectl apply -f e2e/demo/services.yaml"
kubectl apply -f "$root/e2e/demo/services.yaml"
kubectl -n default wait --for=condition=ferrolb.io/IPAllocated svc/web svc/dns --timeout=60s >/dev/null
kubectl -n team-a wait --for=condition=ferrolb.io/IPAllocated svc/api --timeout=60s >/dev/null

echo
echo "== kubectl get svc -A"
kubectl get svc -A
echo
echo "== what each Service says (condition ferrolb.io/IPAllocated)"
kubectl get svc -A -o custom-columns='SERVICE:.metadata.name,NAMESPACE:.metadata.namespace,ALLOCATED:.status.conditions[?(@.type=="ferrolb.io/IPAllocated")].status,MESSAGE:.status.conditions[?(@.type=="ferrolb.io/IPAllocated")].message' \
  | grep -v '^kubernetes '
echo
echo "== kubectl get ipaddresspools"
kubectl get ipaddresspools
echo
echo "== a pool the apiserver itself refuses (no webhook runs):"
printf 'apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: backwards}\nspec: {addresses: [192.168.40.20-192.168.40.10]}\n' \
  | kubectl apply -f - 2>&1 || true
echo
echo "The cluster and the operator keep running. Use them with:"
echo "  export KUBECONFIG=$dir/kubeconfig"
echo "  alias kubectl=$bin/kubectl"
echo "  kubectl describe svc web        # conditions and events"
echo "  curl -s localhost:19090/metrics  # the operator's metrics"
echo "Stop everything with: make demo-down"
