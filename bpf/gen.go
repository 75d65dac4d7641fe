// Package bpf holds kpath's BPF program and its bpf2go output. The generated
// files are committed so that building and testing kpath needs no clang;
// `make generate` rebuilds them.
package bpf

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc ${BPF_CLANG} -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target amd64 -type event -type probe_config -type capture -type stash_key -type reg -type cap_kind -type mode -type counter -type cfg_flag kpath kpath.bpf.c
