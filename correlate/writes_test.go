package correlate

import (
	"fmt"
	"testing"
	"time"

	"github.com/kpath/kpath/probes"
)

var t0 = time.Unix(1_800_000_000, 0)

func at(ms float64) time.Time { return t0.Add(time.Duration(ms * float64(time.Millisecond))) }

const (
	apiPID  = 100
	etcdPID = 200
)

// oneWrite returns the events of one ConfigMap create in the order the ring
// buffer delivers them (spans at their RET, points at once), shifted by off ms.
func oneWrite(key string, rev int64, off float64, g uint64) []probes.Event {
	g1, g2, g3, ge := g, g+1, g+2, g+3
	raft := uint64(0xabc0 + rev)
	return []probes.Event{
		{Component: probes.KubeAPIServer, Stage: probes.StageRequest, Probe: "apiserver.request.create", PID: apiPID, Goroutine: g1, ParentGoroutine: 7,
			Start: at(off), End: at(off), InFlight: true, Method: "POST", Path: "/api/v1/namespaces/ns/configmaps"},
		{Component: probes.KubeAPIServer, Stage: probes.StageAdmission, Probe: "apiserver.webhook.mutating", PID: apiPID, Goroutine: g2, ParentGoroutine: g1,
			Start: at(off + 1), End: at(off + 2), Webhook: "m.example.com"},
		{Component: probes.KubeAPIServer, Stage: probes.StageAdmission, Probe: "apiserver.webhook.validating", PID: apiPID, Goroutine: g3, ParentGoroutine: g2,
			Start: at(off + 2.1), End: at(off + 3), Webhook: "v.example.com"},
		{Component: probes.Etcd, Stage: probes.StagePropose, Probe: "etcd.raft.propose", PID: etcdPID, Goroutine: ge, Start: at(off + 4.2), End: at(off + 4.2), Point: true, RaftID: raft},
		{Component: probes.Etcd, Stage: probes.StageWALFsync, Probe: "etcd.wal.fsync", PID: etcdPID, Goroutine: 47, Start: at(off + 4.3), End: at(off + 4.8)},
		{Component: probes.Etcd, Stage: probes.StageApply, Probe: "etcd.apply.put", PID: etcdPID, Goroutine: 46, Start: at(off + 5), End: at(off + 5), Point: true, Key: key, Revision: rev},
		{Component: probes.Etcd, Stage: probes.StageApplied, Probe: "etcd.apply.done", PID: etcdPID, Goroutine: 46, Start: at(off + 5.2), End: at(off + 5.2), Point: true, RaftID: raft},
		{Component: probes.Etcd, Stage: probes.StageEtcdRequest, Probe: "etcd.request.txn", PID: etcdPID, Goroutine: ge, Start: at(off + 4.1), End: at(off + 5.4), Key: key, Revision: rev, Succeeded: true, SucceededSet: true},
		{Component: probes.KubeAPIServer, Stage: probes.StageStorageWrite, Probe: "apiserver.etcd.put", PID: apiPID, Goroutine: g2, ParentGoroutine: g1,
			Start: at(off + 4), End: at(off + 5.6), Key: key, Revision: rev, Succeeded: true, SucceededSet: true},
		{Component: probes.KubeAPIServer, Stage: probes.StageRequest, Probe: "apiserver.request.create", PID: apiPID, Goroutine: g1, ParentGoroutine: 7,
			Start: at(off), End: at(off + 6), Method: "POST", Path: "/api/v1/namespaces/ns/configmaps"},
	}
}

func collect(opts Options) (*Writes, *[]Trace) {
	var out []Trace
	return NewWrites(opts, func(w Write) { out = append(out, w.Trace) }), &out
}

func checkNested(t *testing.T, tr Trace) {
	t.Helper()
	byID := map[SpanID]*Span{}
	roots := 0
	for i := range tr.Spans {
		byID[tr.Spans[i].SpanID] = &tr.Spans[i]
	}
	for _, s := range tr.Spans {
		if s.End.Before(s.Start) {
			t.Errorf("span %q ends before it starts", s.Name)
		}
		if s.TraceID != tr.ID {
			t.Errorf("span %q in trace %x has trace id %x", s.Name, tr.ID, s.TraceID)
		}
		if s.Parent == (SpanID{}) {
			roots++
			continue
		}
		p, ok := byID[s.Parent]
		if !ok {
			t.Errorf("span %q: parent not in trace", s.Name)
			continue
		}
		if s.Start.Before(p.Start) || s.End.After(p.End) {
			t.Errorf("span %q [%v,%v] not inside parent %q [%v,%v]", s.Name, s.Start, s.End, p.Name, p.Start, p.End)
		}
	}
	if roots != 1 {
		t.Errorf("%d roots, want 1", roots)
	}
}

