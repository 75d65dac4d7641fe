package main

import (
	"context"
	"maps"
	"net"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/kpath/kpath/correlate"

	collectortracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

// sink is an OTLP/gRPC trace receiver on 127.0.0.1 that counts what it gets
// and keeps nothing. Both kpath-agent (--export=otlp) and the apiserver's
// native tracing export to it; it runs inside the bench process, so its CPU is
// in the bench's column, not the control plane's.
type sink struct {
	collectortracepb.UnimplementedTraceServiceServer

	addr     string
	srv      *grpc.Server
	spans    atomic.Int64
	requests atomic.Int64
	// benchRequests counts kpath request spans of the bench's own ConfigMaps:
	// one per create that kpath traced (the agent also traces every other
	// apiserver on the host, e.g. the lab's).
	benchRequests atomic.Int64
	// podRoots counts the roots of pod traces of the lifecycle benchmark's
	// pods (--op=pods), podComplete those that had every stage.
	podRoots, podComplete atomic.Int64

	// scale holds, per pod of the scale benchmark (--op=scale), the pod
	// trace roots received: every pod is to have exactly one.
	mu    sync.Mutex
	scale map[string]scaleRoot
}

// scaleRoot is what the roots of one pod's trace said.
type scaleRoot struct {
	roots, complete int
	kubeletFrom     string // kpath.kubelet_part_from: the node whose kubelet part is elsewhere
	missing         string
}

// benchKeyPrefix is the etcd key prefix of the ConfigMaps the bench creates.
const benchKeyPrefix = "/registry/configmaps/" + benchNamespace + "/"

func startSink() (*sink, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &sink{addr: lis.Addr().String(), srv: grpc.NewServer(grpc.MaxRecvMsgSize(64 << 20))}
	collectortracepb.RegisterTraceServiceServer(s.srv, s)
	go func() { _ = s.srv.Serve(lis) }()
	return s, nil
}

func (s *sink) stop() { s.srv.Stop() }

// Export implements collectortracepb.TraceServiceServer.
func (s *sink) Export(_ context.Context, req *collectortracepb.ExportTraceServiceRequest) (*collectortracepb.ExportTraceServiceResponse, error) {
	n := 0
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			n += len(ss.GetSpans())
			for _, sp := range ss.GetSpans() {
				var stage, key, ns, name, from, missing string
				root, complete := false, false
				for _, kv := range sp.GetAttributes() {
					switch kv.GetKey() {
					case correlate.AttrStage:
						stage = kv.GetValue().GetStringValue()
					case correlate.AttrKey:
						key = kv.GetValue().GetStringValue()
					case correlate.AttrNamespace:
						ns = kv.GetValue().GetStringValue()
					case correlate.AttrPodName:
						name = kv.GetValue().GetStringValue()
					case correlate.AttrKubeletElsewhere:
						from = kv.GetValue().GetStringValue()
					case correlate.AttrMissing:
						missing = kv.GetValue().GetStringValue()
					case correlate.AttrComplete:
						root, complete = true, kv.GetValue().GetBoolValue()
					}
				}
				if stage == "request" && strings.HasPrefix(key, benchKeyPrefix) {
					s.benchRequests.Add(1)
				}
				if root && ns == podNamespace {
					s.podRoots.Add(1)
					if complete {
						s.podComplete.Add(1)
					}
				}
				if root && ns == scaleNamespace {
					s.mu.Lock()
					r := s.scale[name]
					r.roots++
					if complete {
						r.complete++
					}
					r.kubeletFrom, r.missing = from, missing
					if s.scale == nil {
						s.scale = map[string]scaleRoot{}
					}
					s.scale[name] = r
					s.mu.Unlock()
				}
			}
		}
	}
	s.spans.Add(int64(n))
	s.requests.Add(1)
	return &collectortracepb.ExportTraceServiceResponse{}, nil
}

// scaleRoots returns a copy of what the scale benchmark's pods' roots said.
func (s *sink) scaleRoots() map[string]scaleRoot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.scale)
}
