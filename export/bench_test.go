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

// BenchmarkOTLPSpans is the conversion of a write's spans to OTLP protos.
func BenchmarkOTLPSpans(b *testing.B) {
	tr := podTrace(1)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		for j := range tr.Spans {
			_ = spanProto(&tr.Spans[j])
		}
	}
}
