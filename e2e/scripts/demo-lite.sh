#!/usr/bin/env bash
# `make demo-lite`: the process-based demo (no kubelet): the whole job on one machine. A real etcd and kube-apiserver on
# loopback; three nodes, a router running FRR and a client behind it, each a
# network namespace; ferrolb's operator, webhook and three speakers; the CRDs
# and config/samples/; one Service announced in layer 2 and one over BGP. It
# prints what a user would look at, then stays up until Ctrl-C or
# `make demo-lite-down`, which remove every process, namespace and link.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${CLUSTER_DIR:-$root/.cache/cluster}
state="$dir/demo"
cluster="$root/target/debug/ferrolb-cluster"
target="$root/target/debug"
[ "$(id -u)" = 0 ] || { echo "make demo-lite needs root (network namespaces)" >&2; exit 1; }
bash "$root/e2e/scripts/need-packages.sh"

bash "$root/e2e/scripts/demo-lite-down.sh"
trap 'echo; echo "== stopping"; bash "$root/e2e/scripts/demo-lite-down.sh"; exit 0' INT TERM
bin=$("$cluster" --dir "$dir" bin)
kubectl() { "$bin/kubectl" --kubeconfig "$dir/kubeconfig" "$@"; }
started=$(date +%s)

echo "== control plane (etcd + kube-apiserver on loopback), CRDs"
"$cluster" --dir "$dir" up >/dev/null
mkdir -p "$state"
kubectl apply -k "$root/config/crd" >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
kubectl create namespace ferrolb-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null

echo "== network: switch, node-a/b/c, router (FRR, AS 64513), client behind the router"
ip netns add fld-switch
ip -n fld-switch link add br0 type bridge
ip -n fld-switch link set dev br0 up
plug() { # name mac address...
  local name=$1 mac=$2 ns=fld-$1; shift 2
  ip netns add "$ns"
  ip link add fld-tmp type veth peer name "p-$name"
  ip link set dev fld-tmp netns "$ns"
  ip link set dev "p-$name" netns fld-switch
  ip -n "$ns" link set dev fld-tmp name eth0
  ip -n "$ns" link set dev eth0 address "$mac"
  for address in "$@"; do ip -n "$ns" addr add "$address" dev eth0; done
  ip -n "$ns" link set dev eth0 up
  ip -n "$ns" link set dev lo up
  ip -n fld-switch link set dev "p-$name" master br0
  ip -n fld-switch link set dev "p-$name" up
}
web_ip=192.168.35.100
shop_ip=172.20.1.10
i=0
for node in node-a node-b node-c; do
  i=$((i + 1))
  plug "$node" "02:00:00:00:aa:0$i" "192.168.35.1$i/24" "192.168.10.1$i/24"
  ns=fld-$node
  ip -n "$ns" route add default via 192.168.35.1
  # kube-proxy stand-in: the Service IPs on lo, the kernel not answering ARP for them.
  ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
  ip -n "$ns" addr add "$web_ip/32" dev lo
  ip -n "$ns" addr add "$shop_ip/32" dev lo
  ip netns exec "$ns" python3 -c "
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = b'hello from $node\n'
        self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(('0.0.0.0', 8080), H).serve_forever()" >/dev/null 2>&1 &
  echo $! >"$state/http-$node.pid"
done
plug router 02:00:00:00:aa:fe 192.168.35.1/24 192.168.10.254/24
ip netns add fld-client
ip link add fld-tmp type veth peer name fld-tmp2
ip link set dev fld-tmp netns fld-router
ip link set dev fld-tmp2 netns fld-client
ip -n fld-router link set dev fld-tmp name eth1
ip -n fld-client link set dev fld-tmp2 name eth0
ip -n fld-router addr add 10.99.0.1/24 dev eth1
ip -n fld-client addr add 10.99.0.2/24 dev eth0
ip -n fld-router link set dev eth1 up
ip -n fld-client link set dev eth0 up
ip -n fld-client link set dev lo up
ip -n fld-client route add default via 10.99.0.1
ip netns exec fld-router sysctl -qw net.ipv4.ip_forward=1
mkdir -p /etc/frr/fld-router
sed 's/^bgpd=no/bgpd=yes/' /etc/frr/daemons >/etc/frr/fld-router/daemons
cat >/etc/frr/fld-router/frr.conf <<'FRR'
frr defaults traditional
hostname router
router bgp 64513
 bgp router-id 192.168.10.254
 no bgp ebgp-requires-policy
 neighbor 192.168.10.11 remote-as 64512
 neighbor 192.168.10.12 remote-as 64512
 neighbor 192.168.10.13 remote-as 64512
 address-family ipv4 unicast
  maximum-paths 8
 exit-address-family
FRR
touch /etc/frr/fld-router/vtysh.conf
chown -R frr:frr /etc/frr/fld-router
ip netns exec fld-router /usr/lib/frr/frrinit.sh start fld-router >/dev/null

echo "== Node objects (no kubelet: Ready is set by hand)"
for node in node-a node-b node-c; do
  printf 'apiVersion: v1\nkind: Node\nmetadata: {name: %s, labels: {kubernetes.io/hostname: %s}}\n' "$node" "$node" | kubectl apply -f - >/dev/null
  kubectl patch node "$node" --subresource=status --type=merge -p \
    '{"status":{"conditions":[{"type":"Ready","status":"True","reason":"Demo","message":"set by make demo","lastHeartbeatTime":"2026-01-01T00:00:00Z","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}' >/dev/null
