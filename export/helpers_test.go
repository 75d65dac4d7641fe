package export

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/kpath/kpath/correlate"
)

var t0 = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

func tid(b byte) correlate.TraceID {
	var id correlate.TraceID
	for i := range id {
		id[i] = b + byte(i)
	}
	return id
}

func sid(b byte) correlate.SpanID {
	var id correlate.SpanID
	for i := range id {
		id[i] = b<<4 | byte(i)
	}
	return id
}

// podTrace is a small realistic trace: request -> (storage-write -> etcd-txn), watch.
func podTrace(b byte) correlate.Trace {
	id := tid(b)
	span := func(s, p byte, name, comp, stage string, from, to time.Duration, extra ...correlate.Attribute) correlate.Span {
		sp := correlate.Span{TraceID: id, SpanID: sid(s), Name: name, Start: t0.Add(from), End: t0.Add(to),
			Attributes: append([]correlate.Attribute{
				{Key: correlate.AttrComponent, Value: comp},
				{Key: correlate.AttrStage, Value: stage},
			}, extra...)}
		if p != 0 {
			sp.Parent = sid(p)
		}
		return sp
	}
	return correlate.Trace{ID: id, Complete: true, Spans: []correlate.Span{
		span(1, 0, "POST pods", "kube-apiserver", "request", 0, 12*time.Millisecond,
			correlate.Attribute{Key: correlate.AttrKey, Value: "/registry/pods/default/nginx"},
			correlate.Attribute{Key: correlate.AttrRevision, Value: int64(1234567890123)},
			correlate.Attribute{Key: correlate.AttrNamespace, Value: "default"},
			correlate.Attribute{Key: correlate.AttrPodName, Value: "nginx"}),
		span(2, 1, "storage write", "kube-apiserver", "storage-write", 2*time.Millisecond, 9*time.Millisecond),
		span(3, 2, "etcd txn", "etcd", "etcd-txn", 3*time.Millisecond, 8*time.Millisecond,
			correlate.Attribute{Key: "kpath.succeeded", Value: true}),
		span(4, 1, "watch event", "kube-scheduler", "watch", 10*time.Millisecond, 10*time.Millisecond+400*time.Microsecond),
	}}
}

// logRecorder is a slog.Handler that keeps records for assertions.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecorder) WithGroup(string) slog.Handler      { return h }

func (h *logRecorder) all() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]slog.Record(nil), h.records...)
}

func attrOf(r slog.Record, key string) (v slog.Value, ok bool) {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v, ok = a.Value, true
			return false
		}
		return true
	})
	return v, ok
}
