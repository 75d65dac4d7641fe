#!/usr/bin/env bash
# Runs the end-to-end tests on the lab in both flavours: the normal builds,
# then the release-like stripped etcd and kube-apiserver, on the default
# (newest) Kubernetes × etcd set; then the catalogue's oldest set
# (test/lab/versions.env) in the normal flavour: the live probes tests,
# every row attached, and the write and pod chains. A lab that was up
# before is left up (in the normal flavour, default set); one this script
# started is stopped again.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../lab/versions.env
. test/lab/versions.env

lab_dir=${KPATH_LAB_DIR:-$HOME/.cache/kpath/lab}
was_up=no
pidfile=$lab_dir/run/kube-apiserver.pid
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
	was_up=yes
fi

run_flavour() {
	local flavour=$1
	echo "=== e2e: lab flavour $flavour"
	if [ -f "$lab_dir/env" ] && { ! grep -q "KPATH_LAB_FLAVOUR='$flavour'" "$lab_dir/env" ||
		! grep -q "KPATH_LAB_KUBERNETES_VERSION='$KUBERNETES_VERSION'" "$lab_dir/env" ||
		! grep -q "KPATH_LAB_ETCD_VERSION='$ETCD_VERSION'" "$lab_dir/env"; }; then
		test/lab/down.sh
	fi
	KPATH_LAB_FLAVOUR=$flavour test/lab/up.sh
	[ "$flavour" != normal ] || build_oldest_in_background
	# pipefail: the pipeline fails when go test does. ./probes runs again
	# here with the lab up: its live pod-rows test and the DWARF offsets
	# test need the lab (they skip, saying so, in the unit-test pass). -p 1:
	# one package at a time, so the e2e's stopped scheduler and kubelet never
	# meet the probes' live test (and -v output streams).
	if ! KPATH_E2E=1 go test -p 1 -count=1 -v -timeout 30m ./probes/ ./test/e2e/ 2>&1 | tee "/tmp/kpath-e2e-$flavour.log"; then
		echo "=== e2e: lab flavour $flavour FAILED (log: /tmp/kpath-e2e-$flavour.log)"
		return 1
	fi
}

# The oldest cell, normal flavour: the probes package whole (its live
# tests and the DWARF checks of every build in the cache), then the e2e
# that prove a cell.
run_oldest() {
	local k8s=$OLDEST_KUBERNETES_VERSION etcd=$OLDEST_ETCD_VERSION log=/tmp/kpath-e2e-oldest.log
	echo "=== e2e: the oldest cell, Kubernetes $k8s × etcd $etcd, normal flavour"
	test/lab/down.sh
	wait_for_oldest_build || return 1
	KPATH_LAB_KUBERNETES=$k8s KPATH_LAB_ETCD=$etcd KPATH_LAB_FLAVOUR=normal test/lab/up.sh
	if ! { KPATH_E2E=1 go test -count=1 -v -timeout 20m ./probes/ &&
		KPATH_E2E=1 go test -count=1 -v -timeout 20m \
			-run 'TestDoctorAttachesEveryRow|TestWritesAreTracedThroughAPIServerAndEtcd|TestPodsAreTracedFromCreateToRunning|TestDeploymentPodsNameTheirCreator|TestWorkloadPodsNameTheirCreator' ./test/e2e/; } 2>&1 | tee "$log"; then
		echo "=== e2e: the oldest cell FAILED (log: $log)"
		return 1
	fi
}

# The chart's tests need Helm (built from the module proxy, cached).
test/lab/build.sh helm

# Builds the oldest cell's normal set and etcd v3.6.16 (for the DWARF checks
# and the live etcd rows test, which run on every etcd build in the cache)
# while the normal e2e runs: that e2e leaves most of the 2 cores idle, and
# nice 19 gives them to the build only when the tests do not want them.
# build.sh's lock makes the release lab's build wait for this one.
bg_log=/tmp/kpath-e2e-build-oldest.log
bg_pid=
build_oldest_in_background() {
	echo "=== e2e: building the oldest cell and etcd v3.6.16 in the background (log: $bg_log)"
	# setsid: its own process group, so an early exit stops the whole build.
	KPATH_OLDEST_ETCD=$OLDEST_ETCD_VERSION KPATH_OLDEST_KUBERNETES=$OLDEST_KUBERNETES_VERSION \
		setsid bash -c 'set -e
			KPATH_LAB_ETCD=v3.6.16 nice -n 19 test/lab/build.sh --flavour normal etcd
			KPATH_LAB_ETCD=$KPATH_OLDEST_ETCD KPATH_LAB_KUBERNETES=$KPATH_OLDEST_KUBERNETES \
				nice -n 19 test/lab/build.sh --flavour normal' >"$bg_log" 2>&1 &
	bg_pid=$!
}
trap '[ -z "$bg_pid" ] || kill -- "-$bg_pid" 2>/dev/null || true' EXIT

wait_for_oldest_build() {
	[ -n "$bg_pid" ] || return 0
	local pid=$bg_pid
	bg_pid=
	if ! wait "$pid"; then
		echo "=== e2e: the background build of the oldest cell FAILED (log: $bg_log)"
		tail -20 "$bg_log"
		return 1
	fi
}

status=0
run_flavour normal || status=1
run_flavour release || status=1
run_oldest || status=1
test/lab/down.sh
if [ "$was_up" = yes ]; then
	KPATH_LAB_FLAVOUR=normal test/lab/up.sh
fi
exit $status
