package correlate

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kpath/kpath/probes"
)

// podWrite runs oneWrite through a Writes and returns the Write it emits,
// with the request's method and path set as a client would.
func podWrite(t *testing.T, key string, rev int64, off float64, method, path string) Write {
	t.Helper()
	var out []Write
	w := NewWrites(Options{}, func(x Write) { out = append(out, x) })
	for _, ev := range oneWrite(key, rev, off, uint64(1000*rev)) {
		if ev.Stage == probes.StageRequest {
			ev.Method, ev.Path = method, path
			// The subresource, as MonitorRequest reports it.
			for _, sub := range []string{"binding", "status", "eviction"} {
				if strings.HasSuffix(path, "/"+sub) {
					ev.Subresource = sub
				}
			}
		}
		if ev.Stage == probes.StageAdmission {
			continue
		}
		w.Add(ev, at(off))
	}
	w.Flush(at(off + 1000))
	if len(out) != 1 {
		t.Fatalf("write %s@%d: %d writes", key, rev, len(out))
	}
	return out[0]
}

func pev(stage string, comp probes.Component, start, end float64, f func(*probes.Event)) probes.Event {
	e := probes.Event{Stage: stage, Component: comp, PID: 300, Start: at(start), End: at(end), UID: "uid-1", Namespace: "ns", Name: "web"}
	if f != nil {
		f(&e)
	}
	return e
}

// startupEvents is one pod's way to Running, shifted by gap ms after the
// create committed (the scheduler is late) — with writes from podWrite.
func feedStartup(t *testing.T, p podSink, schedGap float64) { feed(t, p, schedGap, false, true) }

// podSink is what feed gives a pod's events to: one agent's Pods, or two
// agents' (splitAgents).
type podSink interface {
	Add(probes.Event, time.Time)
	AddWrite(Write, time.Time)
}

// feed gives p one pod's startup as the default rows see it; with
// lateWrites the writes come after every probe event, as when their
// requests return late; with runtimeStart the kubelet's status carries the
// runtime's StartedAt.
func feed(t *testing.T, p podSink, schedGap float64, lateWrites, runtimeStart bool) {
	key := "/registry/pods/ns/web"
	create := podWrite(t, key, 10, 0, "POST", "/api/v1/namespaces/ns/pods")
	now := at(0)
	var writes []Write
	addWrite := func(w Write, now time.Time) {
		if lateWrites {
			writes = append(writes, w)
			return
		}
		p.AddWrite(w, now)
	}
	defer func() {
		for _, w := range writes {
			p.AddWrite(w, now)
		}
	}()
	addWrite(create, now)
	c := schedGap + 7 // create commits at ~5.2
	p.Add(pev(probes.StageSchedulerQueue, probes.KubeScheduler, c, c, func(e *probes.Event) { e.Revision = 10 }), now)
	p.Add(pev(probes.StageSchedule, probes.KubeScheduler, c+1, c+3, func(e *probes.Event) { e.Node = "node-1"; e.Namespace, e.Name = "", "" }), now)
	addWrite(podWrite(t, key, 11, c+4.5, "POST", "/api/v1/namespaces/ns/pods/web/binding"), now)
	p.Add(pev(probes.StageInformer, probes.Kubelet, c+12, c+12, func(e *probes.Event) { e.Revision = 11 }), now)
	p.Add(pev(probes.StagePodSync, probes.Kubelet, c+13, c+200, nil), now)
	p.Add(pev(probes.StageSandbox, probes.Kubelet, c+20, c+120, nil), now)
	// The container start: its entry to the end of the CRI call, paired
	// by the catalogue (Pairs).
	p.Add(pev(probes.StageContainerStart, probes.Kubelet, c+121, c+140, func(e *probes.Event) { e.Container = "app"; e.Namespace = ""; e.Goroutine = 77 }), now)
	// A status before the containers started does not end the startup.
	status := func(ms float64, started ...time.Time) probes.Event {
		return pev(probes.StageStatusSet, probes.Kubelet, ms, ms, func(e *probes.Event) { e.Statuses, e.ContainersStarted = 1, started })
	}
	p.Add(status(c+110, time.Time{}), now)
	addWrite(podWrite(t, key, 12, c+111, "PATCH", "/api/v1/namespaces/ns/pods/web/status"), now)
	if runtimeStart {
		p.Add(status(c+1150, at(c+135)), now)
	} else {
		p.Add(status(c+1150), now) // more containers than the probe reads
	}
	addWrite(podWrite(t, key, 13, c+1151, "PATCH", "/api/v1/namespaces/ns/pods/web/status"), now)
}

