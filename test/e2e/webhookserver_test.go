package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	arv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kpath/kpath/correlate"
)

// TestWebhookServerSpansAreInsideTheCall runs the lab's operator as a
// controller-runtime webhook server (found by its build info, like its
// reconciles) for the test namespace's pod creates, sleeping 300 ms when a
// pod asks. The pod create's trace must hold the server's own handling of
// the call, under kube-apiserver's call of that webhook and inside it, as
// the slowest leaf of the write; the call is counted by webhook name.
func TestWebhookServerSpansAreInsideTheCall(t *testing.T) {
	se := begin(t, 4*time.Minute, "kpath-e2e-hookserver-")
	l, ctx, rcv, a, ns := se.l, se.ctx, se.rcv, se.a, se.ns

	der, key := selfSigned(t)
	certDir := t.TempDir()
	keyDER, err := keyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(certDir, "tls.crt"), certPEM(der), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(certDir, "tls.key"), keyDER, 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	startWidgetop(ctx, t, l, a, ns, "--webhook-port="+strconv.Itoa(port), "--webhook-cert-dir="+certDir)

	const name = "sleepy.kpath.dev"
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}}
	none, fail, timeout := arv1.SideEffectClassNone, arv1.Fail, int32(10)
	url := fmt.Sprintf("https://127.0.0.1:%d/mutate-pods", port)
	mw, err := l.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &arv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "kpath-e2e-"},
		Webhooks: []arv1.MutatingWebhook{{Name: name, ClientConfig: arv1.WebhookClientConfig{URL: &url, CABundle: certPEM(der)},
			Rules: []arv1.RuleWithOperations{{Operations: []arv1.OperationType{arv1.Create},
				Rule: arv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector: sel, SideEffects: &none, FailurePolicy: &fail, TimeoutSeconds: &timeout, AdmissionReviewVersions: []string{"v1"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, mw.Name, metav1.DeleteOptions{})
	})
	// The apiserver picks the configuration up from its informer: dry-run
	// creates until it calls the webhook (the agent counts the call).
	pods := l.client.CoreV1().Pods(ns)
	err = waitFor(ctx, "the apiserver to call "+name, func() (bool, error) {
		_, err := pods.Create(ctx, runningPod("probe"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Logf("dry-run create: %v", err)
		}
		m, err := a.scrape()
		return err == nil && m.sum("kpath_webhook_duration_seconds_count", "webhook", name, "type", "admit") > 0, nil
	})
	if err != nil {
		t.Fatal(err)
	}

	p := runningPod("sleepy")
	p.Annotations = map[string]string{"kpath.dev/webhook-sleep": "300ms"}
	got, err := pods.Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rev, _ := strconv.ParseInt(got.ResourceVersion, 10, 64)
	var tr *trace
	var server *tracepb.Span
	err = waitFor(ctx, "the pod create's trace with the webhook server's span", func() (bool, error) {
		tr = groupTraces(rcv.Spans())[fmt.Sprintf("%x", correlate.WriteTraceID(rev))]
		if tr == nil || tr.root() == nil {
			return false, nil
		}
		ss := tr.stage("webhook-server")
		if len(ss) == 0 {
			return false, nil
		}
		server = ss[0]
		return true, nil
	})
	if err != nil {
		if tr != nil {
			t.Logf("the create's trace as received:\n%s", tr.dump())
		}
		t.Fatal(err)
	}
	if err := tr.checkShape(); err != nil {
		t.Errorf("the create's trace: %v\n%s", err, tr.dump())
	}
	var call *tracepb.Span
	for _, s := range tr.spans {
		if string(s.SpanId) == string(server.ParentSpanId) {
			call = s
		}
	}
	sa := attrs(server)
	if call == nil || attrs(call)["kpath.stage"] != "admission-webhook" || attrs(call)["kpath.webhook"] != name {
		t.Fatalf("the server's span %q hangs under %v, want kube-apiserver's call of %s\n%s", server.Name, call, name, tr.dump())
	}
	if sa["kpath.component"] != "widgetop" || sa["url.path"] != "/mutate-pods" || attrs(call)["kpath.uid"] == nil {
		t.Errorf("server span %q %v, call %v: want widgetop's /mutate-pods, the call carrying the review's UID", server.Name, sa, attrs(call))
	}
	d := time.Duration(server.EndTimeUnixNano - server.StartTimeUnixNano)
	if d < 300*time.Millisecond {
		t.Errorf("the server's span lasts %v; its handler slept 300ms", d)
	}
	// The slowest leaf of the write: what the create waited for.
	children := map[string]int{}
	for _, s := range tr.spans {
		children[string(s.ParentSpanId)]++
	}
	for _, s := range tr.spans {
		if children[string(s.SpanId)] == 0 && s != server && s.EndTimeUnixNano-s.StartTimeUnixNano > server.EndTimeUnixNano-server.StartTimeUnixNano {
			t.Errorf("leaf %q (%v) is slower than the webhook server's span (%v)", s.Name,
				time.Duration(s.EndTimeUnixNano-s.StartTimeUnixNano), d)
		}
	}
	callD := time.Duration(call.EndTimeUnixNano - call.StartTimeUnixNano)
	t.Logf("pod create rev %d: call of %s %v, served in %v (network, TLS and the apiserver's side %v)", rev, name, callD, d, callD-d)

	// The counters reach /metrics every 2 s: wait for the server's hits of
	// every call counted.
	var calls, hits float64
	err = waitFor(ctx, "the webhook server's probe hits counted", func() (bool, error) {
		m, err := a.scrape()
		if err != nil {
			return false, nil
		}
		calls = m.sum("kpath_webhook_duration_seconds_count", "webhook", name, "type", "admit")
		hits = m.sum("kpath_probe_hits_total", "component", "widgetop", "probe", "operator.webhook.serve") +
			m.sum("kpath_probe_hits_total", "component", "widgetop", "probe", "operator.webhook.respond")
		return calls >= 2 && hits >= 2*calls, nil
	})
	if err != nil {
		t.Fatalf("%v: %.0f calls of %s counted (want the dry runs' and the create's), %.0f server hits", err, calls, name, hits)
	}
	t.Logf("%s: %.0f calls counted; the server's %.0f probe hits, %.2f a call, both entry sites", name, calls, hits, hits/calls)
	if hits > 2*calls {
		t.Errorf("%.2f server probe hits a call, want 2", hits/calls)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