func stages(tr Trace) map[string]*Span {
	m := map[string]*Span{}
	for i := range tr.Spans {
		m[tr.Spans[i].Attr(AttrStage).(string)+"/"+tr.Spans[i].Attr(AttrComponent).(string)] = &tr.Spans[i]
	}
	return m
}

func TestWriteJoinsApiserverAndEtcd(t *testing.T) {
	w, out := collect(Options{})
	now := at(10)
	for _, ev := range oneWrite("/registry/configmaps/ns/cm-1", 42, 0, 1000) {
		w.Add(ev, now)
	}
	w.Flush(now.Add(time.Second))
	if len(*out) != 1 {
		t.Fatalf("%d traces, want 1", len(*out))
	}
	tr := (*out)[0]
	if !tr.Complete || tr.ID != WriteTraceID(42) {
		t.Errorf("complete %v id %x", tr.Complete, tr.ID)
	}
	checkNested(t, tr)
	st := stages(tr)
	for _, want := range []string{"request/kube-apiserver", "admission-webhook/kube-apiserver", "storage-write/kube-apiserver",
		"etcd-request/etcd", "raft-propose/etcd", "wal-fsync/etcd", "apply/etcd"} {
		s, ok := st[want]
		if !ok {
			t.Errorf("no %s span", want)
			continue
		}
		if s.Attr(AttrKey) != "/registry/configmaps/ns/cm-1" || s.Attr(AttrRevision) != int64(42) ||
			s.Attr(AttrNamespace) != "ns" || s.Attr("k8s.configmap.name") != "cm-1" {
			t.Errorf("%s attributes %v", want, s.Attributes)
		}
	}
	if n := len(tr.Spans); n != 8 {
		t.Errorf("%d spans, want 8 (two webhooks)", n)
	}
	if r := st["request/kube-apiserver"]; r.SpanID != WriteRootID(42) {
		t.Errorf("root span %x, want the one derived from the revision", r.SpanID)
	}
	if r := st["request/kube-apiserver"]; r.Parent != (SpanID{}) || r.Name != "POST /api/v1/namespaces/ns/configmaps" {
		t.Errorf("root %q parent %x", r.Name, r.Parent)
	}
	if a := st["apply/etcd"]; a.Attr(AttrRaftID) != int64(0xabc0+42) {
		t.Errorf("apply raft id %v", a.Attr(AttrRaftID))
	}
}

// A write waits for the request around it, however long it takes, up to MaxWait.
func TestWriteWaitsForItsRequest(t *testing.T) {
	w, out := collect(Options{MaxWait: 5 * time.Second})
	evs := oneWrite("/registry/configmaps/ns/slow", 7, 0, 2000)
	last := evs[len(evs)-1]
	for _, ev := range evs[:len(evs)-1] {
		w.Add(ev, at(10))
	}
	w.Flush(at(3000))
	if len(*out) != 0 {
		t.Fatalf("emitted before the request returned")
	}
	w.Add(last, at(3000))
	w.Flush(at(3000).Add(Settle))
	if len(*out) != 1 || !(*out)[0].Complete {
		t.Fatalf("%d traces after the request returned", len(*out))
	}
}

func TestWriteWithoutRequestIsComplete(t *testing.T) {
	// Writes the apiserver makes on its own (leases, bootstrap) have no handler.
	w, out := collect(Options{})
	for _, ev := range oneWrite("/registry/leases/kube-system/x", 9, 0, 3000) {
		if ev.Stage == probes.StageRequest || ev.Stage == probes.StageAdmission {
			continue
		}
		w.Add(ev, at(10))
	}
	w.Flush(at(10).Add(Settle))
	if len(*out) != 1 || !(*out)[0].Complete {
		t.Fatalf("traces %d", len(*out))
	}
	checkNested(t, (*out)[0])
	if got := stages((*out)[0])["storage-write/kube-apiserver"]; got.Parent != (SpanID{}) {
		t.Errorf("storage write is not the root")
	}
}

