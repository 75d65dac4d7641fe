package export

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kpath/kpath/correlate"
	"github.com/kpath/kpath/export/otlptest"
)

func newOTLP(t *testing.T, cfg OTLPConfig, m *Metrics) Exporter {
	t.Helper()
	cfg.Insecure = true
	e, err := NewOTLP(context.Background(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(context.Background()) })
	return e
}

func waitSpans(t *testing.T, r *otlptest.Receiver, n int) []*tracepb.Span {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	spans, err := r.WaitSpans(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	return spans
}

func attrMap(kvs []*commonpb.KeyValue) map[string]any {
	m := map[string]any{}
	for _, kv := range kvs {
		switch v := kv.GetValue().GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.GetKey()] = v.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.GetKey()] = v.IntValue
		case *commonpb.AnyValue_BoolValue:
			m[kv.GetKey()] = v.BoolValue
		default:
			m[kv.GetKey()] = v
		}
	}
	return m
}

func droppedSpans(m *Metrics, reason string) float64 {
	return testutil.ToFloat64(m.exportDropped.WithLabelValues(otlpExporterName, reason))
}

func TestOTLPDeliversSpans(t *testing.T) {
	r := otlptest.Start(t)
	m := NewMetrics(nil)
	e := newOTLP(t, OTLPConfig{
		Endpoint:      r.Addr(),
		FlushInterval: 20 * time.Millisecond,
		Resource:      map[string]string{"k8s.node.name": "node-1"},
	}, m)
	traces := []correlate.Trace{podTrace(1), podTrace(2)}
	for _, tr := range traces {
		e.Export(tr)
	}
	got := waitSpans(t, r, 8)
	if len(got) != 8 {
		t.Fatalf("received %d spans, want 8", len(got))
	}

	byID := map[string]*tracepb.Span{}
	for _, s := range got {
		byID[string(s.GetTraceId())+string(s.GetSpanId())] = s
	}
	for _, tr := range traces {
		for _, want := range tr.Spans {
			s := byID[string(want.TraceID[:])+string(want.SpanID[:])]
			if s == nil {
				t.Fatalf("span %x/%x not received", want.TraceID, want.SpanID)
			}
			var wantParent []byte
			if want.Parent != (correlate.SpanID{}) {
				wantParent = want.Parent[:]
			}
			if !bytes.Equal(s.GetParentSpanId(), wantParent) {
				t.Errorf("%s: parent %x, want %x", want.Name, s.GetParentSpanId(), wantParent)
			}
			if s.GetName() != want.Name ||
				s.GetStartTimeUnixNano() != uint64(want.Start.UnixNano()) ||
				s.GetEndTimeUnixNano() != uint64(want.End.UnixNano()) {
				t.Errorf("got %q %d..%d, want %q %d..%d", s.GetName(), s.GetStartTimeUnixNano(), s.GetEndTimeUnixNano(),
					want.Name, want.Start.UnixNano(), want.End.UnixNano())
			}
			attrs := attrMap(s.GetAttributes())
			if len(attrs) != len(want.Attributes) {
				t.Errorf("%s: attributes %v, want %v", want.Name, attrs, want.Attributes)
			}
			for _, a := range want.Attributes {
				if attrs[a.Key] != a.Value {
					t.Errorf("%s: attribute %s = %#v, want %#v", want.Name, a.Key, attrs[a.Key], a.Value)
				}
			}
		}
	}

	// Each span is under its component's resource (otlpwire_test.go checks
	// every attribute of it).
	for _, rs := range r.ResourceSpans() {
		res := attrMap(rs.GetResource().GetAttributes())
		if res["k8s.node.name"] != "node-1" || res["service.instance.id"] != "node-1/"+res["service.name"].(string) {
			t.Errorf("resource attributes = %v", res)
		}
		for _, ss := range rs.GetScopeSpans() {
			if ss.GetScope().GetName() != ScopeName {
				t.Errorf("scope = %q, want %q", ss.GetScope().GetName(), ScopeName)
			}
			for _, s := range ss.GetSpans() {
				if c := attrMap(s.GetAttributes())[correlate.AttrComponent]; c != res["service.name"] {
					t.Errorf("span %q of %v under service %v", s.GetName(), c, res["service.name"])
				}
			}
		}
	}
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(m.exportSpans.WithLabelValues(otlpExporterName)); n != 8 {
		t.Errorf("%s = %v, want 8", MetricExportSpans, n)
	}
}

