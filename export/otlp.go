package export

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

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
	// Resource holds attributes every span's resource carries, such as
	// k8s.node.name; service.name and service.instance.id are each span's
	// component's and cannot be set here.
	Resource map[string]string
	// AgentVersion is the agent's, for telemetry.distro.version and the
	// scope's version ("" leaves them out).
	AgentVersion string
	// ExportTimeout bounds one batch's upload, retries included (default
	// 10s); after it the batch is dropped.
	ExportTimeout time.Duration
	// Logger receives export failures (default slog.Default()).
	Logger *slog.Logger
}

// NewOTLP starts an exporter that sends spans to an OTLP/gRPC endpoint. It
// fails only for invalid config: the connection is made lazily, so a
// collector that is down or not yet up costs dropped (counted) spans, not a
// failed start. Close ends the exporter. m may be nil.
//
// Each span is exported under the resource of the component it describes:
// service.name is its kpath.component (kube-apiserver, etcd, …) and
// service.instance.id that component on this node, so a trace store lists
// the control plane's services; the agent names itself in
// telemetry.distro.name and the scope.
func NewOTLP(_ context.Context, cfg OTLPConfig, m *Metrics) (Exporter, error) {
	if cfg.QueueSize < 0 || cfg.BatchSize < 0 || cfg.FlushInterval < 0 {
		return nil, errors.New("otlp exporter: negative queue size, batch size or flush interval")
	}
	client, err := newOTLPClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("otlp exporter: %w", err)
	}
	cfg.QueueSize = orDefault(cfg.QueueSize, 4096)
	cfg.BatchSize = orDefault(cfg.BatchSize, 512)
	cfg.FlushInterval = orDefault(cfg.FlushInterval, time.Second)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m.InitExporter(otlpExporterName)
	uploadCtx, cancel := context.WithCancel(context.Background())
	e := &otlpExporter{
		client:    client,
		cfg:       cfg,
		m:         m,
		resources: newResources(cfg.Resource, cfg.AgentVersion),
		queue:     make(chan correlate.Trace, cfg.QueueSize),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		ctx:       uploadCtx,
		cancel:    cancel,
		logged:    map[string]*logState{},
	}
	go e.run()
	return e, nil
}

type otlpExporter struct {
	client    *otlpClient
	cfg       OTLPConfig
	m         *Metrics
	resources *resources

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
		// Nothing is uploading any more.
		if err := e.client.close(); err != nil {
			errs = append(errs, fmt.Errorf("otlp exporter: close connection: %w", err))
		}
		e.closeErr = errors.Join(errs...)
	})
	return e.closeErr
}

// run is the single sender: it encodes queued traces into batches and
// uploads them, so Export never waits on the network.
func (e *otlpExporter) run() {
	defer close(e.done)
	tick := time.NewTicker(e.cfg.FlushInterval)
	defer tick.Stop()
	b := newOTLPBatch(e.resources)
	for {
		select {
		case t := <-e.queue:
			e.add(b, t)
		case <-tick.C:
			e.flush(b)
		case <-e.stop:
			for {
				select {
				case t := <-e.queue:
					e.add(b, t)
				default:
					e.flush(b)
					return
				}
			}
		}
	}
}

func (e *otlpExporter) add(b *otlpBatch, t correlate.Trace) {
	for i := range t.Spans {
		b.add(&t.Spans[i])
		if b.spans >= e.cfg.BatchSize {
			e.flush(b)
		}
	}
}

// flush uploads the batch and empties it for reuse.
func (e *otlpExporter) flush(b *otlpBatch) {
	n := b.spans
	if n == 0 {
		return
	}
	req := b.request()
	b.reset()
	if e.ctx.Err() != nil {
		e.shutdownLost += n
		e.m.DroppedSpans(otlpExporterName, DropShutdown, n)
		return
	}
	rejected, msg, err := e.client.upload(e.ctx, req)
	switch {
	case err == nil:
		rejected = min(max(rejected, 0), int64(n))
		e.m.ExportedSpans(otlpExporterName, n-int(rejected))
		if rejected > 0 {
			e.m.DroppedSpans(otlpExporterName, DropRejected, int(rejected))
			e.logFailure(fmt.Errorf("collector rejected %d of %d spans: %s", rejected, n, msg), int(rejected))
		}
	case e.ctx.Err() != nil:
		e.shutdownLost += n
		e.m.DroppedSpans(otlpExporterName, DropShutdown, n)
	default:
		e.m.DroppedSpans(otlpExporterName, DropExportFailed, n)
		e.logFailure(err, n)
	}
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

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
