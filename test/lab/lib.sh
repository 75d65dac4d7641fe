# shellcheck shell=bash disable=SC2034
# Shared settings and helpers for the kpath lab scripts (sourced, not run).

LAB_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$LAB_SRC/versions.env"

CACHE_DIR="${KPATH_CACHE_DIR:-$HOME/.cache/kpath}"
LAB_DIR="${KPATH_LAB_DIR:-$HOME/.cache/kpath/lab}"

ALL_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
# Daemons in start order (kubectl is a client only).
DAEMONS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet)
# The trace store kpath exports to on the lab; KPATH_LAB_JAEGER=off skips it.
LAB_JAEGER="${KPATH_LAB_JAEGER:-on}"
case "$LAB_JAEGER" in on) DAEMONS=(jaeger "${DAEMONS[@]}") ;; off) ;; *)
	echo "lab: ERROR: KPATH_LAB_JAEGER='$LAB_JAEGER': want on or off" >&2
	exit 1
	;;
esac
JAEGER_OTLP=127.0.0.1:4317
JAEGER_QUERY=http://127.0.0.1:16686
# Prometheus (Debian's package) scraping a kpath-agent on its default
# metrics address every second; KPATH_LAB_PROMETHEUS=off skips it.
LAB_PROMETHEUS="${KPATH_LAB_PROMETHEUS:-on}"
case "$LAB_PROMETHEUS" in on) DAEMONS=(prometheus "${DAEMONS[@]}") ;; off) ;; *)
	echo "lab: ERROR: KPATH_LAB_PROMETHEUS='$LAB_PROMETHEUS': want on or off" >&2
	exit 1
	;;
esac
PROMETHEUS_URL=http://127.0.0.1:9090
AGENT_METRICS=127.0.0.1:9464

PKI_DIR="$LAB_DIR/pki"
RUN_DIR="$LAB_DIR/run"
LOG_DIR="$LAB_DIR/logs"
STATE_FILE="$LAB_DIR/state"
CONTAINERD_DIR="$LAB_DIR/containerd"
CONTAINERD_SOCK="$CONTAINERD_DIR/containerd.sock"
KUBELET_DIR="$LAB_DIR/kubelet"
CNI_DIR="$LAB_DIR/cni"
IMAGES_DIR="$LAB_DIR/images"
ADMIN_KUBECONFIG="$LAB_DIR/admin.kubeconfig"

LAB_BRIDGE=labbr0
LAB_CNI_NETWORK=kpath-lab
LAB_POD_CIDR=10.244.0.0/24
LAB_SERVICE_CIDR=10.96.0.0/24
ETCD_ENDPOINT=http://127.0.0.1:2379
APISERVER_URL=https://127.0.0.1:6443
PAUSE_IMAGE=kpath.local/pause:v1
WORKLOAD_IMAGE=kpath.local/workload:v1

lab_log() { echo "[lab $(date +%H:%M:%S)] $*"; }
lab_warn() { echo "[lab $(date +%H:%M:%S)] WARNING: $*" >&2; }
lab_die() {
	echo "lab: ERROR: $*" >&2
	exit 1
}

version_of() {
	case "$1" in
	etcd) echo "$ETCD_VERSION" ;;
	*) echo "$KUBERNETES_VERSION" ;;
	esac
}

# kpath_bin_path FLAVOUR COMPONENT: where build.sh caches a binary.
kpath_bin_path() { echo "$CACHE_DIR/bin/$1/$(version_of "$2")/$2"; }
# jaeger_bin_path: the lab's Jaeger, one build for both flavours.
jaeger_bin_path() { echo "$CACHE_DIR/bin/tools/jaeger-$JAEGER_VERSION/jaeger"; }
helm_bin_path() { echo "$CACHE_DIR/bin/tools/helm-$HELM_VERSION/helm"; }
kwok_bin_path() { echo "$CACHE_DIR/bin/tools/kwok-$KWOK_VERSION/kwok"; }
kwok_stages_path() { echo "$CACHE_DIR/bin/tools/kwok-$KWOK_VERSION/kwok-stages.yaml"; }

pidfile_of() { echo "$RUN_DIR/$1.pid"; }
logfile_of() { echo "$LOG_DIR/$1.log"; }

# lab_pid NAME: prints the pid of a running lab daemon, or fails. A pid only
# counts when the process still mentions the lab dir on its command line (pids
# get reused).
lab_pid() {
	local pf pid
	pf="$(pidfile_of "$1")"
	[ -f "$pf" ] || return 1
	pid="$(cat "$pf" 2>/dev/null)" || return 1
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	[ -r "/proc/$pid/cmdline" ] || return 1
	local cmd
	cmd="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
	[[ "$cmd" == *"$LAB_DIR"* ]] || return 1
	# A zombie is not running.
	[ "$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null)" != Z ] || return 1
	echo "$pid"
}

