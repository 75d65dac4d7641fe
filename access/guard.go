// Package access decides who may read the agent's endpoints, the way
// Kubernetes components decide it for theirs: the caller is whoever a client
// certificate signed by the cluster's client CA names, or whoever the API
// server says a bearer token belongs to (TokenReview); what the caller may
// read is what a SubjectAccessReview of the endpoint's path allows. The
// traces endpoint lists object names and URL paths: nobody who merely
// reaches a node may read it.
package access

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Results of a request to a guarded endpoint, the values of the metric's
// result label.
const (
	ResultAllowed         = "allowed"
	ResultUnauthenticated = "unauthenticated"
	ResultForbidden       = "forbidden"
	// ResultReviewFailed: the API server could not be asked (down,
	// unreachable, the agent's RBAC missing). The caller gets 503, not a
	// verdict the agent did not reach.
	ResultReviewFailed = "review_failed"
)

// Results lists every result, for counters that start at zero.
var Results = []string{ResultAllowed, ResultUnauthenticated, ResultForbidden, ResultReviewFailed}

// A User is who a request comes from.
type User struct {
	Name   string
	UID    string
	Groups []string
	Extra  map[string][]string
}

// Options configure a Guard.
type Options struct {
	// Client asks the API server the reviews.
	Client kubernetes.Interface
	// ClientCAs verifies client certificates; nil while none is known, and
	// then certificates authenticate nobody.
	ClientCAs *CAs
	// TTL is how long a review's answer is reused (10 s unless set: as
	// kube-apiserver's delegated authentication and authorization cache
	// them). A revoked token or binding keeps working that long.
	TTL time.Duration
	// Observe is told each request's endpoint and result.
	Observe func(endpoint, result string)
	// Now is the clock (time.Now unless set).
	Now func() time.Time
}

// A Guard lets a request through to an endpoint when its caller may get that
// endpoint's path. A nil Guard lets every request through: the endpoints are
// then served to whoever reaches them, which the agent allows only on a
// loopback address or when told so.
type Guard struct {
	o      Options
	tokens cache[User]
	grants cache[struct{}]
}

// NewGuard returns a Guard asking o.Client.
func NewGuard(o Options) *Guard {
	if o.TTL == 0 {
		o.TTL = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Observe == nil {
		o.Observe = func(string, string) {}
	}
	return &Guard{o: o}
}

// A Permission is what a caller must be allowed to get to read an endpoint:
// a non-resource path (Path), or a resource (Group, Resource) that RBAC can
// grant though no API serves it. A path under /api/ or /apis/ must be a
// resource: RBAC's default ClusterRole system:discovery lets every
// authenticated user get /api/* and /apis/*.
type Permission struct {
	Path            string
	Group, Resource string
}

// Path is the permission to get a non-resource path.
func Path(p string) Permission { return Permission{Path: p} }

// Resource is the permission to get resource in group.
func Resource(group, resource string) Permission {
	return Permission{Group: group, Resource: resource}
}

func (p Permission) String() string {
	if p.Path != "" {
		return p.Path
	}
	return p.Resource + "." + p.Group
}

// rule is the RBAC rule that grants p.
func (p Permission) rule() string {
	if p.Path != "" {
		return fmt.Sprintf("nonResourceURLs [%q], verbs [get]", p.Path)
	}
	return fmt.Sprintf("apiGroups [%q], resources [%q], verbs [get]", p.Group, p.Resource)
}

func (p Permission) attributes(sar *authzv1.SubjectAccessReviewSpec) {
	if p.Path != "" {
		sar.NonResourceAttributes = &authzv1.NonResourceAttributes{Path: p.Path, Verb: "get"}
		return
	}
	sar.ResourceAttributes = &authzv1.ResourceAttributes{Group: p.Group, Resource: p.Resource, Verb: "get"}
}

// Require serves h at endpoint to callers allowed p. endpoint is the path
// the handler is registered at, the label counted whatever the request's URL
// holds.
func (g *Guard) Require(endpoint string, p Permission, h http.Handler) http.Handler {
	if g == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, endpoint+" is read-only: GET or HEAD", http.StatusMethodNotAllowed)
			return
		}
		u, err := g.authenticate(r)
		if err != nil {
			g.refuse(w, endpoint, err)
			return
		}
		if err := g.authorize(r.Context(), u, p); err != nil {
			g.refuse(w, endpoint, err)
			return
		}
		g.o.Observe(endpoint, ResultAllowed)
		h.ServeHTTP(w, r)
	})
}

// Errors a refusal wraps, one per result.
var (
	ErrUnauthenticated = errors.New("unauthenticated")
	ErrForbidden       = errors.New("forbidden")
	ErrReviewFailed    = errors.New("the API server could not review the request")
)

func (g *Guard) refuse(w http.ResponseWriter, endpoint string, err error) {
	switch {
	case errors.Is(err, ErrUnauthenticated):
		g.o.Observe(endpoint, ResultUnauthenticated)
		w.Header().Set("WWW-Authenticate", `Bearer realm="kpath-agent"`)
		http.Error(w, err.Error(), http.StatusUnauthorized)
	case errors.Is(err, ErrForbidden):
		g.o.Observe(endpoint, ResultForbidden)
		http.Error(w, err.Error(), http.StatusForbidden)
	default:
		g.o.Observe(endpoint, ResultReviewFailed)
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	}
}

