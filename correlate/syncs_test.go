package correlate

import (
	"slices"
	"testing"
	"time"

	"github.com/kpath/kpath/probes"
)

// A rollout as kube-controller-manager makes it: the Deployment's sync acts
// on the user's write (revision 100) and creates the ReplicaSet (revision
// 101); the ReplicaSet's sync acts on that write and creates the pods. Each
// sync goes into the trace of the write it acted on, and a pod's creator is
// the ReplicaSet's sync, linked with both writes and the Deployment's sync.
func TestSyncsJoinTheWriteTheyActedOnAndNameThePodsCreator(t *testing.T) {
	rowOf := func(id, controller string) *probes.Row {
		return &probes.Row{ID: id, Component: probes.KubeControllerManager, Controller: controller}
	}
	dSync, rsSync := rowOf("controller-manager.deployment.sync", probes.ControllerDeployment), rowOf("controller-manager.replicaset.sync", probes.ControllerReplicaSet)
	var got []Sync
	s := NewSyncs(time.Minute, func(x Sync) { got = append(got, x) })
	object := func(g uint64, ns, name, owner string, rev int64, ms float64) {
		s.Add(probes.Event{Component: probes.KubeControllerManager, Stage: probes.StageSyncObject, Probe: "obj", PID: 7, Goroutine: g,
			Namespace: ns, Name: name, Owner: owner, Revision: rev, Start: at(ms), End: at(ms)}, at(ms))
	}
	sync := func(row *probes.Row, kind string, g uint64, key string, ms, dur float64) {
		s.Add(probes.Event{Component: probes.KubeControllerManager, Stage: probes.StageControllerSync, Probe: row.ID, Row: row, PID: 7, Goroutine: g,
			Key: key, Controller: kind, Start: at(ms), End: at(ms + dur)}, at(ms+dur))
	}
	s.AddWrite(Write{Key: "/registry/deployments/ns/web", Revision: 100, Start: at(0), Committed: at(1)})
	object(10, "ns", "web", "", 100, 3.1)
	s.AddWrite(Write{Key: "/registry/replicasets/ns/web-abc", Revision: 101, Start: at(4), Committed: at(5)})
	s.AddWrite(Write{Key: "/registry/pods/ns/web-abc-1", Revision: 102, Start: at(9), Committed: at(10)}) // not an owner: not kept
	sync(dSync, "", 10, "ns/web", 3, 4)
	object(20, "ns", "web-abc", "web", 101, 8.1)
	sync(rsSync, "ReplicaSet", 20, "ns/web-abc", 8, 5)
	// A sync that read nothing (the object was gone), then one of another
	// object on the same worker: its object is its own.
	sync(rsSync, "ReplicaSet", 30, "ns/gone", 20, 1)
	object(30, "ns", "other", "", 103, 22.1)
	sync(rsSync, "ReplicaSet", 30, "ns/other", 22, 1)
	// The pods' status changes make the ReplicaSet sync again, many times,
	// before any pod runs and asks for its creator.
	for i := 0; i < 40; i++ {
		object(20, "ns", "web-abc", "web", 101+int64(i%2)*5, 30+float64(i)*2+0.1)
		sync(rsSync, "ReplicaSet", 20, "ns/web-abc", 30+float64(i)*2, 1)
	}
	s.Flush(at(110).Add(Settle))
	got = slices.DeleteFunc(got, func(g Sync) bool { return g.Name == "web-abc" && g.Start.After(at(29)) })
	if len(got) != 4 {
		t.Fatalf("%d syncs, want 4: %+v", len(got), got)
	}
	byName := map[string]Sync{}
	for _, g := range got {
		byName[g.Name] = g
	}
	for name, want := range map[string]struct {
		controller string
		rev        int64
	}{"web": {"deployment", 100}, "web-abc": {"replicaset", 101}, "gone": {"replicaset", 0}, "other": {"replicaset", 103}} {
		g := byName[name]
		if g.Controller != want.controller || g.Revision != want.rev {
			t.Errorf("sync of %s: controller %q revision %d, want %q %d", name, g.Controller, g.Revision, want.controller, want.rev)
			continue
		}
		if len(g.Trace.Spans) != 1 || g.Trace.Spans[0].SpanID != g.Span {
			t.Fatalf("sync of %s: spans %+v", name, g.Trace.Spans)
		}
		sp := g.Trace.Spans[0]
		if want.rev != 0 && (g.Trace.ID != WriteTraceID(want.rev) || sp.Parent != WriteRootID(want.rev)) {
			t.Errorf("sync of %s is not under the root of write %d", name, want.rev)
		}
		if want.rev == 0 && (g.Trace.ID == WriteTraceID(0) || sp.Parent != (SpanID{})) {
			t.Errorf("sync of %s that read nothing: %+v", name, sp)
		}
		if wantName := "sync " + want.controller + " ns/" + name; sp.Name != wantName {
			t.Errorf("span %q, want %q", sp.Name, wantName)
		}
	}
	if byName["web-abc"].Owner != "web" {
		t.Errorf("the ReplicaSet's owner: %q", byName["web-abc"].Owner)
	}

	// The pods, created during the ReplicaSet's sync.
	c, ok := s.Creator("ns", "ReplicaSet", "web-abc", at(9))
	if !ok || c.Component != "kube-controller-manager" || c.Controller != "replicaset" || c.AfterOwnerWrite != 4*time.Millisecond {
		t.Fatalf("creator %+v %v", c, ok)
	}
	want := []struct {
		kind  string
		trace TraceID
		span  SpanID
	}{
		{LinkCreator, WriteTraceID(101), byName["web-abc"].Span},
		{LinkOwnerWrite, WriteTraceID(101), WriteRootID(101)},
		{LinkOwnerCreator, WriteTraceID(100), byName["web"].Span},
		{LinkOwnerOwnerWrite, WriteTraceID(100), WriteRootID(100)},
	}
	if len(c.Links) != len(want) {
		t.Fatalf("links %+v", c.Links)
	}
	for i, w := range want {
		l := c.Links[i]
		if l.TraceID != w.trace || l.SpanID != w.span || l.Attributes[0].Value != w.kind {
			t.Errorf("link %d: %+v, want %s to %x/%x", i, l, w.kind, w.trace, w.span)
		}
	}
	// A pod created outside any sync of its owner, and one whose owner no
	// followed controller syncs.
	if _, ok := s.Creator("ns", "ReplicaSet", "web-abc", at(51.5)); ok {
		t.Error("a creator found outside the sync")
	}
	if _, ok := s.Creator("ns", "CronJob", "db", at(9)); ok {
		t.Error("a creator found for a pod of a kind no followed controller syncs")
	}
	if n := s.CreatorLookups(); n["found"] != 1 || n["no-sync"] != 1 || len(n) != 2 {
		t.Errorf("lookups %v", n)
	}
	if u := s.Unjoined(); len(u) != 0 {
		t.Errorf("unjoined %v", u)
	}
	checkNothingLeft(t, s.a)
}
