package export

import (
	"container/list"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/kpath/kpath/correlate"
)

// Recent keeps the traces an agent exported lately in memory, so that
// `kubectl kpath explain` can ask every agent about one pod. It is bounded
// by count and by age, and answers by pod (k8s.namespace.name +
// k8s.pod.name, or a /registry/pods/NS/NAME key), pod UID (k8s.pod.uid),
// etcd key (kpath.key) and object. It is an Exporter, to be teed next to
// the real one (see Tee). Safe for concurrent use.
//
// It is written for every trace and read when someone asks, rarely: a
// query reads what each held trace is about from its spans, so that
// keeping a trace is a list push and one map entry, not an index of maps
// made and torn down per trace.
type Recent struct {
	max    int
	maxAge time.Duration
	node   string
	now    func() time.Time

	mu    sync.Mutex
	order *list.List // of *recentEntry, least recently updated first
	byID  map[correlate.TraceID]*list.Element
}

// RecentOptions bound a Recent store.
type RecentOptions struct {
	MaxTraces int           // default 2000
	MaxAge    time.Duration // default 10 minutes
	// Node is reported with every answer, so merged answers say which
	// agent saw what.
	Node string
}

// Defaults of RecentOptions.
const (
	DefaultRecentTraces = 2000
	DefaultRecentAge    = 10 * time.Minute
)

type podRef struct{ ns, name string }

// objectRef is an object as its etcd key names it: built-in groups are
// stored without their group, custom resources with it.
type objectRef struct{ group, resource, ns, name string }

// recentEntry holds a trace's spans as the correlator made them: they are
// turned into JSON only when asked for, since most are never asked for.
type recentEntry struct {
	id       correlate.TraceID
	updated  time.Time
	start    time.Time
	complete bool
	spans    []correlate.Span
}

// recentAbout is what one held trace is about, read from its spans.
type recentAbout struct {
	pods    []podRef
	uids    []string
	keys    []string
	objects []objectRef
}

// NewRecent returns an empty store.
func NewRecent(o RecentOptions) *Recent {
	if o.MaxTraces <= 0 {
		o.MaxTraces = DefaultRecentTraces
	}
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultRecentAge
	}
	return &Recent{
		max: o.MaxTraces, maxAge: o.MaxAge, node: o.Node, now: time.Now,
		order: list.New(),
		byID:  map[correlate.TraceID]*list.Element{},
	}
}

// Export stores t. A trace ID seen before is merged into the stored trace
// (spans deduplicated by span ID). It never blocks for long: it keeps the
// spans (the exporters share them read-only) and updates a few maps.
func (r *Recent) Export(t correlate.Trace) {
	if len(t.Spans) == 0 {
		return
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if el, ok := r.byID[t.ID]; ok {
		e := el.Value.(*recentEntry)
		for _, s := range t.Spans {
			if !slices.ContainsFunc(e.spans, func(h correlate.Span) bool { return h.SpanID == s.SpanID }) {
				e.spans = append(e.spans, s)
			}
		}
		e.complete = e.complete || t.Complete
		e.updated = now
		e.started(t.Spans)
		r.order.MoveToBack(el)
	} else {
		e := &recentEntry{id: t.ID, updated: now, complete: t.Complete, spans: slices.Clone(t.Spans)}
		e.started(t.Spans)
		r.byID[t.ID] = r.order.PushBack(e)
	}
	r.evictLocked(now)
}

// Close implements Exporter; the store stays readable.
func (r *Recent) Close(context.Context) error { return nil }

// Len is the number of traces held.
func (r *Recent) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evictLocked(r.now())
	return r.order.Len()
}

func (r *Recent) evictLocked(now time.Time) {
	for r.order.Len() > 0 {
		el := r.order.Front()
		e := el.Value.(*recentEntry)
		if r.order.Len() <= r.max && now.Sub(e.updated) <= r.maxAge {
			return
		}
		r.order.Remove(el)
		delete(r.byID, e.id)
	}
}

// started moves e's start to the earliest of fresh spans.
func (e *recentEntry) started(fresh []correlate.Span) {
	for i := range fresh {
		if st := fresh[i].Start; e.start.IsZero() || st.Before(e.start) {
			e.start = st
		}
	}
}

