package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseMetrics(t *testing.T) {
	in := `# HELP kpath_probe_hits_total Times each probe fired.
# TYPE kpath_probe_hits_total counter
kpath_probe_hits_total{component="etcd",probe="etcd.wal.fsync"} 7
kpath_probe_hits_total{component="kube-apiserver",probe="apiserver.etcd.put"} 12
kpath_probe_hits_total{component="kube-apiserver",probe="apiserver.request.create"} 1.2e+01
kpath_attached_probes{component="kube-apiserver",pid="42"} 9
kpath_odd{a="x\"y,z}",b=""} 1
go_goroutines 17
`
	m, err := parseMetrics(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.byLabel("kpath_probe_hits_total", "component"); got["kube-apiserver"] != 24 || got["etcd"] != 7 {
		t.Errorf("hits by component = %v", got)
	}
	if got := m.value("kpath_attached_probes", map[string]string{"component": "kube-apiserver", "pid": "42"}); got != 9 {
		t.Errorf("attached = %v", got)
	}
	if got := m.value("kpath_attached_probes", map[string]string{"pid": "43"}); got != 0 {
		t.Errorf("attached pid 43 = %v", got)
	}
	if got := m.value("kpath_odd", map[string]string{"a": `x"y,z}`, "b": ""}); got != 1 {
		t.Errorf("escaped label: %v", got)
	}
	if got := m.value("go_goroutines", nil); got != 17 {
		t.Errorf("unlabelled = %v", got)
	}
	if _, err := parseMetrics(strings.NewReader(`x{a="b} 1`)); err == nil {
		t.Error("unterminated label value: no error")
	}
}

func TestPercentile(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 100; i++ {
		lat = append(lat, time.Duration(i))
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50}, {0.99, 99}, {1, 100}, {0, 1}} {
		if got := percentile(lat, c.q); got != c.want {
			t.Errorf("percentile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile(nil) = %v", got)
	}
}

func TestSummarize(t *testing.T) {
	if s := summarize([]float64{3, 1, 2}); s != (stat{2, 1, 3}) {
		t.Errorf("odd: %+v", s)
	}
	if s := summarize([]float64{4, 1, 2, 3}); s != (stat{2.5, 1, 4}) {
		t.Errorf("even: %+v", s)
	}
}

func TestPaired(t *testing.T) {
	rs := []roundResult{
		{round: 1, mode: modeNone, ok: 100, window: time.Second},
		{round: 1, mode: modeKpath, ok: 90, window: time.Second},
		{round: 2, mode: modeNone, ok: 200, window: time.Second},
		{round: 2, mode: modeKpath, ok: 190, window: time.Second},
		{round: 3, mode: modeKpath, ok: 1, window: time.Second}, // no baseline in round 3
	}
	got := paired(rs, modeKpath, roundResult.throughput)
	if len(got) != 2 || got[0] != 0.9 || got[1] != 0.95 {
		t.Errorf("paired = %v", got)
	}
}
