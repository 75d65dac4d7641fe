#!/usr/bin/env bash
# make test-versions: the write and pod e2e on each cell (a Kubernetes and an
# etcd version) in each flavour, one lab at a time, and docs/versions.md with
# what each cell gave: the binaries' Go versions, the rows doctor attached
# and those not applicable or not covered by their versions, the e2e result, probe hits per write and per pod
# lifecycle.
#
#   KPATH_VERSION_CELLS     "K8S+ETCD ..."   (default: each Kubernetes minor v1.33–v1.37
#                           with the etcd minor its kubeadm names, and the
#                           two far corners: v1.37 × etcd v3.5, v1.33 × etcd v3.7)
#   KPATH_VERSION_FLAVOURS  "normal release" (default both)
#
# Each cell's binaries are built from the module proxy the first time
# (test/lab/build.sh, ~10 min a set on 2 cores) and cached. The lab is left
# down; a lab that was up is brought back with the default set.
set -euo pipefail
cd "$(dirname "$0")/.."
cells=${KPATH_VERSION_CELLS:-"v1.33.13+v3.5.35 v1.34.4+v3.6.16 v1.35.4+v3.6.16 v1.36.3+v3.6.16 v1.37.2+v3.7.3 v1.37.2+v3.5.35 v1.33.13+v3.7.3"}
flavours=${KPATH_VERSION_FLAVOURS:-"normal release"}
lab_dir=${KPATH_LAB_DIR:-$HOME/.cache/kpath/lab}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
was_up=no
if [ -f "$lab_dir/run/kube-apiserver.pid" ] && kill -0 "$(cat "$lab_dir/run/kube-apiserver.pid")" 2>/dev/null; then
	was_up=yes
fi
make --no-print-directory build >/dev/null

gover() { go version "$1" 2>/dev/null | awk '{print $2}'; }
rows=()
failed=0
for cell in $cells; do
	k8s=${cell%+*} etcd=${cell#*+}
	for fl in $flavours; do
		echo "=== versions: Kubernetes $k8s, etcd $etcd, $fl"
		test/lab/down.sh >/dev/null
		# The release flavour here is every component as upstream builds it
		# (make test's release flavour: etcd and kube-apiserver only).
		if ! KPATH_LAB_KUBERNETES=$k8s KPATH_LAB_ETCD=$etcd KPATH_LAB_FLAVOUR=$fl KPATH_LAB_RELEASE_COMPONENTS=all test/lab/up.sh >"$work/up.log" 2>&1; then
			tail -n 20 "$work/up.log"
			rows+=("| $k8s | $etcd | $fl | | | | lab did not come up (test/lab/up.sh) | | |")
			failed=1
			continue
		fi
		# shellcheck disable=SC1091,SC2016
		gos=$(. "$lab_dir/env" && sep="" && for c in ETCD KUBE_APISERVER KUBE_SCHEDULER KUBELET KUBE_CONTROLLER_MANAGER; do
			v="KPATH_LAB_${c}_BIN"
			printf '%s%s %s' "$sep" "$(echo "$c" | tr 'A-Z_' 'a-z-')" "$(gover "${!v}")"
			sep=", "
		done)
		bin/kpath-agent doctor --detail --observe=0 >"$work/doctor.log" 2>&1 || true
		attached=$(awk '$5 == "attached" {n++} END {print n+0}' "$work/doctor.log")
		na=$(awk '$5 == "not-applicable" || $5 == "not-covered" {printf "%s%s%s", sep, $3, ($5 == "not-covered" ? " (not covered)" : ""); sep=", "}' "$work/doctor.log")
		result=pass
		KPATH_E2E=1 go test -count=1 -v -timeout 20m -run 'TestDoctorAttachesEveryRow|TestWritesAreTracedThroughAPIServerAndEtcd|TestPodsAreTracedFromCreateToRunning|TestDeploymentPodsNameTheirCreator|TestWorkloadPodsNameTheirCreator' ./test/e2e/ >"$work/e2e.log" 2>&1 || result=FAIL
		write=$(sed -n 's/.*probe hits per write: \(kube-apiserver [0-9.]*, etcd [0-9.]*\).*/\1/p' "$work/e2e.log" | head -n 1)
		pod=$(sed -n 's/.*probe hits per pod lifecycle: \([0-9.]*\).*/\1 hits/p' "$work/e2e.log" | head -n 1)
		if [ "$result" = FAIL ]; then
			failed=1
			grep -E '^\s+\S+_test.go:[0-9]+: ' "$work/e2e.log" | tail -n 5 || true
		fi
		rows+=("| $k8s | $etcd | $fl | $gos | $attached | ${na:-none} | $result | ${write:-?} | ${pod:-?} |")
	done
done
test/lab/down.sh >/dev/null
{
	echo "# Versions: each Kubernetes × etcd cell, live"
	echo
	echo "Written by \`make test-versions\` (test/versions.sh) on $(date -u +%F) ($(nproc) cores, kernel $(uname -r)):"
	echo "the lab on each cell in each flavour (release: every component stripped and built with the Go its release"
	echo "used), \`kpath-agent doctor --detail\` on its components (rows attached: default and detail rows), then the"
	echo "end-to-end tests TestDoctorAttachesEveryRow (every row attaches, none not covered or not applicable),"
	echo "TestWritesAreTracedThroughAPIServerAndEtcd, TestPodsAreTracedFromCreateToRunning and"
	echo "TestDeploymentPodsNameTheirCreator, TestWorkloadPodsNameTheirCreator."
	echo
	echo "| Kubernetes | etcd | flavour | Go of the binaries | rows attached | not applicable | e2e | hits per write | pod lifecycle |"
	echo "|---|---|---|---|---|---|---|---|---|"
	printf '%s\n' "${rows[@]}"
} >docs/versions.md
cat docs/versions.md
if [ "$was_up" = yes ]; then
	test/lab/up.sh >/dev/null
fi
exit $failed