// about reads what e is about from its spans. A handful of distinct
// values per trace: slices, not maps.
func (e *recentEntry) about() recentAbout {
	var a recentAbout
	for i := range e.spans {
		s := &e.spans[i]
		ns, _ := s.Attr(correlate.AttrNamespace).(string)
		if name, _ := s.Attr(correlate.AttrPodName).(string); ns != "" && name != "" {
			a.pods = addOnce(a.pods, podRef{ns, name})
		}
		if uid, _ := s.Attr(correlate.AttrPodUID).(string); uid != "" {
			a.uids = addOnce(a.uids, uid)
		}
		if key, _ := s.Attr(correlate.AttrKey).(string); key != "" && !slices.Contains(a.keys, key) {
			a.keys = append(a.keys, key)
			o := correlate.ParseKey(key)
			if o.Resource == "pods" && o.Group == "" && o.Namespace != "" {
				a.pods = addOnce(a.pods, podRef{o.Namespace, o.Name})
			}
			if o.Resource != "" {
				a.objects = addOnce(a.objects, objectRef{o.Group, o.Resource, o.Namespace, o.Name})
			}
		}
	}
	return a
}

func addOnce[K comparable](s []K, k K) []K {
	if slices.Contains(s, k) {
		return s
	}
	return append(s, k)
}

// RecentQuery selects traces. Conditions are ORed: a trace matches when it
// is about the pod Namespace/Pod (by attributes or by its etcd key), or
// about the pod UID, or has etcd key Key, or a key of the object
// Group/Resource Namespace/Name. A pod query also matches the traces of
// every UID that the pod's own traces name, so that spans which carry only
// the UID are found. An empty query matches every trace.
type RecentQuery struct {
	Namespace, Pod string
	UID            string
	Key            string
	// Resource (plural, e.g. deployments or widgets) and Group (apps,
	// kpath.dev; empty for the core group) with Namespace (empty for a
	// cluster-scoped object) and Name select one object whatever its key's
	// prefix. Built-in groups are stored without their group in the key,
	// so a key without one matches any group.
	Group, Resource, Name string
	// Limit keeps the newest Limit matches; 0 means DefaultRecentLimit.
	Limit int
}

// DefaultRecentLimit is the most traces one answer holds unless asked otherwise.
const DefaultRecentLimit = 200

// RecentTrace is one trace in an answer of /api/v1/traces. Spans use the
// public JSONL encoding (JSONSpan).
type RecentTrace struct {
	TraceID  string     `json:"traceId"`
	Complete bool       `json:"complete"`
	Spans    []JSONSpan `json:"spans"`
}

// TracesResponse is the body of GET /api/v1/traces.
type TracesResponse struct {
	Node   string        `json:"node,omitempty"`
	Traces []RecentTrace `json:"traces"`
}

// Query returns the matching traces, oldest first (by their first span).
func (r *Recent) Query(q RecentQuery) []RecentTrace {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultRecentLimit
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evictLocked(r.now())

	var hits []*recentEntry
	if q.Namespace == "" && q.Pod == "" && q.UID == "" && q.Key == "" && q.Resource == "" {
		for el := r.order.Front(); el != nil; el = el.Next() {
			hits = append(hits, el.Value.(*recentEntry))
		}
	} else {
		// Two passes: the pod's own traces name the UIDs whose traces
		// (spans that carry only the UID) match too.
		type held struct {
			e *recentEntry
			a recentAbout
		}
		all := make([]held, 0, r.order.Len())
		for el := r.order.Front(); el != nil; el = el.Next() {
			e := el.Value.(*recentEntry)
			all = append(all, held{e, e.about()})
		}
		uids := map[string]bool{}
		if q.UID != "" {
			uids[q.UID] = true
		}
		if q.Pod != "" {
			for _, h := range all {
				if slices.Contains(h.a.pods, podRef{q.Namespace, q.Pod}) {
					for _, u := range h.a.uids {
						uids[u] = true
					}
				}
			}
		}
		for _, h := range all {
			if q.Pod != "" && slices.Contains(h.a.pods, podRef{q.Namespace, q.Pod}) ||
				slices.ContainsFunc(h.a.uids, func(u string) bool { return uids[u] }) ||
				q.Key != "" && slices.Contains(h.a.keys, q.Key) ||
				q.Resource != "" && (slices.Contains(h.a.objects, objectRef{q.Group, q.Resource, q.Namespace, q.Name}) ||
					slices.Contains(h.a.objects, objectRef{"", q.Resource, q.Namespace, q.Name})) {
				hits = append(hits, h.e)
			}
		}
	}
	slices.SortFunc(hits, func(a, b *recentEntry) int {
		if c := a.start.Compare(b.start); c != 0 {
			return c
		}
		return slices.Compare(a.id[:], b.id[:])
	})
	if len(hits) > limit {
		hits = hits[len(hits)-limit:]
	}
	out := make([]RecentTrace, len(hits))
	for i, e := range hits {
		spans := make([]JSONSpan, len(e.spans))
		for j := range e.spans {
			spans[j] = NewJSONSpan(&e.spans[j])
		}
		out[i] = RecentTrace{TraceID: hex.EncodeToString(e.id[:]), Complete: e.complete, Spans: spans}
	}
	return out
}

