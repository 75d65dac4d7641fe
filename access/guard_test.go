package access

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// apiServer answers the guard's reviews as kube-apiserver with RBAC would:
// tokens name users, grants name who may get which path.
type apiServer struct {
	mu        sync.Mutex
	tokens    map[string]authnv1.UserInfo
	grants    map[string][]string // path or resource.group → users or groups allowed
	down      bool
	tokenRevs int
	sars      []authzv1.SubjectAccessReviewSpec
}

func (a *apiServer) client() *fake.Clientset {
	cs := fake.NewSimpleClientset()
	cs.PrependReactor("create", "tokenreviews", func(act k8stesting.Action) (bool, runtime.Object, error) {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.down {
			return true, nil, errors.New("connection refused")
		}
		a.tokenRevs++
		tr := act.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
		u, ok := a.tokens[tr.Spec.Token]
		out := tr.DeepCopy()
		out.Status = authnv1.TokenReviewStatus{Authenticated: ok, User: u}
		if !ok {
			out.Status.Error = "invalid bearer token"
		}
		return true, out, nil
	})
	cs.PrependReactor("create", "subjectaccessreviews", func(act k8stesting.Action) (bool, runtime.Object, error) {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.down {
			return true, nil, errors.New("connection refused")
		}
		sar := act.(k8stesting.CreateAction).GetObject().(*authzv1.SubjectAccessReview)
		a.sars = append(a.sars, sar.Spec)
		out := sar.DeepCopy()
		var what string
		switch na, ra := sar.Spec.NonResourceAttributes, sar.Spec.ResourceAttributes; {
		case na != nil && na.Verb == "get":
			what = na.Path
		case ra != nil && ra.Verb == "get" && ra.Namespace == "" && ra.Subresource == "" && ra.Name == "":
			what = ra.Resource + "." + ra.Group
		}
		if what != "" {
			for _, who := range a.grants[what] {
				if who == sar.Spec.User || contains(sar.Spec.Groups, who) {
					out.Status.Allowed = true
				}
			}
		}
		return true, out, nil
	})
	return cs
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

type observed struct {
	mu sync.Mutex
	n  map[string]int
}

func (o *observed) add(endpoint, result string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.n[endpoint+" "+result]++
}

func (o *observed) get(k string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[k]
}

func serveGuarded(t *testing.T, g *Guard) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/metrics", g.Require("/metrics", Path("/metrics"), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "metrics") })))
	mux.Handle("/api/v1/traces", g.Require("/api/v1/traces", Resource("kpath.dev", "traces"), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "traces") })))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	srv := httptest.NewUnstartedServer(mux)
	cfg, what, err := ServingTLS("", "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(what, "self-signed, sha256 ") {
		t.Errorf("ServingTLS said %q", what)
	}
	srv.TLS = cfg
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, srv *httptest.Server, path, token string, cert *tls.Certificate) (int, string) {
	t.Helper()
	tc := &tls.Config{InsecureSkipVerify: true}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestGuardAsksTheAPIServerWhoAndWhat(t *testing.T) {
	api := &apiServer{
		tokens: map[string]authnv1.UserInfo{
			"prom":     {Username: "system:serviceaccount:monitoring:prometheus", Groups: []string{"system:serviceaccounts", "system:authenticated"}},
			"stranger": {Username: "system:serviceaccount:default:default", Groups: []string{"system:serviceaccounts", "system:authenticated"}},
			"sre":      {Username: "alice", Groups: []string{"sre", "system:authenticated"}},
		},
		grants: map[string][]string{
			"/metrics":         {"system:serviceaccount:monitoring:prometheus", "sre"},
			"traces.kpath.dev": {"sre"},
			// RBAC's system:discovery: every authenticated user may get /api/*.
			"/api/v1/traces": {"system:authenticated"},
		},
	}
	obs := &observed{n: map[string]int{}}
	now := time.Unix(1000, 0)
	var clock sync.Mutex
	g := NewGuard(Options{Client: api.client(), Observe: obs.add, Now: func() time.Time { clock.Lock(); defer clock.Unlock(); return now }})
	srv := serveGuarded(t, g)

	cases := []struct {
		path, token string
		code        int
		says        string
	}{
		{"/healthz", "", 200, "ok"},
		{"/metrics", "", 401, "no client certificate and no bearer token"},
		{"/api/v1/traces", "", 401, "no client certificate and no bearer token"},
		{"/metrics", "forged", 401, "bearer token rejected: invalid bearer token"},
		{"/metrics", "prom", 200, "metrics"},
		{"/api/v1/traces", "prom", 403, `user "system:serviceaccount:monitoring:prometheus" may not get traces.kpath.dev: bind it to a ClusterRole with apiGroups ["kpath.dev"], resources ["traces"], verbs [get]`},
		{"/metrics", "stranger", 403, "may not get /metrics"},
		{"/api/v1/traces", "sre", 200, "traces"},
		{"/metrics", "sre", 200, "metrics"},
	}
	for _, c := range cases {
		code, body := get(t, srv, c.path, c.token, nil)
		if code != c.code || !strings.Contains(body, c.says) {
			t.Errorf("GET %s with token %q: %d %q, want %d and %q", c.path, c.token, code, body, c.code, c.says)
		}
	}
	for k, want := range map[string]int{
		"/metrics allowed": 2, "/metrics unauthenticated": 2, "/metrics forbidden": 1,
		"/api/v1/traces allowed": 1, "/api/v1/traces unauthenticated": 1, "/api/v1/traces forbidden": 1,
	} {
		if got := obs.get(k); got != want {
			t.Errorf("observed %q %d times, want %d", k, got, want)
		}
	}
	for _, s := range api.sars {
		if na, ra := s.NonResourceAttributes, s.ResourceAttributes; (na == nil) == (ra == nil) || (na != nil && na.Path != "/metrics") || (ra != nil && *ra != (authzv1.ResourceAttributes{Group: "kpath.dev", Resource: "traces", Verb: "get"})) {
			t.Errorf("reviewed %+v", s)
		}
	}

	// Answers are reused for the TTL: no review while the API server is
	// down, then a 503 that says so once they expire.
	reviews := api.tokenRevs
	api.mu.Lock()
	api.down = true
	api.mu.Unlock()
	if code, _ := get(t, srv, "/metrics", "prom", nil); code != 200 {
		t.Errorf("a cached grant: %d, want 200", code)
	}
	if api.tokenRevs != reviews {
		t.Errorf("%d token reviews for a cached token", api.tokenRevs-reviews)
	}
	clock.Lock()
	now = now.Add(11 * time.Second)
	clock.Unlock()
	code, body := get(t, srv, "/metrics", "prom", nil)
	if code != 503 || !strings.Contains(body, "TokenReview: connection refused") || !strings.Contains(body, "system:auth-delegator") {
		t.Errorf("API server down: %d %q, want 503 naming the review and the fix", code, body)
	}
	if obs.get("/metrics review_failed") != 1 {
		t.Errorf("review failure not counted: %v", obs.n)
	}
	// Only GET and HEAD: the endpoints are read-only.
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/metrics", nil)
	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: %d", resp.StatusCode)
	}
}

