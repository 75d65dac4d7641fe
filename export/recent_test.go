package export

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kpath/kpath/correlate"
)

// writeTrace is a one-span write trace of the object under key.
func writeTrace(b byte, key string, at time.Duration, extra ...correlate.Attribute) correlate.Trace {
	id := tid(b)
	attrs := append([]correlate.Attribute{{Key: correlate.AttrKey, Value: key}}, correlate.ParseKey(key).Attributes()...)
	return correlate.Trace{ID: id, Complete: true, Spans: []correlate.Span{{
		TraceID: id, SpanID: sid(b), Name: "POST", Start: t0.Add(at), End: t0.Add(at + time.Millisecond),
		Attributes: append(attrs, extra...),
	}}}
}

func ids(ts []RecentTrace) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.TraceID[:4])
	}
	return out
}

func hexOf(b byte) string { id := tid(b); return fmt.Sprintf("%x", id[:2]) }

func TestRecentIndexes(t *testing.T) {
	r := NewRecent(RecentOptions{})
	r.Export(podTrace(0x10)) // default/nginx, by attributes and key
	r.Export(writeTrace(0x20, "/registry/pods/default/web", time.Second))
	r.Export(writeTrace(0x30, "/registry/configmaps/default/nginx", 2*time.Second))
	// A kubelet-side piece that names only the UID, and one naming the pod and its UID.
	uidOnly := writeTrace(0x40, "/registry/pods/other/x", 3*time.Second)
	uidOnly.Spans[0].Attributes = []correlate.Attribute{{Key: correlate.AttrPodUID, Value: "uid-nginx"}}
	r.Export(uidOnly)
	r.Export(writeTrace(0x50, "/registry/pods/default/nginx", 4*time.Second, correlate.Attribute{Key: correlate.AttrPodUID, Value: "uid-nginx"}))
	// A custom resource (stored with its group), a built-in of a named
	// group (stored without it), a cluster-scoped one, under another prefix.
	r.Export(writeTrace(0x60, "/registry/kpath.dev/widgets/default/w1", 5*time.Second))
	r.Export(writeTrace(0x70, "/registry/deployments/default/nginx", 6*time.Second))
	r.Export(writeTrace(0x80, "/kubernetes.io/namespaces/default", 7*time.Second))

	for _, c := range []struct {
		q    RecentQuery
		want []string
	}{
		{RecentQuery{Namespace: "default", Pod: "nginx"}, []string{hexOf(0x10), hexOf(0x40), hexOf(0x50)}},
		{RecentQuery{Namespace: "default", Pod: "web"}, []string{hexOf(0x20)}},
		{RecentQuery{Namespace: "kube-system", Pod: "nginx"}, nil},
		{RecentQuery{UID: "uid-nginx"}, []string{hexOf(0x40), hexOf(0x50)}},
		{RecentQuery{Key: "/registry/configmaps/default/nginx"}, []string{hexOf(0x30)}},
		{RecentQuery{Group: "kpath.dev", Resource: "widgets", Namespace: "default", Name: "w1"}, []string{hexOf(0x60)}},
		{RecentQuery{Group: "other.io", Resource: "widgets", Namespace: "default", Name: "w1"}, nil},
		{RecentQuery{Group: "apps", Resource: "deployments", Namespace: "default", Name: "nginx"}, []string{hexOf(0x70)}},
		{RecentQuery{Resource: "configmaps", Namespace: "default", Name: "nginx"}, []string{hexOf(0x30)}},
		{RecentQuery{Resource: "namespaces", Name: "default"}, []string{hexOf(0x80)}},
		{RecentQuery{}, []string{hexOf(0x10), hexOf(0x20), hexOf(0x30), hexOf(0x40), hexOf(0x50), hexOf(0x60), hexOf(0x70), hexOf(0x80)}},
		{RecentQuery{Limit: 2}, []string{hexOf(0x70), hexOf(0x80)}},
	} {
		if got := ids(r.Query(c.q)); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%+v: got %v, want %v", c.q, got, c.want)
		}
	}
	// The configmap of the same name is not the pod.
	for _, tr := range r.Query(RecentQuery{Namespace: "default", Pod: "nginx"}) {
		for _, s := range tr.Spans {
			if k := s.Attributes[correlate.AttrKey]; k == "/registry/configmaps/default/nginx" {
				t.Errorf("pod query returned the configmap's trace")
			}
		}
	}
}