func TestManyInterleavedWrites(t *testing.T) {
	w, out := collect(Options{})
	var all [][]probes.Event
	for i := 0; i < 100; i++ {
		all = append(all, oneWrite(fmt.Sprintf("/registry/pods/ns/p-%d", i), int64(100+i), float64(i)*0.5, uint64(10000+10*i)))
	}
	// Interleave: event j of every write before event j+1 of any, except
	// that etcd applies one entry at a time: its put and Trigger stay together.
	for j := range all[0] {
		for i := range all {
			switch all[i][j].Stage {
			case probes.StageApplied:
				continue
			case probes.StageApply:
				w.Add(all[i][j], at(100))
				w.Add(all[i][j+1], at(100))
			default:
				w.Add(all[i][j], at(100))
			}
		}
	}
	w.Flush(at(100).Add(Settle))
	if len(*out) != 100 {
		t.Fatalf("%d traces, want 100", len(*out))
	}
	w.Flush(at(200).Add(time.Hour))
	checkNothingLeft(t, w.a)
	seen := map[TraceID]bool{}
	for _, tr := range *out {
		if !tr.Complete || seen[tr.ID] {
			t.Fatalf("trace %x complete %v duplicate %v", tr.ID, tr.Complete, seen[tr.ID])
		}
		seen[tr.ID] = true
		checkNested(t, tr)
		if len(tr.Spans) != 8 {
			t.Fatalf("trace %x has %d spans", tr.ID, len(tr.Spans))
		}
	}
}

func TestConflictIsNotAWrite(t *testing.T) {
	w, out := collect(Options{})
	w.Add(probes.Event{Component: probes.KubeAPIServer, Stage: probes.StageStorageWrite, PID: apiPID, Goroutine: 5, ParentGoroutine: 4,
		Start: at(0), End: at(1), Key: "/registry/configmaps/ns/a", Revision: 50, SucceededSet: true}, at(1))
	w.Add(probes.Event{Component: probes.Etcd, Stage: probes.StageEtcdRequest, PID: etcdPID, Goroutine: 6,
		Start: at(0.2), End: at(0.8), Key: "/registry/configmaps/ns/a", Revision: 50, SucceededSet: true}, at(1))
	w.Flush(at(10_000))
	if len(*out) != 0 {
		t.Fatalf("a failed compare made %d traces", len(*out))
	}
	if u := w.Unjoined(); u[Unjoined{"storage-write", "conflict"}] != 1 || u[Unjoined{"etcd-request", "no-write"}] != 1 {
		t.Errorf("unjoined %v", u)
	}
}

func TestIncompleteAfterMaxWaitAndEviction(t *testing.T) {
	w, out := collect(Options{MaxWait: time.Second, MaxPending: 2})
	apply := func(key string, rev int64) probes.Event {
		return probes.Event{Component: probes.Etcd, Stage: probes.StageApply, Probe: "etcd.apply.put", PID: etcdPID, Goroutine: 46, Start: at(0), End: at(0), Key: key, Revision: rev}
	}
	trigger := probes.Event{Component: probes.Etcd, Stage: probes.StageApplied, PID: etcdPID, Goroutine: 46, Start: at(0.1), End: at(0.1)}
	for i := 0; i < 3; i++ {
		w.Add(apply(fmt.Sprintf("/registry/configmaps/ns/%d", i), int64(i+1)), at(0))
		w.Add(trigger, at(0))
	}
	if len(*out) != 1 || (*out)[0].Complete {
		t.Fatalf("want the oldest evicted as incomplete, got %d", len(*out))
	}
	w.Flush(at(1500))
	if len(*out) != 3 {
		t.Fatalf("want all flushed after MaxWait, got %d", len(*out))
	}
	s := w.Stats()
	if s.Evicted != 1 || s.Incomplete != 3 || s.Traces != 3 {
		t.Errorf("stats %+v", s)
	}
}

func TestRequestWithoutWriteIsCounted(t *testing.T) {
	w, out := collect(Options{})
	ev := oneWrite("/registry/configmaps/ns/x", 1, 0, 5000)
	w.Add(ev[0], at(0))
	w.Add(ev[len(ev)-1], at(1))
	w.Flush(at(10_000))
	if len(*out) != 0 || w.Unjoined()[Unjoined{"apiserver.request.create", "request-without-write"}] != 1 {
		t.Fatalf("traces %d unjoined %v", len(*out), w.Unjoined())
	}
}