func TestOTLPBatchesAndCloseFlushes(t *testing.T) {
	r := otlptest.Start(t)
	// The ticker never fires: only full batches and Close send anything.
	e := newOTLP(t, OTLPConfig{Endpoint: r.Addr(), BatchSize: 3, FlushInterval: time.Hour}, nil)
	for i := range 5 {
		e.Export(podTrace(byte(i))) // 20 spans: six full batches and two left over
	}
	waitSpans(t, r, 18)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(r.Spans()); n != 20 {
		t.Fatalf("received %d spans after Close, want 20", n)
	}
	for _, rs := range r.ResourceSpans() {
		if n := len(rs.GetScopeSpans()[0].GetSpans()); n > 3 {
			t.Errorf("batch of %d spans, BatchSize is 3", n)
		}
	}
	if r.Requests() != 7 {
		t.Errorf("%d requests, want 7", r.Requests())
	}
	e.Export(podTrace(9)) // after Close: dropped, no panic
}

func deadEndpoint(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestOTLPDeadEndpointNeverBlocks(t *testing.T) {
	m := NewMetrics(nil)
	e, err := NewOTLP(context.Background(), OTLPConfig{
		Endpoint: deadEndpoint(t), Insecure: true, QueueSize: 8, BatchSize: 4, FlushInterval: 10 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler),
	}, m)
	if err != nil {
		t.Fatalf("NewOTLP must not fail on a dead endpoint: %v", err)
	}

	const traces = 10000
	start := time.Now()
	for i := range traces {
		e.Export(podTrace(byte(i)))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("%d Exports took %v", traces, d)
	}
	if droppedSpans(m, DropQueueFull) == 0 {
		t.Error("a full queue dropped nothing")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start = time.Now()
	err = e.Close(ctx)
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v with a 500ms context", d)
	}
	if err == nil {
		t.Error("Close reported a clean flush to a dead endpoint")
	}
	total := droppedSpans(m, DropQueueFull) + droppedSpans(m, DropExportFailed) + droppedSpans(m, DropShutdown)
	if total != traces*4 {
		t.Errorf("dropped %v spans in all, want every one of %d counted", total, traces*4)
	}
}

