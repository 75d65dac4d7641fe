#!/usr/bin/env bash
# Build pinned etcd / Kubernetes binaries from the Go module proxy and cache them.
#
#   test/lab/build.sh [--flavour normal|release] [component ...]
#
# Components: etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl
# (default: all six), and the tools: jaeger (the lab's trace store), helm
# (the chart's tests) and kwok (the scale benchmark's fake nodes, with its
# stages in kwok-stages.yaml beside it), one build for both flavours, in
# .../bin/tools/<tool>-<version>/<tool>. Binaries land in
#   ${KPATH_CACHE_DIR:-$HOME/.cache/kpath}/bin/<flavour>/<version>/<component>
# and are not rebuilt when present. Build work dirs live in .../work/.
#
# Flavours:
#   normal  - the machine's Go toolchain, CGO_ENABLED=0, not stripped (symtab + DWARF kept).
#   release - like upstream release binaries: GOTOOLCHAIN=$RELEASE_GO_TOOLCHAIN (etcd:
#             $ETCD_RELEASE_GO_TOOLCHAIN), -trimpath, -s -w, Kubernetes tags
#             selinux,notest,grpcnotrace, kubelet with CGO_ENABLED=1.
#
# Env: KPATH_CACHE_DIR, KPATH_BUILD_PARALLEL (go build -p, default 2).
set -euo pipefail

# shellcheck source=lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

PARALLEL="${KPATH_BUILD_PARALLEL:-2}"

die() { echo "build.sh: ERROR: $*" >&2; exit 1; }
log() { echo "[build $(date +%H:%M:%S)] $*"; }

usage() {
	sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
}

FLAVOUR=normal
COMPONENTS=()
while [ $# -gt 0 ]; do
	case "$1" in
	--flavour | --flavor)
		[ $# -ge 2 ] || die "--flavour needs a value (normal|release)"
		FLAVOUR="$2"
		shift 2
		;;
	--flavour=* | --flavor=*)
		FLAVOUR="${1#*=}"
		shift
		;;
	-h | --help)
		usage
		exit 0
		;;
	-*) die "unknown option $1 (see --help)" ;;
	*)
		COMPONENTS+=("$1")
		shift
		;;
	esac
done
case "$FLAVOUR" in normal | release) ;; *) die "unknown flavour '$FLAVOUR' (want normal or release)" ;; esac
[ ${#COMPONENTS[@]} -gt 0 ] || COMPONENTS=("${ALL_COMPONENTS[@]}")
for c in "${COMPONENTS[@]}"; do
	case " ${ALL_COMPONENTS[*]} jaeger helm kwok " in *" $c "*) ;; *) die "unknown component '$c' (known: ${ALL_COMPONENTS[*]} jaeger helm kwok)" ;; esac
done

command -v go >/dev/null || die "the go command is not installed (need Go >= 1.25)"

bin_path() { kpath_bin_path "$FLAVOUR" "$1"; }

mkdir -p "$CACHE_DIR/bin" "$CACHE_DIR/work"

# Several build.sh runs (e.g. a background build and up.sh) must not race on the work dirs.
exec 9>"$CACHE_DIR/build.lock"
if ! flock -n 9; then
	log "another build.sh holds $CACHE_DIR/build.lock; waiting for it..."
	flock 9
fi

# Go settings shared by all builds.
export GOFLAGS="${GOFLAGS:-} -buildvcs=false -mod=mod"
export GOWORK=off
# Go's temporary build dirs go under the cache too (not /tmp).
export GOTMPDIR="$CACHE_DIR/work/tmp"
mkdir -p "$GOTMPDIR"
export GOTOOLCHAIN=local

