package main

import (
	"context"
	"testing"
	"time"

	"github.com/kpath/kpath/correlate"

	collectortracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The sink reads requests itself: what an OTLP client sends through the
// generated code, it counts as the benchmarks expect.
func TestSinkCountsWhatTheGeneratedClientSends(t *testing.T) {
	s, err := startSink()
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	str := func(k, v string) *commonpb.KeyValue {
		return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
	}
	boolean := func(k string, v bool) *commonpb.KeyValue {
		return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: v}}}
	}
	spans := []*tracepb.Span{
		{Name: "POST", Attributes: []*commonpb.KeyValue{str(correlate.AttrStage, "request"), str(correlate.AttrKey, benchKeyPrefix+"cm-1")}},
		{Name: "other", Attributes: []*commonpb.KeyValue{str(correlate.AttrStage, "request"), str(correlate.AttrKey, "/registry/configmaps/x/y")}},
		{Name: "pod", Attributes: []*commonpb.KeyValue{str(correlate.AttrNamespace, podNamespace), boolean(correlate.AttrComplete, true)}},
		{Name: "pod", Attributes: []*commonpb.KeyValue{str(correlate.AttrNamespace, podNamespace), boolean(correlate.AttrComplete, false)}},
		{Name: "scale", Attributes: []*commonpb.KeyValue{str(correlate.AttrNamespace, scaleNamespace), str(correlate.AttrPodName, "scale-00001"),
			boolean(correlate.AttrComplete, true), str(correlate.AttrKubeletElsewhere, "kwok-node-1")}},
	}
	req := &collectortracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{
		{ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans[:2]}, {Spans: spans[2:3]}}},
		{ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans[3:]}}},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := collectortracepb.NewTraceServiceClient(conn).Export(ctx, req); err != nil {
		t.Fatal(err)
	}
	if s.spans.Load() != 5 || s.requests.Load() != 1 || s.benchRequests.Load() != 1 || s.podRoots.Load() != 2 || s.podComplete.Load() != 1 {
		t.Errorf("spans %d requests %d bench %d pod roots %d complete %d; want 5 1 1 2 1",
			s.spans.Load(), s.requests.Load(), s.benchRequests.Load(), s.podRoots.Load(), s.podComplete.Load())
	}
	if r := s.scaleRoots()["scale-00001"]; r.roots != 1 || r.complete != 1 || r.kubeletFrom != "kwok-node-1" {
		t.Errorf("scale root %+v", r)
	}
}
