package main

import (
	"context"
	"fmt"
	"maps"
	"net"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/kpath/kpath/correlate"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// sink is an OTLP/gRPC trace receiver on 127.0.0.1 that counts what it gets
// and keeps nothing. Both kpath-agent (--export=otlp) and the apiserver's
// native tracing export to it; it runs inside the bench process, so its CPU is
// in the bench's column, not the control plane's.
type sink struct {
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
	s := &sink{addr: lis.Addr().String(),
		srv: grpc.NewServer(grpc.MaxRecvMsgSize(64<<20), grpc.ForceServerCodec(rawCodec{}))}
	s.srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "opentelemetry.proto.collector.trace.v1.TraceService",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Export", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var req rawMessage
			if err := dec(&req); err != nil {
				return nil, err
			}
			if err := s.export(req); err != nil {
				return nil, status.Error(codes.InvalidArgument, err.Error())
			}
			return &rawMessage{}, nil // an empty ExportTraceServiceResponse: all taken
		}}},
	}, s)
	go func() { _ = s.srv.Serve(lis) }()
	return s, nil
}

func (s *sink) stop() { s.srv.Stop() }

// rawMessage and rawCodec let the sink read the request's bytes itself.
// The sink runs on the bench's two cores beside the control plane, and
// the generated code's decoding of every span was more CPU per create than
// the agent's own: a collector's cost, not kpath's, and one that a real
// cluster pays elsewhere. Both kpath and native tracing export here.
type rawMessage []byte

type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	m, ok := v.(*rawMessage)
	if !ok {
		return nil, fmt.Errorf("sink: cannot marshal %T", v)
	}
	return *m, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(*rawMessage)
	if !ok {
		return fmt.Errorf("sink: cannot unmarshal into %T", v)
	}
	*m = data // read before the handler returns
	return nil
}

// OTLP field numbers (collector/trace/v1, trace/v1, common/v1).
const (
	fReqResourceSpans = 1
	fRSScopeSpans     = 2
	fSSSpans          = 2
	fSpanAttributes   = 9
	fKVKey            = 1
	fKVValue          = 2
	fAnyString        = 1
	fAnyBool          = 2
)

// export counts one ExportTraceServiceRequest.
func (s *sink) export(req []byte) error {
	n := 0
	err := fields(req, func(num protowire.Number, rs []byte) error {
		if num != fReqResourceSpans {
			return nil
		}
		return fields(rs, func(num protowire.Number, ss []byte) error {
			if num != fRSScopeSpans {
				return nil
			}
			return fields(ss, func(num protowire.Number, sp []byte) error {
				if num != fSSSpans {
					return nil
				}
				n++
				return s.span(sp)
			})
		})
	})
	s.spans.Add(int64(n))
	s.requests.Add(1)
	return err
}

// span counts one Span by the few attributes the benchmarks read.
func (s *sink) span(sp []byte) error {
	var stage, key, ns, name, from, missing string
	root, complete := false, false
	err := fields(sp, func(num protowire.Number, kv []byte) error {
		if num != fSpanAttributes {
			return nil
		}
		var k string
		var str string
		var b bool
		err := fields(kv, func(num protowire.Number, v []byte) error {
			switch num {
			case fKVKey:
				k = string(v)
			case fKVValue:
				return fields(v, func(num protowire.Number, x []byte) error {
					if num == fAnyString {
						str = string(x)
					}
					return nil
				}, func(num protowire.Number, x uint64) {
					if num == fAnyBool {
						b = x != 0
					}
				})
			}
			return nil
		})
		switch k {
		case correlate.AttrStage:
			stage = str
		case correlate.AttrKey:
			key = str
		case correlate.AttrNamespace:
			ns = str
		case correlate.AttrPodName:
			name = str
		case correlate.AttrKubeletElsewhere:
			from = str
		case correlate.AttrMissing:
			missing = str
		case correlate.AttrComplete:
			root, complete = true, b
		}
		return err
	})
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
	return err
}

// fields calls bytes for each length-delimited field of msg and varint
// (when given) for each varint field, and skips the rest.
func fields(msg []byte, bytes func(protowire.Number, []byte) error, varint ...func(protowire.Number, uint64)) error {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return protowire.ParseError(n)
		}
		msg = msg[n:]
		switch typ {
		case protowire.BytesType:
			v, m := protowire.ConsumeBytes(msg)
			if m < 0 {
				return protowire.ParseError(m)
			}
			if err := bytes(num, v); err != nil {
				return err
			}
			n = m
		case protowire.VarintType:
			v, m := protowire.ConsumeVarint(msg)
			if m < 0 {
				return protowire.ParseError(m)
			}
			for _, f := range varint {
				f(num, v)
			}
			n = m
		default:
			if n = protowire.ConsumeFieldValue(num, typ, msg); n < 0 {
				return protowire.ParseError(n)
			}
		}
		msg = msg[n:]
	}
	return nil
}

// scaleRoots returns a copy of what the scale benchmark's pods' roots said.
func (s *sink) scaleRoots() map[string]scaleRoot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.scale)
}
