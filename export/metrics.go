package export

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metric names: a public contract, documented in doc.go.
const (
	MetricProbeHits          = "kpath_probe_hits_total"
	MetricEventsDropped      = "kpath_events_dropped_total"
	MetricAttachErrors       = "kpath_attach_errors_total"
	MetricAttachedProbes     = "kpath_attached_probes"
	MetricTraces             = "kpath_traces_total"
	MetricExportSpans        = "kpath_export_spans_total"
	MetricExportDroppedSpans = "kpath_export_dropped_spans_total"
	MetricStageDuration      = "kpath_stage_duration_seconds"
	MetricEventsUnjoined     = "kpath_events_unjoined_total"
	MetricReadErrors         = "kpath_probe_read_errors_total"
	MetricEndpointRequests   = "kpath_endpoint_requests_total"
)

// Reasons an exporter drops spans (the reason label of
// kpath_export_dropped_spans_total).
const (
	DropQueueFull    = "queue_full"    // Export found the queue full
	DropExportFailed = "export_failed" // the endpoint rejected or never took the batch
	DropShutdown     = "shutdown"      // Close's deadline passed, or Export after Close
	DropRejected     = "rejected"      // the collector took the batch but rejected these spans (OTLP partial success)
)

// StageBuckets are the kpath_stage_duration_seconds buckets: control-plane
// stages range from sub-millisecond cache hits to minute-long image pulls.
var StageBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// Metrics holds the agent's Prometheus metrics. All methods are safe for
// concurrent use and are no-ops on a nil *Metrics, so components can run
// without metrics in tests.
type Metrics struct {
	gatherer prometheus.Gatherer

	probeHits      *absCounter
	unjoined       *absCounter
	readErrors     *absCounter
	eventsDropped  *prometheus.CounterVec
	attachErrors   *prometheus.CounterVec
	attached       *prometheus.GaugeVec
	traces         *prometheus.CounterVec
	exportSpans    *prometheus.CounterVec
	exportDropped  *prometheus.CounterVec
	stageDurations *prometheus.HistogramVec
	endpoints      *prometheus.CounterVec
	reconciles     *reconcileMetrics
	webhooks       *webhookMetrics
}

// NewMetrics registers the kpath metrics with reg and panics if any is
// already registered there, as promauto does. A nil reg gets a new registry
// that also carries the Go runtime and process collectors.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		probeHits: newAbsCounter(prometheus.NewDesc(MetricProbeHits,
			"Times each probe fired, as counted in BPF.", []string{"component", "probe"}, nil)),
		unjoined: newAbsCounter(prometheus.NewDesc(MetricEventsUnjoined,
			"Probe events that built no span, by catalogue row and reason: no-start (an end with nothing open), no-end "+
				"(a start whose end never came), no-room (too many spans open), no-key, filtered (not a call the row traces, e.g. etcd reads), or the row's own "+
				"expected reason (binding-failed: a binding failure after its cycle closed).",
			[]string{"probe", "reason"}, nil)),
		readErrors: newAbsCounter(prometheus.NewDesc(MetricReadErrors,
			"Captures the BPF program could not read, by catalogue row and field: the field is missing from the event "+
				"(a nil pointer on the way, or a struct layout that moved in this version).",
			[]string{"probe", "field"}, nil)),
		eventsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricEventsDropped, Help: "Probe events lost before they reached a trace, by reason.",
		}, []string{"reason"}),
		attachErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricAttachErrors, Help: "Failed probe attachments.",
		}, []string{"component", "probe"}),
		attached: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricAttachedProbes, Help: "Probes attached to each traced process.",
		}, []string{"component", "pid"}),
		traces: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricTraces, Help: "Traces finished, by whether every expected stage was seen.",
		}, []string{"complete"}),
		exportSpans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricExportSpans, Help: "Spans delivered by each exporter.",
		}, []string{"exporter"}),
		exportDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricExportDroppedSpans, Help: "Spans an exporter gave up on, by reason.",
		}, []string{"exporter", "reason"}),
		stageDurations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: MetricStageDuration, Help: "Duration of each traced stage.", Buckets: StageBuckets,
		}, []string{"stage", "resource", "component"}),
		endpoints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricEndpointRequests, Help: "Requests to the agent's guarded endpoints (/metrics, /api/v1/traces), by result: allowed, " +
				"unauthenticated (no or a bad credential), forbidden (a SubjectAccessReview said no) or review_failed (the API server could not be asked).",
		}, []string{"endpoint", "result"}),
		reconciles: newReconcileMetrics(),
		webhooks:   newWebhookMetrics(),
	}
	cs := append([]prometheus.Collector{m.probeHits, m.unjoined, m.readErrors, m.eventsDropped, m.attachErrors, m.attached,
		m.traces, m.exportSpans, m.exportDropped, m.stageDurations, m.endpoints, m.webhooks.duration}, m.reconciles.collectors()...)

	if reg == nil {
		r := prometheus.NewRegistry()
		r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		reg = r
	}
	reg.MustRegister(cs...)
	if g, ok := reg.(prometheus.Gatherer); ok {
		m.gatherer = g
	} else {
		// A wrapping Registerer cannot be scraped; serve ours from a private one.
		r := prometheus.NewRegistry()
		r.MustRegister(cs...)
		m.gatherer = r
	}
	return m
}