# The release toolchains, read from the modules when versions.env leaves them
# empty: Kubernetes ships its Go version in .go-version, etcd's server module
# names its toolchain in go.mod.
module_field() { # MODULE@VERSION FIELD(Dir|GoMod)
	go mod download -json "$1" 2>/dev/null | sed -n "s/^[[:space:]]*\"$2\": \"\(.*\)\",\$/\1/p"
}
resolve_release_toolchains() {
	[ "$FLAVOUR" = release ] || return 0
	if [ -z "$RELEASE_GO_TOOLCHAIN" ]; then
		local dir
		dir="$(cd "$CACHE_DIR/work" && module_field "k8s.io/kubernetes@$KUBERNETES_VERSION" Dir)"
		[ -f "$dir/.go-version" ] || die "cannot read the Go version of Kubernetes $KUBERNETES_VERSION (.go-version in its module); set KPATH_LAB_RELEASE_GO"
		RELEASE_GO_TOOLCHAIN="go$(tr -d '[:space:]' <"$dir/.go-version")"
	fi
	if [ -z "$ETCD_RELEASE_GO_TOOLCHAIN" ]; then
		local mod
		mod="$(cd "$CACHE_DIR/work" && module_field "go.etcd.io/etcd/server/v3@$ETCD_VERSION" GoMod)"
		ETCD_RELEASE_GO_TOOLCHAIN="$(sed -n 's/^toolchain \(go[0-9.]*\)$/\1/p' "$mod" 2>/dev/null)"
		[ -n "$ETCD_RELEASE_GO_TOOLCHAIN" ] || ETCD_RELEASE_GO_TOOLCHAIN="go$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$mod" 2>/dev/null)"
		[ "$ETCD_RELEASE_GO_TOOLCHAIN" != go ] || die "cannot read etcd $ETCD_VERSION's Go toolchain from its go.mod; set KPATH_LAB_ETCD_RELEASE_GO"
	fi
	log "release toolchains: Kubernetes $KUBERNETES_VERSION $RELEASE_GO_TOOLCHAIN, etcd $ETCD_VERSION $ETCD_RELEASE_GO_TOOLCHAIN"
}

# toolchain_of COMPONENT: the Go toolchain for this flavour.
toolchain_of() {
	if [ "$FLAVOUR" = normal ] || [ "$1" = jaeger ] || [ "$1" = helm ] || [ "$1" = kwok ]; then
		echo local
	elif [ "$1" = etcd ]; then
		echo "$ETCD_RELEASE_GO_TOOLCHAIN"
	else
		echo "$RELEASE_GO_TOOLCHAIN"
	fi
}

# Runs a long command in the background and prints a heartbeat with elapsed time.
run_with_progress() {
	local what="$1" logfile="$2"
	shift 2
	local start=$SECONDS
	"$@" >>"$logfile" 2>&1 &
	local pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		for _ in $(seq 1 30); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 1
		done
		kill -0 "$pid" 2>/dev/null && log "  ... $what still running ($((SECONDS - start)) s)"
	done
	if ! wait "$pid"; then
		echo "build.sh: ERROR: $what failed after $((SECONDS - start)) s; last lines of $logfile:" >&2
		tail -n 40 "$logfile" >&2
		exit 1
	fi
}

# ---------- etcd ----------
prepare_etcd_module() {
	local dir="$CACHE_DIR/work/etcd-$ETCD_VERSION"
	if [ ! -f "$dir/.ready" ]; then
		log "preparing etcd build module in $dir"
		rm -rf "$dir"
		mkdir -p "$dir"
		cat >"$dir/go.mod" <<EOF
module kpath.local/lab/etcd

go 1.25.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
		cat >"$dir/main.go" <<'EOF'
// Command etcd: the etcd server, built from the go.etcd.io/etcd/server/v3 module
// (the etcd root module uses replace directives and cannot be built from the proxy).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
		(cd "$dir" && GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod tidy) >"$dir/prepare.log" 2>&1 ||
			{ tail -n 30 "$dir/prepare.log" >&2; die "go mod tidy failed for etcd (log: $dir/prepare.log)"; }
		touch "$dir/.ready"
	fi
	MODDIR="$dir"
}

