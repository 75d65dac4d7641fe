#!/usr/bin/env bash
# make demo: kpath for real on the local lab. Starts the lab if it is down,
# runs the agent, writes 20 ConfigMaps and 5 Pods in namespace kpath-demo and
# prints each object's waterfall as the agent sees it. With the lab's Jaeger
# (the default), the traces go there too, and the demo says where to look.
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
export_to=(--export=console)
if [ -n "${KPATH_LAB_JAEGER_OTLP:-}" ]; then
	export_to=(--export=console,otlp --otlp-endpoint="$KPATH_LAB_JAEGER_OTLP")
fi
# Where the lab's Prometheus scrapes, unless another agent has it.
metrics_addr=127.0.0.1:0
if [ -n "${KPATH_LAB_AGENT_METRICS:-}" ]; then
	if curl -fsS -o /dev/null "http://$KPATH_LAB_AGENT_METRICS/healthz" 2>/dev/null; then
		echo "demo: another kpath-agent serves $KPATH_LAB_AGENT_METRICS: the lab's Prometheus scrapes that one, not the demo's"
	else
		metrics_addr=$KPATH_LAB_AGENT_METRICS
	fi
fi
bin/kpath-agent "${export_to[@]}" --metrics-addr="$metrics_addr" \
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
if [ -n "${KPATH_LAB_JAEGER_QUERY:-}" ]; then
	q=$KPATH_LAB_JAEGER_QUERY
	pod_trace=$(sed -n 's/^trace \([0-9a-f]\{32\}\)  pod .* startup .*/\1/p' "$out/waterfalls" | tail -n 1)
	sleep 1 # Jaeger batches what it receives
	echo "demo: Jaeger's services: $(curl -fsS "$q/api/services" | tr -d '\n ')"
	if [ -n "$pod_trace" ]; then
		spans=$(curl -fsS "$q/api/v3/traces/$pod_trace" | grep -o '"spanId"' | wc -l)
		echo "demo: Jaeger holds $spans spans of the last pod's startup trace: $q/trace/$pod_trace"
	fi
	echo "demo: every trace, by component: $q/search?service=kube-apiserver"
fi
if [ -n "${KPATH_LAB_PROMETHEUS_URL:-}" ] && [ "$metrics_addr" != 127.0.0.1:0 ]; then
	echo "demo: kpath's metrics in Prometheus: $KPATH_LAB_PROMETHEUS_URL/graph?g0.expr=sum+by+(stage)(kpath_stage_duration_seconds_sum)"
fi