func TestPodStartupPartition(t *testing.T) {
	var got []PodTrace
	p := NewPods(PodOptions{}, func(pt PodTrace) { got = append(got, pt) })
	feedStartup(t, p, 0)
	p.Flush(at(5000))
	if len(got) != 1 {
		t.Fatalf("%d pod traces, want 1", len(got))
	}
	pt := got[0]
	if !pt.Trace.Complete || pt.Trace.ID != PodTraceID("uid-1") || pt.UID != "uid-1" {
		t.Fatalf("complete %v id %x uid %s", pt.Trace.Complete, pt.Trace.ID, pt.UID)
	}
	checkNested(t, pt.Trace)
	var sum time.Duration
	byStage := map[string]time.Duration{}
	for _, s := range pt.Stages {
		if s.Stage != PodWatchLag {
			sum += s.Duration
			byStage[s.Stage] = s.Duration
		}
	}
	var root *Span
	for i := range pt.Trace.Spans {
		if pt.Trace.Spans[i].Parent == (SpanID{}) {
			root = &pt.Trace.Spans[i]
		}
	}
	// The partition ends at the status write's commit; the root also covers
	// that write's request, which returns after it.
	if len(byStage) != len(PodStages) {
		t.Fatalf("stages %v", byStage)
	}
	first, last := pt.Trace.span(PodAdmission), pt.Trace.span(PodStatusReport)
	if total := last.End.Sub(first.Start); sum != total || first.Start != root.Start {
		t.Errorf("stages add up to %v, the startup took %v", sum, total)
	}
	if d := byStage[PodSandbox]; d != 100*time.Millisecond {
		t.Errorf("sandbox %v, want 100ms", d)
	}
	if d := byStage[PodStatusReport]; d < time.Second {
		t.Errorf("status report %v: the early status write was taken", d)
	}
	lags := 0
	for _, s := range pt.Stages {
		if s.Stage == PodWatchLag {
			lags++
		}
	}
	if lags != 2 {
		t.Errorf("%d watch lags (scheduler at the create, kubelet at the binding), want 2", lags)
	}
	if cs := pt.Trace.span(PodContainerStart); cs == nil || !cs.End.Equal(at(7+135)) || cs.Attr(AttrStartedBy) != "runtime" {
		t.Errorf("container-start stage %+v: want it to end at the runtime's StartedAt", cs)
	}
	if s := p.Stats(); s.StartedByCRI != 0 {
		t.Errorf("%d traces counted as ended at the CRI reply", s.StartedByCRI)
	}
	for _, name := range []string{"create sandbox", "start container app", "runtime started app, CRI reply", "scheduling cycle"} {
		found := false
		for _, s := range pt.Trace.Spans {
			found = found || s.Name == name
		}
		if !found {
			t.Errorf("no span %q", name)
		}
	}
}

func TestPodEventsBeforeTheCreateWrite(t *testing.T) {
	var got []PodTrace
	p := NewPods(PodOptions{}, func(pt PodTrace) { got = append(got, pt) })
	feed(t, p, 0, true, true)
	p.Flush(at(5000))
	if len(got) != 1 || !got[0].Trace.Complete || len(got[0].Stages) != len(PodStages)+2 {
		t.Fatalf("%d traces; want one complete with all stages and two lags: %+v", len(got), got)
	}
	if s := p.Stats(); s.Orphans != 0 {
		t.Errorf("%d orphans", s.Orphans)
	}
}

func TestPodSchedulerStoppedGoesToSchedulingWait(t *testing.T) {
	var got []PodTrace
	p := NewPods(PodOptions{}, func(pt PodTrace) { got = append(got, pt) })
	feedStartup(t, p, 2000)
	p.Flush(at(10_000))
	if len(got) != 1 {
		t.Fatalf("%d traces", len(got))
	}
	for _, s := range got[0].Stages {
		if s.Stage == PodSchedulingWait && s.Duration < 2*time.Second {
			t.Errorf("scheduling wait %v, want ≥ 2s", s.Duration)
		}
		if s.Stage != PodSchedulingWait && s.Stage != PodStatusReport && s.Stage != PodWatchLag && s.Duration > time.Second {
			t.Errorf("stage %s took %v: the scheduler's stop leaked into it", s.Stage, s.Duration)
		}
	}
}

