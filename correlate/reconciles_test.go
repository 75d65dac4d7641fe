package correlate

import (
	"slices"
	"testing"
	"time"

	"github.com/kpath/kpath/probes"
)

func TestReconcileJoinsTheWriteItReceived(t *testing.T) {
	var got []Reconcile
	r := NewReconciles(ReconcileOptions{}, func(x Reconcile) { got = append(got, x) })
	const op = probes.Component("widgetop")
	receipt := func(ns, name string, rev int64, ms float64) probes.Event {
		return probes.Event{Component: op, Stage: probes.StageInformer, Probe: "client-go.informer.receive", PID: 9, Goroutine: 3,
			Namespace: ns, Name: name, UID: "u-" + name, Revision: rev, Start: at(ms), End: at(ms)}
	}
	// reconcile adds one reconcile's span and, when it failed, the mark of
	// the handler's error branch right after it (the one ring buffer keeps
	// their order).
	reconcile := func(name string, ms, dur float64, failed bool) {
		r.Add(probes.Event{Component: op, Stage: probes.StageReconcile, Probe: "operator.reconcile", PID: 9, Goroutine: 40,
			Controller: "widget", Namespace: "ns", Name: name, Start: at(ms), End: at(ms + dur)}, at(ms+dur))
		if failed {
			r.Add(probes.Event{Component: op, Stage: probes.StageReconcileError, Probe: "operator.reconcile.error", PID: 9, Goroutine: 40,
				Start: at(ms + dur + 0.01), End: at(ms + dur + 0.01)}, at(ms+dur))
		}
	}
	r.Add(receipt("ns", "a", 100, 0), at(0))
	r.Add(receipt("ns", "other", 101, 0.5), at(0)) // an object no controller here reconciles
	reconcile("a", 2, 1, true)                     // fails
	reconcile("a", 10, 1, false)                   // the retry: no receipt between
	reconcile("b", 20, 1, false)                   // a resync: no receipt at all
	r.Flush(at(300))
	// Two on one goroutine within the settle time, the second failing: its
	// error is its own, not the first's.
	reconcile("c", 500, 1, false)
	reconcile("c", 502, 1, true)
	r.Flush(at(1000))
	if n := len(got); n != 5 || got[3].Result != ResultOK || got[4].Result != ResultError {
		t.Fatalf("two reconciles on one goroutine: %d, results %v %v; want ok then error", n, got[3].Result, got[4].Result)
	}
	got = got[:3]
	if len(got) != 3 {
		t.Fatalf("%d reconciles, want 3", len(got))
	}
	for i, want := range []string{ResultError, ResultOK} {
		g := got[i]
		if g.Result != want || g.Revision != 100 || g.Trace.ID != WriteTraceID(100) {
			t.Errorf("reconcile %d: result %s revision %d trace %x; want %s in the trace of revision 100", i, g.Result, g.Revision, g.Trace.ID, want)
		}
		var rec, wait *Span
		for k := range g.Trace.Spans {
			switch g.Trace.Spans[k].Attr(AttrStage) {
			case probes.StageReconcile:
				rec = &g.Trace.Spans[k]
			case "queue-wait":
				wait = &g.Trace.Spans[k]
			}
		}
		if rec == nil || wait == nil || rec.Parent != WriteRootID(100) || wait.Parent != WriteRootID(100) {
			t.Fatalf("reconcile %d: want a reconcile and a queue wait under the write's root: %+v", i, g.Trace.Spans)
		}
		// The first waited from the receipt; the retry from the failure's
		// end, when the handler added it back, not through the failure.
		from, fromWhat := at(0), "receipt"
		if i == 1 {
			from, fromWhat = at(3), "previous-reconcile"
		}
		if !wait.Start.Equal(from) || !wait.End.Equal(rec.Start) || !g.Queued.Equal(from) || wait.Attr(AttrWaitFrom) != fromWhat ||
			rec.Attr(AttrResult) != want || rec.Name != "reconcile widget ns/a" {
			t.Errorf("reconcile %d: wait %v–%v from %v, reconcile %q from %v, result %v", i, wait.Start, wait.End, wait.Attr(AttrWaitFrom), rec.Name, rec.Start, rec.Attr(AttrResult))
		}
	}
	if g := got[2]; g.Revision != 0 || g.Trace.ID == WriteTraceID(0) || len(g.Trace.Spans) != 1 || g.Trace.Spans[0].Parent != (SpanID{}) {
		t.Errorf("a reconcile with no receipt: %+v", g)
	}
	r.Flush(at(0).Add(2 * time.Minute))
	if u := r.Unjoined(); u[Unjoined{"client-go.informer.receive", "receipt-without-reconcile"}] != 1 || len(u) != 1 {
		t.Errorf("unjoined %v", u)
	}
	checkNothingLeft(t, r.a)
}

