#!/usr/bin/env bash
# Tear down the kpath lab (`make lab-down`). Leaves nothing of the lab running.
#
#   test/lab/down.sh [--purge]
#
# Stops the other nodes (test/lab/node.sh down-all), then kubelet, scheduler, controller-manager, apiserver (by pidfile), kills the
# lab's containers, stops containerd and etcd, kills leftover shims of the lab's
# containerd socket, unmounts everything under $KPATH_LAB_DIR, deletes the lab
# bridge, the kubepods cgroups, the kubelet's iptables chains and the lab's CNI
# iptables rules. Cached binaries are kept. --purge also deletes $KPATH_LAB_DIR
# (cluster state, certs, images) but never the binary cache.
set -euo pipefail

# shellcheck source=lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

PURGE=0
LOCKED=0
for a in "$@"; do
	case "$a" in
	--purge) PURGE=1 ;;
	--locked) LOCKED=1 ;; # internal: called by up.sh, which holds the lock
	-h | --help)
		sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*) lab_die "down.sh: unknown argument '$a' (see --help)" ;;
	esac
done

T0=$SECONDS
QUIET="${KPATH_LAB_DOWN_QUIET:-}"
say() { [ -n "$QUIET" ] || lab_log "$@"; }

# stop_daemon NAME [SECONDS]: SIGTERM, wait, then SIGKILL.
stop_daemon() {
	local name="$1" grace="${2:-15}" pid i
	if ! pid="$(lab_pid "$name")"; then
		rm -f "$(pidfile_of "$name")"
		return 0
	fi
	say "stopping $name (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < grace * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		lab_warn "$name (pid $pid) did not stop in ${grace} s: SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		sleep 0.2
	fi
	rm -f "$(pidfile_of "$name")"
}

# All cgroup directories named kubepods (cgroup v1 hierarchies and v2).
kubepods_cgroups() {
	local d
	for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
		[ -d "$d" ] && echo "$d"
	done
	return 0
}

remove_containers() {
	if lab_pid containerd >/dev/null && [ -S "$CONTAINERD_SOCK" ] && command -v ctr >/dev/null; then
		local ids id n=0
		ids="$(lab_ctr tasks ls -q 2>/dev/null || true)"
		for id in $ids; do
			lab_ctr tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
			n=$((n + 1))
		done
		[ "$n" = 0 ] || sleep 0.5
		for id in $ids; do lab_ctr tasks delete -f "$id" >/dev/null 2>&1 || true; done
		n=0
		for id in $(lab_ctr containers ls -q 2>/dev/null || true); do
			lab_ctr containers delete "$id" >/dev/null 2>&1 || true
			n=$((n + 1))
		done
		[ "$n" = 0 ] || say "removed $n containers"
	fi
	# Whatever still runs in the kubepods cgroups (e.g. containerd already gone).
	local cg pids
	for cg in $(kubepods_cgroups); do
		pids="$(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)"
		if [ -n "$pids" ]; then
			say "killing leftover pod processes in $cg: ${pids//$'\n'/ }"
			# shellcheck disable=SC2086
			kill -KILL $pids 2>/dev/null || true
		fi
	done
}

kill_shims() {
	local pids
	pids="$(pids_matching "-address $CONTAINERD_SOCK")"
	if [ -n "$pids" ]; then
		say "killing leftover containerd shims of $CONTAINERD_SOCK: ${pids//$'\n'/ }"
		# shellcheck disable=SC2086
		kill -KILL $pids 2>/dev/null || true
		sleep 0.2
	fi
}

# Mount points under the lab dir, deepest first (octal escapes of /proc/mounts decoded).
lab_mounts() {
	awk -v d="$LAB_DIR" '{ m = $5; gsub(/\\040/, " ", m); if (m == d || index(m, d "/") == 1) print m }' /proc/self/mountinfo |
		awk '{ print length($0) "\t" $0 }' | sort -rn | cut -f2-
}

unmount_all() {
	local m n=0
	for _ in 1 2 3; do
		while IFS= read -r m; do
			[ -n "$m" ] || continue
			umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
			n=$((n + 1))
		done < <(lab_mounts)
		[ -z "$(lab_mounts)" ] && break
	done
	[ "$n" = 0 ] || say "unmounted $n mounts under $LAB_DIR"
	if [ -n "$(lab_mounts)" ]; then
		lab_warn "mounts left under $LAB_DIR:"
		lab_mounts >&2
		return 1
	fi
}

