package export

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc/status"

	"github.com/kpath/kpath/correlate"
)

// ScopeName is the instrumentation scope of every exported span.
const ScopeName = "kpath"

const otlpExporterName = "otlp"

// OTLPConfig configures NewOTLP. Zero values mean the documented default.
type OTLPConfig struct {
	// Endpoint is host:port, or a URL whose http scheme implies Insecure.
	Endpoint string
	Insecure bool
	Headers  map[string]string
	// QueueSize is how many traces wait for the sender (default 4096);
	// beyond it Export drops.
	QueueSize int
	// BatchSize is the most spans per upload (default 512).
	BatchSize int
	// FlushInterval bounds how long a span waits for a full batch (default 1s).
	FlushInterval time.Duration
	// Resource holds resource attributes such as k8s.node.name;
	// service.name defaults to kpath-agent.
	Resource map[string]string
	// ExportTimeout bounds one batch's upload, retries included (default
	// 10s); after it the batch is dropped.
	ExportTimeout time.Duration
	// Logger receives export failures (default slog.Default()).
	Logger *slog.Logger
}

// NewOTLP starts an exporter that sends spans to an OTLP/gRPC endpoint. It
// fails only for invalid config: the connection is made lazily, so a
// collector that is down or not yet up costs dropped (counted) spans, not a
// failed start. ctx bounds only the start; Close ends the exporter. m may be
// nil.
func NewOTLP(ctx context.Context, cfg OTLPConfig, m *Metrics) (Exporter, error) {
	opts, err := cfg.clientOptions()
	if err != nil {
		return nil, fmt.Errorf("otlp exporter: %w", err)
	}
	cfg.QueueSize = orDefault(cfg.QueueSize, 4096)
	cfg.BatchSize = orDefault(cfg.BatchSize, 512)
	cfg.FlushInterval = orDefault(cfg.FlushInterval, time.Second)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}

	client := otlptracegrpc.NewClient(opts...)
	if err := client.Start(ctx); err != nil {
		return nil, fmt.Errorf("otlp exporter: start client for %q: %w", cfg.Endpoint, err)
	}
	uploadCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	e := &otlpExporter{
		client:   client,
		cfg:      cfg,
		m:        m,
		resource: resourceProto(cfg.Resource),
		queue:    make(chan correlate.Trace, cfg.QueueSize),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		ctx:      uploadCtx,
		cancel:   cancel,
		logged:   map[string]*logState{},
	}
	go e.run()
	return e, nil
}

func (c *OTLPConfig) clientOptions() ([]otlptracegrpc.Option, error) {
	if c.QueueSize < 0 || c.BatchSize < 0 || c.FlushInterval < 0 || c.ExportTimeout < 0 {
		return nil, errors.New("negative queue size, batch size, flush interval or export timeout")
	}
	var opts []otlptracegrpc.Option
	switch {
	case c.Endpoint == "":
		return nil, errors.New("no endpoint")
	case strings.Contains(c.Endpoint, "://"):
		u, err := url.Parse(c.Endpoint)
		if err != nil {
			return nil, fmt.Errorf("endpoint: %w", err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("endpoint %q: want http(s)://host:port", c.Endpoint)
		}
		opts = append(opts, otlptracegrpc.WithEndpointURL(c.Endpoint))
	default:
		if _, _, err := net.SplitHostPort(c.Endpoint); err != nil {
			return nil, fmt.Errorf("endpoint: %w", err)
		}
		opts = append(opts, otlptracegrpc.WithEndpoint(c.Endpoint))
	}
	if c.Insecure {
		opts = append(opts, otlptracegrpc.WithInsecure())
	}
	if len(c.Headers) > 0 {
		opts = append(opts, otlptracegrpc.WithHeaders(c.Headers))
	}
	timeout := orDefault(c.ExportTimeout, 10*time.Second)
	return append(opts,
		otlptracegrpc.WithTimeout(timeout),
		// The client's default waits 5s before the first retry and keeps
		// going for a minute, far longer than a queue of live traces lasts.
		otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{
			Enabled:         true,
			InitialInterval: 250 * time.Millisecond,
			MaxInterval:     2 * time.Second,
			MaxElapsedTime:  timeout,
		}),
	), nil
}