// Each result branch's mark, right after its reconcile on its goroutine,
// names the result.
func TestReconcileResultsByTheirBranch(t *testing.T) {
	var got []string
	r := NewReconciles(ReconcileOptions{}, func(x Reconcile) { got = append(got, x.Result) })
	for i, mark := range []string{"", probes.StageReconcileError, probes.StageRequeueAfter, probes.StageRequeue} {
		ms := float64(1000 * i)
		r.Add(probes.Event{Component: "op", Stage: probes.StageReconcile, Probe: "operator.reconcile", PID: 9, Goroutine: 40,
			Controller: "widget", Namespace: "ns", Name: "a", Start: at(ms), End: at(ms + 1)}, at(ms+1))
		if mark != "" {
			r.Add(probes.Event{Component: "op", Stage: mark, Probe: "mark", PID: 9, Goroutine: 40, Start: at(ms + 1.01), End: at(ms + 1.01)}, at(ms+1))
		}
		r.Flush(at(ms + 1).Add(Settle))
	}
	if want := []string{ResultOK, ResultError, ResultRequeueAfter, ResultRequeue}; !slices.Equal(got, want) {
		t.Errorf("results %v, want %v", got, want)
	}
}

// TestReconcileWritesAreItsChildren: the write requests a reconcile's
// goroutine made during it find the API server's writes of the same verb
// and object (a create's, by namespace) that began next; each is grafted
// whole under the reconcile's span, which links to its own trace. A write
// request on another goroutine (a lease renewal), a create before the
// request and a write after the reconcile ended join nothing.
func TestReconcileWritesAreItsChildren(t *testing.T) {
	var got []Reconcile
	r := NewReconciles(ReconcileOptions{}, func(x Reconcile) { got = append(got, x) })
	const op = probes.Component("widgetop")
	call := func(g uint64, verb, ns, name string, ms float64) {
		r.Add(probes.Event{Component: op, Stage: probes.StageReconcileCall, Probe: "operator.client.write", PID: 9, Goroutine: g,
			Verb: verb, Namespace: ns, Name: name, Start: at(ms), End: at(ms)}, at(ms))
	}
	r.Add(probes.Event{Component: op, Stage: probes.StageInformer, Probe: "client-go.informer.receive", PID: 9, Goroutine: 3,
		Namespace: "ns", Name: "a", Revision: 100, Start: at(5), End: at(5)}, at(5))
	call(40, "PUT", "ns", "a", 12)
	call(41, "PUT", "kube-system", "widgetop-lease", 13)
	call(40, "POST", "ns", "", 19)
	status := podWrite(t, "/registry/kpath.dev/widgets/ns/a", 201, 12.5, "PUT", "/apis/kpath.dev/v1/namespaces/ns/widgets/a/status")
	cm := podWrite(t, "/registry/configmaps/ns/widget-a", 202, 19.5, "POST", "/api/v1/namespaces/ns/configmaps")
	early := podWrite(t, "/registry/configmaps/ns/other", 203, 11, "POST", "/api/v1/namespaces/ns/configmaps")
	late := podWrite(t, "/registry/kpath.dev/widgets/ns/a", 204, 40, "PUT", "/apis/kpath.dev/v1/namespaces/ns/widgets/a")
	for _, w := range []Write{early, status, cm} {
		r.AddWrite(w, at(26))
	}
	r.Add(probes.Event{Component: op, Stage: probes.StageReconcile, Probe: "operator.reconcile", PID: 9, Goroutine: 40,
		Controller: "widget", Namespace: "ns", Name: "a", Start: at(10), End: at(30)}, at(30))
	r.AddWrite(late, at(46))
	r.Flush(at(46).Add(Settle))
	if len(got) != 1 {
		t.Fatalf("%d reconciles, want 1", len(got))
	}
	tr := got[0].Trace
	var rec *Span
	for i := range tr.Spans {
		if tr.Spans[i].Attr(AttrStage) == probes.StageReconcile {
			rec = &tr.Spans[i]
		}
	}
	if rec == nil {
		t.Fatal("no reconcile span")
	}
	var links []int64
	for _, l := range rec.Links {
		ls := Span{Attributes: l.Attributes}
		rev, _ := ls.Attr(AttrRevision).(int64)
		if ls.Attr(AttrLink) != LinkWriteMade || l.TraceID != WriteTraceID(rev) || l.SpanID != rootOf(map[int64]Write{201: status, 202: cm}[rev].Trace) {
			t.Errorf("link %+v: want one to the root of the trace of a write made", l)
		}
		links = append(links, rev)
	}
	if !slices.Equal(links, []int64{201, 202}) {
		t.Errorf("the reconcile links to the writes of revisions %v, want 201 and 202", links)
	}
	// Each write's spans, under the reconcile's: its request the child.
	byID := map[SpanID]*Span{}
	for i := range tr.Spans {
		byID[tr.Spans[i].SpanID] = &tr.Spans[i]
	}
	requests := map[any]bool{}
	for _, s := range tr.Spans {
		if s.Attr(AttrStage) != probes.StageRequest {
			continue
		}
		if s.Parent != rec.SpanID {
			t.Errorf("request span %q hangs under %q, not the reconcile", s.Name, byID[s.Parent].Name)
		}
		requests[s.Attr(AttrRevision)] = true
	}
	if len(requests) != 2 || !requests[int64(201)] || !requests[int64(202)] {
		t.Errorf("the writes' requests under the reconcile: %v, want revisions 201 and 202", requests)
	}
	r.Flush(at(60000))
	un := r.Unjoined()
	var outside, noReconcile uint64
	for k, n := range un {
		switch k.Reason {
		case "write-outside-reconcile":
			outside += n
		case "write-of-no-reconcile":
			noReconcile += n
		}
	}
	if outside != 1 || noReconcile != 1 {
		t.Errorf("unjoined %v: want the lease renewal's request and the write after the reconcile, one each", un)
	}
}

