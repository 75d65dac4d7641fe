#!/usr/bin/env bash
# make demo: kpath for real on the local lab. Starts the lab if it is down,
# runs the agent, writes 20 ConfigMaps and 5 Pods in namespace kpath-demo and
# prints each object's waterfall as the agent sees it.
set -euo pipefail
cd "$(dirname "$0")/../.."
lab_dir=${KPATH_LAB_DIR:-$HOME/.cache/kpath/lab}
[ -x bin/kpath-agent ] || go build -o bin/kpath-agent ./cmd/agent

if ! { [ -f "$lab_dir/run/kube-apiserver.pid" ] && kill -0 "$(cat "$lab_dir/run/kube-apiserver.pid")" 2>/dev/null; }; then
	echo "demo: the lab is down; starting it (make lab-up)"
	test/lab/up.sh
fi
# shellcheck disable=SC1091
. "$lab_dir/env"
k() { "$KUBECTL" --kubeconfig "$KUBECONFIG" "$@"; }

ns=kpath-demo
k delete namespace "$ns" --ignore-not-found --wait=true >/dev/null
k create namespace "$ns" >/dev/null
until k -n "$ns" get serviceaccount default >/dev/null 2>&1; do sleep 0.2; done

out=$(mktemp -d)
trap 'kill "$agent" 2>/dev/null || true; wait "$agent" 2>/dev/null || true; rm -rf "$out"' EXIT
bin/kpath-agent --export=console --metrics-addr=127.0.0.1:0 \
	--key-prefix="/registry/configmaps/$ns/,/registry/pods/$ns/" >"$out/waterfalls" 2>"$out/agent.log" &
agent=$!
until grep -q '"component":"etcd"\|component=etcd' "$out/agent.log" && grep -q 'component=kube-apiserver' "$out/agent.log"; do
	kill -0 "$agent" 2>/dev/null || { cat "$out/agent.log"; exit 1; }
	sleep 0.2
done
grep 'msg=attached' "$out/agent.log" | sed 's/ rows=.*//'

echo "demo: writing 20 ConfigMaps and 5 Pods in namespace $ns"
for i in $(seq -w 1 20); do
	k -n "$ns" create configmap "demo-$i" --from-literal=i="$i" >/dev/null
done
for i in 1 2 3 4 5; do
	k -n "$ns" run "demo-$i" --image="$KPATH_LAB_WORKLOAD_IMAGE" --image-pull-policy=Never --restart=Never >/dev/null
done
k -n "$ns" wait --for=condition=Ready pod --all --timeout=120s >/dev/null || true
sleep 2
kill -INT "$agent"
wait "$agent" || true
cat "$out/waterfalls"
echo "demo: $(grep -c '^trace ' "$out/waterfalls") traces; agent log: $(grep -c . "$out/agent.log") lines"
