#!/usr/bin/env bash
# Runs the end-to-end tests on the lab in both flavours: the normal builds,
# then the release-like stripped etcd and kube-apiserver. A lab that was up
# before is left up (in the normal flavour); one this script started is
# stopped again.
set -euo pipefail
cd "$(dirname "$0")/../.."

lab_dir=${KPATH_LAB_DIR:-$HOME/.cache/kpath/lab}
was_up=no
pidfile=$lab_dir/run/kube-apiserver.pid
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
	was_up=yes
fi

run_flavour() {
	local flavour=$1
	echo "=== e2e: lab flavour $flavour"
	if [ -f "$lab_dir/env" ] && ! grep -q "KPATH_LAB_FLAVOUR='$flavour'" "$lab_dir/env"; then
		test/lab/down.sh
	fi
	KPATH_LAB_FLAVOUR=$flavour test/lab/up.sh
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

# The chart's tests need Helm (built from the module proxy, cached).
test/lab/build.sh helm
# The etcd the catalogue covers beside the lab's own, for the live etcd
# rows test and the DWARF checks, which run on every etcd build in the cache.
KPATH_LAB_ETCD=v3.7.3 test/lab/build.sh --flavour normal etcd
KPATH_LAB_ETCD=v3.7.3 test/lab/build.sh --flavour release etcd

status=0
run_flavour normal || status=1
run_flavour release || status=1
test/lab/down.sh
if [ "$was_up" = yes ]; then
	KPATH_LAB_FLAVOUR=normal test/lab/up.sh
fi
exit $status