# ---------- Jaeger ----------
# github.com/jaegertracing/jaeger has a replace directive, so `go install
# ...@version` refuses it: a small module requires it as a tool, with the
# same replace line.
build_jaeger() {
	local out dir logfile start
	out="$(jaeger_bin_path)"
	if [ -x "$out" ]; then
		log "jaeger $JAEGER_VERSION: cached at $out"
		return 0
	fi
	dir="$CACHE_DIR/work/jaeger-$JAEGER_VERSION"
	logfile="$CACHE_DIR/work/build-jaeger.log"
	: >"$logfile"
	mkdir -p "$dir" "$(dirname "$out")"
	if [ ! -f "$dir/.ready" ]; then
		log "preparing the Jaeger build module in $dir"
		local jmod replace
		jmod="$(cd "$dir" && go mod download -json "github.com/jaegertracing/jaeger@$JAEGER_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
		[ -n "$jmod" ] && [ -f "$jmod" ] || die "could not download github.com/jaegertracing/jaeger@$JAEGER_VERSION's go.mod from the module proxy"
		replace="$(grep '^replace ' "$jmod" || true)"
		printf 'module kpath.local/lab/jaeger\n\ngo 1.25.0\n\n%s\n' "$replace" >"$dir/go.mod"
		run_with_progress "jaeger module download" "$logfile" env -C "$dir" go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION"
		touch "$dir/.ready"
	fi
	log "building jaeger $JAEGER_VERSION (GOTOOLCHAIN=local, -p $PARALLEL); log: $logfile"
	start=$SECONDS
	run_with_progress "jaeger build" "$logfile" env -C "$dir" CGO_ENABLED=0 go build -p "$PARALLEL" -trimpath -ldflags "-s -w" -o "$out.tmp.$$" github.com/jaegertracing/jaeger/cmd/jaeger
	mv -f "$out.tmp.$$" "$out"
	log "built jaeger in $((SECONDS - start)) s -> $out ($(du -h "$out" | cut -f1))"
	echo "$(date -u +%FT%TZ) tools jaeger $JAEGER_VERSION $((SECONDS - start))s" >>"$CACHE_DIR/build-times.log"
}

# ---------- Helm ----------
build_helm() {
	local out start
	out="$(helm_bin_path)"
	if [ -x "$out" ]; then
		log "helm $HELM_VERSION: cached at $out"
		return 0
	fi
	go_install_tool helm "$HELM_VERSION" "$out" "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm"
	log "built helm in $((SECONDS - start)) s -> $out ($(du -h "$out" | cut -f1))"
	echo "$(date -u +%FT%TZ) tools helm $HELM_VERSION $((SECONDS - start))s" >>"$CACHE_DIR/build-times.log"
}

# go_install_tool NAME VERSION OUT LDFLAGS PKG: go install PKG@VERSION into
# OUT's directory, logged to build-NAME.log; sets start (for the caller's
# "built ... in" line).
go_install_tool() {
	local name=$1 version=$2 out=$3 ldflags=$4 pkg=$5 logfile
	logfile="$CACHE_DIR/work/build-$name.log"
	: >"$logfile"
	mkdir -p "$(dirname "$out")"
	log "building $name $version (go install, -p $PARALLEL); log: $logfile"
	start=$SECONDS
	run_with_progress "$name build" "$logfile" env GOBIN="$(dirname "$out")" CGO_ENABLED=0 GOFLAGS=-mod=readonly go install -p "$PARALLEL" -trimpath -ldflags "$ldflags" "$pkg@$version"
}