func TestGuardTakesClientCertificatesOfTheClusterCA(t *testing.T) {
	ca, caKey := newCA(t, "cluster-ca")
	other, otherKey := newCA(t, "another-ca")
	api := &apiServer{grants: map[string][]string{"traces.kpath.dev": {"sre"}}}
	cas := &CAs{}
	g := NewGuard(Options{Client: api.client(), ClientCAs: cas})
	srv := serveGuarded(t, g)

	alice := clientCert(t, ca, caKey, "alice", "sre")
	if code, body := get(t, srv, "/api/v1/traces", "", &alice); code != 401 || !strings.Contains(body, "knows no client CA") {
		t.Errorf("no CA known yet: %d %q", code, body)
	}
	p := x509.NewCertPool()
	p.AddCert(ca)
	cas.Set(p)
	if code, body := get(t, srv, "/api/v1/traces", "", &alice); code != 200 || body != "traces" {
		t.Errorf("alice of group sre: %d %q", code, body)
	}
	bob := clientCert(t, ca, caKey, "bob", "dev")
	if code, body := get(t, srv, "/api/v1/traces", "", &bob); code != 403 || !strings.Contains(body, `user "bob" may not get traces.kpath.dev`) {
		t.Errorf("bob of group dev: %d %q", code, body)
	}
	mallory := clientCert(t, other, otherKey, "alice", "sre")
	if code, body := get(t, srv, "/api/v1/traces", "", &mallory); code != 401 || !strings.Contains(body, `client certificate "alice"`) {
		t.Errorf("a certificate of another CA: %d %q", code, body)
	}
	var groups []string
	for _, s := range api.sars {
		if s.User == "alice" {
			groups = s.Groups
		}
	}
	if fmt.Sprint(groups) != "[sre system:authenticated]" {
		t.Errorf("alice reviewed with groups %v", groups)
	}
}

func newCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

func clientCert(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, user, group string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: user, Organization: []string{group}}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
