# kpath. `make demo` runs kpath on the local lab; `make test` runs every test.
.PHONY: all build generate test unit-test e2e lab-up lab-down demo clean

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

e2e:
	test/e2e/run.sh

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
