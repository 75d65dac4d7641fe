package export

import (
	"bytes"
	"math"
	"testing"

	collectortracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/kpath/kpath/correlate"
)

// decodeRequest parses what the exporter would send with the generated
// OTLP code: the encoder is right when the collector's decoder agrees.
func decodeRequest(t *testing.T, b []byte) *collectortracepb.ExportTraceServiceRequest {
	t.Helper()
	var req collectortracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		t.Fatalf("the encoded request does not parse: %v", err)
	}
	return &req
}

func TestOTLPWireMatchesTheGeneratedCode(t *testing.T) {
	tr := podTrace(7)
	odd := correlate.Span{TraceID: tid(9), SpanID: sid(9), Name: "", Start: t0, End: t0, Attributes: []correlate.Attribute{
		{Key: correlate.AttrComponent, Value: "etcd"},
		{Key: "negative", Value: int64(-5)},
		{Key: "big", Value: uint64(1 << 63)},
		{Key: "ratio", Value: 0.25},
		{Key: "nan", Value: math.NaN()},
		{Key: "unset", Value: nil},
		{Key: "false", Value: false},
		{Key: "long", Value: string(bytes.Repeat([]byte("k"), 300))},
	}}
	odd.Links = []correlate.Link{
		{TraceID: tid(3), SpanID: sid(4), Attributes: []correlate.Attribute{{Key: correlate.AttrLink, Value: "creator"}, {Key: correlate.AttrRevision, Value: int64(42)}}},
		{TraceID: tid(5), SpanID: sid(6)},
	}
	tr.Spans = append(tr.Spans, odd)

	b := newOTLPBatch(newResources(map[string]string{"k8s.node.name": "node-1"}, "v9"))
	for i := range tr.Spans {
		b.add(&tr.Spans[i])
	}
	req := decodeRequest(t, b.request())

	got := map[string]*tracepb.Span{}
	services := map[string]bool{}
	for _, rs := range req.GetResourceSpans() {
		res := attrMap(rs.GetResource().GetAttributes())
		service, _ := res["service.name"].(string)
		if services[service] {
			t.Errorf("service %s has two resources in one request", service)
		}
		services[service] = true
		if res["service.instance.id"] != "node-1/"+service || res["k8s.node.name"] != "node-1" ||
			res["telemetry.distro.name"] != "kpath" || res["telemetry.distro.version"] != "v9" || len(res) != 5 {
			t.Errorf("resource of %s: %v", service, res)
		}
		if len(rs.GetScopeSpans()) != 1 {
			t.Fatalf("%d scopes, want 1", len(rs.GetScopeSpans()))
		}
		ss := rs.GetScopeSpans()[0]
		if ss.GetScope().GetName() != ScopeName || ss.GetScope().GetVersion() != "v9" {
			t.Errorf("scope %v", ss.GetScope())
		}
		for _, s := range ss.GetSpans() {
			if c := attrMap(s.GetAttributes())[correlate.AttrComponent]; c != service {
				t.Errorf("span %q of component %v is under service %s", s.GetName(), c, service)
			}
			got[string(s.GetSpanId())] = s
		}
	}
	if len(services) != 3 {
		t.Errorf("services %v, want kube-apiserver, etcd, kube-scheduler", services)
	}
	if len(got) != len(tr.Spans) {
		t.Fatalf("decoded %d spans, want %d", len(got), len(tr.Spans))
	}
	for _, want := range tr.Spans {
		s := got[string(want.SpanID[:])]
		if s == nil {
			t.Fatalf("span %x missing", want.SpanID)
		}
		var wantParent []byte
		if want.Parent != (correlate.SpanID{}) {
			wantParent = want.Parent[:]
		}
		if !bytes.Equal(s.GetTraceId(), want.TraceID[:]) || !bytes.Equal(s.GetParentSpanId(), wantParent) ||
			s.GetName() != want.Name || s.GetKind() != tracepb.Span_SPAN_KIND_INTERNAL ||
			s.GetStartTimeUnixNano() != uint64(want.Start.UnixNano()) || s.GetEndTimeUnixNano() != uint64(want.End.UnixNano()) {
			t.Errorf("span %q decoded as %v", want.Name, s)
		}
		attrs := attrMap(s.GetAttributes())
		n := 0
		for _, a := range want.Attributes {
			if a.Value == nil {
				if _, ok := attrs[a.Key]; ok {
					t.Errorf("%s: unset attribute %s exported", want.Name, a.Key)
				}
				continue
			}
			n++
			wantV := attrValue(a.Value)
			if f, ok := wantV.(float64); ok {
				if d, ok := attrs[a.Key].(*commonpb.AnyValue_DoubleValue); !ok || d.DoubleValue != f {
					t.Errorf("%s: %s = %#v, want double %v", want.Name, a.Key, attrs[a.Key], f)
				}
				continue
			}
			if attrs[a.Key] != wantV {
				t.Errorf("%s: %s = %#v, want %#v", want.Name, a.Key, attrs[a.Key], wantV)
			}
		}
		if len(attrs) != n {
			t.Errorf("%s: %d attributes, want %d", want.Name, len(attrs), n)
		}
		if len(s.GetLinks()) != len(want.Links) {
			t.Errorf("%s: %d links, want %d", want.Name, len(s.GetLinks()), len(want.Links))
			continue
		}
		for i, wl := range want.Links {
			l := s.GetLinks()[i]
			la := attrMap(l.GetAttributes())
			if !bytes.Equal(l.GetTraceId(), wl.TraceID[:]) || !bytes.Equal(l.GetSpanId(), wl.SpanID[:]) || len(la) != len(wl.Attributes) {
				t.Errorf("%s: link %d decoded as %v, want %v", want.Name, i, l, wl)
			}
			for _, a := range wl.Attributes {
				if la[a.Key] != attrValue(a.Value) {
					t.Errorf("%s: link %d: %s = %#v, want %#v", want.Name, i, a.Key, la[a.Key], a.Value)
				}
			}
		}
	}

	// A reset batch keeps nothing of the last one.
	b.reset()
	b.add(&tr.Spans[0])
	if req := decodeRequest(t, b.request()); len(req.GetResourceSpans()) != 1 || len(req.GetResourceSpans()[0].GetScopeSpans()[0].GetSpans()) != 1 {
		t.Errorf("after reset, one span gave %v", req)
	}
}