func TestPodRecreatedUnderTheSameNameIsAnotherTrace(t *testing.T) {
	var got []PodTrace
	p := NewPods(PodOptions{MaxWait: time.Second}, func(pt PodTrace) { got = append(got, pt) })
	for i, uid := range []string{"uid-a", "uid-b"} {
		rev := int64(100 * (i + 1))
		p.AddWrite(podWrite(t, "/registry/pods/ns/same", rev, float64(i*100), "POST", "/api/v1/namespaces/ns/pods"), at(0))
		p.Add(probes.Event{Stage: probes.StageInformer, Component: probes.KubeScheduler, UID: uid, Namespace: "ns", Name: "same",
			Revision: rev, Start: at(float64(i*100) + 7), End: at(float64(i*100) + 7)}, at(0))
	}
	p.Flush(at(0).Add(2 * time.Second))
	if len(got) != 2 || got[0].Trace.ID == got[1].Trace.ID {
		t.Fatalf("%d traces for two lives of one name", len(got))
	}
	for _, pt := range got {
		if pt.Trace.Complete {
			t.Errorf("an unscheduled pod's trace is marked complete")
		}
		if pt.Trace.ID != PodTraceID(pt.UID) {
			t.Errorf("trace %x is not from uid %s", pt.Trace.ID, pt.UID)
		}
	}
	if s := p.Stats(); s.Incomplete != 2 {
		t.Errorf("stats %+v", s)
	}
	_ = fmt.Sprint
}

func TestPodMetadataOnTheRoot(t *testing.T) {
	var got []PodTrace
	meta := func(uid string) (PodMeta, bool) {
		return PodMeta{Node: "from-api", OwnerKind: "ReplicaSet", OwnerName: "web-7d9"}, uid == "uid-1"
	}
	p := NewPods(PodOptions{Meta: meta}, func(pt PodTrace) { got = append(got, pt) })
	feedStartup(t, p, 0)
	p.Flush(at(5000))
	if len(got) != 1 {
		t.Fatalf("%d traces", len(got))
	}
	root := got[0].Trace.Spans[0]
	if root.Attr(AttrNodeName) != "node-1" || root.Attr("k8s.replicaset.name") != "web-7d9" {
		t.Errorf("root attributes %v: want the scheduling cycle's node and the owner from the API", root.Attributes)
	}
}

// The creator of a pod, asked once for the owner the API names, as of the
// create's start, is on the root with its links.
func TestPodCreatorOnTheRoot(t *testing.T) {
	var got []PodTrace
	meta := func(uid string) (PodMeta, bool) {
		return PodMeta{OwnerKind: "ReplicaSet", OwnerName: "web-7d9"}, true
	}
	var asked []string
	link := Link{TraceID: WriteTraceID(7), SpanID: WriteRootID(7)}
	creator := func(ns, kind, name string, t time.Time) (Creator, bool) {
		asked = append(asked, ns+"/"+kind+"/"+name+"@"+t.Sub(t0).String())
		return Creator{Component: "kube-controller-manager", Controller: "replicaset", AfterOwnerWrite: 3 * time.Millisecond, Links: []Link{link}}, true
	}
	p := NewPods(PodOptions{Meta: meta, Creator: creator}, func(pt PodTrace) { got = append(got, pt) })
	feedStartup(t, p, 0)
	p.Flush(at(5000))
	if len(got) != 1 {
		t.Fatalf("%d traces", len(got))
	}
	root := got[0].Trace.Spans[0]
	if root.Attr(AttrCreator) != "kube-controller-manager/replicaset" || root.Attr(AttrAfterOwnerWrite) != 3.0 ||
		len(root.Links) != 1 || root.Links[0].TraceID != link.TraceID {
		t.Errorf("root %v, links %v: want the creator and its link", root.Attributes, root.Links)
	}
	if want := "ns/ReplicaSet/web-7d9@" + got[0].Trace.Spans[0].Start.Sub(t0).String(); len(asked) != 1 || asked[0] != want {
		t.Errorf("asked %v, want once %s", asked, want)
	}
}