# ---------- kwok ----------
# kwok runs only on Stages; its stock ones (kustomize/stage in its module: what
# kwokctl gives a cluster) are copied from the module into one config file:
# nodes initialised and kept alive by Lease, pods made Running at once, and
# deleted ones removed.
build_kwok() {
	local out stages start mod f
	out="$(kwok_bin_path)"
	stages="$(kwok_stages_path)"
	if [ -x "$out" ] && [ -s "$stages" ]; then
		log "kwok $KWOK_VERSION: cached at $out"
		return 0
	fi
	go_install_tool kwok "$KWOK_VERSION" "$out" "-s -w" "sigs.k8s.io/kwok/cmd/kwok"
	mod="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
	: >"$stages.tmp.$$"
	for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
		pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
		[ -s "$mod/$f" ] || die "kwok $KWOK_VERSION: no stage $f in $mod"
		{ echo "---"; cat "$mod/$f"; } >>"$stages.tmp.$$"
	done
	mv -f "$stages.tmp.$$" "$stages"
	log "built kwok in $((SECONDS - start)) s -> $out ($(du -h "$out" | cut -f1)), stages $stages"
	echo "$(date -u +%FT%TZ) tools kwok $KWOK_VERSION $((SECONDS - start))s" >>"$CACHE_DIR/build-times.log"
}

# ---------- Kubernetes ----------
prepare_kube_module() {
	local dir="$CACHE_DIR/work/kubernetes-$KUBERNETES_VERSION"
	# .ready-golines: modules prepared before the go line came from the release are remade.
	if [ ! -f "$dir/.ready-golines" ]; then
		log "preparing Kubernetes build module in $dir"
		rm -rf "$dir"
		mkdir -p "$dir"
		local kmod
		kmod="$(cd "$dir" && GOTOOLCHAIN=local go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
		[ -n "$kmod" ] && [ -f "$kmod" ] ||
			die "could not download k8s.io/kubernetes@$KUBERNETES_VERSION's go.mod from the module proxy"
		local stver="v0.${KUBERNETES_VERSION#v1.}"
		local staging
		staging="$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$kmod" | sed 's/^replace //' | sort -u)"
		[ -n "$staging" ] || die "found no '=> ./staging/' replace lines in $kmod"
		# The release's own go and godebug lines: a main module's go line bounds the
		# toolchain that may build it (v1.34's release Go is 1.24), and its godebug
		# line sets the runtime defaults the release ships with.
		local golines
		golines="$(grep -E '^(go|godebug) ' "$kmod")"
		[ -n "$golines" ] || die "found no go line in $kmod"
		{
			echo "module kpath.local/lab/kubernetes"
			echo
			echo "$golines"
			echo
			echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
			echo
			echo "// Staging modules: k8s.io/kubernetes replaces them with ./staging/..., which is not"
			echo "// in the module zip; use the published $stver modules instead."
			echo "replace ("
			for m in $staging; do echo "	$m => $m $stver"; done
			echo ")"
		} >"$dir/go.mod"
		cat >"$dir/tools.go" <<'EOF'
//go:build tools

// Package tools pins the Kubernetes commands so that go mod tidy keeps their deps.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
EOF
		log "  $(echo "$staging" | wc -l) staging modules replaced by $stver; running go mod tidy (downloads modules)"
		(cd "$dir" && GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod tidy) >"$dir/prepare.log" 2>&1 ||
			{ tail -n 30 "$dir/prepare.log" >&2; die "go mod tidy failed for Kubernetes (log: $dir/prepare.log)"; }
		touch "$dir/.ready-golines"
	fi
	MODDIR="$dir"
}

kube_ldflags() {
	local v="$KUBERNETES_VERSION" major minor date
	major="${v#v}"
	major="${major%%.*}"
	minor="${v#v*.}"
	minor="${minor%%.*}"
	# Build date = the release's commit time from the proxy (reproducible cache key).
	date="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$v.info" 2>/dev/null || true)"
	[ -n "$date" ] || date="1970-01-01T00:00:00Z"
	local f=""
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		f+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor"
		f+=" -X $p.gitTreeState=clean -X $p.buildDate=$date"
	done
	echo "${f# }"
}

