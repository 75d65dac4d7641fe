package probes

import (
	"bytes"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/kpath/kpath/bpf"
)

// Bad input never takes the agent down: whatever bytes an executable or a
// ring-buffer record holds, reading them gives an error or a counted drop,
// never a panic. `make test` runs each target briefly (-fuzztime in
// test/fuzz.sh); `make fuzz` runs them longer. Seeds are in testdata/fuzz.

// FuzzOpenBinary feeds OpenBinary any file, and reads every function's
// entry site and returns from what it accepts.
func FuzzOpenBinary(f *testing.F) {
	f.Add([]byte("#!/bin/sh\nexec kube-apiserver\n"))
	f.Add([]byte("\x7fELF\x02\x01\x01"))
	if self, err := os.Executable(); err == nil {
		// A real Go executable, cut where the tables begin to matter.
		if b, err := os.ReadFile(self); err == nil {
			f.Add(b[:min(len(b), 64<<10)])
		}
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "exe")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := OpenBinary(path)
		if err != nil {
			return
		}
		defer b.Close()
		n := 0
		for name := range b.funcs {
			fn, err := b.Func(name)
			if err != nil {
				continue
			}
			b.EntrySite(fn)
			b.Returns(fn)
			if n++; n > 64 {
				break
			}
		}
	})
}

// FuzzInstructionLength is the x86-64 length decoder the RET sweep and the
// call-site search walk functions with.
func FuzzInstructionLength(f *testing.F) {
	f.Add([]byte{0xc3})                         // RET
	f.Add([]byte{0x55, 0x48, 0x89, 0xe5})       // PUSH RBP; MOV RBP, RSP
	f.Add([]byte{0xe8, 0, 0, 0, 0})             // CALL rel32
	f.Add([]byte{0xc5, 0xfd, 0x6f, 0x04, 0x24}) // VEX VMOVDQA
	f.Add([]byte{0x66, 0x0f, 0x1f, 0x44, 0, 0}) // NOPW
	f.Fuzz(func(t *testing.T, code []byte) {
		n, _, err := binDecode(code)
		if err == nil && (n <= 0 || n > len(code)) {
			t.Fatalf("binDecode(% x) = %d bytes of %d", code, n, len(code))
		}
	})
}

// FuzzDecodeEvent feeds the ring-buffer decoder any record, as if from a
// slot of every catalogue row in turn: the record's first bytes come from
// the fuzzer, the rest are zero, and short records are tried as they are.
func FuzzDecodeEvent(f *testing.F) {
	f.Add([]byte{}, uint8(0))
	f.Add([]byte{1, 2, 3}, uint8(1))
	f.Add(bytes.Repeat([]byte{0xff}, 256), uint8(2))
	size := int(unsafe.Sizeof(bpf.Event{}))
	f.Fuzz(func(t *testing.T, head []byte, row uint8) {
		r := &Catalogue[int(row)%len(Catalogue)]
		fields, err := assignSlots(r)
		if err != nil {
			return
		}
		tr := &Tracer{clock: newClock(), reads: map[retiredKey]*ReadStats{}}
		tr.slots = make([]atomic.Pointer[slotInfo], 1)
		tr.slots[0].Store(&slotInfo{row: r, proc: &Process{PID: 7, Component: r.Component}, fields: fields})
		tr.decode(head)
		raw := make([]byte, size)
		copy(raw, head)
		be := (*bpf.Event)(unsafe.Pointer(&raw[0]))
		be.Slot, be.Pid = 0, 7 // the slot and pid of the row: the record reaches it
		tr.decode(raw)
	})
}
