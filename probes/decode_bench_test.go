package probes

import (
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/kpath/kpath/bpf"
)

// BenchmarkDecode is the reader's decoding of one ring-buffer record into
// an Event, for the default rows of one write's path (kube-apiserver's and
// etcd's), their strings as the BPF program fills them. One op is one
// record: with BenchmarkWrite's join per event, what the agent spends per
// event before export.
func BenchmarkDecode(b *testing.B) {
	strs := map[Field]string{FieldMethod: "POST", FieldPath: "/api/v1/namespaces/bench/configmaps", FieldKey: "/registry/configmaps/bench/cm-123456",
		FieldVerb: "POST", FieldSubresource: "", FieldNamespace: "bench", FieldName: "cm-123456"}
	tr := &Tracer{clock: newClock(), reads: map[retiredKey]*ReadStats{}}
	var raws [][]byte
	for i := range Catalogue {
		r := &Catalogue[i]
		if r.Detail || (r.Component != KubeAPIServer && r.Component != Etcd) || r.Only != nil {
			continue
		}
		fields, err := assignSlots(r)
		if err != nil {
			b.Fatal(err)
		}
		slot := len(tr.slots)
		tr.slots = append(tr.slots, atomic.Pointer[slotInfo]{})
		tr.slots[slot].Store(&slotInfo{row: r, proc: &Process{PID: 7, Component: r.Component}, fields: fields})
		raw := make([]byte, unsafe.Sizeof(bpf.Event{}))
		be := (*bpf.Event)(unsafe.Pointer(&raw[0]))
		be.Slot, be.Pid, be.Goid, be.StartNs, be.EndNs = uint32(slot), 7, 42, 1_000_000, 1_050_000
		for _, c := range append(append([]Capture{}, r.Entry...), r.Exit...) {
			s := fields[c.Field]
			if c.Field.IsString() {
				v := strs[c.Field]
				copy(unsafe.Slice((*byte)(unsafe.Pointer(&be.Str[s][0])), bpf.StrLen), v)
				be.StrLen[s] = uint16(len(v))
			} else {
				be.Num[s] = 1234
			}
		}
		raws = append(raws, raw)
	}
	if len(raws) == 0 {
		b.Fatal("no rows")
	}
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for i := 0; i < b.N; i++ {
		if _, ok := tr.decode(raws[i%len(raws)]); ok {
			n++
		}
	}
	if n == 0 {
		b.Fatal("nothing decoded")
	}
}