func TestOTLPPartialSuccessIsRead(t *testing.T) {
	resp, err := proto.Marshal(&collectortracepb.ExportTraceServiceResponse{
		PartialSuccess: &collectortracepb.ExportTracePartialSuccess{RejectedSpans: 3, ErrorMessage: "too old"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, msg, err := partialSuccess(resp); n != 3 || msg != "too old" || err != nil {
		t.Errorf("partialSuccess = %d, %q, %v", n, msg, err)
	}
	if n, msg, err := partialSuccess(nil); n != 0 || msg != "" || err != nil {
		t.Errorf("empty response: %d, %q, %v", n, msg, err)
	}
	if _, _, err := partialSuccess(resp[:len(resp)-2]); err == nil {
		t.Error("a truncated response parsed")
	}
}

// FuzzPartialSuccess: a collector's answer, whatever its bytes, is read or
// refused, never a panic.
func FuzzPartialSuccess(f *testing.F) {
	ok, _ := proto.Marshal(&collectortracepb.ExportTraceServiceResponse{
		PartialSuccess: &collectortracepb.ExportTracePartialSuccess{RejectedSpans: 3, ErrorMessage: "too old"}})
	f.Add(ok)
	f.Add([]byte{0x0a, 0xff})
	f.Fuzz(func(t *testing.T, resp []byte) {
		partialSuccess(resp)
	})
}
