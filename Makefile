# kpath. `make demo` runs kpath on the local lab; `make test` runs every test.
.PHONY: all build generate test unit-test fuzz soak test-versions e2e lab-up lab-down demo clean

GO ?= go
BPF_CLANG ?= clang-16
export BPF_CLANG

all: build

build:
	$(GO) build -o bin/kpath-agent ./cmd/agent

# Regenerates bpf/kpath_x86_bpfel.{go,o} from bpf/kpath.bpf.c (needs clang-16
# and libbpf-dev: apt-get install clang-16 libbpf-dev). The output is committed.
generate:
	$(GO) generate ./bpf/

# Everything: vet, unit and BPF tests, then the end-to-end tests on the lab
# in both flavours (normal builds, then release-like stripped builds).
test: build unit-test e2e

unit-test:
	$(GO) vet ./...
	$(GO) test -count=1 ./...
	test/fuzz.sh

# The write and pod e2e on each Kubernetes × etcd cell in both flavours, one
# lab at a time; writes docs/versions.md (test/versions.sh: KPATH_VERSION_CELLS,
# KPATH_VERSION_FLAVOURS).
test-versions: build
	test/versions.sh

# Every fuzz target for 2 minutes (make test runs them for 5 s each).
fuzz:
	FUZZTIME=$${FUZZTIME:-2m} FUZZ_PARALLEL=$${FUZZ_PARALLEL:-2} test/fuzz.sh

e2e:
	test/e2e/run.sh

# The long reliability tests on the lab (normal flavour; docs/reliability.md):
# the agent killed -9 until 10 000 pods have lived and died, and its collector
# down 10 minutes then stalled 2. KPATH_SOAK_LIFECYCLES, KPATH_SOAK_OUTAGE,
# KPATH_SOAK_STALL shorten them.
soak: build
	test/lab/up.sh
	KPATH_E2E=1 KPATH_SOAK=1 KPATH_SOAK_LIFECYCLES=$${KPATH_SOAK_LIFECYCLES:-10000} $(GO) test -p 1 -count=1 -v -timeout 12h \
		-run 'TestAgentKilledUnderLoadHurtsNothing|TestSoakExporterOutageAndStall' ./test/e2e/

# Local single-node Kubernetes lab (test/lab/README.md).
# KPATH_LAB_FLAVOUR=release make lab-up   uses release-like etcd + kube-apiserver.
lab-up:
	test/lab/up.sh

lab-down:
	test/lab/down.sh

demo: build
	test/lab/demo.sh

clean:
	rm -rf bin

# Overhead benchmark (root): own etcd + kube-apiserver on free ports, ConfigMap
# creates with no agent, with kpath-agent and with the apiserver's native
# tracing, interleaved; prints ratios (docs/benchmarks.md).
# BENCH_ARGS="--rounds=5 --duration=30s" make bench
.PHONY: bench
bench: build
	$(GO) run ./test/bench $(BENCH_ARGS)

# The agent as a container image on the lab, without Docker or a registry:
# a static build, written as an OCI tarball by the lab's imagetool and
# imported into the lab's containerd as kpath.local/kpath-agent:dev
# (deploy/daemonset/overlays/lab uses it with imagePullPolicy: Never).
.PHONY: image-lab
LAB_ENV ?= $(or $(KPATH_LAB_DIR),$(HOME)/.cache/kpath/lab)/env
image-lab:
	mkdir -p bin/image
	CGO_ENABLED=0 $(GO) build -o bin/image/kpath-agent ./cmd/agent
	. $(LAB_ENV) && \
	"$$KPATH_LAB_IMAGETOOL" build --binary bin/image/kpath-agent --path /usr/local/bin/kpath-agent \
		--ref kpath.local/kpath-agent:dev --out bin/image/kpath-agent.tar && \
	ctr -a "$$KPATH_LAB_CONTAINERD_SOCK" -n k8s.io images import bin/image/kpath-agent.tar