remove_network() {
	local l
	if ip link show "$LAB_BRIDGE" >/dev/null 2>&1; then
		for l in $(ip -o link show master "$LAB_BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
			ip link del "$l" 2>/dev/null || true
		done
		ip link del "$LAB_BRIDGE" && say "deleted bridge $LAB_BRIDGE"
	fi
	rm -rf "${CNI_DIR:?}/ipam" # all lab pods are gone: release their IPs
}

remove_cgroups() {
	local cg
	for cg in $(kubepods_cgroups); do
		find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
		[ ! -d "$cg" ] || lab_warn "could not remove cgroup $cg"
	done
}

# iptables: the kubelet's KUBE-* chains (no kube-proxy in this lab) and the CNI
# rules/chains that belong to the lab network (bridge ipMasq, portmap).
clean_iptables_one() { # iptables|ip6tables
	local ipt="$1" table rules plan c rule
	command -v "$ipt" >/dev/null || return 0
	for table in filter nat mangle; do
		rules="$("$ipt" -w -t "$table" -S 2>/dev/null)" || continue
		# Plan: "C <chain>" for chains to delete (KUBE-*, and the CNI-* chains of
		# the lab network), "R <rule>" for rules to delete (those carrying the lab
		# network's comment or jumping to a chain to delete).
		plan="$(TAG="name: \\\"$LAB_CNI_NETWORK\\\"" awk '
			BEGIN { tag = ENVIRON["TAG"] }
			function target(line,   n, i, f) {
				n = split(line, f, " ")
				for (i = 1; i < n; i++) if (f[i] == "-j" || f[i] == "-g") return f[i + 1]
				return ""
			}
			{ lines[NR] = $0 }
			$1 == "-N" && $2 ~ /^KUBE-/ { del[$2] = 1 }
			$1 == "-A" && index($0, tag) > 0 {
				t = target($0)
				if (t ~ /^CNI-/ && t !~ /^CNI-HOSTPORT-/) del[t] = 1
				if ($2 ~ /^CNI-/ && $2 !~ /^CNI-HOSTPORT-/) del[$2] = 1
			}
			END {
				for (i = 1; i <= NR; i++) {
					l = lines[i]
					split(l, f, " ")
					if (f[1] != "-A") continue
					if (index(l, tag) > 0 || (target(l) in del)) print "R " l
				}
				for (c in del) print "C " c
			}' <<<"$rules")"
		while IFS= read -r rule; do
			[[ "$rule" == "R -A "* ]] || continue
			eval "$ipt -w -t $table -D ${rule#R -A }" 2>/dev/null || true
		done <<<"$plan"
		for c in $(sed -n 's/^C //p' <<<"$plan"); do "$ipt" -w -t "$table" -F "$c" 2>/dev/null || true; done
		for c in $(sed -n 's/^C //p' <<<"$plan"); do "$ipt" -w -t "$table" -X "$c" 2>/dev/null || true; done
		# portmap's shared chains, once no port mapping is left in CNI-HOSTPORT-DNAT
		# (MASQ and SETMARK only hold portmap's fixed rules).
		if ! "$ipt" -w -t "$table" -S CNI-HOSTPORT-DNAT 2>/dev/null | awk '$1 == "-A" {found = 1} END {exit !found}'; then
			for c in CNI-HOSTPORT-DNAT CNI-HOSTPORT-SETMARK CNI-HOSTPORT-MASQ; do
				"$ipt" -w -t "$table" -S "$c" >/dev/null 2>&1 || continue
				while IFS= read -r rule; do
					[ -n "$rule" ] || continue
					eval "$ipt -w -t $table -D ${rule#-A }" 2>/dev/null || true
				done < <("$ipt" -w -t "$table" -S | awk -v c="$c" '$1 == "-A" && $2 != c { for (i = 1; i < NF; i++) if ($i == "-j" && $(i + 1) == c) print }')
				"$ipt" -w -t "$table" -F "$c" 2>/dev/null || true
				"$ipt" -w -t "$table" -X "$c" 2>/dev/null || true
			done
		fi
	done
}

clean_iptables() {
	clean_iptables_one iptables
	clean_iptables_one ip6tables
}

# kubelet links container logs in /var/log/containers (fixed path) into its podLogsDir.
clean_log_links() {
	local l
	[ -d /var/log/containers ] || return 0
	for l in /var/log/containers/*.log; do
		[ -L "$l" ] || continue
		case "$(readlink "$l")" in "$LAB_DIR"/*) rm -f "$l" ;; esac
	done
}

main() {
	if [ ! -d "$LAB_DIR" ]; then
		say "no lab at $LAB_DIR: nothing to do"
		return 0
	fi
	[ "$(id -u)" = 0 ] || lab_die "down.sh needs root"
	if [ "$LOCKED" = 0 ]; then
		exec 8>"$LAB_DIR/.lock"
		flock -w 60 8 || lab_die "another up.sh/down.sh is running on $LAB_DIR"
	fi
	say "tearing down the kpath lab in $LAB_DIR"
	"$LAB_SRC/node.sh" down-all || lab_warn "the lab's other nodes did not all come down (test/lab/node.sh down-all)"
	stop_daemon kubelet
	stop_daemon kube-scheduler
	stop_daemon kube-controller-manager
	stop_daemon kube-apiserver
	remove_containers
	stop_daemon containerd
	stop_daemon etcd
	stop_daemon jaeger
	stop_daemon prometheus
	kill_shims
	remove_containers # pod processes orphaned by killed shims, if any
	local ok=1
	unmount_all || ok=0
	remove_network
	remove_cgroups
	clean_iptables
	clean_log_links
	# containerd 1.6 keeps shim sockets in the fixed /run/containerd/s: drop it if empty.
	rmdir /run/containerd/s /run/containerd 2>/dev/null || true
	rm -f "$STATE_FILE" "$LAB_DIR/env"

	local left
	left="$(pids_matching "$LAB_DIR")"
	if [ -n "$left" ]; then
		lab_warn "processes still mention $LAB_DIR:"
		# shellcheck disable=SC2086
		ps -o pid,args -p $left >&2 || true
		ok=0
	fi
	if [ "$PURGE" = 1 ]; then
		if [ "$ok" = 1 ]; then
			rm -rf --one-file-system "${LAB_DIR:?}"
			say "purged $LAB_DIR (binaries in $CACHE_DIR/bin kept)"
		else
			lab_die "not purging $LAB_DIR: mounts or processes are left (see above)"
		fi
	fi
	[ "$ok" = 1 ] || lab_die "teardown incomplete (see warnings above)"
	say "lab down in $((SECONDS - T0)) s (binaries kept in $CACHE_DIR/bin)"
}

main
exit
