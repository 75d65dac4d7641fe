package export

import (
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestMetrics(t *testing.T) {
	m := NewMetrics(nil)
	m.SetProbeHits("etcd", "etcd-txn", 40)
	m.SetProbeHits("etcd", "etcd-txn", 42)
	m.AddProbeHits("kubelet", "sync-pod", 3)
	m.AddProbeHits("kubelet", "sync-pod", 4)
	m.Drop("ringbuf_full", 5)
	m.AttachError("kubelet", "sync-pod")
	m.SetAttached("kube-apiserver", 4242, 9)
	m.SetAttached("kubelet", 7, 3)
	m.ForgetProcess("kubelet", 7)
	m.TraceDone(true)
	m.TraceDone(false)
	m.TraceDone(false)
	m.ExportedSpans("otlp", 10)
	m.DroppedSpans("otlp", DropQueueFull, 2)
	m.ObserveStage("etcd-txn", "pods", "etcd", 3*time.Millisecond)

	out := scrape(t, m)
	for _, want := range []string{
		`kpath_probe_hits_total{component="etcd",probe="etcd-txn"} 42`,
		`kpath_probe_hits_total{component="kubelet",probe="sync-pod"} 7`,
		`kpath_events_dropped_total{reason="ringbuf_full"} 5`,
		`kpath_attach_errors_total{component="kubelet",probe="sync-pod"} 1`,
		`kpath_attached_probes{component="kube-apiserver",pid="4242"} 9`,
		`kpath_traces_total{complete="false"} 2`,
		`kpath_traces_total{complete="true"} 1`,
		`kpath_export_spans_total{exporter="otlp"} 10`,
		`kpath_export_dropped_spans_total{exporter="otlp",reason="queue_full"} 2`,
		`kpath_stage_duration_seconds_bucket{component="etcd",resource="pods",stage="etcd-txn",le="0.0025"} 0`,
		`kpath_stage_duration_seconds_bucket{component="etcd",resource="pods",stage="etcd-txn",le="0.005"} 1`,
		`kpath_stage_duration_seconds_bucket{component="etcd",resource="pods",stage="etcd-txn",le="60"} 1`,
		`# TYPE kpath_probe_hits_total counter`,
		`go_goroutines`, // NewMetrics(nil) brings the runtime collectors
	} {
		if !strings.Contains(out, want) {
			t.Errorf("scrape lacks %s", want)
		}
	}
	if strings.Contains(out, `pid="7"`) {
		t.Error("ForgetProcess left the series behind")
	}
}

func TestMetricsGivenRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.TraceDone(true)
	if n, err := testutil.GatherAndCount(reg, MetricTraces); err != nil || n != 1 {
		t.Errorf("GatherAndCount = %d, %v", n, err)
	}
	if out := scrape(t, m); strings.Contains(out, "go_goroutines") || !strings.Contains(out, MetricTraces) {
		t.Errorf("handler should serve exactly the given registry:\n%s", out)
	}

	// A Registerer that cannot be gathered still gets a working handler.
	wrapped := NewMetrics(prometheus.WrapRegistererWith(prometheus.Labels{"agent": "a"}, prometheus.NewRegistry()))
	wrapped.Drop("decode_error", 1)
	if out := scrape(t, wrapped); !strings.Contains(out, `kpath_events_dropped_total{reason="decode_error"} 1`) {
		t.Errorf("wrapped registerer scrape:\n%s", out)
	}
}

func TestNilMetricsIsNoop(t *testing.T) {
	var m *Metrics
	m.AddProbeHits("a", "b", 1)
	m.SetProbeHits("a", "b", 1)
	m.Drop("x", 1)
	m.AttachError("a", "b")
	m.SetAttached("a", 1, 1)
	m.ForgetProcess("a", 1)
	m.TraceDone(true)
	m.ExportedSpans("otlp", 1)
	m.DroppedSpans("otlp", "x", 1)
	m.ObserveStage("s", "r", "c", time.Second)
}

// Webhook calls are counted by name and type; past maxWebhooks names the
// rest share "other", so a cluster's series stay bounded. Reconciles'
// controllers are capped alike.
func TestWebhookAndControllerLabelsAreCapped(t *testing.T) {
	m := NewMetrics(nil)
	m.ObserveWebhook("pods.sidecar.example.com", "admit", 40*time.Millisecond)
	for i := range maxWebhooks + 5 {
		m.ObserveWebhook(fmt.Sprintf("w%d.example.com", i), "validating", time.Millisecond)
	}
	for i := range maxControllers + 3 {
		m.ObserveReconcile("op", fmt.Sprintf("c%d", i), "ok", time.Millisecond, -1)
	}
	out := scrape(t, m)
	for _, want := range []string{
		`kpath_webhook_duration_seconds_count{type="admit",webhook="pods.sidecar.example.com"} 1`,
		`kpath_webhook_duration_seconds_count{type="validating",webhook="other"} 6`,
		`kpath_reconcile_total{component="op",controller="other",result="ok"} 3`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if n := strings.Count(out, "kpath_webhook_duration_seconds_count{"); n != maxWebhooks+1 {
		t.Errorf("%d webhook series, want %d", n, maxWebhooks+1)
	}
}