done

run() { # name command...
  local name=$1; shift
  KUBECONFIG="$dir/kubeconfig" nohup "$@" >"$state/$name.log" 2>&1 &
  echo $! >"$state/$name.pid"
}
echo "== ferrolb-webhook, registered by URL (logs in $state/)"
hook() {
  printf -- '- name: %s.ferrolb.io\n  clientConfig: {url: "https://127.0.0.1:19443/validate/%s"}\n  rules: [{apiGroups: [ferrolb.io], apiVersions: [v1alpha1], operations: [%s], resources: [%s]}]\n  failurePolicy: Fail\n  sideEffects: None\n  admissionReviewVersions: [v1]\n' "$1" "$1" "$2" "$1"
}
{
  printf 'apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {name: ferrolb-webhook}\nwebhooks:\n'
  hook ipaddresspools "CREATE, UPDATE, DELETE"
  hook l2advertisements "CREATE, UPDATE"
  hook bgppeers "CREATE, UPDATE"
  hook bgpadvertisements "CREATE, UPDATE"
} | kubectl apply -f - >/dev/null
run webhook "$target/ferrolb-webhook" --listen=127.0.0.1:19443 --metrics-addr=127.0.0.1:19091 \
  --ip-sans=127.0.0.1 --dns-names=localhost
for _ in $(seq 100); do
  bundle=$(kubectl get validatingwebhookconfiguration ferrolb-webhook -o jsonpath='{.webhooks[0].clientConfig.caBundle}' 2>/dev/null || true)
  [ -n "$bundle" ] && kubectl apply --dry-run=server -f "$root/config/samples/l2.yaml" >/dev/null 2>&1 && break
  sleep 0.2
done

echo "== kubectl apply -f config/samples/"
kubectl apply -f "$root/config/samples/"

echo "== ferrolb-operator and three ferrolb-speakers"
run operator "$target/ferrolb-operator" --metrics-addr=127.0.0.1:19090 --identity=demo
p=19092
for node in node-a node-b node-c; do
  run "speaker-$node" "$target/ferrolb-speaker" --node="$node" --netns="/run/netns/fld-$node" \
    --interface=eth0 --lease-seconds=6 --metrics-addr="127.0.0.1:$p"
  p=$((p + 1))
done

echo "== kubectl apply -f e2e/demo/services.yaml"
kubectl apply -f "$root/e2e/demo/services.yaml"
kubectl wait --for=condition=ferrolb.io/Announced svc/web svc/shop --timeout=120s >/dev/null
for _ in $(seq 150); do
  [ "$(kubectl get bgppeer router -o jsonpath='{.status.establishedNodes}')" = 3 ] \
    && [ "$(vtysh -N fld-router -c "show bgp ipv4 unicast $shop_ip/32" 2>/dev/null | grep -c 'from 192.168.10.1')" = 3 ] \
    && break
  sleep 0.2
done

echo
echo "== kubectl get svc -A"
kubectl get svc -A
echo
echo "== what each Service says"
kubectl get svc -A -o custom-columns='NAMESPACE:.metadata.namespace,SERVICE:.metadata.name,IP ALLOCATED:.status.conditions[?(@.type=="ferrolb.io/IPAllocated")].message,ANNOUNCED:.status.conditions[?(@.type=="ferrolb.io/Announced")].reason,HOW:.status.conditions[?(@.type=="ferrolb.io/Announced")].message' \
  | grep -v ' kubernetes '
echo
echo "== kubectl get nodeannouncements"
kubectl get nodeannouncements
echo
echo "== kubectl get bgppeers (the route reflector of the samples does not exist here)"
kubectl get bgppeers
echo
echo "== the router's BGP table (vtysh -N fld-router -c 'show bgp ipv4 unicast')"
vtysh -N fld-router -c 'show bgp ipv4 unicast'
echo
echo "== the client behind the router asks each Service IP (an HTTP stand-in on each node answers)"
for ip in "$web_ip" "$shop_ip"; do
  answer=""
  for _ in $(seq 50); do
    answer=$(ip netns exec fld-client curl -s --max-time 2 "http://$ip:8080/" || true)
    [ -n "$answer" ] && break
    sleep 0.2
  done
  echo "  curl http://$ip:8080/  ->  ${answer:-no answer}"
done
echo
echo "Ready in $(( $(date +%s) - started )) s. Everything keeps running; in another shell:"
echo "  export KUBECONFIG=$dir/kubeconfig; alias kubectl=$bin/kubectl"
echo "  kubectl describe svc web shop                  # conditions and events"
echo "  kubectl get nodeannouncements -o yaml          # who announces what, as each speaker reports it"
echo "  sudo ip netns exec fld-client curl $shop_ip:8080   # the client's view"
echo "  sudo vtysh -N fld-router -c 'show bgp ipv4 unicast'"
echo "  kill \$(cat $state/speaker-node-a.pid)          # watch the IP move"
echo "Ctrl-C here, or make demo-lite-down, stops it all."
while [ -d "$state" ]; do sleep 1; done