func TestRecentBounds(t *testing.T) {
	now := t0
	r := NewRecent(RecentOptions{MaxTraces: 3, MaxAge: time.Minute})
	r.now = func() time.Time { return now }
	for i := 0; i < 5; i++ {
		r.Export(writeTrace(byte(0x10*(i+1)), fmt.Sprintf("/registry/pods/default/p%d", i), time.Duration(i)*time.Second))
	}
	if got := ids(r.Query(RecentQuery{})); !reflect.DeepEqual(got, []string{hexOf(0x30), hexOf(0x40), hexOf(0x50)}) {
		t.Errorf("after 5 traces into 3 slots: %v", got)
	}
	if got := r.Query(RecentQuery{Namespace: "default", Pod: "p0"}); len(got) != 0 {
		t.Errorf("evicted trace still indexed: %v", ids(got))
	}
	if n := len(r.byID); n != 3 || r.order.Len() != 3 {
		t.Errorf("%d traces by ID, %d in order; want 3", n, r.order.Len())
	}
	now = now.Add(30 * time.Second)
	r.Export(writeTrace(0x60, "/registry/pods/default/p5", 5*time.Second))
	now = now.Add(45 * time.Second) // the first three are 75s old, p5 45s
	if got := ids(r.Query(RecentQuery{})); !reflect.DeepEqual(got, []string{hexOf(0x60)}) {
		t.Errorf("after aging: %v", got)
	}
	if len(r.byID) != 1 || r.order.Len() != 1 {
		t.Errorf("not let go: %d traces by ID, %d in order", len(r.byID), r.order.Len())
	}
}

func TestRecentMergesSameTrace(t *testing.T) {
	r := NewRecent(RecentOptions{})
	full := podTrace(0x10)
	first, second := full, full
	first.Spans, first.Complete = full.Spans[:2], false
	second.Spans = full.Spans[1:]
	r.Export(first)
	r.Export(second)
	got := r.Query(RecentQuery{Namespace: "default", Pod: "nginx"})
	if len(got) != 1 {
		t.Fatalf("%d traces, want 1 merged", len(got))
	}
	if len(got[0].Spans) != len(full.Spans) || !got[0].Complete {
		t.Errorf("merged trace has %d spans (want %d), complete=%v", len(got[0].Spans), len(full.Spans), got[0].Complete)
	}
}

func TestRecentHandlerRoundTrip(t *testing.T) {
	r := NewRecent(RecentOptions{Node: "node-a"})
	want := podTrace(0x10)
	r.Export(want)
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/api/v1/traces?namespace=default&pod=nginx")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var body TracesResponse
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	if err := dec.Decode(&body); err != nil {
		t.Fatal(err)
	}
	if body.Node != "node-a" || len(body.Traces) != 1 {
		t.Fatalf("node %q, %d traces", body.Node, len(body.Traces))
	}
	got, err := body.Traces[0].Trace()
	if err != nil {
		t.Fatal(err)
	}
	// The public encoding is lossless for what Waterfall shows.
	var a, b bytes.Buffer
	Waterfall(&a, want)
	Waterfall(&b, got)
	if a.String() != b.String() {
		t.Errorf("waterfall after the round trip differs:\n%s\nwant:\n%s", b.String(), a.String())
	}
	if rev := got.Spans[0].Attr(correlate.AttrRevision); rev != int64(1234567890123) {
		t.Errorf("revision %v (%T), want int64 1234567890123", rev, rev)
	}

	for _, c := range []struct {
		url  string
		code int
	}{
		{"/api/v1/traces?pod=nginx", 400},
		{"/api/v1/traces?limit=x", 400},
		{"/api/v1/traces", 200},
	} {
		resp, err := http.Get(srv.URL + c.url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("%s: %d, want %d", c.url, resp.StatusCode, c.code)
		}
	}
	resp, err = http.Post(srv.URL+"/api/v1/traces", "text/plain", strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", resp.StatusCode)
	}
}

type countingExporter struct {
	mu     sync.Mutex
	n      int
	closed bool
	err    error
}

func (c *countingExporter) Export(correlate.Trace) { c.mu.Lock(); c.n++; c.mu.Unlock() }
func (c *countingExporter) Close(context.Context) error {
	c.closed = true
	return c.err
}

func TestTee(t *testing.T) {
	a, b := &countingExporter{}, &countingExporter{err: fmt.Errorf("b failed")}
	e := Tee(a, b)
	e.Export(podTrace(1))
	e.Export(podTrace(2))
	err := e.Close(context.Background())
	if a.n != 2 || b.n != 2 || !a.closed || !b.closed {
		t.Errorf("a %d/%v b %d/%v", a.n, a.closed, b.n, b.closed)
	}
	if err == nil || !strings.Contains(err.Error(), "b failed") {
		t.Errorf("Close: %v", err)
	}
}

func TestRecentConcurrent(t *testing.T) {
	r := NewRecent(RecentOptions{MaxTraces: 50})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				r.Export(writeTrace(byte(i), fmt.Sprintf("/registry/pods/ns%d/p%d", w, i%7), time.Duration(i)))
				r.Query(RecentQuery{Namespace: "ns1", Pod: "p3"})
			}
		}()
	}
	wg.Wait()
	if n := r.Len(); n > 50 {
		t.Errorf("%d traces held, bound 50", n)
	}
}