type otlpExporter struct {
	client   otlptrace.Client
	cfg      OTLPConfig
	m        *Metrics
	resource *resourcepb.Resource

	// mu orders Export against Close so nothing is queued after the final
	// drain; Export only ever holds it for a non-blocking send.
	mu     sync.RWMutex
	closed bool
	queue  chan correlate.Trace

	stop      chan struct{} // closed by Close: drain, flush, return
	done      chan struct{} // closed when run returns
	closeOnce sync.Once
	closeErr  error

	// ctx is cancelled when Close's deadline passes, to abandon uploads.
	ctx    context.Context
	cancel context.CancelFunc

	// Owned by run.
	logged       map[string]*logState
	shutdownLost int
}

type logState struct {
	last    time.Time
	repeats int
}

func (e *otlpExporter) Export(t correlate.Trace) {
	if len(t.Spans) == 0 {
		return
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		e.m.DroppedSpans(otlpExporterName, DropShutdown, len(t.Spans))
		return
	}
	select {
	case e.queue <- t:
	default:
		e.m.DroppedSpans(otlpExporterName, DropQueueFull, len(t.Spans))
	}
}

func (e *otlpExporter) Close(ctx context.Context) error {
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closed = true
		e.mu.Unlock()
		close(e.stop)

		var errs []error
		select {
		case <-e.done:
		case <-ctx.Done():
			e.cancel()
			<-e.done // quick now: uploads fail at once and the rest is counted
		}
		e.cancel()
		if e.shutdownLost > 0 {
			e.cfg.Logger.Warn("otlp exporter closed before flushing every span",
				"endpoint", e.cfg.Endpoint, "dropped_spans", e.shutdownLost)
			errs = append(errs, fmt.Errorf("otlp exporter: flush cut short, %d spans dropped: %w",
				e.shutdownLost, context.Cause(ctx)))
		}
		// Nothing is uploading any more, so Stop only closes the connection.
		if err := e.client.Stop(context.WithoutCancel(ctx)); err != nil {
			errs = append(errs, fmt.Errorf("otlp exporter: stop client: %w", err))
		}
		e.closeErr = errors.Join(errs...)
	})
	return e.closeErr
}

// run is the single sender: it converts queued traces into batches and
// uploads them, so Export never waits on the network.
func (e *otlpExporter) run() {
	defer close(e.done)
	tick := time.NewTicker(e.cfg.FlushInterval)
	defer tick.Stop()
	batch := make([]*tracepb.Span, 0, e.cfg.BatchSize)
	for {
		select {
		case t := <-e.queue:
			batch = e.add(batch, t)
		case <-tick.C:
			batch = e.flush(batch)
		case <-e.stop:
			for {
				select {
				case t := <-e.queue:
					batch = e.add(batch, t)
				default:
					e.flush(batch)
					return
				}
			}
		}
	}
}

func (e *otlpExporter) add(batch []*tracepb.Span, t correlate.Trace) []*tracepb.Span {
	for i := range t.Spans {
		batch = append(batch, spanProto(&t.Spans[i]))
		if len(batch) >= e.cfg.BatchSize {
			batch = e.flush(batch)
		}
	}
	return batch
}

// flush uploads batch and returns it emptied for reuse.
func (e *otlpExporter) flush(batch []*tracepb.Span) []*tracepb.Span {
	n := len(batch)
	if n == 0 {
		return batch
	}
	defer clear(batch)
	if e.ctx.Err() != nil {
		e.shutdownLost += n
		e.m.DroppedSpans(otlpExporterName, DropShutdown, n)
		return batch[:0]
	}
	err := e.client.UploadTraces(e.ctx, []*tracepb.ResourceSpans{{
		Resource:   e.resource,
		ScopeSpans: []*tracepb.ScopeSpans{{Scope: &commonpb.InstrumentationScope{Name: ScopeName}, Spans: batch}},
	}})
	switch {
	case err == nil:
		e.m.ExportedSpans(otlpExporterName, n)
	case e.ctx.Err() != nil:
		e.shutdownLost += n
		e.m.DroppedSpans(otlpExporterName, DropShutdown, n)
	default:
		e.m.DroppedSpans(otlpExporterName, DropExportFailed, n)
		e.logFailure(err, n)
	}
	return batch[:0]
}

