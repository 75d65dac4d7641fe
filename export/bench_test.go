package export

import "testing"

// BenchmarkRecentExport is what keeping a write's trace for `kubectl kpath
// explain` costs the agent (it runs for every trace).
func BenchmarkRecentExport(b *testing.B) {
	r := NewRecent(RecentOptions{})
	tr := podTrace(1)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		tr.ID[0], tr.ID[1] = byte(i), byte(i>>8)
		r.Export(tr)
	}
}

// BenchmarkOTLPEncode is a write's spans encoded into an upload: what the
// OTLP exporter spends per trace before the network.
func BenchmarkOTLPEncode(b *testing.B) {
	tr := podTrace(1)
	batch := newOTLPBatch(newResources(map[string]string{"k8s.node.name": "node-1"}, ""))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		for j := range tr.Spans {
			batch.add(&tr.Spans[j])
		}
		if i%128 == 127 {
			_ = batch.request()
			batch.reset()
		}
	}
}
