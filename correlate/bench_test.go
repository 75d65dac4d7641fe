package correlate

import (
	"testing"
	"time"

	"github.com/kpath/kpath/probes"
)

// BenchmarkWrite is the agent's join of one write from the default rows
// (request, storage write, etcd txn, apply), emitted: what the agent spends
// per write before export (docs/benchmarks.md gives the agent's whole CPU).
func BenchmarkWrite(b *testing.B) {
	var n int
	w := NewWrites(Options{}, func(Write) { n++ })
	var evs [][]probes.Event
	for i := 0; i < 1024; i++ {
		var keep []probes.Event
		for _, ev := range oneWrite("/registry/configmaps/ns/cm", int64(i+1), float64(i)*0.01, uint64(10*i)) {
			switch ev.Stage {
			case probes.StageEtcdRequest, probes.StageWALFsync, probes.StageAdmission:
				continue
			}
			keep = append(keep, ev)
		}
		evs = append(evs, keep)
	}
	b.ReportAllocs()
	b.ResetTimer()
	now := at(0)
	for i := 0; i < b.N; i++ {
		shift := time.Duration(i/1024) * time.Second
		for _, ev := range evs[i%1024] {
			ev.Start, ev.End = ev.Start.Add(shift), ev.End.Add(shift)
			ev.Revision += int64(i/1024) * 1024
			w.Add(ev, now)
		}
		if i%64 == 63 {
			now = now.Add(100 * time.Millisecond)
			w.Flush(now)
		}
	}
	w.Flush(now.Add(time.Hour))
	b.StopTimer()
	if n != b.N {
		b.Fatalf("%d writes emitted for %d", n, b.N)
	}
}
