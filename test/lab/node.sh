#!/usr/bin/env bash
# Another node of the kpath lab: its own containerd and kubelet in a network
# namespace of their own, with their own state dirs and cgroup root,
# registered to the lab's control plane (`KPATH_LAB_NODES=2 make lab-up`).
#
#   test/lab/node.sh up N | down N | down-all      (N >= 2)
#
# Node N is named kpath-lab-node<N> and carries the taint
# kpath.dev/lab-node=node<N>:NoSchedule, so only pods that tolerate it go
# there (the other tests' pods stay on the first node). Its namespace is
# /run/netns/kpath-node<N>: host 10.250.<N>.1, node 10.250.<N>.2, pods in
# 10.244.<N>.0/24; kube-apiserver (on the host's 127.0.0.1) is reached at
# 10.250.<N>.1:6443 through a DNAT. Its state is under
# $KPATH_LAB_DIR/nodes/node<N>, its pids and logs in the lab's run and log
# dirs as node<N>-containerd and node<N>-kubelet. An agent for that node
# alone: kpath-agent --node-netns=/run/netns/kpath-node<N> --node-name=kpath-lab-node<N>.
# It needs the lab up (make lab-up), and the same binaries.
set -euo pipefail

# shellcheck source=lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

TIMEOUT="${KPATH_LAB_TIMEOUT:-120}"

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }

node_vars() { # N
	N="$1"
	[[ "$N" =~ ^[0-9]+$ ]] && [ "$N" -ge 2 ] && [ "$N" -le 200 ] || lab_die "node.sh: node number '$N': want 2..200 (node 1 is the lab's own)"
	NODE="kpath-lab-node$N"
	NETNS="kpath-node$N"
	VETH_HOST="kpn$N-h"
	VETH_NODE="kpn$N-n"
	HOST_IP="10.250.$N.1"
	NODE_IP="10.250.$N.2"
	POD_CIDR="10.244.$N.0/24"
	ND="$LAB_DIR/nodes/node$N"
	N_CONTAINERD_DIR="$ND/containerd"
	N_SOCK="$N_CONTAINERD_DIR/containerd.sock"
	N_KUBELET_DIR="$ND/kubelet"
	N_CNI_DIR="$ND/cni"
	N_KUBECONFIG="$ND/kubeconfig"
	TAINT="kpath.dev/lab-node"
}

in_node() { nsenter --net="/run/netns/$NETNS" "$@"; }
node_ctr() { ctr -a "$N_SOCK" -n k8s.io "$@"; }

# ---------------------------------------------------------------- up
network_up() {
	[ -e "/run/netns/$NETNS" ] || ip netns add "$NETNS"
	if ! ip link show "$VETH_HOST" >/dev/null 2>&1; then
		ip link add "$VETH_HOST" type veth peer name "$VETH_NODE"
		ip link set "$VETH_NODE" netns "$NETNS"
		ip addr add "$HOST_IP/24" dev "$VETH_HOST"
		ip link set "$VETH_HOST" up
		in_node ip addr add "$NODE_IP/24" dev "$VETH_NODE"
		in_node ip link set "$VETH_NODE" up
		in_node ip link set lo up
		in_node ip route add default via "$HOST_IP"
	fi
	# kube-apiserver listens on the host's loopback only: the node reaches
	# it at the host's end of its link, DNATed there (route_localnet lets a
	# packet to 127.0.0.1 in from that link, and the reply out to it).
	sysctl -qw "net.ipv4.conf.$VETH_HOST.route_localnet=1"
	local rule=(-i "$VETH_HOST" -p tcp -d "$HOST_IP" --dport 6443 -j DNAT --to-destination 127.0.0.1:6443
		-m comment --comment "kpath lab node$N")
	iptables -t nat -C PREROUTING "${rule[@]}" 2>/dev/null || iptables -t nat -I PREROUTING "${rule[@]}"
}

