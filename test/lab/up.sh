#!/usr/bin/env bash
# Bring up the kpath single-node Kubernetes lab (idempotent; `make lab-up`).
#
# containerd + etcd + kube-apiserver + kube-controller-manager + kube-scheduler +
# kubelet on 127.0.0.1, all state, pidfiles and logs under $KPATH_LAB_DIR.
#
# Env:
#   KPATH_LAB_DIR                 lab state (default ~/.cache/kpath/lab)
#   KPATH_CACHE_DIR               binary cache (default ~/.cache/kpath)
#   KPATH_LAB_FLAVOUR             normal (default) | release
#   KPATH_LAB_KUBERNETES          Kubernetes version to build and run (default v1.37.2)
#   KPATH_LAB_ETCD                etcd version to build and run (default v3.7.3)
#   KPATH_LAB_RELEASE_COMPONENTS  release flavour: components taken from the release
#                                 build besides etcd and kube-apiserver (or "all")
#   KPATH_LAB_TIMEOUT             seconds to wait for each component (default 120)
#   KPATH_LAB_JAEGER              on (default): also run Jaeger v2, in memory, as the lab's
#                                 trace store (OTLP gRPC 127.0.0.1:4317, query/UI
#                                 http://127.0.0.1:16686); off: no trace store
#   KPATH_LAB_NODES               1 (default), or 2..: also run nodes 2..N, each its own
#                                 containerd and kubelet in a network namespace of its own
#                                 (test/lab/node.sh), tainted so that only pods that ask go there
#   KPATH_LAB_PROMETHEUS          on (default): also run Prometheus (Debian's package) on
#                                 127.0.0.1:9090, scraping a kpath-agent at 127.0.0.1:9464
#                                 (its default --metrics-addr) every second; off: none
set -euo pipefail

# shellcheck source=lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

TIMEOUT="${KPATH_LAB_TIMEOUT:-120}"
T0=$SECONDS
declare -A BIN

step() { lab_log "$* (+$((SECONDS - T0)) s)"; }

fail_component() { # NAME MESSAGE
	local log
	log="$(logfile_of "$1")"
	{
		echo
		echo "lab: ERROR: $1: $2"
		echo "lab: last lines of $log:"
		tail -n 30 "$log" 2>/dev/null | sed 's/^/    /'
		echo "lab: the lab is partly up; run 'make lab-down' (test/lab/down.sh) to clean up."
	} >&2
	exit 1
}

# ---------------------------------------------------------------- preflight
preflight() {
	[ "$(id -u)" = 0 ] || lab_die "the lab needs root (containerd, kubelet, cgroups, iptables)"
	command -v go >/dev/null || lab_die "the go command is needed (to build the binaries and images)"
	[ -d /sys/fs/cgroup ] || lab_die "no /sys/fs/cgroup"
}