// Without the runtime's StartedAt (a pod with more containers than the
// probe reads) the container start ends at the kubelet's CRI reply, says
// so on the stage, and is counted.
func TestPodContainerStartWithoutRuntimeStartedAt(t *testing.T) {
	var got []PodTrace
	p := NewPods(PodOptions{}, func(pt PodTrace) { got = append(got, pt) })
	feed(t, p, 0, false, false)
	p.Flush(at(5000))
	if len(got) != 1 || !got[0].Trace.Complete {
		t.Fatalf("%d traces, want one complete", len(got))
	}
	cs := got[0].Trace.span(PodContainerStart)
	if cs == nil || !cs.End.Equal(at(7+140)) || cs.Attr(AttrStartedBy) != "cri-reply" {
		t.Errorf("container-start stage %+v: want it to end at the CRI reply, marked so", cs)
	}
	if s := p.Stats(); s.StartedByCRI != 1 {
		t.Errorf("StartedByCRI %d, want 1", s.StartedByCRI)
	}
}

// With the detail row scheduler.bind attached, its span holds the binding
// write; the node comes from the cycle either way.
func TestPodBindDetail(t *testing.T) {
	var got []PodTrace
	p := NewPods(PodOptions{}, func(pt PodTrace) { got = append(got, pt) })
	p.Add(pev(probes.StageBind, probes.KubeScheduler, 7+4, 7+12, func(e *probes.Event) { e.Node = "node-1"; e.Namespace = "" }), at(0))
	feedStartup(t, p, 0)
	p.Flush(at(5000))
	if len(got) != 1 || !got[0].Trace.Complete {
		t.Fatalf("%d traces, want one complete", len(got))
	}
	var bind *Span
	for i, s := range got[0].Trace.Spans {
		if s.Name == "bind to node-1" {
			bind = &got[0].Trace.Spans[i]
		}
	}
	if bind == nil {
		t.Fatal("no bind span")
	}
	n := 0
	for _, s := range got[0].Trace.Spans {
		if s.Parent == bind.SpanID {
			n++
		}
	}
	if n == 0 {
		t.Error("the binding write is not under the bind span")
	}
}

// A consumer that gets a write of the startup after the trace went out (a
// slow operator) still gets its watch lag: more spans of the same trace,
// once; later writes of the pod add nothing to the startup.
func TestPodLateWatchLag(t *testing.T) {
	var got []PodTrace
	p := NewPods(PodOptions{}, func(pt PodTrace) { got = append(got, pt) })
	feedStartup(t, p, 0)
	p.Flush(at(5000))
	if len(got) != 1 || got[0].Late {
		t.Fatalf("%d traces", len(got))
	}
	operator := func(rev int64, ms float64) probes.Event {
		return probes.Event{Stage: probes.StageInformer, Component: "my-operator", PID: 400, UID: "uid-1", Namespace: "ns", Name: "web",
			Revision: rev, Start: at(ms), End: at(ms)}
	}
	p.Add(operator(10, 6000), at(6000))
	p.Add(operator(10, 6001), at(6001)) // the same write again (a relist): nothing more
	p.Add(operator(99, 6002), at(6002)) // a write after the startup
	if len(got) != 2 {
		t.Fatalf("%d emissions, want the startup and one late lag", len(got))
	}
	p.Flush(at(6002).Add(time.Hour))
	checkNothingLeft(t, p.a)
	if len(p.writes) != 0 {
		t.Errorf("%d writes left", len(p.writes))
	}
	late := got[1]
	if !late.Late || late.Trace.ID != got[0].Trace.ID || len(late.Trace.Spans) != 1 || len(late.Stages) != 1 {
		t.Fatalf("late emission %+v", late)
	}
	s := late.Trace.Spans[0]
	if s.Attr(AttrComponent) != "my-operator" || s.Attr(AttrStage) != PodWatchLag || s.End.Sub(s.Start) < 5*time.Second {
		t.Errorf("late lag span %+v", s)
	}
}