// logFailure logs each distinct error at most once a minute: a dead
// collector fails every batch, and the metric already counts them.
func (e *otlpExporter) logFailure(err error, spans int) {
	key := errorKey(err)
	now := time.Now()
	st := e.logged[key]
	if st != nil && now.Sub(st.last) < time.Minute {
		st.repeats++
		return
	}
	if st == nil {
		if len(e.logged) >= 64 {
			maps.DeleteFunc(e.logged, func(_ string, s *logState) bool { return now.Sub(s.last) >= time.Minute })
		}
		st = &logState{}
		e.logged[key] = st
	}
	e.cfg.Logger.Warn("otlp export failed, dropping spans",
		"endpoint", e.cfg.Endpoint, "spans", spans, "repeats_since_last_log", st.repeats, "error", err)
	st.last, st.repeats = now, 0
}

// errorKey identifies an error by its gRPC status when there is one, since
// the retry wrapper prefixes varying text to the same underlying failure.
func errorKey(err error) string {
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		s := se.GRPCStatus()
		return s.Code().String() + ": " + s.Message()
	}
	return err.Error()
}

func resourceProto(attrs map[string]string) *resourcepb.Resource {
	attrs = maps.Clone(attrs)
	if attrs == nil {
		attrs = map[string]string{}
	}
	if attrs["service.name"] == "" {
		attrs["service.name"] = "kpath-agent"
	}
	r := &resourcepb.Resource{}
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		r.Attributes = append(r.Attributes, &commonpb.KeyValue{Key: k, Value: stringValue(attrs[k])})
	}
	return r
}

func spanProto(s *correlate.Span) *tracepb.Span {
	// One allocation per kind of thing instead of three per attribute: the
	// agent converts every span of every write.
	ids := make([]byte, 0, 16+8+8)
	ids = append(append(ids, s.TraceID[:]...), s.SpanID[:]...)
	p := &tracepb.Span{
		TraceId:           ids[0:16:16],
		SpanId:            ids[16:24:24],
		Name:              s.Name,
		Kind:              tracepb.Span_SPAN_KIND_INTERNAL,
		StartTimeUnixNano: unixNano(s.Start),
		EndTimeUnixNano:   unixNano(s.End),
		Attributes:        make([]*commonpb.KeyValue, 0, len(s.Attributes)),
	}
	if s.Parent != (correlate.SpanID{}) {
		ids = append(ids, s.Parent[:]...)
		p.ParentSpanId = ids[24:32:32]
	}
	kvs := make([]commonpb.KeyValue, len(s.Attributes))
	vals := make([]commonpb.AnyValue, len(s.Attributes))
	var strs []commonpb.AnyValue_StringValue
	for i, a := range s.Attributes {
		if a.Value == nil {
			continue
		}
		v := &vals[i]
		switch x := attrValue(a.Value).(type) {
		case int64:
			v.Value = &commonpb.AnyValue_IntValue{IntValue: x}
		case bool:
			v.Value = &commonpb.AnyValue_BoolValue{BoolValue: x}
		case float64:
			v.Value = &commonpb.AnyValue_DoubleValue{DoubleValue: x}
		default:
			if strs == nil {
				strs = make([]commonpb.AnyValue_StringValue, len(s.Attributes))
			}
			strs[i].StringValue = x.(string)
			v.Value = &strs[i]
		}
		kvs[i].Key, kvs[i].Value = a.Key, v
		p.Attributes = append(p.Attributes, &kvs[i])
	}
	return p
}

func stringValue(s string) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s}}
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
