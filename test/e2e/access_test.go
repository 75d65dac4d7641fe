package e2e

// Who may read a DaemonSet agent's endpoints (issue 10, security): the
// agent on the node's network serves /metrics and /api/v1/traces over HTTPS
// to callers the lab's API server authenticates and RBAC authorizes, and
// `kubectl kpath explain` keeps working through it with a user's own
// credentials.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// dsCheckEndpointAccess asks the agent on 127.0.0.1:port as nobody, as a
// service account without a binding, as one bound to kpath-metrics-reader
// (Prometheus) and as the admin, and checks each answer and its count.
func dsCheckEndpointAccess(ctx context.Context, t *testing.T, l *lab, port, ns string) {
	t.Helper()
	as := func(token string) *agent { return &agent{metrics: "127.0.0.1:" + port, guarded: true, token: token} }
	status := func(a *agent, path string) (int, string) {
		resp, err := a.get(path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	expect := func(who string, a *agent, path string, code int, says string) {
		t.Helper()
		got, body := status(a, path)
		if got != code || !strings.Contains(body, says) {
			t.Errorf("%s GET %s: %d %q, want %d and %q", who, path, got, body, code, says)
		}
	}
	expect("nobody", as(""), "/healthz", 200, "ok")
	expect("nobody", as(""), "/readyz", 200, "ok")
	expect("nobody", as(""), "/metrics", 401, "no client certificate and no bearer token")
	expect("nobody", as(""), "/api/v1/traces", 401, "no client certificate and no bearer token")
	expect("a forged token", as("not-a-token"), "/api/v1/traces", 401, "bearer token rejected")

	nobody := saToken(ctx, t, l, ns, "kpath-e2e-nobody")
	expect("an unbound service account", as(nobody), "/metrics", 403, `may not get /metrics`)

	prom := saToken(ctx, t, l, ns, "kpath-e2e-prometheus")
	bind(ctx, t, l, "kpath-e2e-prometheus-"+ns, "kpath-metrics-reader", rbacv1.Subject{Kind: "ServiceAccount", Name: "kpath-e2e-prometheus", Namespace: ns})
	// RBAC reaches the API server's authorizer through its informer, and
	// the agent keeps a refusal 10 s.
	wctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	if err := waitFor(wctx, "the agent lets Prometheus' service account get /metrics", func() (bool, error) {
		code, _ := status(as(prom), "/metrics")
		return code == 200, nil
	}); err != nil {
		t.Error(err)
	}
	// RBAC's system:discovery lets every authenticated user get /api/*: the
	// traces are reviewed as a resource, so it does not open them.
	expect("Prometheus", as(prom), "/api/v1/traces", 403, "may not get traces.kpath.dev")
	expect("the admin (system:masters)", as(l.cfg.BearerToken), "/api/v1/traces", 200, "")

	m, err := as(l.cfg.BearerToken).scrape()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ endpoint, result string }{
		{"/metrics", "unauthenticated"}, {"/api/v1/traces", "unauthenticated"}, {"/metrics", "forbidden"},
		{"/api/v1/traces", "forbidden"}, {"/metrics", "allowed"}, {"/api/v1/traces", "allowed"},
	} {
		if n := m.sum("kpath_endpoint_requests_total", "endpoint", c.endpoint, "result", c.result); n < 1 {
			t.Errorf("kpath_endpoint_requests_total{endpoint=%q,result=%q} = %v, want ≥ 1", c.endpoint, c.result, n)
		}
	}
	t.Logf("guarded endpoints: health probes open; no credential 401; unbound 403; kpath-metrics-reader gets /metrics only; admin gets traces")
}

// saToken makes a service account in ns and a token of it.
func saToken(ctx context.Context, t *testing.T, l *lab, ns, name string) string {
	t.Helper()
	if _, err := l.client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ttl := int64(600)
	tr, err := l.client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &ttl}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// bind makes a ClusterRoleBinding, removed when the test ends.
func bind(ctx context.Context, t *testing.T, l *lab, name, clusterRole string, subjects ...rbacv1.Subject) {
	t.Helper()
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: clusterRole}, Subjects: subjects}
	l.client.RbacV1().ClusterRoleBindings().Delete(ctx, name, metav1.DeleteOptions{})
	if _, err := l.client.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.client.RbacV1().ClusterRoleBindings().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// bindIn makes a RoleBinding in ns to a Role (kind "Role") or ClusterRole.
func bindIn(ctx context.Context, t *testing.T, l *lab, ns, name, kind, role string, subjects ...rbacv1.Subject) {
	t.Helper()
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: kind, Name: role}, Subjects: subjects}
	l.client.RbacV1().RoleBindings(ns).Delete(ctx, name, metav1.DeleteOptions{})
	if _, err := l.client.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.client.RbacV1().RoleBindings(ns).Delete(context.Background(), name, metav1.DeleteOptions{}) })
}

// userKubeconfig is a kubeconfig of the lab for user in group, by a client
// certificate the lab's CA signs: what kind and kubeadm give their users.
func userKubeconfig(t *testing.T, l *lab, user, group string) string {
	t.Helper()
	caPEM, err := os.ReadFile(filepath.Join(l.dir, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	caKeyPEM, err := os.ReadFile(filepath.Join(l.dir, "pki", "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := pem.Decode(caPEM)
	kb, _ := pem.Decode(caKeyPEM)
	if cb == nil || kb == nil {
		t.Fatal("the lab's CA is not PEM")
	}
	ca, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		if caKey, err = x509.ParsePKCS1PrivateKey(kb.Bytes); err != nil {
			t.Fatalf("the lab's CA key: %v", err)
		}
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: user, Organization: []string{group}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := keyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), user+".kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: lab, cluster: {server: %q, certificate-authority: %q}}]
users: [{name: %s, user: {client-certificate: %q, client-key: %q}}]
contexts: [{name: lab, context: {cluster: lab, user: %s}}]
current-context: lab
`, l.cfg.Host, filepath.Join(l.dir, "pki", "ca.crt"), user, path+".crt", path+".key", user)
	for f, b := range map[string][]byte{path: []byte(kc), path + ".crt": certPEM(der), path + ".key": kp} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return path
}