// A late watch lag is the span the trace would have held had the receipt
// come in time: the same ID, times and attributes, though the emitted
// trace kept none of its events.
func TestPodLateLagIsTheSpanOfTheTrace(t *testing.T) {
	operator := probes.Event{Stage: probes.StageInformer, Component: "my-operator", PID: 400, UID: "uid-1", Namespace: "ns", Name: "web",
		Revision: 11, Start: at(4000), End: at(4000)}
	var inTime []PodTrace
	p := NewPods(PodOptions{}, func(pt PodTrace) { inTime = append(inTime, pt) })
	feedStartup(t, p, 0)
	p.Add(operator, at(0))
	p.Flush(at(5000))
	var want *Span
	for i, s := range inTime[0].Trace.Spans {
		if s.Attr(AttrStage) == PodWatchLag && s.Attr(AttrComponent) == "my-operator" {
			want = &inTime[0].Trace.Spans[i]
		}
	}
	if len(inTime) != 1 || want == nil {
		t.Fatalf("%d traces, operator's lag %v", len(inTime), want)
	}

	var late []PodTrace
	q := NewPods(PodOptions{}, func(pt PodTrace) { late = append(late, pt) })
	feedStartup(t, q, 0)
	q.Flush(at(3000))
	if len(late) != 1 {
		t.Fatalf("%d traces before the late receipt", len(late))
	}
	for _, st := range q.a.traces {
		if st.one != [maxStages]*held{} || st.more != nil {
			t.Errorf("the emitted trace kept its events")
		}
	}
	if len(q.writes) != 0 {
		t.Errorf("%d writes held after the trace went out", len(q.writes))
	}
	q.Add(operator, at(4000))
	if len(late) != 2 || len(late[1].Trace.Spans) != 1 {
		t.Fatalf("%d emissions, want the startup and one late lag", len(late))
	}
	got := late[1].Trace.Spans[0]
	if got.SpanID != want.SpanID || got.Parent != want.Parent || !got.Start.Equal(want.Start) || !got.End.Equal(want.End) || got.Name != want.Name ||
		fmt.Sprint(got.Attributes) != fmt.Sprint(want.Attributes) {
		t.Errorf("late lag\n%+v\nthe trace's\n%+v", got, *want)
	}
	if late[1].Namespace != "ns" || late[1].Name != "web" || late[1].UID != "uid-1" {
		t.Errorf("late emission names %s/%s %s", late[1].Namespace, late[1].Name, late[1].UID)
	}
}

// The writes of a pod after its startup went out (its status, its delete)
// are turned away at once, counted, not held for minutes; a new pod of the
// same name is followed afresh.
func TestPodWritesAfterTheStartupAreNotHeld(t *testing.T) {
	var got []PodTrace
	p := NewPods(PodOptions{}, func(pt PodTrace) { got = append(got, pt) })
	feedStartup(t, p, 0)
	p.Flush(at(3000))
	if len(got) != 1 {
		t.Fatalf("%d traces", len(got))
	}
	key := "/registry/pods/ns/web"
	held := p.a.Held()
	p.AddWrite(podWrite(t, key, 20, 3100, "PATCH", "/api/v1/namespaces/ns/pods/web/status"), at(3100))
	p.AddWrite(podWrite(t, key, 21, 3200, "DELETE", "/api/v1/namespaces/ns/pods/web"), at(3200))
	if len(p.writes) != 0 || p.a.Held() != held {
		t.Errorf("writes after the startup held: %d writes, %d events (was %d)", len(p.writes), p.a.Held(), held)
	}
	if n := p.a.Unjoined()[Unjoined{rowOf(&probes.Event{Component: probes.KubeAPIServer, Probe: probes.StagePodWrite}), "after-trace"}]; n != 2 {
		t.Errorf("%d writes counted after-trace, want 2 (%v)", n, p.a.Unjoined())
	}
	// The same name again: its create is followed.
	p.AddWrite(podWrite(t, key, 30, 4000, "POST", "/api/v1/namespaces/ns/pods"), at(4000))
	if len(p.writes) != 1 {
		t.Errorf("the new pod's create not held: %d writes", len(p.writes))
	}
	p.Flush(at(4000).Add(time.Hour))
	checkNothingLeft(t, p.a)
	if len(p.writes) != 0 || len(p.started) != 0 || len(p.arrived) != 0 {
		t.Errorf("left: %d writes, %d started, %d arrived", len(p.writes), len(p.started), len(p.arrived))
	}
}

// span is the first span of the trace at stage.
func (t *Trace) span(stage string) *Span {
	for i := range t.Spans {
		if t.Spans[i].Attr(AttrStage) == stage {
			return &t.Spans[i]
		}
	}
	return nil
}

// splitAgents gives the kubelet's events to the agent of the pod's node
// and the rest (the API server's writes, the scheduler's) to the
// control-plane agent, as two agents on two nodes see one pod.
type splitAgents struct{ controlPlane, node *Pods }

func (s splitAgents) Add(e probes.Event, now time.Time) {
	if e.Component == probes.Kubelet {
		s.node.Add(e, now)
	} else {
		s.controlPlane.Add(e, now)
	}
}
func (s splitAgents) AddWrite(w Write, now time.Time) { s.controlPlane.AddWrite(w, now) }