func waitDropped(t *testing.T, m *Metrics, reason string, n float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for droppedSpans(m, reason) < n {
		if time.Now().After(deadline) {
			t.Fatalf("dropped %v spans for %s, want %v", droppedSpans(m, reason), reason, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestOTLPFailedBatchesLogOnce(t *testing.T) {
	r := otlptest.Start(t)
	r.Fail(status.Error(codes.PermissionDenied, "unknown tenant")) // not retried: one request per batch
	logs := &logRecorder{}
	m := NewMetrics(nil)
	e := newOTLP(t, OTLPConfig{Endpoint: r.Addr(), BatchSize: 4, FlushInterval: 10 * time.Millisecond, Logger: slog.New(logs)}, m)
	for i := range 5 {
		e.Export(podTrace(byte(i)))
	}
	waitDropped(t, m, DropExportFailed, 20)
	if r.Requests() != 5 {
		t.Errorf("%d requests, want 5", r.Requests())
	}
	recs := logs.all()
	if len(recs) != 1 {
		t.Fatalf("%d log records for one repeated error, want 1", len(recs))
	}
	if v, ok := attrOf(recs[0], "endpoint"); !ok || v.String() != r.Addr() {
		t.Errorf("log names endpoint %v, want %s", v, r.Addr())
	}
	if v, _ := attrOf(recs[0], "error"); !strings.Contains(v.String(), "unknown tenant") {
		t.Errorf("logged error %v", v)
	}
}

func TestOTLPRetriesThenDrops(t *testing.T) {
	r := otlptest.Start(t)
	r.Fail(status.Error(codes.Unavailable, "collector overloaded"))
	m := NewMetrics(nil)
	e := newOTLP(t, OTLPConfig{
		Endpoint: r.Addr(), FlushInterval: 10 * time.Millisecond,
		ExportTimeout: 600 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	}, m)
	start := time.Now()
	e.Export(podTrace(1))
	waitDropped(t, m, DropExportFailed, 4)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("batch dropped after %v, ExportTimeout is 600ms", d)
	}
	if r.Requests() < 2 {
		t.Errorf("%d requests: an Unavailable batch was not retried", r.Requests())
	}

	r.Fail(nil) // the collector recovers: spans flow again
	e.Export(podTrace(2))
	waitSpans(t, r, 4)
}

func TestOTLPCountsRejectedSpans(t *testing.T) {
	r := otlptest.Start(t)
	r.Reject(1, "span too old")
	logs := &logRecorder{}
	m := NewMetrics(nil)
	e := newOTLP(t, OTLPConfig{Endpoint: r.Addr(), FlushInterval: 10 * time.Millisecond, Logger: slog.New(logs)}, m)
	e.Export(podTrace(1))
	waitDropped(t, m, DropRejected, 1)
	if n := testutil.ToFloat64(m.exportSpans.WithLabelValues(otlpExporterName)); n != 3 {
		t.Errorf("%s = %v, want the 3 spans the collector kept", MetricExportSpans, n)
	}
	recs := logs.all()
	if len(recs) != 1 {
		t.Fatalf("%d log records, want 1", len(recs))
	}
	if v, _ := attrOf(recs[0], "error"); !strings.Contains(v.String(), "span too old") {
		t.Errorf("logged error %v does not give the collector's reason", v)
	}
}

func TestNewOTLPConfig(t *testing.T) {
	for _, cfg := range []OTLPConfig{
		{},
		{Endpoint: "collector"},
		{Endpoint: "ftp://collector:4317"},
		{Endpoint: "http://"},
		{Endpoint: "collector:4317", QueueSize: -1},
		{Endpoint: "collector:4317", FlushInterval: -time.Second},
	} {
		if e, err := NewOTLP(context.Background(), cfg, nil); err == nil {
			e.Close(context.Background())
			t.Errorf("NewOTLP(%+v) succeeded", cfg)
		}
	}
	for _, ep := range []string{"collector.monitoring.svc:4317", "http://127.0.0.1:4317", "[::1]:4317"} {
		e, err := NewOTLP(context.Background(), OTLPConfig{Endpoint: ep, Headers: map[string]string{"x-tenant": "a"}}, nil)
		if err != nil {
			t.Errorf("NewOTLP(%q): %v", ep, err)
			continue
		}
		if err := e.Close(context.Background()); err != nil {
			t.Errorf("Close with nothing queued: %v", err)
		}
	}
}

// TestOTLPSurvivesAStallAndAnOutage: a collector that takes requests and
// never answers, then one that is down, then one back at the same address:
// Export never blocks, every span is delivered or counted by reason, and
// spans flow again without a restart (issue 10, R4; make soak runs it for
// minutes with the agent).
func TestOTLPSurvivesAStallAndAnOutage(t *testing.T) {
	r := otlptest.Start(t)
	m := NewMetrics(nil)
	e := newOTLP(t, OTLPConfig{
		Endpoint: r.Addr(), QueueSize: 16, BatchSize: 4, FlushInterval: 10 * time.Millisecond,
		ExportTimeout: 300 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	}, m)
	sent := 0
	export := func(n int) time.Duration {
		start := time.Now()
		for i := range n {
			e.Export(podTrace(byte(i)))
		}
		sent += n
		return time.Since(start)
	}
	accounted := func() float64 {
		n := testutil.ToFloat64(m.exportSpans.WithLabelValues(otlpExporterName))
		for _, reason := range []string{DropQueueFull, DropExportFailed, DropShutdown, DropRejected} {
			n += droppedSpans(m, reason)
		}
		return n
	}
	waitAccounted := func(what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for accounted() != float64(4*sent) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v spans delivered or dropped, %d sent", what, accounted(), 4*sent)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	export(1)
	waitSpans(t, r, 4)

	r.Stall()
	if d := export(2000); d > 2*time.Second {
		t.Errorf("2000 Exports to a stalled collector took %v", d)
	}
	waitDropped(t, m, DropExportFailed, 4) // a batch that waited out ExportTimeout
	if droppedSpans(m, DropQueueFull) == 0 {
		t.Error("the queue behind a stalled collector never filled")
	}
	waitAccounted("stalled")
	r.Resume()
	export(1)
	waitSpans(t, r, 8)
	waitAccounted("resumed")

	addr := r.Addr()
	r.Stop()
	failed := droppedSpans(m, DropExportFailed)
	if d := export(200); d > 2*time.Second {
		t.Errorf("200 Exports to a collector that is down took %v", d)
	}
	waitDropped(t, m, DropExportFailed, failed+4)
	// Long enough for gRPC's reconnect backoff to grow past reconnectMax.
	time.Sleep(2 * reconnectMax)
	waitAccounted("down")
	r2 := otlptest.StartAt(t, addr)
	back := time.Now()
	for len(r2.Spans()) == 0 {
		if time.Since(back) > 2*reconnectMax+2*time.Second {
			t.Fatalf("no span reached the collector %v after it came back", time.Since(back))
		}
		export(1)
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("spans flowed again %v after the collector came back", time.Since(back).Round(time.Millisecond))
	waitAccounted("back")
}