// Handler serves the registry's metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.gatherer, promhttp.HandlerOpts{})
}

// AddProbeHits adds n to a probe's hit count.
func (m *Metrics) AddProbeHits(component, probe string, n uint64) {
	if m != nil {
		m.probeHits.add(component, probe, n)
	}
}

// SetProbeHits sets a probe's hit count to total, the absolute value BPF keeps.
func (m *Metrics) SetProbeHits(component, probe string, total uint64) {
	if m != nil {
		m.probeHits.set(component, probe, total)
	}
}

// SetUnjoined sets how many events of one catalogue row built no span, for
// one reason (correlate.Pairs counts them).
func (m *Metrics) SetUnjoined(probe, reason string, total uint64) {
	if m != nil {
		m.unjoined.set(probe, reason, total)
	}
}

// SetReadErrors sets how many captures of field failed in one row's events.
func (m *Metrics) SetReadErrors(probe, field string, total uint64) {
	if m != nil {
		m.readErrors.set(probe, field, total)
	}
}

// Drop counts n probe events lost for reason (ringbuf_full, stash_full,
// ret_without_entry, decode_error, timeline_evicted, ...).
func (m *Metrics) Drop(reason string, n uint64) {
	if m != nil {
		m.eventsDropped.WithLabelValues(reason).Add(float64(n))
	}
}

// AttachOK records that probe attached: its error count exists, at 0, so
// a dashboard shows "none" rather than "no data".
func (m *Metrics) AttachOK(component, probe string) {
	if m != nil {
		m.attachErrors.WithLabelValues(component, probe)
	}
}

// AttachError counts one failed attachment of probe.
func (m *Metrics) AttachError(component, probe string) {
	if m != nil {
		m.attachErrors.WithLabelValues(component, probe).Inc()
	}
}

// SetAttached records that n probes are attached to process pid.
func (m *Metrics) SetAttached(component string, pid int, n int) {
	if m != nil {
		m.attached.WithLabelValues(component, strconv.Itoa(pid)).Set(float64(n))
	}
}

// ForgetProcess removes an exited process's series so pids don't accumulate.
func (m *Metrics) ForgetProcess(component string, pid int) {
	if m != nil {
		m.attached.DeleteLabelValues(component, strconv.Itoa(pid))
	}
}

// InitEndpoint makes an endpoint's series exist at 0 for every result.
func (m *Metrics) InitEndpoint(endpoint string, results []string) {
	if m != nil {
		for _, r := range results {
			m.endpoints.WithLabelValues(endpoint, r)
		}
	}
}

// EndpointRequest counts one request to a guarded endpoint.
func (m *Metrics) EndpointRequest(endpoint, result string) {
	if m != nil {
		m.endpoints.WithLabelValues(endpoint, result).Inc()
	}
}

// TraceDone counts one finished trace.
func (m *Metrics) TraceDone(complete bool) {
	if m != nil {
		m.traces.WithLabelValues(strconv.FormatBool(complete)).Inc()
	}
}

// InitExporter makes an exporter's series exist at 0: spans delivered and
// every reason to drop them.
func (m *Metrics) InitExporter(exporter string) {
	if m == nil {
		return
	}
	m.exportSpans.WithLabelValues(exporter)
	for _, r := range []string{DropQueueFull, DropExportFailed, DropShutdown, DropRejected} {
		m.exportDropped.WithLabelValues(exporter, r)
	}
}

// ExportedSpans counts n spans delivered by exporter.
func (m *Metrics) ExportedSpans(exporter string, n int) {
	if m != nil && n > 0 {
		m.exportSpans.WithLabelValues(exporter).Add(float64(n))
	}
}

// DroppedSpans counts n spans exporter gave up on for reason.
func (m *Metrics) DroppedSpans(exporter, reason string, n int) {
	if m != nil && n > 0 {
		m.exportDropped.WithLabelValues(exporter, reason).Add(float64(n))
	}
}

// ObserveStage records one stage's duration. resource is the object's
// resource type (pods, deployments, ...), never its name: no per-object labels.
func (m *Metrics) ObserveStage(stage, resource, component string, d time.Duration) {
	if m != nil {
		m.stageDurations.WithLabelValues(stage, resource, component).Observe(d.Seconds())
	}
}

// absCounter is a counter vector whose values can also be set outright,
// because BPF hands us running totals rather than increments.
type absCounter struct {
	desc *prometheus.Desc
	mu   sync.Mutex
	v    map[[2]string]float64
}

func newAbsCounter(desc *prometheus.Desc) *absCounter {
	return &absCounter{desc: desc, v: map[[2]string]float64{}}
}

func (c *absCounter) add(a, b string, n uint64) {
	c.mu.Lock()
	c.v[[2]string{a, b}] += float64(n)
	c.mu.Unlock()
}

func (c *absCounter) set(a, b string, total uint64) {
	c.mu.Lock()
	c.v[[2]string{a, b}] = float64(total)
	c.mu.Unlock()
}

func (c *absCounter) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *absCounter) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, v := range c.v {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, v, k[0], k[1])
	}
}