// TestPodOnAnotherNodeIsOneTraceFromTwoAgents: the control-plane agent
// (its node node-0) and the agent of node-1, where the pod runs, each emit
// their part as soon as it is done, not after MaxWait; together they are
// one trace, every span's parent in it, with no partition from either (none
// sees every boundary) and nothing counted as disordered.
func TestPodOnAnotherNodeIsOneTraceFromTwoAgents(t *testing.T) {
	var cpGot, nodeGot []PodTrace
	cp := NewPods(PodOptions{Node: "node-0"}, func(pt PodTrace) { cpGot = append(cpGot, pt) })
	node := NewPods(PodOptions{Node: "node-1", SeesAPIServer: func() bool { return false }}, func(pt PodTrace) { nodeGot = append(nodeGot, pt) })
	feedStartup(t, splitAgents{cp, node}, 0)
	cp.Flush(at(5000))
	node.Flush(at(5000))
	if len(cpGot) != 1 || len(nodeGot) != 1 {
		t.Fatalf("%d traces from the control-plane agent, %d from the node's; want 1 each", len(cpGot), len(nodeGot))
	}
	// The control-plane agent saw no container start: none is counted as
	// ending at the CRI reply.
	if n := cp.Stats().StartedByCRI; n != 0 {
		t.Errorf("control-plane agent: %d container starts counted ended at the CRI reply", n)
	}
	merged := Trace{ID: PodTraceID("uid-1")}
	for _, pt := range []PodTrace{cpGot[0], nodeGot[0]} {
		if pt.Trace.ID != merged.ID || !pt.Trace.Complete || pt.Stages != nil {
			t.Errorf("trace %x complete %v stages %v: want trace %x, complete, no partition", pt.Trace.ID, pt.Trace.Complete, pt.Stages, merged.ID)
		}
		merged.Spans = append(merged.Spans, pt.Trace.Spans...)
	}
	comps := map[SpanID]string{}
	for _, sp := range merged.Spans {
		comps[sp.SpanID], _ = sp.Attr(AttrComponent).(string)
	}
	for _, sp := range merged.Spans {
		if _, ok := comps[sp.Parent]; sp.Parent != (SpanID{}) && !ok {
			t.Errorf("span %q: its parent is in neither agent's part", sp.Name)
		}
	}
	for _, want := range []struct{ agent, name string }{{"control-plane", "scheduling cycle"}, {"node", "create sandbox"}, {"node", "start container app"}, {"node", "runtime started app, CRI reply"}} {
		in := cpGot[0]
		if want.agent == "node" {
			in = nodeGot[0]
		}
		found := false
		for _, sp := range in.Trace.Spans {
			found = found || sp.Name == want.name
		}
		if !found {
			t.Errorf("no span %q from the %s agent", want.name, want.agent)
		}
	}
	for _, sp := range nodeGot[0].Trace.Spans {
		if sp.SpanID == podRootID("uid-1") || sp.Attr(AttrComponent) != string(probes.Kubelet) {
			t.Errorf("the node's agent emitted %q (%v): only the kubelet's spans are its", sp.Name, sp.Attr(AttrComponent))
		}
	}
	for _, sp := range cpGot[0].Trace.Spans {
		if sp.SpanID == podRootID("uid-1") && sp.Attr(AttrKubeletElsewhere) != "node-1" {
			t.Errorf("the root says the kubelet's part comes from %v, want node-1", sp.Attr(AttrKubeletElsewhere))
		}
	}
	if s := cp.Stats(); s.Disordered != 0 || s.Incomplete != 0 {
		t.Errorf("control-plane agent stats %+v", s)
	}
	if s := node.Stats(); s.Disordered != 0 || s.Incomplete != 0 {
		t.Errorf("node agent stats %+v", s)
	}

	// The same control-plane agent on the pod's own node, whose kubelet
	// it does not see, waits for it (and emits incomplete after MaxWait).
	var waited []PodTrace
	same := NewPods(PodOptions{Node: "node-1"}, func(pt PodTrace) { waited = append(waited, pt) })
	feedStartup(t, splitAgents{same, NewPods(PodOptions{}, func(PodTrace) {})}, 0)
	same.Flush(at(5000))
	if len(waited) != 0 {
		t.Errorf("a pod on the agent's own node was emitted without its kubelet's part: %d traces", len(waited))
	}
}