// Handler serves GET /api/v1/traces?namespace=NS&pod=NAME[&uid=UID][&key=KEY]
// [&resource=R&group=G&name=N][&limit=N] as a TracesResponse. pod needs
// namespace, resource needs name.
func (r *Recent) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		v := req.URL.Query()
		q := RecentQuery{Namespace: v.Get("namespace"), Pod: v.Get("pod"), UID: v.Get("uid"), Key: v.Get("key"),
			Group: v.Get("group"), Resource: v.Get("resource"), Name: v.Get("name")}
		if q.Pod != "" && q.Namespace == "" {
			http.Error(w, "pod needs namespace", http.StatusBadRequest)
			return
		}
		if (q.Resource == "") != (q.Name == "") {
			http.Error(w, "resource and name go together", http.StatusBadRequest)
			return
		}
		if s := v.Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				http.Error(w, "limit: want a non-negative integer", http.StatusBadRequest)
				return
			}
			q.Limit = n
		}
		resp := TracesResponse{Node: r.node, Traces: r.Query(q)}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		enc.Encode(resp)
	})
}

// Tee sends every trace to each exporter in turn; Close closes them all.
// Exporters must treat the trace as read-only, as they share it.
func Tee(es ...Exporter) Exporter { return tee(es) }

type tee []Exporter

func (t tee) Export(tr correlate.Trace) {
	for _, e := range t {
		e.Export(tr)
	}
}

func (t tee) Close(ctx context.Context) error {
	var errs []error
	for _, e := range t {
		errs = append(errs, e.Close(ctx))
	}
	return errors.Join(errs...)
}

// Span converts a JSONL span back. Attribute numbers may come as
// json.Number (a decoder with UseNumber, which keeps int64 exact) or
// float64; integral numbers become int64, as the encoder wrote them.
func (j JSONSpan) Span() (correlate.Span, error) {
	var s correlate.Span
	if err := decodeHex(s.TraceID[:], j.TraceID); err != nil {
		return s, fmt.Errorf("traceId: %w", err)
	}
	if err := decodeHex(s.SpanID[:], j.SpanID); err != nil {
		return s, fmt.Errorf("spanId: %w", err)
	}
	if j.ParentSpanID != "" {
		if err := decodeHex(s.Parent[:], j.ParentSpanID); err != nil {
			return s, fmt.Errorf("parentSpanId: %w", err)
		}
	}
	s.Name = j.Name
	var err error
	if s.Start, err = parseNano(j.StartTimeUnixNano); err != nil {
		return s, fmt.Errorf("startTimeUnixNano: %w", err)
	}
	if s.End, err = parseNano(j.EndTimeUnixNano); err != nil {
		return s, fmt.Errorf("endTimeUnixNano: %w", err)
	}
	keys := make([]string, 0, len(j.Attributes))
	for k := range j.Attributes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		s.Attributes = append(s.Attributes, correlate.Attribute{Key: k, Value: jsonAttr(j.Attributes[k])})
	}
	return s, nil
}

// Trace converts an answer's trace back to a correlate.Trace.
func (rt RecentTrace) Trace() (correlate.Trace, error) {
	t := correlate.Trace{Complete: rt.Complete}
	if err := decodeHex(t.ID[:], rt.TraceID); err != nil {
		return t, fmt.Errorf("traceId: %w", err)
	}
	for _, j := range rt.Spans {
		s, err := j.Span()
		if err != nil {
			return t, fmt.Errorf("span %s: %w", j.SpanID, err)
		}
		t.Spans = append(t.Spans, s)
	}
	return t, nil
}

func decodeHex(dst []byte, s string) error {
	if len(s) != 2*len(dst) {
		return fmt.Errorf("%q: want %d hex digits", s, 2*len(dst))
	}
	_, err := hex.Decode(dst, []byte(s))
	return err
}

func parseNano(s string) (time.Time, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	if n == 0 {
		return time.Time{}, nil
	}
	if n > math.MaxInt64 {
		return time.Time{}, fmt.Errorf("%s is out of range", s)
	}
	return time.Unix(0, int64(n)), nil
}

func jsonAttr(v any) any {
	switch v := v.(type) {
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		f, _ := v.Float64()
		return f
	case float64:
		if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
			return int64(v)
		}
		return v
	}
	return v
}