build_one() {
	local comp="$1" out tmp dir logfile start pkg cgo=0
	[ "$comp" != jaeger ] || { build_jaeger; return; }
	[ "$comp" != helm ] || { build_helm; return; }
	[ "$comp" != kwok ] || { build_kwok; return; }
	out="$(bin_path "$comp")"
	if [ -x "$out" ]; then
		log "$comp ($FLAVOUR $(version_of "$comp")): cached at $out"
		return 0
	fi
	mkdir -p "$(dirname "$out")"
	local tc
	tc="$(toolchain_of "$comp")"
	local -a args=(build -p "$PARALLEL")
	local ldflags=""
	if [ "$comp" = etcd ]; then
		prepare_etcd_module
		dir="$MODDIR"
		pkg=.
	else
		prepare_kube_module
		dir="$MODDIR"
		pkg="k8s.io/kubernetes/cmd/$comp"
		ldflags="$(kube_ldflags)"
	fi
	if [ "$FLAVOUR" = release ]; then
		args+=(-trimpath)
		[ "$comp" = etcd ] || args+=(-tags "selinux,notest,grpcnotrace")
		args+=(-ldflags "all=$ldflags -s -w")
		[ "$comp" = kubelet ] && cgo=1
	else
		args+=(-ldflags "$ldflags")
	fi
	if [ "$cgo" = 1 ] && ! command -v gcc >/dev/null; then
		log "kubelet release build uses cgo: installing gcc libc6-dev"
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc libc6-dev ||
			{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc libc6-dev; }; } >"$CACHE_DIR/work/apt-gcc.log" 2>&1 ||
			die "could not install gcc (needed for the cgo kubelet release build); see $CACHE_DIR/work/apt-gcc.log"
	fi
	tmp="$out.tmp.$$"
	logfile="$CACHE_DIR/work/build-$FLAVOUR-$comp.log"
	: >"$logfile"
	log "building $comp $(version_of "$comp") ($FLAVOUR, GOTOOLCHAIN=$tc, CGO_ENABLED=$cgo, -p $PARALLEL); log: $logfile"
	start=$SECONDS
	echo "+ (cd $dir && GOTOOLCHAIN=$tc CGO_ENABLED=$cgo go ${args[*]} -o $tmp $pkg)" >>"$logfile"
	run_with_progress "$comp build" "$logfile" env -C "$dir" GOTOOLCHAIN="$tc" CGO_ENABLED="$cgo" go "${args[@]}" -o "$tmp" "$pkg"
	# The binary must come from the intended toolchain.
	local want="$tc"
	[ "$want" != local ] || want="$(go env GOVERSION)"
	go version "$tmp" | grep -qF ": $want" || { rm -f "$tmp"; die "$comp: built with $(go version "$tmp"), expected $want"; }
	mv -f "$tmp" "$out"
	local secs=$((SECONDS - start))
	log "built $comp in ${secs} s -> $out ($(du -h "$out" | cut -f1))"
	echo "$(date -u +%FT%TZ) $FLAVOUR $comp $(version_of "$comp") ${secs}s" >>"$CACHE_DIR/build-times.log"
}

main() {
	local total=$SECONDS c tc seen=" "
	resolve_release_toolchains
	for c in "${COMPONENTS[@]}"; do
		tc="$(toolchain_of "$c")"
		[[ "$seen" != *" $tc "* ]] || continue
		seen+="$tc "
		[ "$tc" != local ] || continue
		log "release flavour: Go toolchain $tc (downloaded from the module proxy on first use)"
		run_with_progress "toolchain $tc download" "$CACHE_DIR/work/toolchain.log" env GOTOOLCHAIN="$tc" go version
	done
	log "flavour $FLAVOUR; local Go: $(go version); components: ${COMPONENTS[*]}"
	for c in "${COMPONENTS[@]}"; do build_one "$c"; done
	log "done ($FLAVOUR) in $((SECONDS - total)) s"
}

# Everything runs from main (parsed in full first), so editing this file while
# a build runs cannot make bash execute a half-read line.
main "$@"
exit
