package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	arv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kpath/kpath/export/otlptest"
)

// webhookServer answers admission reviews on 127.0.0.1 with TLS, after a
// fixed delay per path so that the spans have a known lower bound.
type webhookServer struct {
	url    string
	caPEM  []byte
	calls  map[string]*atomic.Int64
	delays map[string]time.Duration
}

// selfSigned is a certificate for a webhook server on 127.0.0.1, its own
// CA (the webhook configuration's caBundle is its PEM).
func selfSigned(t *testing.T) (der []byte, key *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kpath-e2e-webhook"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// keyPEM is key as a server reads its tls.key.
func keyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	b, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: b}), nil
}

func startWebhooks(t *testing.T, delays map[string]time.Duration) *webhookServer {
	t.Helper()
	der, key := selfSigned(t)
	ws := &webhookServer{
		caPEM:  certPEM(der),
		calls:  map[string]*atomic.Int64{},
		delays: delays,
	}
	mux := http.NewServeMux()
	for path := range delays {
		ws.calls[path] = &atomic.Int64{}
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			var review admissionv1.AdmissionReview
			if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
				http.Error(w, "bad review", http.StatusBadRequest)
				return
			}
			ws.calls[path].Add(1)
			time.Sleep(ws.delays[path])
			review.Response = &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
			review.Request = nil
			json.NewEncoder(w).Encode(&review)
		})
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}}
	go srv.ServeTLS(l, "", "")
	t.Cleanup(func() { srv.Close() })
	ws.url = "https://" + l.Addr().String()
	return ws
}

// installWebhooks points a mutating and a validating webhook at ws for the
// ConfigMap creates of namespace ns, and waits until the apiserver calls
// both. They are removed when the test ends.
func installWebhooks(ctx context.Context, t *testing.T, l *lab, ns string, ws *webhookServer, mname, vname string) {
	t.Helper()
	// Only this namespace's ConfigMap creates go to the webhooks.
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}}
	rules := []arv1.RuleWithOperations{{Operations: []arv1.OperationType{arv1.Create},
		Rule: arv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}}}}
	none, fail, timeout := arv1.SideEffectClassNone, arv1.Fail, int32(5)
	url := func(p string) *string { s := ws.url + p; return &s }
	mw, err := l.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &arv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "kpath-e2e-"},
		Webhooks: []arv1.MutatingWebhook{{Name: mname, ClientConfig: arv1.WebhookClientConfig{URL: url("/mutate"), CABundle: ws.caPEM},
			Rules: rules, NamespaceSelector: sel, SideEffects: &none, FailurePolicy: &fail, TimeoutSeconds: &timeout, AdmissionReviewVersions: []string{"v1"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), mw.Name, metav1.DeleteOptions{})
	})
	vw, err := l.client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, &arv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "kpath-e2e-"},
		Webhooks: []arv1.ValidatingWebhook{{Name: vname, ClientConfig: arv1.WebhookClientConfig{URL: url("/validate"), CABundle: ws.caPEM},
			Rules: rules, NamespaceSelector: sel, SideEffects: &none, FailurePolicy: &fail, TimeoutSeconds: &timeout, AdmissionReviewVersions: []string{"v1"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(context.Background(), vw.Name, metav1.DeleteOptions{})
	})
	// The apiserver picks webhook configurations up from its own informer:
	// dry-run creates until both webhooks are called.
	cms := l.client.CoreV1().ConfigMaps(ns)
	err = waitFor(ctx, "both webhooks to be called", func() (bool, error) {
		_, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "probe-"}}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Logf("dry-run create: %v", err)
		}
		return ws.calls["/mutate"].Load() > 0 && ws.calls["/validate"].Load() > 0, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAdmissionWebhooksAreTraced(t *testing.T) {
	l := needLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	delays := map[string]time.Duration{"/mutate": 20 * time.Millisecond, "/validate": 30 * time.Millisecond}
	ws := startWebhooks(t, delays)
	ns := makeNamespace(ctx, t, l, "kpath-e2e-hooks-")
	mname, vname := "mutate.kpath.io", "validate.kpath.io"
	installWebhooks(ctx, t, l, ns, ws, mname, vname)
	cms := l.client.CoreV1().ConfigMaps(ns)

	rcv := otlptest.Start(t)
	startAgent(t, rcv.Addr())
	var exp []expected
	for i := 0; i < 5; i++ {
		name := fmt.Sprintf("hooked-%d", i)
		cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var rev int64
		fmt.Sscan(cm.ResourceVersion, &rev)
		exp = append(exp, expected{"create", "POST", "/registry/configmaps/" + ns + "/" + name, rev})
	}
	var traces map[string]*trace
	err := waitFor(ctx, "traces of the 5 creates", func() (bool, error) {
		traces = groupTraces(rcv.Spans())
		for _, w := range exp {
			if len(find(traces, w)) != 1 {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range exp {
		tr := find(traces, w)[0]
		if err := check(tr, w); err != nil {
			t.Errorf("%s: %v", w.key, err)
			continue
		}
		hooks := tr.stage("admission-webhook")
		got := map[string]time.Duration{}
		for _, h := range hooks {
			got[fmt.Sprint(attrs(h)["kpath.webhook"])] = time.Duration(h.EndTimeUnixNano - h.StartTimeUnixNano)
		}
		write := tr.stage("storage-write")[0]
		for name, path := range map[string]string{mname: "/mutate", vname: "/validate"} {
			d, ok := got[name]
			if !ok {
				t.Errorf("%s: no span for webhook %s (got %v)", w.key, name, got)
				continue
			}
			if d < delays[path] {
				t.Errorf("%s: webhook %s took %v, but the server alone slept %v", w.key, name, d, delays[path])
			}
		}
		for _, h := range hooks {
			if h.EndTimeUnixNano > write.StartTimeUnixNano {
				t.Errorf("%s: webhook %v ends after the storage write starts", w.key, attrs(h)["kpath.webhook"])
			}
		}
		if len(hooks) == 2 {
			t.Logf("%s: mutating %v, validating %v", w.key, got[mname], got[vname])
		}
	}
}
