#!/usr/bin/env bash
# `make demo`: ferrolb as users run it. A real three-node Kubernetes cluster on
# this machine (kubelet, containerd and kube-proxy per node, each node a
# network namespace; see e2e/src/real.rs), ferrolb installed with
# `kubectl apply -k config/local` (config/default with the image built here),
# a router namespace running FRR with a client behind it, and the scenario of
# the MetalLB walkthroughs: a 4-replica echo Deployment behind a layer 2
# Service and a BGP Service with externalTrafficPolicy Local. It prints what a
# user would look at and stays up until Ctrl-C or `make demo-down`, which
# leave nothing behind.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${DEMO_DIR:-$root/.cache/demo}
mkdir -p "$(dirname "$dir")"
[ "$(id -u)" = 0 ] || { echo "make demo needs root (network namespaces, cgroups, mounts)" >&2; exit 1; }
bash "$root/e2e/scripts/need-packages.sh"
real=("$root/target/debug/ferrolb-realcluster" --dir "$dir")
tag=$(awk -F'"' '/^version/ {print $2; exit}' "$root/Cargo.toml")

bash "$root/e2e/scripts/demo-down.sh"
trap 'echo; echo "== stopping"; bash "$root/e2e/scripts/demo-down.sh"; exit 0' INT TERM
started=$(date +%s)

echo "== a real cluster: control plane + 3 nodes (kubelet, containerd, kube-proxy), images loaded"
"${real[@]}" up --nodes 3 >"$dir.env" 2>"$dir.log" || { cat "$dir.log" >&2; exit 1; }
tail -1 "$dir.log"
slot=$(cat "$dir/slot")
bin=$(dirname "$(awk '/^alias kubectl=/ {sub("alias kubectl=", ""); print}' "$dir.env")")
kubectl() { "$bin/kubectl" --kubeconfig "$dir/admin.kubeconfig" "$@"; }
net=10.210.$slot

echo "== a router (FRR, AS 64513) on the nodes' LAN at $net.2, a client behind it"
router=flr$slot-router client=flr$slot-client
ip netns add "$router"
ip link add "flr${slot}c2" type veth peer name eth0 netns "$router"
ip link set dev "flr${slot}c2" master "flrbr$slot" up
ip -n "$router" addr add "$net.2/24" dev eth0
ip -n "$router" link set dev eth0 up
ip -n "$router" link set dev lo up
ip netns add "$client"
ip link add "flr${slot}r1" type veth peer name "flr${slot}r2"
ip link set dev "flr${slot}r1" netns "$router"
ip link set dev "flr${slot}r2" netns "$client"
ip -n "$router" link set dev "flr${slot}r1" name eth1
ip -n "$client" link set dev "flr${slot}r2" name eth0
ip -n "$router" addr add "10.214.$slot.1/24" dev eth1
ip -n "$client" addr add "10.214.$slot.2/24" dev eth0
ip -n "$router" link set dev eth1 up
ip -n "$client" link set dev eth0 up
ip -n "$client" link set dev lo up
ip -n "$client" route add default via "10.214.$slot.1"
ip netns exec "$router" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1
# The nodes reach the client network through the router, as a LAN's default
# gateway would give them (answers to the client leave the node that way).
for i in 1 2 3; do ip -n "flr$slot-node$i" route replace "10.214.$slot.0/24" via "$net.2"; done
mkdir -p "/etc/frr/$router"
sed 's/^bgpd=no/bgpd=yes/' /etc/frr/daemons >"/etc/frr/$router/daemons"
{
  echo "frr defaults traditional"
  echo "hostname router"
  echo "router bgp 64513"
  echo " bgp router-id $net.2"
  echo " no bgp ebgp-requires-policy"
  for i in 1 2 3; do echo " neighbor $net.1$i remote-as 64512"; done
  echo " address-family ipv4 unicast"
  echo "  maximum-paths 8"
  echo " exit-address-family"
} >"/etc/frr/$router/frr.conf"
touch "/etc/frr/$router/vtysh.conf"
chown -R frr:frr "/etc/frr/$router"
ip netns exec "$router" /usr/lib/frr/frrinit.sh start "$router" >/dev/null