func TestParseKey(t *testing.T) {
	for key, want := range map[string]Object{
		"/registry/pods/default/web-1":                         {Resource: "pods", Namespace: "default", Name: "web-1"},
		"/registry/namespaces/kube-system":                     {Resource: "namespaces", Name: "kube-system"},
		"/registry/apiregistration.k8s.io/apiservices/v1.apps": {Group: "apiregistration.k8s.io", Resource: "apiservices", Name: "v1.apps"},
		"/registry/example.com/widgets/ns/w":                   {Group: "example.com", Resource: "widgets", Namespace: "ns", Name: "w"},
		"/prefix/configmaps/ns/name":                           {Resource: "configmaps", Namespace: "ns", Name: "name"},
		"/registry":                                            {},
		"/registry/a/b/c/d":                                    {},
	} {
		if got := ParseKey(key); got != want {
			t.Errorf("ParseKey(%q) = %+v, want %+v", key, got, want)
		}
	}
	for res, kind := range map[string]string{"pods": "pod", "leases": "lease", "ingresses": "ingress", "endpoints": "endpoints", "networkpolicies": "networkpolicy", "storageclasses": "storageclass"} {
		if got := (Object{Resource: res}).Kind(); got != kind {
			t.Errorf("Kind(%s) = %s, want %s", res, got, kind)
		}
	}
}

func TestDetailStorageSpanWrapsTheWrite(t *testing.T) {
	w, out := collect(Options{})
	evs := oneWrite("/registry/configmaps/ns/d", 5, 0, 6000)
	// etcd3.store.Create on the writing goroutine, around the etcd txn; its
	// RET comes after the txn's.
	storage := probes.Event{Component: probes.KubeAPIServer, Stage: probes.StageStorage, Probe: "apiserver.storage.create", PID: apiPID,
		Goroutine: 6001, ParentGoroutine: 6000, Start: at(3.5), End: at(5.8), Key: "/configmaps/ns/d"}
	for _, ev := range evs {
		w.Add(ev, at(10))
		if ev.Stage == probes.StageStorageWrite {
			w.Add(storage, at(10))
		}
	}
	w.Flush(at(10).Add(Settle))
	if len(*out) != 1 {
		t.Fatalf("%d traces", len(*out))
	}
	tr := (*out)[0]
	checkNested(t, tr)
	st := stages(tr)
	s, sw := st["storage/kube-apiserver"], st["storage-write/kube-apiserver"]
	if s == nil || sw == nil || sw.Parent != s.SpanID || s.Parent != st["request/kube-apiserver"].SpanID {
		t.Fatalf("want request → storage → storage-write, got %+v", tr.Spans)
	}
}

// Under load the apiserver's OptimisticPut returns well after etcd answered:
// a txn seen only in etcd must wait for it rather than go out on its own.
func TestLateApiserverSideJoinsTheSameWrite(t *testing.T) {
	w, out := collect(Options{})
	evs := oneWrite("/registry/pods/ns/late", 77, 0, 7000)
	var api []probes.Event
	for _, ev := range evs {
		if ev.Component == probes.KubeAPIServer && !ev.InFlight {
			api = append(api, ev)
			continue
		}
		w.Add(ev, at(10))
	}
	w.Flush(at(10).Add(2 * Settle)) // well past Settle after etcd's side
	if len(*out) != 0 {
		t.Fatalf("emitted %d traces before the apiserver's side came", len(*out))
	}
	for _, ev := range api {
		w.Add(ev, at(1000))
	}
	w.Flush(at(1000).Add(Settle))
	if len(*out) != 1 || !(*out)[0].Complete || len((*out)[0].Spans) != 8 {
		t.Fatalf("want one complete trace of 8 spans, got %d", len(*out))
	}
}