# pids_matching STRING: pids whose command line contains STRING (exact substring).
pids_matching() {
	local p cmd
	for p in /proc/[0-9]*; do
		p="${p#/proc/}"
		[ "$p" != "$$" ] || continue
		cmd="$(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline")" || continue
		case "$cmd" in *"$1"*) echo "$p" ;; esac
	done
}

# ctr against the lab's containerd, in the CRI namespace.
lab_ctr() { ctr -a "$CONTAINERD_SOCK" -n k8s.io "$@"; }

# Which flavour (normal|release) a component uses in this lab run.
# Needs LAB_FLAVOUR and LAB_RELEASE_SET (space separated, padded with spaces).
component_flavour() {
	if [ "$LAB_FLAVOUR" = release ] && [[ "$LAB_RELEASE_SET" == *" $1 "* ]]; then
		echo release
	else
		echo normal
	fi
}

# Sets LAB_FLAVOUR, LAB_RELEASE_SET and LAB_ID from the environment.
resolve_flavour() {
	LAB_FLAVOUR="${KPATH_LAB_FLAVOUR:-normal}"
	case "$LAB_FLAVOUR" in normal | release) ;; *) lab_die "KPATH_LAB_FLAVOUR='$LAB_FLAVOUR': want normal or release" ;; esac
	local extra="${KPATH_LAB_RELEASE_COMPONENTS:-}" c set=" etcd kube-apiserver "
	extra="${extra//,/ }"
	[ "$extra" != all ] || extra="${ALL_COMPONENTS[*]}"
	for c in $extra; do
		[[ " ${ALL_COMPONENTS[*]} " == *" $c "* ]] || lab_die "KPATH_LAB_RELEASE_COMPONENTS: unknown component '$c' (known: ${ALL_COMPONENTS[*]}, or 'all')"
		[[ "$set" == *" $c "* ]] || set+="$c "
	done
	LAB_RELEASE_SET="$set"
	if [ "$LAB_FLAVOUR" = release ]; then
		local sorted
		sorted="$(for c in "${ALL_COMPONENTS[@]}"; do [[ "$set" != *" $c "* ]] || printf '%s,' "$c"; done)"
		LAB_ID="release:${sorted%,}"
	else
		LAB_ID=normal
	fi
	# Another pinned set is another lab: switching needs make lab-down.
	if [ "$KUBERNETES_VERSION" != "$DEFAULT_KUBERNETES_VERSION" ] || [ "$ETCD_VERSION" != "$DEFAULT_ETCD_VERSION" ]; then
		LAB_ID="$LAB_ID@$KUBERNETES_VERSION+etcd$ETCD_VERSION"
	fi
}

# The configs of one node: its containerd (lab_containerd_config DIR SOCK
# CNI_DIR), its CNI network (lab_cni_config CNI_DIR POD_CIDR) and its
# kubelet (lab_kubelet_config DIR SOCK [EXTRA_YAML]). up.sh writes the first
# node's, node.sh the others'.
lab_containerd_config() {
	local dir="$1" sock="$2" cni="$3"
	cat >"$dir/config.toml" <<EOF
# containerd of a kpath lab node (generated by test/lab/lib.sh; edits are overwritten).
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "$sock"

[ttrpc]
  address = "$sock.ttrpc"

[debug]
  address = "$sock.debug"
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # REQUIRED here: the VM drops CAP_SYS_RESOURCE, runc cannot set oom_score_adj -998.
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  enable_selinux = false

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$dir/runc"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$cni/net.d"
    max_conf_num = 1
EOF
}

lab_cni_config() {
	local cni="$1" cidr="$2"
	cat >"$cni/net.d/10-$LAB_CNI_NETWORK.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$LAB_CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$LAB_BRIDGE",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$cidr"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

lab_kubelet_config() {
	local dir="$1" sock="$2" extra="${3:-}"
	cat >"$dir/config.yaml" <<EOF
# kubelet of a kpath lab node (generated by test/lab/lib.sh).
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$sock
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
podLogsDir: $dir/pod-logs
staticPodPath: $dir/manifests
volumePluginDir: $dir/volume-plugins
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $PKI_DIR/ca.crt
authorization:
  mode: Webhook
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1%"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
EOF
	[ -z "$extra" ] || printf '%s\n' "$extra" >>"$dir/config.yaml"
}
