package export

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// MetricWebhookDuration is kube-apiserver's calls of admission webhooks,
// by webhook name and type: a public contract (doc.go).
const MetricWebhookDuration = "kpath_webhook_duration_seconds"

// maxWebhooks bounds the webhook label (the cluster's webhook
// configurations); past it calls count under OverflowWebhook.
const maxWebhooks = 256

// OverflowWebhook is the webhook label past maxWebhooks.
const OverflowWebhook = "other"

type webhookMetrics struct {
	duration *prometheus.HistogramVec
	known    *capped[string]
}

func newWebhookMetrics() *webhookMetrics {
	return &webhookMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: MetricWebhookDuration, Help: "kube-apiserver's calls of admission webhooks, as it times them, by webhook and type (admit: mutating; validating).",
			Buckets: StageBuckets,
		}, []string{"webhook", "type"}),
		known: newCapped[string](maxWebhooks),
	}
}

// ObserveWebhook records one call of an admission webhook.
func (m *Metrics) ObserveWebhook(webhook, typ string, d time.Duration) {
	if m == nil {
		return
	}
	if !m.webhooks.known.admits(webhook) {
		webhook = OverflowWebhook
	}
	m.webhooks.duration.WithLabelValues(webhook, typ).Observe(d.Seconds())
}