write_node_configs() {
	mkdir -p "$N_CONTAINERD_DIR"/{root,state,runc,opt} "$N_CNI_DIR"/{net.d,ipam} \
		"$N_KUBELET_DIR"/{root,pki,manifests,pod-logs,volume-plugins}
	lab_containerd_config "$N_CONTAINERD_DIR" "$N_SOCK" "$N_CNI_DIR"
	lab_cni_config "$N_CNI_DIR" "$POD_CIDR"
	# Its pods' cgroups apart from the first node's kubepods; only pods
	# that ask come here.
	lab_kubelet_config "$N_KUBELET_DIR" "$N_SOCK" "cgroupRoot: /kpath-node$N
registerWithTaints:
- key: $TAINT
  value: node$N
  effect: NoSchedule"
	# The admin kubeconfig, at the host's end of the node's link; the
	# serving certificate names localhost.
	sed -e "s#server: .*#server: https://$HOST_IP:6443\n    tls-server-name: localhost#" "$ADMIN_KUBECONFIG" >"$N_KUBECONFIG.tmp"
	chmod 600 "$N_KUBECONFIG.tmp"
	mv -f "$N_KUBECONFIG.tmp" "$N_KUBECONFIG"
}

# The node's cgroup root in every hierarchy: cgroup v2's one, or each v1
# (and hybrid) hierarchy, as the kubelet checks them all.
node_cgroups() {
	if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
		echo "/sys/fs/cgroup/kpath-node$N"
		return 0
	fi
	local h
	for h in /sys/fs/cgroup/*/; do
		[ -f "$h/cgroup.procs" ] && echo "${h%/}/kpath-node$N"
	done
	return 0
}

cgroup_up() {
	local cg c
	for cg in $(node_cgroups); do
		mkdir -p "$cg"
		case "$cg" in
		/sys/fs/cgroup/kpath-node*) # v2: the controllers the root hands down
			for c in $(cat /sys/fs/cgroup/cgroup.subtree_control); do
				echo "+$c" >"$cg/cgroup.subtree_control" 2>/dev/null || true
			done
			;;
		*/cpuset/*) # v1 cpuset: no task joins one without cpus and mems
			cat "${cg%/*}/cpuset.cpus" >"$cg/cpuset.cpus"
			cat "${cg%/*}/cpuset.mems" >"$cg/cpuset.mems"
			;;
		esac
	done
}

start_node_daemon() { # NAME -- CMD...
	local name="$1" pid log
	shift 2
	if pid="$(lab_pid "$name")"; then
		lab_log "$name already running (pid $pid)"
		return 0
	fi
	log="$(logfile_of "$name")"
	echo "=== $(date -u +%FT%TZ) starting: $*" >>"$log"
	# nsenter switches the network namespace only (ip netns exec would
	# give it a mount namespace of its own, where the kubelet's volume
	# mounts would not reach containerd).
	setsid nsenter --net="/run/netns/$NETNS" "$@" >>"$log" 2>&1 </dev/null 8>&- &
	pid=$!
	echo "$pid" >"$(pidfile_of "$name")"
	sleep 0.3
	kill -0 "$pid" 2>/dev/null || { tail -n 20 "$log" >&2; lab_die "$name exited right after start (log: $log)"; }
	lab_log "started $name (pid $pid, log $log)"
}

wait_until() { # WHAT LOG CMD...
	local what="$1" log="$2" start=$SECONDS
	shift 2
	until "$@" >/dev/null 2>&1; do
		if [ $((SECONDS - start)) -ge "$TIMEOUT" ]; then
			tail -n 30 "$log" >&2
			lab_die "node $N: timed out after $TIMEOUT s waiting for: $what (log: $log)"
		fi
		sleep 0.5
	done
	lab_log "node $N: $what ($((SECONDS - start)) s)"
}

node_ready() {
	local st
	st="$("$KUBECTL" --kubeconfig "$ADMIN_KUBECONFIG" get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" || return 1
	[ "$st" = True ]
}

up() {
	[ -f "$LAB_DIR/env" ] || lab_die "node.sh: the lab is not up (no $LAB_DIR/env): make lab-up first"
	# shellcheck disable=SC1091
	. "$LAB_DIR/env"
	lab_pid kube-apiserver >/dev/null || lab_die "node.sh: the lab's kube-apiserver is not running: make lab-up first"
	mkdir -p "$ND" "$RUN_DIR" "$LOG_DIR"
	network_up
	write_node_configs
	cgroup_up
	start_node_daemon "node$N-containerd" -- "$KPATH_LAB_CONTAINERD_BIN" --config "$N_CONTAINERD_DIR/config.toml"
	wait_until "containerd answers on $N_SOCK" "$(logfile_of "node$N-containerd")" node_ctr version
	local t
	for t in pause workload; do
		node_ctr images import "$LAB_DIR/images/$t.tar" >>"$LOG_DIR/node$N-images.log" 2>&1 ||
			lab_die "node $N: ctr images import $t.tar failed (log: $LOG_DIR/node$N-images.log)"
	done
	start_node_daemon "node$N-kubelet" -- "$KPATH_LAB_KUBELET_BIN" \
		--config="$N_KUBELET_DIR/config.yaml" \
		--kubeconfig="$N_KUBECONFIG" \
		--root-dir="$N_KUBELET_DIR/root" \
		--cert-dir="$N_KUBELET_DIR/pki" \
		--hostname-override="$NODE" --node-ip="$NODE_IP" \
		--node-labels="$TAINT=node$N"
	wait_until "kubelet /healthz" "$(logfile_of "node$N-kubelet")" in_node curl -fsS http://127.0.0.1:10248/healthz
	wait_until "node $NODE Ready" "$(logfile_of "node$N-kubelet")" node_ready
	echo "$NODE" >"$ND/name"
	lab_log "node $N is up: $NODE (netns /run/netns/$NETNS, state $ND)"
	echo "  its agent: kpath-agent --node-netns=/run/netns/$NETNS --node-name=$NODE --kubeconfig=$ADMIN_KUBECONFIG"
	echo "  a pod there: nodeSelector $TAINT=node$N and a toleration of the taint $TAINT=node$N:NoSchedule"
}

# ---------------------------------------------------------------- down
stop_pid() { # NAME
	local name="$1" pid i
	pid="$(lab_pid "$name")" || { rm -f "$(pidfile_of "$name")"; return 0; }
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 150; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	rm -f "$(pidfile_of "$name")"
}

down() {
	stop_pid "node$N-kubelet"
	if lab_pid "node$N-containerd" >/dev/null && [ -S "$N_SOCK" ]; then
		local id
		for id in $(node_ctr tasks ls -q 2>/dev/null || true); do node_ctr tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
		sleep 0.3
		for id in $(node_ctr tasks ls -q 2>/dev/null || true); do node_ctr tasks delete -f "$id" >/dev/null 2>&1 || true; done
		for id in $(node_ctr containers ls -q 2>/dev/null || true); do node_ctr containers delete "$id" >/dev/null 2>&1 || true; done
	fi
	stop_pid "node$N-containerd"
	local pids
	pids="$(pids_matching "-address $N_SOCK")"
	# shellcheck disable=SC2086
	[ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
	local cg
	for cg in $(node_cgroups); do
		[ -d "$cg" ] || continue
		pids="$(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)"
		# shellcheck disable=SC2086
		[ -z "$pids" ] || { kill -KILL $pids 2>/dev/null || true; sleep 0.3; }
		find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
		[ ! -d "$cg" ] || lab_warn "could not remove cgroup $cg"
	done
	local m
	while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	done < <(awk -v d="$ND" '{ m = $5; gsub(/\\040/, " ", m); if (m == d || index(m, d "/") == 1) print m }' /proc/self/mountinfo | sort -r)
	while iptables -t nat -D PREROUTING -i "$VETH_HOST" -p tcp -d "$HOST_IP" --dport 6443 -j DNAT --to-destination 127.0.0.1:6443 \
		-m comment --comment "kpath lab node$N" 2>/dev/null; do :; done
	ip link del "$VETH_HOST" 2>/dev/null || true
	[ ! -e "/run/netns/$NETNS" ] || ip netns del "$NETNS"
	if [ -f "$ND/name" ] && [ -f "$ADMIN_KUBECONFIG" ] && [ -n "${KUBECTL:-}" ] && lab_pid kube-apiserver >/dev/null; then
		"$KUBECTL" --kubeconfig "$ADMIN_KUBECONFIG" delete node "$NODE" --ignore-not-found --wait=false >/dev/null 2>&1 || true
	fi
	rm -f "$ND/name"
	lab_log "node $N is down"
}

[ $# -ge 1 ] || { usage >&2; exit 2; }
[ "$(id -u)" = 0 ] || lab_die "node.sh needs root (network namespaces, cgroups, iptables)"
if [ -f "$LAB_DIR/env" ]; then
	# shellcheck disable=SC1091
	. "$LAB_DIR/env"
fi
case "$1" in
up)
	[ $# -eq 2 ] || { usage >&2; exit 2; }
	node_vars "$2"
	up
	;;
down)
	[ $# -eq 2 ] || { usage >&2; exit 2; }
	node_vars "$2"
	down
	;;
down-all)
	for d in "$LAB_DIR"/nodes/node*; do
		[ -d "$d" ] || continue
		node_vars "${d##*/node}"
		down
	done
	;;
-h | --help) usage ;;
*)
	usage >&2
	exit 2
	;;
esac