// The default etcd rows are the proposal's Register, the apply's put and
// its Trigger, all entries: etcd's part of the write runs from the proposal
// to the Trigger, joined by the raft request ID, with the key and revision
// of the put between them.
func TestWriteWithDefaultRowsOnly(t *testing.T) {
	w, out := collect(Options{})
	now := at(10)
	for _, ev := range oneWrite("/registry/configmaps/ns/cm-1", 42, 0, 1000) {
		switch ev.Stage {
		case probes.StageEtcdRequest, probes.StageWALFsync, probes.StageAdmission:
			continue
		}
		w.Add(ev, now)
	}
	w.Flush(now.Add(time.Second))
	if len(*out) != 1 || !(*out)[0].Complete {
		t.Fatalf("%d traces, want 1 complete", len(*out))
	}
	tr := (*out)[0]
	checkNested(t, tr)
	st := stages(tr)
	for _, want := range []string{"request/kube-apiserver", "storage-write/kube-apiserver", "etcd-request/etcd", "apply/etcd"} {
		if _, ok := st[want]; !ok {
			t.Errorf("no %s span", want)
		}
	}
	e := st["etcd-request/etcd"]
	if e == nil || !e.Start.Equal(at(4.2)) || !e.End.Equal(at(5.2)) || e.Attr(AttrRevision) != int64(42) {
		t.Errorf("etcd request %+v: want the proposal (4.2ms) to the Trigger (5.2ms) at revision 42", e)
	}
	if a := st["apply/etcd"]; a == nil || !a.Start.Equal(at(5)) || !a.End.Equal(at(5.2)) || a.Parent != e.SpanID {
		t.Errorf("apply %+v: want the put to the Trigger under the etcd request", a)
	}
	if _, ok := st["raft-propose/etcd"]; ok {
		t.Error("the proposal is the etcd request's start, not a span of its own")
	}
	w.Flush(now.Add(time.Minute))
	if n, u := w.Held(), w.Unjoined(); n != 0 || len(u) != 0 {
		t.Errorf("left behind: %d events held, unjoined %v", n, u)
	}
}

// A Trigger that was lost leaves the apply open; the detail txn row's
// answer, which comes after it, closes it at the put.
func TestWriteApplyClosedByTheTxnWithoutTrigger(t *testing.T) {
	w, out := collect(Options{})
	now := at(10)
	for _, ev := range oneWrite("/registry/configmaps/ns/cm-1", 42, 0, 1000) {
		if ev.Stage == probes.StageApplied || ev.Stage == probes.StagePropose {
			continue
		}
		w.Add(ev, now)
	}
	w.Flush(now.Add(time.Second))
	if len(*out) != 1 || !(*out)[0].Complete {
		t.Fatalf("%d traces, want 1 complete", len(*out))
	}
	if a := stages((*out)[0])["apply/etcd"]; a == nil || !a.Start.Equal(at(5)) || !a.End.Equal(at(5)) {
		t.Errorf("apply %+v: want the put's moment", a)
	}
}

// A proposal that wrote no key (a failed compare, a lease grant) ends at its
// Trigger like any other: nothing is left behind, and both are counted as
// joining no write.
func TestProposalWithoutWriteEndsAtItsTrigger(t *testing.T) {
	w, out := collect(Options{Retain: time.Second})
	now := at(10)
	w.Add(probes.Event{Component: probes.Etcd, Stage: probes.StagePropose, Probe: "etcd.raft.propose", PID: etcdPID, Goroutine: 5, Start: at(1), End: at(1), Point: true, RaftID: 77}, now)
	w.Add(probes.Event{Component: probes.Etcd, Stage: probes.StageApplied, Probe: "etcd.apply.done", PID: etcdPID, Goroutine: 46, Start: at(2), End: at(2), Point: true, RaftID: 77}, now)
	w.Flush(now.Add(time.Minute))
	if len(*out) != 0 || w.Held() != 0 {
		t.Errorf("%d traces, %d events held", len(*out), w.Held())
	}
	u := w.Unjoined()
	if u[Unjoined{"etcd.raft.propose", "proposal-without-write"}] != 1 || u[Unjoined{"etcd.apply.done", "entry-without-write"}] != 1 || len(u) != 2 {
		t.Errorf("unjoined %v", u)
	}
}

