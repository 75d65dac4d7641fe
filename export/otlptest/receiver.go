// Package otlptest runs an in-process OTLP/gRPC trace receiver for tests.
package otlptest

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"

	collectortracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Receiver is an OTLP trace collector listening on 127.0.0.1 that keeps every
// span it accepts.
type Receiver struct {
	collectortracepb.UnimplementedTraceServiceServer

	addr string

	mu       sync.Mutex
	rs       []*tracepb.ResourceSpans
	spans    int
	requests int
	fail     error
	reject   *collectortracepb.ExportTracePartialSuccess
	changed  chan struct{} // closed and replaced on every accepted request
	stalled  chan struct{} // while non-nil, requests wait for it to close

	stop func()
}

// Start starts a receiver on a free loopback port; it stops when the test ends.
func Start(t testing.TB) *Receiver { return StartAt(t, "127.0.0.1:0") }

// StartAt starts a receiver listening on addr: a collector back at the
// address of one that was stopped.
func StartAt(t testing.TB, addr string) *Receiver {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("otlptest: listen: %v", err)
	}
	r := &Receiver{addr: lis.Addr().String(), changed: make(chan struct{})}
	srv := grpc.NewServer()
	collectortracepb.RegisterTraceServiceServer(srv, r)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis) // returns when stopped
	}()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			r.Resume()
			srv.Stop()
			<-served
		})
	}
	t.Cleanup(r.Stop)
	return r
}

// Stop stops the receiver: its address refuses connections, as a
// collector that is down.
func (r *Receiver) Stop() { r.stop() }

// Stall makes later requests hang, as a receiver that accepts connections
// and never answers, until Resume or until their sender gives up.
func (r *Receiver) Stall() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stalled == nil {
		r.stalled = make(chan struct{})
	}
}

// Resume answers stalled requests and later ones again.
func (r *Receiver) Resume() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stalled != nil {
		close(r.stalled)
		r.stalled = nil
	}
}

// Addr is the receiver's host:port.
func (r *Receiver) Addr() string { return r.addr }

// Fail makes every later request fail with err (a gRPC status error, e.g.
// status.Error(codes.Unavailable, "down")); nil restores success.
func (r *Receiver) Fail(err error) {
	r.mu.Lock()
	r.fail = err
	r.mu.Unlock()
}

// Reject makes every later accepted request answer that n of its spans
// were rejected (OTLP partial success); n = 0 restores full success.
func (r *Receiver) Reject(n int64, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reject = nil
	if n > 0 {
		r.reject = &collectortracepb.ExportTracePartialSuccess{RejectedSpans: n, ErrorMessage: msg}
	}
}

// Export implements collectortracepb.TraceServiceServer.
func (r *Receiver) Export(ctx context.Context, req *collectortracepb.ExportTraceServiceRequest) (*collectortracepb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	r.requests++
	if stalled := r.stalled; stalled != nil {
		r.mu.Unlock()
		select {
		case <-stalled:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		r.mu.Lock()
	}
	defer r.mu.Unlock()
	if r.fail != nil {
		return nil, r.fail
	}
	for _, rs := range req.GetResourceSpans() {
		r.rs = append(r.rs, proto.Clone(rs).(*tracepb.ResourceSpans))
		for _, ss := range rs.GetScopeSpans() {
			r.spans += len(ss.GetSpans())
		}
	}
	close(r.changed)
	r.changed = make(chan struct{})
	return &collectortracepb.ExportTraceServiceResponse{PartialSuccess: r.reject}, nil
}

// Requests is how many Export calls arrived, failed ones included.
func (r *Receiver) Requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

// ResourceSpans returns what was received so far, one entry per accepted
// ResourceSpans, in arrival order.
func (r *Receiver) ResourceSpans() []*tracepb.ResourceSpans {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*tracepb.ResourceSpans, len(r.rs))
	for i, rs := range r.rs {
		out[i] = proto.Clone(rs).(*tracepb.ResourceSpans)
	}
	return out
}

// Spans returns every span received so far, in arrival order.
func (r *Receiver) Spans() []*tracepb.Span {
	var out []*tracepb.Span
	for _, rs := range r.ResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			out = append(out, ss.GetSpans()...)
		}
	}
	return out
}

// WaitSpans waits until at least n spans have arrived and returns them all,
// or returns what arrived with an error when ctx ends first.
func (r *Receiver) WaitSpans(ctx context.Context, n int) ([]*tracepb.Span, error) {
	for {
		r.mu.Lock()
		got, changed := r.spans, r.changed
		r.mu.Unlock()
		if got >= n {
			return r.Spans(), nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return r.Spans(), fmt.Errorf("otlptest: got %d of %d spans: %w", got, n, ctx.Err())
		}
	}
}