// TestReconcileCreatesOfOneNamespace: two reconciles, one after the other,
// each create an object in one namespace, and the first create's write
// comes after the second request (writes come once done): each reconcile
// gets its own.
func TestReconcileCreatesOfOneNamespace(t *testing.T) {
	var got []Reconcile
	r := NewReconciles(ReconcileOptions{}, func(x Reconcile) { got = append(got, x) })
	const op = probes.Component("widgetop")
	for i, name := range []string{"a", "b"} {
		ms := float64(10 + 20*i)
		r.Add(probes.Event{Component: op, Stage: probes.StageReconcileCall, Probe: "operator.client.write", PID: 9, Goroutine: 40,
			Verb: "POST", Namespace: "ns", Start: at(ms + 2), End: at(ms + 2)}, at(ms+2))
		r.Add(probes.Event{Component: op, Stage: probes.StageReconcile, Probe: "operator.reconcile", PID: 9, Goroutine: 40,
			Controller: "widget", Namespace: "ns", Name: name, Start: at(ms), End: at(ms + 15)}, at(ms+15))
	}
	for i, name := range []string{"a", "b"} {
		r.AddWrite(podWrite(t, "/registry/configmaps/ns/widget-"+name, int64(300+i), float64(12.5+20*float64(i)), "POST", "/api/v1/namespaces/ns/configmaps"), at(60))
	}
	r.Flush(at(60).Add(Settle))
	if len(got) != 2 {
		t.Fatalf("%d reconciles, want 2", len(got))
	}
	for _, g := range got {
		var revs []int64
		for _, s := range g.Trace.Spans {
			if s.Attr(AttrStage) == probes.StageRequest {
				revs = append(revs, s.Attr(AttrRevision).(int64))
			}
		}
		want := map[string]int64{"a": 300, "b": 301}[g.Name]
		if len(revs) != 1 || revs[0] != want {
			t.Errorf("reconcile of %s has the writes of revisions %v, want %d", g.Name, revs, want)
		}
	}
}
