package export

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names of operators' reconciles: a public contract (doc.go).
const (
	MetricReconcileDuration = "kpath_reconcile_duration_seconds"
	MetricReconcileTotal    = "kpath_reconcile_total"
	MetricWorkqueueWait     = "kpath_workqueue_wait_seconds"
)

// maxControllers bounds the controller label: the controllers of the
// node's operators are configuration, so few, but an operator that names
// a controller per object must not grow the series without end.
const maxControllers = 256

// OverflowController is the controller label past maxControllers.
const OverflowController = "other"

type reconcileMetrics struct {
	duration *prometheus.HistogramVec
	total    *prometheus.CounterVec
	wait     *prometheus.HistogramVec
	known    *capped[[2]string]
}

func newReconcileMetrics() *reconcileMetrics {
	return &reconcileMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: MetricReconcileDuration, Help: "Duration of operators' reconciles, by controller and result (ok: no error).", Buckets: StageBuckets,
		}, []string{"component", "controller", "result"}),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricReconcileTotal, Help: "Operators' reconciles, by controller and result (ok: no error).",
		}, []string{"component", "controller", "result"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: MetricWorkqueueWait, Help: "From an operator's receipt of an object to the start of its reconcile.", Buckets: StageBuckets,
		}, []string{"component", "controller"}),
		known: newCapped[[2]string](maxControllers),
	}
}

func (r *reconcileMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{r.duration, r.total, r.wait}
}

func (r *reconcileMetrics) label(component, controller string) string {
	if !r.known.admits([2]string{component, controller}) {
		return OverflowController
	}
	return controller
}

// ObserveReconcile records one reconcile; wait is its time in the queue
// (negative: not known).
func (m *Metrics) ObserveReconcile(component, controller, result string, d, wait time.Duration) {
	if m == nil {
		return
	}
	c := m.reconciles.label(component, controller)
	m.reconciles.duration.WithLabelValues(component, c, result).Observe(d.Seconds())
	m.reconciles.total.WithLabelValues(component, c, result).Inc()
	if wait >= 0 {
		m.reconciles.wait.WithLabelValues(component, c).Observe(wait.Seconds())
	}
}