# Debian packages: binary -> package.
ensure_packages() {
	local -A need=(
		[containerd]=containerd [ctr]=containerd [runc]=runc
		[/usr/lib/cni/bridge]=containernetworking-plugins [/usr/lib/cni/host-local]=containernetworking-plugins
		[/usr/lib/cni/portmap]=containernetworking-plugins [/usr/lib/cni/loopback]=containernetworking-plugins
		[iptables]=iptables [openssl]=openssl [curl]=curl [ip]=iproute2 [flock]=util-linux
	)
	local missing=() b p
	for b in "${!need[@]}"; do
		p="${need[$b]}"
		if [[ "$b" == /* ]]; then [ -x "$b" ] && continue; else command -v "$b" >/dev/null && continue; fi
		[[ " ${missing[*]-} " == *" $p "* ]] || missing+=("$p")
	done
	if [ "$LAB_PROMETHEUS" = on ] && ! command -v prometheus >/dev/null; then
		missing+=(prometheus)
	fi
	[ ${#missing[@]} -gt 0 ] || return 0
	step "installing Debian packages: ${missing[*]}"
	mkdir -p "$LOG_DIR"
	local apt_log="$LOG_DIR/apt.log"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"$apt_log" 2>&1; then
		apt-get update -q >>"$apt_log" 2>&1 || { tail -n 20 "$apt_log" >&2; lab_die "apt-get update failed (log: $apt_log)"; }
		apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$apt_log" 2>&1 ||
			{ tail -n 20 "$apt_log" >&2; lab_die "apt-get install ${missing[*]} failed (log: $apt_log)"; }
	fi
	# Debian's package starts containerd through systemd/sysvinit where it can;
	# the lab runs its own instance, so a system one only matters if it is on our socket.
	hash -r
}

# ---------------------------------------------------------------- binaries
ensure_binaries() {
	local c fl normal=() release=()
	for c in "${ALL_COMPONENTS[@]}"; do
		fl="$(component_flavour "$c")"
		BIN[$c]="$(kpath_bin_path "$fl" "$c")"
		if [ ! -x "${BIN[$c]}" ]; then
			if [ "$fl" = release ]; then release+=("$c"); else normal+=("$c"); fi
		fi
	done
	if [ ${#normal[@]} -gt 0 ]; then
		step "building missing normal binaries: ${normal[*]} (10-15 min on 2 cores when nothing is cached)"
		"$LAB_SRC/build.sh" --flavour normal "${normal[@]}"
	fi
	if [ ${#release[@]} -gt 0 ]; then
		step "building missing release binaries: ${release[*]} (~10 min each)"
		"$LAB_SRC/build.sh" --flavour release "${release[@]}"
	fi
	if [ "$LAB_JAEGER" = on ]; then
		BIN[jaeger]="$(jaeger_bin_path)"
		[ -x "${BIN[jaeger]}" ] || {
			step "building Jaeger $JAEGER_VERSION, the lab's trace store (~5 min on 2 cores; KPATH_LAB_JAEGER=off skips it)"
			"$LAB_SRC/build.sh" jaeger
		}
		[ -x "${BIN[jaeger]}" ] || lab_die "Jaeger binary missing after build: ${BIN[jaeger]}"
	fi
	BIN[containerd]="$(command -v containerd)"
	for c in "${ALL_COMPONENTS[@]}"; do
		[ -x "${BIN[$c]}" ] || lab_die "binary for $c missing after build: ${BIN[$c]}"
	done
	lab_log "binaries ($LAB_ID):"
	for c in "${ALL_COMPONENTS[@]}"; do
		printf '    %-24s %-8s %s\n' "$c" "$(component_flavour "$c")" "${BIN[$c]}"
	done
	printf '    %-24s %-8s %s\n' containerd debian "${BIN[containerd]} ($(containerd --version | awk '{print $3}'))"
	[ "$LAB_JAEGER" != on ] || printf '    %-24s %-8s %s\n' jaeger "$JAEGER_VERSION" "${BIN[jaeger]}"
}

# ---------------------------------------------------------------- images
build_images() {
	local out="$IMAGES_DIR" src="$LAB_SRC/imagetool"
	mkdir -p "$out"
	step "building images $PAUSE_IMAGE and $WORKLOAD_IMAGE (imagetool, static Go)"
	(
		cd "$src"
		export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS=-buildvcs=false
		go build -o "$out/imagetool" . &&
			go build -trimpath -ldflags "-s -w" -o "$out/pause" ./images/pause &&
			go build -trimpath -o "$out/workload" ./images/workload
	) >"$LOG_DIR/images.log" 2>&1 || { tail -n 20 "$LOG_DIR/images.log" >&2; lab_die "building the lab images failed (log: $LOG_DIR/images.log)"; }
	"$out/imagetool" build --binary "$out/pause" --ref "$PAUSE_IMAGE" --out "$out/pause.tar" >>"$LOG_DIR/images.log"
	"$out/imagetool" build --binary "$out/workload" --ref "$WORKLOAD_IMAGE" --out "$out/workload.tar" --env PORT=8080 >>"$LOG_DIR/images.log"
}

import_images() {
	local t
	for t in pause workload; do
		lab_ctr images import "$IMAGES_DIR/$t.tar" >>"$LOG_DIR/images.log" 2>&1 ||
			{ tail -n 20 "$LOG_DIR/images.log" >&2; lab_die "ctr images import $IMAGES_DIR/$t.tar failed (log: $LOG_DIR/images.log)"; }
	done
	local have
	have="$(lab_ctr images ls -q)"
	for t in "$PAUSE_IMAGE" "$WORKLOAD_IMAGE"; do
		grep -qxF "$t" <<<"$have" || lab_die "$t not in containerd after import (log: $LOG_DIR/images.log)"
	done
}

# ---------------------------------------------------------------- pki
gen_pki() {
	mkdir -p "$PKI_DIR"
	chmod 700 "$PKI_DIR"
	local log="$LOG_DIR/pki.log"
	(
		set -e
		cd "$PKI_DIR"
		if [ ! -f ca.crt ] || [ ! -f ca.key ]; then
			openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
				-subj "/CN=kpath-lab-ca" -addext "basicConstraints=critical,CA:TRUE" \
				-addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
			rm -f apiserver.crt apiserver-kubelet-client.crt
		fi
		if [ ! -f apiserver.crt ]; then
			openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver"
			printf '%s\n' "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
				"extendedKeyUsage=serverAuth" "keyUsage=critical,digitalSignature,keyEncipherment" >apiserver.ext
			openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 3650 -extfile apiserver.ext
		fi
		if [ ! -f apiserver-kubelet-client.crt ]; then
			openssl req -newkey rsa:2048 -nodes -keyout apiserver-kubelet-client.key -out apiserver-kubelet-client.csr \
				-subj "/O=system:masters/CN=kube-apiserver-kubelet-client"
			printf '%s\n' "extendedKeyUsage=clientAuth" "keyUsage=critical,digitalSignature,keyEncipherment" >client.ext
			openssl x509 -req -in apiserver-kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
				-out apiserver-kubelet-client.crt -days 3650 -extfile client.ext
		fi
		if [ ! -f sa.key ] || [ ! -f sa.pub ]; then
			openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key
			openssl pkey -in sa.key -pubout -out sa.pub
		fi
		if [ ! -f admin.token ]; then
			openssl rand -hex 32 >admin.token
		fi
		printf '%s,admin,admin,"system:masters"\n' "$(cat admin.token)" >tokens.csv
		chmod 600 ./*.key admin.token tokens.csv
	) >"$log" 2>&1 || { tail -n 20 "$log" >&2; lab_die "generating certificates failed (log: $log)"; }

	local token
	token="$(cat "$PKI_DIR/admin.token")"
	cat >"$ADMIN_KUBECONFIG.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kpath-lab
  cluster:
    server: $APISERVER_URL
    certificate-authority: $PKI_DIR/ca.crt
users:
- name: admin
  user:
    token: $token
contexts:
- name: kpath-lab
  context:
    cluster: kpath-lab
    user: admin
    namespace: default
current-context: kpath-lab
EOF
	chmod 600 "$ADMIN_KUBECONFIG.tmp"
	mv -f "$ADMIN_KUBECONFIG.tmp" "$ADMIN_KUBECONFIG"
}

# ---------------------------------------------------------------- configs
write_configs() {
	mkdir -p "$CONTAINERD_DIR"/{root,state,runc,opt} "$CNI_DIR"/{net.d,ipam} \
		"$KUBELET_DIR"/{root,pki,manifests,pod-logs,volume-plugins} "$LAB_DIR/etcd" \
		"$LAB_DIR/controller-manager" "$LAB_DIR/scheduler" "$LAB_DIR/apiserver"
	chmod 700 "$LAB_DIR/etcd"

	lab_containerd_config "$CONTAINERD_DIR" "$CONTAINERD_SOCK" "$CNI_DIR"
	lab_cni_config "$CNI_DIR" "$LAB_POD_CIDR"
	lab_kubelet_config "$KUBELET_DIR" "$CONTAINERD_SOCK"
}

# ---------------------------------------------------------------- processes
port_owner() { # PORT -> "pid/comm" of a listener on 127.0.0.1/any, or empty
	ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:((\"\([^"]*\)\",pid=\([0-9]*\).*/\2\/\1/p' | head -n1
}

# start_daemon NAME PORTS -- BIN ARGS...
start_daemon() {
	local name="$1" ports="$2" pid p owner
	shift 3
	if pid="$(lab_pid "$name")"; then
		lab_log "$name already running (pid $pid)"
		return 0
	fi
	for p in $ports; do
		owner="$(port_owner "$p")"
		[ -z "$owner" ] || lab_die "$name: port $p is already in use by $owner (not a process of this lab)"
	done
	local log
	log="$(logfile_of "$name")"
	echo "=== $(date -u +%FT%TZ) starting: $*" >>"$log"
	# setsid: the daemons survive the terminal / make being interrupted.
	# 8>&-: they must not inherit the lab lock.
	setsid "$@" >>"$log" 2>&1 </dev/null 8>&- &
	pid=$!
	echo "$pid" >"$(pidfile_of "$name")"
	sleep 0.3
	kill -0 "$pid" 2>/dev/null || fail_component "$name" "exited right after start"
	lab_log "started $name (pid $pid, log $log)"
}

# wait_for NAME DESCRIPTION CMD...: polls CMD until it succeeds.
wait_for() {
	local name="$1" what="$2" start=$SECONDS
	shift 2
	until "$@" >/dev/null 2>&1; do
		if [ "$name" != - ] && ! lab_pid "$name" >/dev/null; then
			fail_component "$name" "process died while waiting for: $what"
		fi
		if [ $((SECONDS - start)) -ge "$TIMEOUT" ]; then
			[ "$name" != - ] || name=kubelet
			fail_component "$name" "timed out after ${TIMEOUT} s waiting for: $what"
		fi
		sleep 0.5
	done
	step "$what: ok ($((SECONDS - start)) s)"
}

KUBECTL_CMD() { "${BIN[kubectl]}" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }
api_ready() { KUBECTL_CMD get --raw /readyz; }
# Node Ready, with a heartbeat newer than the kubelet start when up.sh started
# it (a node kept in etcd from an earlier run still says Ready for a while).
NODE_READY_SINCE=0
node_ready() {
	local out st hb
	out="$(KUBECTL_CMD get nodes -l '!kpath.dev/lab-node' -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}{"\n"}{end}')" || return 1
	read -r st hb <<<"$out"
	[ "$st" = True ] && [ -n "$hb" ] || return 1
	[ "$(date -d "$hb" +%s)" -ge "$NODE_READY_SINCE" ]
}
default_sa() { KUBECTL_CMD -n default get serviceaccount default; }

# Jaeger's all-in-one pipeline, on loopback only: OTLP gRPC in, memory
# storage, the query API and UI. Its own metrics are off (they would take 8888).
write_jaeger_config() {
	mkdir -p "$LAB_DIR/jaeger"
	cat >"$LAB_DIR/jaeger/config.yaml" <<EOF
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:13133
  jaeger_query:
    storage:
      traces: lab
    http:
      endpoint: ${JAEGER_QUERY#http://}
    grpc:
      endpoint: 127.0.0.1:16685
  jaeger_storage:
    backends:
      lab:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: $JAEGER_OTLP
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: lab
EOF
}

write_prometheus_config() {
	mkdir -p "$LAB_DIR/prometheus/data"
	cat >"$LAB_DIR/prometheus/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: kpath-agent
    static_configs:
      - targets: ['$AGENT_METRICS']
EOF
}

start_all() {
	if [ "$LAB_PROMETHEUS" = on ]; then
		write_prometheus_config
		start_daemon prometheus "9090" -- "$(command -v prometheus)" --config.file="$LAB_DIR/prometheus/prometheus.yml" \
			--storage.tsdb.path="$LAB_DIR/prometheus/data" --storage.tsdb.retention.time=1d \
			--web.listen-address="${PROMETHEUS_URL#http://}"
	fi
	if [ "$LAB_JAEGER" = on ]; then
		write_jaeger_config
		# Jaeger's query service would trace itself into the store.
		start_daemon jaeger "4317 16686 16685 13133" -- env OTEL_TRACES_SAMPLER=always_off "${BIN[jaeger]}" --config "$LAB_DIR/jaeger/config.yaml"
	fi
	start_daemon containerd "" -- "${BIN[containerd]}" --config "$CONTAINERD_DIR/config.toml"
	wait_for containerd "containerd answers on $CONTAINERD_SOCK" lab_ctr version
	import_images

	# etcd cannot open a data dir a later version wrote, and another pinned
	# set is another cluster: its data starts afresh.
	if [ -d "$LAB_DIR/etcd" ] && [ "$(cat "$LAB_DIR/etcd.version" 2>/dev/null)" != "$ETCD_VERSION" ] && ! lab_pid etcd >/dev/null; then
		lab_log "etcd data in $LAB_DIR/etcd is from etcd $(cat "$LAB_DIR/etcd.version" 2>/dev/null || echo "an unrecorded version"), not $ETCD_VERSION: starting the cluster afresh"
		rm -rf "$LAB_DIR/etcd"
	fi
	echo "$ETCD_VERSION" >"$LAB_DIR/etcd.version"
	start_daemon etcd "2379 2380" -- "${BIN[etcd]}" \
		--name kpath-lab --data-dir "$LAB_DIR/etcd" \
		--listen-client-urls "$ETCD_ENDPOINT" --advertise-client-urls "$ETCD_ENDPOINT" \
		--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
		--initial-cluster kpath-lab=http://127.0.0.1:2380 --initial-cluster-state new
	wait_for etcd "etcd healthy at $ETCD_ENDPOINT" curl -fsS "$ETCD_ENDPOINT/health"

	# v1.37 refuses a loopback advertise address with an endpoint reconciler;
	# the lab has no kube-proxy, so the kubernetes Service's endpoints serve
	# nothing anyway.
	local extra=()
	local minor="${KUBERNETES_VERSION#v1.}"
	minor="${minor%%.*}"
	[ "$minor" -lt 37 ] || extra+=(--endpoint-reconciler-type=none)
	start_daemon kube-apiserver "6443" -- "${BIN[kube-apiserver]}" "${extra[@]}" \
		--etcd-servers="$ETCD_ENDPOINT" \
		--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port=6443 \
		--cert-dir="$LAB_DIR/apiserver" \
		--tls-cert-file="$PKI_DIR/apiserver.crt" --tls-private-key-file="$PKI_DIR/apiserver.key" \
		--client-ca-file="$PKI_DIR/ca.crt" \
		--token-auth-file="$PKI_DIR/tokens.csv" \
		--anonymous-auth=false \
		--authorization-mode=Node,RBAC \
		--allow-privileged=true \
		--service-account-key-file="$PKI_DIR/sa.pub" \
		--service-account-signing-key-file="$PKI_DIR/sa.key" \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-cluster-ip-range="$LAB_SERVICE_CIDR" \
		--kubelet-client-certificate="$PKI_DIR/apiserver-kubelet-client.crt" \
		--kubelet-client-key="$PKI_DIR/apiserver-kubelet-client.key"
	wait_for kube-apiserver "kube-apiserver /readyz at $APISERVER_URL" api_ready

	start_daemon kube-controller-manager "10257" -- "${BIN[kube-controller-manager]}" \
		--kubeconfig="$ADMIN_KUBECONFIG" \
		--authentication-kubeconfig="$ADMIN_KUBECONFIG" --authorization-kubeconfig="$ADMIN_KUBECONFIG" \
		--leader-elect=false --bind-address=127.0.0.1 --secure-port=10257 \
		--cert-dir="$LAB_DIR/controller-manager" \
		--cluster-name=kpath-lab \
		--service-account-private-key-file="$PKI_DIR/sa.key" \
		--root-ca-file="$PKI_DIR/ca.crt" \
		--cluster-signing-cert-file="$PKI_DIR/ca.crt" --cluster-signing-key-file="$PKI_DIR/ca.key" \
		--service-cluster-ip-range="$LAB_SERVICE_CIDR"
	start_daemon kube-scheduler "10259" -- "${BIN[kube-scheduler]}" \
		--kubeconfig="$ADMIN_KUBECONFIG" \
		--authentication-kubeconfig="$ADMIN_KUBECONFIG" --authorization-kubeconfig="$ADMIN_KUBECONFIG" \
		--leader-elect=false --bind-address=127.0.0.1 --secure-port=10259 \
		--cert-dir="$LAB_DIR/scheduler"
	lab_pid kubelet >/dev/null || NODE_READY_SINCE=$(($(date +%s) - 1))
	start_daemon kubelet "10250 10248" -- "${BIN[kubelet]}" \
		--config="$KUBELET_DIR/config.yaml" \
		--kubeconfig="$ADMIN_KUBECONFIG" \
		--root-dir="$KUBELET_DIR/root" \
		--cert-dir="$KUBELET_DIR/pki"

	wait_for kube-controller-manager "kube-controller-manager /healthz" curl -fsSk https://127.0.0.1:10257/healthz
	wait_for kube-scheduler "kube-scheduler /healthz" curl -fsSk https://127.0.0.1:10259/healthz
	wait_for kubelet "kubelet /healthz" curl -fsS http://127.0.0.1:10248/healthz
	wait_for kubelet "node Ready" node_ready
	wait_for kube-controller-manager "ServiceAccount default/default" default_sa
	[ "$LAB_JAEGER" != on ] || wait_for jaeger "Jaeger's query API at $JAEGER_QUERY" curl -fsS "$JAEGER_QUERY/api/services"
	[ "$LAB_PROMETHEUS" != on ] || wait_for prometheus "Prometheus ready at $PROMETHEUS_URL" curl -fsS "$PROMETHEUS_URL/-/ready"
}

# ---------------------------------------------------------------- env file
write_env() {
	local node c var
	node="$(KUBECTL_CMD get nodes -l '!kpath.dev/lab-node' -o jsonpath='{.items[0].metadata.name}')"  # the first node: not one of node.sh's
	{
		echo "# kpath lab environment (generated by test/lab/up.sh). Use: . $LAB_DIR/env"
		echo "export KPATH_LAB_DIR='$LAB_DIR'"
		echo "export KUBECONFIG='$ADMIN_KUBECONFIG'"
		echo "export KUBECTL='${BIN[kubectl]}'"
		echo "export KPATH_LAB_FLAVOUR='$LAB_FLAVOUR'"
		echo "export KPATH_LAB_ID='$LAB_ID'"
		echo "export KPATH_LAB_KUBERNETES_VERSION='$KUBERNETES_VERSION'"
		echo "export KPATH_LAB_ETCD_VERSION='$ETCD_VERSION'"
		for c in "${ALL_COMPONENTS[@]}" containerd; do
			var="$(echo "$c" | tr 'a-z-' 'A-Z_')"
			echo "export KPATH_LAB_${var}_BIN='${BIN[$c]}'"
			[ "$c" = containerd ] || echo "export KPATH_LAB_${var}_FLAVOUR='$(component_flavour "$c")'"
		done
		echo "export KPATH_LAB_ETCD_ENDPOINT='$ETCD_ENDPOINT'"
		echo "export KPATH_LAB_APISERVER='$APISERVER_URL'"
		echo "export KPATH_LAB_CA='$PKI_DIR/ca.crt'"
		echo "export KPATH_LAB_NODE='$node'"
		echo "export KPATH_LAB_CONTAINERD_SOCK='$CONTAINERD_SOCK'"
		echo "export KPATH_LAB_PID_DIR='$RUN_DIR'   # <component>.pid"
		echo "export KPATH_LAB_LOG_DIR='$LOG_DIR'   # <component>.log"
		echo "export KPATH_LAB_IMAGETOOL='$IMAGES_DIR/imagetool'"
		echo "export KPATH_LAB_PAUSE_IMAGE='$PAUSE_IMAGE'"
		echo "export KPATH_LAB_WORKLOAD_IMAGE='$WORKLOAD_IMAGE'"
		echo "export KPATH_LAB_POD_CIDR='$LAB_POD_CIDR'"
		echo "export KPATH_LAB_SERVICE_CIDR='$LAB_SERVICE_CIDR'"
		if [ "$LAB_JAEGER" = on ]; then
			echo "# Jaeger: OTLP gRPC (plaintext) in, UI and query API"
			echo "export KPATH_LAB_JAEGER_OTLP='$JAEGER_OTLP'"
			echo "export KPATH_LAB_JAEGER_QUERY='$JAEGER_QUERY'"
		else
			echo "# KPATH_LAB_JAEGER=off: no trace store"
			echo "export KPATH_LAB_JAEGER_OTLP=''"
			echo "export KPATH_LAB_JAEGER_QUERY=''"
		fi
		if [ "$LAB_PROMETHEUS" = on ]; then
			echo "# Prometheus, scraping a kpath-agent whose --metrics-addr is KPATH_LAB_AGENT_METRICS"
			echo "export KPATH_LAB_PROMETHEUS_URL='$PROMETHEUS_URL'"
			echo "export KPATH_LAB_AGENT_METRICS='$AGENT_METRICS'"
		else
			echo "# KPATH_LAB_PROMETHEUS=off: no Prometheus"
			echo "export KPATH_LAB_PROMETHEUS_URL=''"
			echo "export KPATH_LAB_AGENT_METRICS=''"
		fi
	} >"$LAB_DIR/env.tmp"
	mv -f "$LAB_DIR/env.tmp" "$LAB_DIR/env"
}

# Nodes 2..KPATH_LAB_NODES (test/lab/node.sh), named in the env file.
nodes_up() {
	local want="${KPATH_LAB_NODES:-1}" n
	[[ "$want" =~ ^[0-9]+$ ]] && [ "$want" -ge 1 ] || lab_die "KPATH_LAB_NODES='$want': want a number of nodes, 1 or more"
	[ "$want" -ge 2 ] || return 0
	for ((n = 2; n <= want; n++)); do
		step "bringing up node $n"
		"$LAB_SRC/node.sh" up "$n"
	done
	{
		echo "# Nodes beside the first (test/lab/node.sh): name and network namespace (kpath-agent --node-netns)"
		echo "export KPATH_LAB_NODES='$want'"
		for ((n = 2; n <= want; n++)); do
			echo "export KPATH_LAB_NODE${n}='kpath-lab-node$n'"
			echo "export KPATH_LAB_NODE${n}_NETNS='/run/netns/kpath-node$n'"
		done
	} >>"$LAB_DIR/env"
}

print_usage() {
	cat <<EOF

kpath lab is up ($LAB_ID) in $((SECONDS - T0)) s.
  . $LAB_DIR/env                      # KUBECONFIG, KUBECTL, binaries, images, ...
  \$KUBECTL get nodes
  \$KUBECTL run web --image=$WORKLOAD_IMAGE --image-pull-policy=Never --port=8080
  ctr -a $CONTAINERD_SOCK -n k8s.io images import IMAGE.tar   # load more images
  logs: $LOG_DIR/<component>.log   pids: $RUN_DIR/<component>.pid
$([ "$LAB_JAEGER" != on ] || echo "  traces: Jaeger at $JAEGER_QUERY (kpath-agent --export=otlp --otlp-endpoint=$JAEGER_OTLP --otlp-insecure)")
$([ "$LAB_PROMETHEUS" != on ] || echo "  metrics: Prometheus at $PROMETHEUS_URL scrapes the agent at $AGENT_METRICS (kpath-agent's default --metrics-addr)")
  stop: make lab-down   (add --purge to test/lab/down.sh to also delete $LAB_DIR)
EOF
}

all_running() {
	local d
	for d in "${DAEMONS[@]}"; do lab_pid "$d" >/dev/null || return 1; done
}
any_running() {
	local d
	for d in "${DAEMONS[@]}"; do lab_pid "$d" >/dev/null && return 0; done
	return 1
}

main() {
	preflight
	resolve_flavour
	mkdir -p "$LAB_DIR" "$RUN_DIR" "$LOG_DIR"
	# One up.sh / down.sh at a time.
	exec 8>"$LAB_DIR/.lock"
	flock -n 8 || lab_die "another up.sh/down.sh is running on $LAB_DIR"

	local state=""
	[ -f "$STATE_FILE" ] && state="$(cat "$STATE_FILE")"
	if any_running; then
		if [ -n "$state" ] && [ "$state" != "$LAB_ID" ]; then
			lab_die "the lab in $LAB_DIR is up with flavour '$state', not '$LAB_ID'; run 'make lab-down' first"
		fi
		if all_running && [ "$state" = "$LAB_ID" ] && [ -f "$LAB_DIR/env" ]; then
			# shellcheck disable=SC1091
			BIN[kubectl]="$(. "$LAB_DIR/env" && echo "$KUBECTL")"
			if node_ready 2>/dev/null; then
				lab_log "the lab is already up ($LAB_ID)"
				grep -q "^export KPATH_LAB_NODES='${KPATH_LAB_NODES:-1}'" "$LAB_DIR/env" || [ "${KPATH_LAB_NODES:-1}" = 1 ] || nodes_up
				print_usage
				return 0
			fi
		fi
		lab_log "the lab is partly up ($state); starting what is missing"
	elif [ -n "$state" ]; then
		lab_log "stale lab state found (no lab process running): cleaning up first"
		KPATH_LAB_DOWN_QUIET=1 "$LAB_SRC/down.sh" --locked
	fi

	step "bringing up the kpath lab in $LAB_DIR ($LAB_ID)"
	ensure_packages
	ensure_binaries
	build_images
	gen_pki
	write_configs
	echo "$LAB_ID" >"$STATE_FILE"
	start_all
	write_env
	nodes_up
	print_usage
}

main "$@"
exit