echo "== kubectl apply -k config/local"
kubectl apply -k "$root/config/local" >/dev/null
for what in deploy/ferrolb-webhook deploy/ferrolb-operator ds/ferrolb-speaker; do
  kubectl -n ferrolb-system rollout status "$what" --timeout=180s >/dev/null
done
kubectl -n ferrolb-system get pods -o wide

echo "== kubectl apply -f e2e/demo/real.yaml (pools, BGP peer, echo Deployment, Services web and shop)"
manifest=$(sed "s/@SLOT@/$slot/g; s/@TAG@/$tag/g" "$root/e2e/demo/real.yaml")
for _ in $(seq 30); do
  echo "$manifest" | kubectl apply -f - >/dev/null 2>&1 && break
  sleep 1
done
echo "$manifest" | kubectl apply -f -
kubectl rollout status deploy/echo --timeout=120s >/dev/null
kubectl wait --for=condition=ferrolb.io/Announced svc/web svc/shop --timeout=120s >/dev/null
shop_ip=$(kubectl get svc shop -o jsonpath='{.status.loadBalancer.ingress[0].ip}')
web_ip=$(kubectl get svc web -o jsonpath='{.status.loadBalancer.ingress[0].ip}')
endpoints=$(kubectl get pods -l app=echo -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort -u | wc -l)
for _ in $(seq 150); do
  paths=$(vtysh -N "$router" -c "show bgp ipv4 unicast $shop_ip/32" 2>/dev/null | grep -c " from $net.1" || true)
  [ "$paths" = "$endpoints" ] && break
  sleep 0.2
done

echo
echo "== kubectl get nodes"
kubectl get nodes -o wide
echo
echo "== kubectl get pods -o wide"
kubectl get pods -o wide
echo
echo "== kubectl get svc"
kubectl get svc
echo
echo "== what each Service says"
kubectl get svc -o custom-columns='SERVICE:.metadata.name,IP ALLOCATED:.status.conditions[?(@.type=="ferrolb.io/IPAllocated")].message,ANNOUNCED:.status.conditions[?(@.type=="ferrolb.io/Announced")].reason,HOW:.status.conditions[?(@.type=="ferrolb.io/Announced")].message' \
  | grep -v '^kubernetes '
echo
echo "== kubectl get nodeannouncements"
kubectl get nodeannouncements
echo
echo "== kubectl get bgppeers"
kubectl get bgppeers
echo
echo "== the router's routes to shop ($shop_ip, ECMP over the nodes with an echo Pod)"
vtysh -N "$router" -c "show ip route $shop_ip/32" | grep -E "via|Routing entry"
echo
echo "== the client behind the router asks each Service IP"
for ip in "$web_ip" "$shop_ip"; do
  for _ in $(seq 6); do
    answer=$(ip netns exec "$client" curl -s --max-time 2 "http://$ip/" || true)
    echo "  curl http://$ip/  ->  ${answer:-no answer}"
  done
done
echo
echo "Ready in $(( $(date +%s) - started )) s. Everything keeps running; in another shell:"
echo "  export KUBECONFIG=$dir/admin.kubeconfig; alias kubectl=$bin/kubectl"
echo "  kubectl describe svc web shop                  # conditions and events"
echo "  kubectl -n ferrolb-system logs ds/ferrolb-speaker"
echo "  sudo ip netns exec $client curl http://$web_ip/     # the client's view"
echo "  sudo vtysh -N $router -c 'show ip route $shop_ip/32'"
echo "  sudo target/debug/ferrolb-realcluster --dir $dir crash node1   # a node dies"
echo "Ctrl-C here, or make demo-down, stops it all."
while [ -d "$dir" ]; do sleep 1; done
