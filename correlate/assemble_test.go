package correlate

import (
	"testing"
	"time"

	"github.com/kpath/kpath/probes"
)

// A shape of three stages, as a new component would declare one: "start"
// names its trace (by UID) but may open it only from the node's side;
// "write" carries no UID and is found from a start by object and
// revision, and opens the trace it is found from; "child" is found from
// the start on the same goroutine.
var testShape = probes.Shape{
	Roots:    []string{"start"},
	Required: []string{"start", "write"},
	Joins: probes.Joins{
		{Stage: "start", Names: true, Require: func(e *probes.Event) bool { return e.UID != "" }, Refused: "no-uid",
			Opens: func(e *probes.Event) bool { return e.Component == probes.Kubelet }, Keep: time.Second, Unjoined: "orphan"},
		{Stage: "write", Found: []probes.Relation{{Of: "start", AnyProcess: true,
			Same: []probes.Same{{Mine: probes.KeyObject, Theirs: probes.KeyObject}, {Mine: probes.KeyRevision, Theirs: probes.KeyRevision}}}},
			Anchors: true, Under: []string{"start"}, Keep: time.Second, Unjoined: "no-start"},
		{Stage: "child", Found: []probes.Relation{{Of: "start",
			Same: []probes.Same{{Mine: probes.KeyParentGoroutine, Theirs: probes.KeyGoroutine}}}},
			Under: []string{"start"}, Keep: time.Second, Unjoined: "no-parent", Span: "child of {name}"},
	},
}

func newTestAssembler(out *[]Trace) *Assembler {
	return NewAssembler(&testShape, AssemblerOptions{
		Settle: 10 * time.Millisecond, MaxWait: time.Minute, Retain: time.Second,
		Name: func(e *probes.Event) (string, int64) { return e.UID, 0 },
		Emit: func(t *Assembly, complete bool) {
			k, _ := t.Key()
			tr := t.Trace(PodTraceID(k), SpanID{}, nil)
			tr.Complete = complete
			*out = append(*out, tr)
		},
	})
}

func TestAssemblerJoinsByTheShape(t *testing.T) {
	var out []Trace
	a := newTestAssembler(&out)
	// The child comes first, then a start that may not open its trace,
	// then the write that opens it: all three end up in one trace.
	a.Add(probes.Event{Stage: "child", PID: 1, Goroutine: 11, ParentGoroutine: 10, Start: at(2), End: at(3), Name: "web"}, at(0))
	a.Add(probes.Event{Stage: "start", Component: probes.KubeScheduler, PID: 1, Goroutine: 10, UID: "u1", Namespace: "ns", Name: "web",
		Revision: 5, Start: at(1), End: at(4)}, at(0))
	if a.Flush(at(100)); len(out) != 0 {
		t.Fatalf("a start that may not open its trace made %d", len(out))
	}
	a.Add(probes.Event{Stage: "write", PID: 2, Namespace: "ns", Name: "web", Revision: 5, Start: at(0), End: at(5)}, at(100))
	a.Flush(at(200))
	if len(out) != 1 || !out[0].Complete || len(out[0].Spans) != 3 {
		t.Fatalf("want one complete trace of 3 spans, got %+v", out)
	}
	checkNested := func(tr Trace) map[string]Span {
		m := map[string]Span{}
		for _, s := range tr.Spans {
			m[s.Attr(AttrStage).(string)] = s
		}
		return m
	}
	m := checkNested(out[0])
	if m["start"].Parent != (SpanID{}) || m["write"].Parent != m["start"].SpanID || m["child"].Parent != m["start"].SpanID {
		t.Errorf("want start as the root of write and child: %+v", out[0].Spans)
	}
	if m["child"].Name != "child of web" {
		t.Errorf("child span named %q", m["child"].Name)
	}
	if u := a.Unjoined(); len(u) != 0 {
		t.Errorf("unjoined %v", u)
	}
	a.Flush(at(10_000))
	checkNothingLeft(t, a)
}