// A webhook server's answer joins the apiserver's call by the review's UID,
// from another process, and hangs under that call, not under the first of
// the write's calls. Answers come before their calls end.
func TestWebhookServerAnswersHangUnderTheirCall(t *testing.T) {
	var alone []Trace
	w, out := collect(Options{Alone: func(tr Trace) { alone = append(alone, tr) }})
	const serverPID = 9
	evs := oneWrite("/registry/configmaps/ns/hooked", 90, 0, 300)
	for i := range evs {
		if evs[i].Stage == probes.StageAdmission {
			evs[i].UID = evs[i].Webhook + "-uid"
		}
	}
	answers := []probes.Event{
		{Component: "widgetop", Stage: probes.StageWebhookServer, Probe: "operator.webhook.serve", PID: serverPID, Goroutine: 5,
			Start: at(1.2), End: at(1.9), UID: "m.example.com-uid", Path: "/mutate"},
		{Component: "widgetop", Stage: probes.StageWebhookServer, Probe: "operator.webhook.serve", PID: serverPID, Goroutine: 6,
			Start: at(2.3), End: at(2.9), UID: "v.example.com-uid", Path: "/validate"},
		// An answer to a call no write holds (a dry run, another node's
		// apiserver): a trace of its own when its Keep is over.
		{Component: "widgetop", Stage: probes.StageWebhookServer, Probe: "operator.webhook.serve", PID: serverPID, Goroutine: 7,
			Start: at(2.4), End: at(2.5), UID: "someone-else", Path: "/validate"},
	}
	// Each answer arrives before the call it answers ends.
	var in []probes.Event
	for _, ev := range evs {
		for _, a := range answers {
			if ev.Stage == probes.StageAdmission && a.UID == ev.UID || a.UID == "someone-else" && ev.Stage == probes.StageAdmission && ev.Webhook == "v.example.com" {
				in = append(in, a)
			}
		}
		in = append(in, ev)
	}
	for _, ev := range in {
		w.Add(ev, at(0))
	}
	w.Flush(at(0).Add(time.Minute))
	if len(*out) != 1 {
		t.Fatalf("%d traces, want 1", len(*out))
	}
	tr := (*out)[0]
	checkNested(t, tr)
	byID := map[SpanID]*Span{}
	for i := range tr.Spans {
		byID[tr.Spans[i].SpanID] = &tr.Spans[i]
	}
	served := 0
	for _, s := range tr.Spans {
		if s.Attr(AttrStage) != probes.StageWebhookServer {
			continue
		}
		served++
		p := byID[s.Parent]
		if p == nil || p.Attr(AttrStage) != probes.StageAdmission {
			t.Errorf("%s: parent %v, want its webhook call", s.Name, p)
			continue
		}
		want := map[string]string{"webhook server /mutate": "admission webhook m.example.com", "webhook server /validate": "admission webhook v.example.com"}[s.Name]
		if p.Name != want {
			t.Errorf("%s hangs under %q, want %q", s.Name, p.Name, want)
		}
		if p.Attr("kpath.uid") == nil {
			t.Errorf("call %s carries no kpath.uid", p.Name)
		}
	}
	if served != 2 {
		t.Errorf("%d webhook server spans, want 2", served)
	}
	for _, s := range tr.Spans {
		if s.Attr(AttrStage) == probes.StageAdmission && len(s.Links) != 0 {
			t.Errorf("call %s, answered here, links elsewhere: %v", s.Name, s.Links)
		}
	}
	if len(alone) != 1 || len(alone[0].Spans) != 1 {
		t.Fatalf("answers alone: %+v, want the one no call here made", alone)
	}
	a := alone[0].Spans[0]
	if alone[0].ID != WebhookTraceID("someone-else") || a.SpanID != WebhookServerSpanID("someone-else") || a.Parent != (SpanID{}) ||
		a.Name != "webhook server /validate" || a.Attr("kpath.uid") != "someone-else" || !a.Start.Equal(at(2.4)) {
		t.Errorf("the answer alone: trace %x %+v", alone[0].ID, a)
	}
	if u := w.Unjoined(); u[Unjoined{"operator.webhook.serve", "answer-without-write"}] != 0 {
		t.Errorf("an answer emitted alone counted as unjoined: %v", u)
	}
}

// A call whose answer this agent never sees (the webhook server runs on
// another node) links to where that node's agent puts it.
func TestWebhookCallsLinkToAnswersElsewhere(t *testing.T) {
	w, out := collect(Options{})
	evs := oneWrite("/registry/configmaps/ns/far", 91, 0, 310)
	for i := range evs {
		if evs[i].Stage == probes.StageAdmission {
			evs[i].UID = evs[i].Webhook + "-uid"
		}
		w.Add(evs[i], at(0))
	}
	w.Flush(at(0).Add(time.Minute))
	if len(*out) != 1 {
		t.Fatalf("%d traces, want 1", len(*out))
	}
	calls := 0
	for _, s := range (*out)[0].Spans {
		if s.Attr(AttrStage) != probes.StageAdmission {
			continue
		}
		calls++
		uid := s.Attr("kpath.uid").(string)
		if len(s.Links) != 1 || s.Links[0].TraceID != WebhookTraceID(uid) || s.Links[0].SpanID != WebhookServerSpanID(uid) ||
			s.Links[0].Attributes[0].Value != LinkWebhookServer {
			t.Errorf("call %s: links %+v, want one to its answer's trace", s.Name, s.Links)
		}
	}
	if calls != 2 {
		t.Errorf("%d calls, want 2", calls)
	}
}
