package probes

import (
	"os"
	"testing"

	"github.com/cilium/ebpf/link"

	"github.com/kpath/kpath/bpf"
)

var benchSink [64]int

// benchWork has a frame and a stack check, as the functions kpath probes.
//
//go:noinline
func benchWork(x int) int {
	var buf [32]int
	for i := range buf {
		buf[i] = x + i
	}
	benchSink[x&63] = buf[x&31]
	return buf[3]
}

// BenchmarkUprobeSite times one call of a probed function with the kpath
// BPF program (a point event, no captures) on each kind of site: none, the
// function's first instruction, the frame-pointer push after the stack
// check (Binary.EntrySite), and its RETs. Root only:
//
//	go test -run '^$' -bench UprobeSite ./probes/
//
// On the 2-vCPU VM of docs/benchmarks.md (2026-11-29): none 33 ns, first
// instruction 23.5 µs, push 0.75 µs, RET 21.5 µs a call: the kernel
// emulates a PUSH, and single-steps the others out of line.
func BenchmarkUprobeSite(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("skipped: loading BPF needs root")
	}
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	bin, err := OpenBinary(exe)
	if err != nil {
		b.Fatal(err)
	}
	defer bin.Close()
	fn, err := bin.Func("github.com/kpath/kpath/probes.benchWork")
	if err != nil {
		b.Fatal(err)
	}
	push, atPush, err := bin.EntrySite(fn)
	if err != nil || !atPush {
		b.Fatalf("benchWork has no push site (%v): the compiler changed its prologue", err)
	}
	rets, err := bin.Returns(fn)
	if err != nil || len(rets) == 0 {
		b.Fatalf("benchWork RETs: %v %v", rets, err)
	}
	objs, err := bpf.Load(0)
	if err != nil {
		b.Fatal(err)
	}
	defer objs.Close()
	if err := objs.SetConfig(0, &bpf.ProbeConfig{Mode: bpf.ModePoint}); err != nil {
		b.Fatal(err)
	}
	ex, err := link.OpenExecutable(exe)
	if err != nil {
		b.Fatal(err)
	}
	for _, site := range []struct {
		name string
		offs []uint64
	}{{"none", nil}, {"first-instruction", []uint64{fn.FileOffset}}, {"push", []uint64{push}}, {"ret", rets}} {
		b.Run(site.name, func(b *testing.B) {
			for _, off := range site.offs {
				l, err := ex.Uprobe("", objs.Program(), &link.UprobeOptions{Address: off, PID: os.Getpid()})
				if err != nil {
					b.Fatal(err)
				}
				defer l.Close()
			}
			before, _ := objs.Hits(0)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				benchWork(i)
			}
			b.StopTimer()
			after, _ := objs.Hits(0)
			if len(site.offs) > 0 && after-before < uint64(b.N) {
				b.Fatalf("%d hits for %d calls: the probe did not fire", after-before, b.N)
			}
		})
	}
}