// authenticate finds the caller: a verified client certificate first (it
// needs no round trip), then a bearer token.
func (g *Guard) authenticate(r *http.Request) (User, error) {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return g.o.ClientCAs.verify(r.TLS.PeerCertificates)
	}
	auth := r.Header.Get("Authorization")
	token, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || strings.TrimSpace(token) == "" {
		return User{}, fmt.Errorf("%w: no client certificate and no bearer token: present a service account token (Prometheus: bearer_token_file) or a certificate of the cluster's client CA", ErrUnauthenticated)
	}
	token = strings.TrimSpace(token)
	key := sha256.Sum256([]byte(token))
	now := g.o.Now()
	if u, err, ok := g.tokens.get(key, now); ok {
		return u, err
	}
	u, err := g.reviewToken(r.Context(), token)
	if err == nil || errors.Is(err, ErrUnauthenticated) {
		g.tokens.put(key, u, err, now.Add(g.o.TTL))
	}
	return u, err
}

func (g *Guard) reviewToken(ctx context.Context, token string) (User, error) {
	tr, err := g.o.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return User{}, fmt.Errorf("%w: TokenReview: %w (the agent's service account needs create on tokenreviews: ClusterRole system:auth-delegator)", ErrReviewFailed, err)
	}
	if !tr.Status.Authenticated {
		why := tr.Status.Error
		if why == "" {
			why = "the API server does not know the token"
		}
		return User{}, fmt.Errorf("%w: bearer token rejected: %s", ErrUnauthenticated, why)
	}
	u := tr.Status.User
	extra := map[string][]string{}
	for k, v := range u.Extra {
		extra[k] = v
	}
	return User{Name: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra}, nil
}

func (g *Guard) authorize(ctx context.Context, u User, p Permission) error {
	key := sha256.Sum256([]byte(u.Name + "\x00" + strings.Join(u.Groups, "\x00") + "\x00\x00" + p.Path + "\x00" + p.Group + "\x00" + p.Resource))
	now := g.o.Now()
	if _, err, ok := g.grants.get(key, now); ok {
		return err
	}
	extra := map[string]authzv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = v
	}
	spec := authzv1.SubjectAccessReviewSpec{User: u.Name, UID: u.UID, Groups: u.Groups, Extra: extra}
	p.attributes(&spec)
	sar, err := g.o.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("%w: SubjectAccessReview: %w (the agent's service account needs create on subjectaccessreviews: ClusterRole system:auth-delegator)", ErrReviewFailed, err)
	}
	if !sar.Status.Allowed || sar.Status.Denied {
		err = fmt.Errorf("%w: user %q may not get %s: bind it to a ClusterRole with %s", ErrForbidden, u.Name, p, p.rule())
		if sar.Status.Reason != "" {
			err = fmt.Errorf("%w (%s)", err, sar.Status.Reason)
		}
	}
	g.grants.put(key, struct{}{}, err, now.Add(g.o.TTL))
	return err
}

// cache holds reviews' answers until they expire. It is bounded: when full,
// it starts over, which costs one review per caller, not a wrong answer.
type cache[V any] struct {
	mu sync.Mutex
	m  map[[32]byte]entry[V]
}

type entry[V any] struct {
	v       V
	err     error
	expires time.Time
}

const cacheMax = 4096

func (c *cache[V]) get(k [32]byte, now time.Time) (V, error, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || !now.Before(e.expires) {
		var zero V
		return zero, nil, false
	}
	return e.v, e.err, true
}

func (c *cache[V]) put(k [32]byte, v V, err error, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= cacheMax {
		c.m = map[[32]byte]entry[V]{}
	}
	c.m[k] = entry[V]{v: v, err: err, expires: expires}
}

// CAs is the cluster's client CA bundle as last read.
type CAs struct{ pool atomic.Pointer[x509.CertPool] }

// Set replaces the bundle.
func (c *CAs) Set(p *x509.CertPool) { c.pool.Store(p) }

// verify names the caller of a certificate chain as kube-apiserver does: the
// subject's common name is the user, its organizations the groups.
func (c *CAs) verify(chain []*x509.Certificate) (User, error) {
	var pool *x509.CertPool
	if c != nil {
		pool = c.pool.Load()
	}
	if pool == nil {
		return User{}, fmt.Errorf("%w: a client certificate, but the agent knows no client CA to verify it (kube-system/extension-apiserver-authentication has no client-ca-file, or it could not be read; --client-ca-file gives one)", ErrUnauthenticated)
	}
	inter := x509.NewCertPool()
	for _, ic := range chain[1:] {
		inter.AddCert(ic)
	}
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return User{}, fmt.Errorf("%w: client certificate %q: %w", ErrUnauthenticated, leaf.Subject.CommonName, err)
	}
	if leaf.Subject.CommonName == "" {
		return User{}, fmt.Errorf("%w: client certificate without a common name", ErrUnauthenticated)
	}
	// kube-apiserver adds this group to every authenticated user; a TokenReview's answer holds it already.
	groups := append(append([]string(nil), leaf.Subject.Organization...), "system:authenticated")
	return User{Name: leaf.Subject.CommonName, Groups: groups}, nil
}