func TestAssemblerCountsWhatJoinsNothing(t *testing.T) {
	var out []Trace
	a := newTestAssembler(&out)
	a.Add(probes.Event{Stage: "elsewhere", Probe: "some.row"}, at(0))
	a.Add(probes.Event{Stage: "start", Probe: "start.row", Component: probes.Kubelet}, at(0)) // no UID
	a.Add(probes.Event{Stage: "start", Probe: "start.row", Component: probes.KubeScheduler, UID: "u2", Namespace: "ns", Name: "x"}, at(0))
	a.Add(probes.Event{Stage: "write", Probe: "write.row", Namespace: "ns", Name: "y", Revision: 9}, at(0))
	a.Add(probes.Event{Stage: "child", Probe: "child.row", PID: 3, ParentGoroutine: 99}, at(0))
	a.Flush(at(5000))
	want := map[Unjoined]uint64{
		{"some.row", "no-join"}: 1, {"start.row", "no-uid"}: 1, {"start.row", "orphan"}: 1,
		{"write.row", "no-start"}: 1, {"child.row", "no-parent"}: 1,
	}
	got := a.Unjoined()
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%v: %d, want %d (all: %v)", k, got[k], n, got)
		}
	}
	if len(out) != 0 || a.Held() != 0 || len(a.pending) != 0 {
		t.Errorf("%d traces, %d held, %d pending", len(out), a.Held(), len(a.pending))
	}
	checkNothingLeft(t, a)
}

// checkNothingLeft fails if an assembler whose events all expired still
// holds an index entry, a waiting trace or an anchoring event: what a
// goroutine or a revision never seen again would leak.
func checkNothingLeft(t *testing.T, a *Assembler) {
	t.Helper()
	for _, st := range a.stages {
		for ri := range st.index {
			if n := len(st.index[ri]) + len(st.waiting[ri]) + len(st.anchoring[ri]); n != 0 {
				t.Errorf("stage %s relation %d: %d index, %d waiting, %d anchoring entries left", st.join.Stage, ri,
					len(st.index[ri]), len(st.waiting[ri]), len(st.anchoring[ri]))
			}
		}
		if len(st.open) != 0 {
			t.Errorf("stage %s: %d announced events left", st.join.Stage, len(st.open))
		}
	}
	if len(a.traces) != 0 || len(a.order) != 0 || len(a.emitted) != 0 {
		t.Errorf("%d traces, %d pending in order, %d lingering left", len(a.traces), len(a.order), len(a.emitted))
	}
}

// Emitted traces linger for their late events: each is forgotten Linger
// after its last change, a late event putting that off, and with Shed
// they keep none of their events meanwhile.
func TestAssemblerLingersByLastChange(t *testing.T) {
	shape := probes.Shape{
		Roots: []string{"start"}, Required: []string{"start"},
		Joins: probes.Joins{
			{Stage: "start", Names: true},
			{Stage: "late", Names: true, Many: true, Late: true, Opens: func(*probes.Event) bool { return false }, Keep: time.Second},
		},
	}
	var lates []string
	var forgot []string
	a := NewAssembler(&shape, AssemblerOptions{
		Settle: 10 * time.Millisecond, MaxWait: time.Minute, Retain: time.Second, Linger: 10 * time.Second, Shed: true,
		Name:   func(e *probes.Event) (string, int64) { return e.UID, 0 },
		Emit:   func(*Assembly, bool) {},
		Late:   func(t *Assembly, ev *probes.Event) { k, _ := t.Key(); lates = append(lates, k) },
		Forget: func(t *Assembly) { k, _ := t.Key(); forgot = append(forgot, k) },
	})
	for i, uid := range []string{"a", "b", "c"} {
		now := at([]float64{0, 1000, 5000}[i])
		a.Add(probes.Event{Stage: "start", UID: uid, Start: now, End: now}, now)
		a.Flush(now.Add(time.Second))
	}
	for _, tr := range a.traces {
		if tr.one != [maxStages]*held{} {
			t.Errorf("trace %s kept its events once emitted", tr.key.s)
		}
	}
	a.Add(probes.Event{Stage: "late", UID: "a", Start: at(9000), End: at(9000)}, at(9000))
	if len(lates) != 1 || lates[0] != "a" {
		t.Fatalf("late events went to %v", lates)
	}
	// b, made at 1 s, is past its linger at 13.5 s; a, made at 0 s but
	// changed at 9 s, is not; nor is c, made at 5 s.
	a.Flush(at(13_500))
	if len(forgot) != 1 || forgot[0] != "b" {
		t.Errorf("forgotten at 13.5 s: %v, want [b]", forgot)
	}
	a.Flush(at(16_000))
	if len(forgot) != 2 || forgot[1] != "c" {
		t.Errorf("forgotten at 16 s: %v, want [b c]", forgot)
	}
	a.Flush(at(19_500))
	if len(forgot) != 3 || forgot[2] != "a" {
		t.Errorf("forgotten at 19.5 s: %v, want [b c a]", forgot)
	}
	checkNothingLeft(t, a)
}
