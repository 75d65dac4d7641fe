package correlate

import (
	"strings"
	"testing"
	"time"

	"github.com/kpath/kpath/probes"
)

// catalogueRow is the first catalogue row with this ID.
func catalogueRow(t *testing.T, id string) *probes.Row {
	t.Helper()
	for i := range probes.Catalogue {
		if probes.Catalogue[i].ID == id {
			return &probes.Catalogue[i]
		}
	}
	t.Fatalf("no catalogue row %s", id)
	return nil
}

func rowEvent(t *testing.T, id string, ms float64, f func(*probes.Event)) probes.Event {
	r := catalogueRow(t, id)
	e := probes.Event{Row: r, Probe: r.ID, Stage: r.Stage, Component: r.Component, PID: 7, Goroutine: 40, Start: at(ms), End: at(ms), Point: true}
	if f != nil {
		f(&e)
	}
	return e
}

func TestPairsBuildTheRequestFromItsHandlerAndMonitorRequest(t *testing.T) {
	p := NewPairs(time.Second, 0)
	var out []probes.Event
	emit := func(e probes.Event) { out = append(out, e) }
	p.Add(rowEvent(t, "apiserver.request.create", 1, func(e *probes.Event) { e.Method, e.Path = "POST", "/api/v1/namespaces/ns/configmaps" }), at(1), emit)
	if len(out) != 1 || !out[0].InFlight {
		t.Fatalf("the opening hit of an announced span: %+v", out)
	}
	// Another goroutine's end does not close it.
	p.Add(rowEvent(t, "apiserver.request.end", 3, func(e *probes.Event) { e.Goroutine = 41; e.Elapsed = time.Millisecond }), at(3), emit)
	p.Add(rowEvent(t, "apiserver.request.end", 4, func(e *probes.Event) { e.Elapsed = 3500 * time.Microsecond; e.Code = 201; e.Verb = "POST" }), at(4), emit)
	if len(out) != 2 {
		t.Fatalf("%d events out, want the announcement and the span", len(out))
	}
	s := out[1]
	if s.Probe != "apiserver.request.create" || s.Stage != probes.StageRequest || s.Point || s.InFlight {
		t.Errorf("span keeps the opening row: probe %s stage %s point %v in-flight %v", s.Probe, s.Stage, s.Point, s.InFlight)
	}
	if !s.Start.Equal(at(0.5)) || !s.Opened.Equal(at(1)) || !s.End.Equal(at(4)) {
		t.Errorf("span %v–%v opened %v; want from the receipt (0.5 ms), handler at 1 ms, end at 4 ms", s.Start, s.End, s.Opened)
	}
	if s.Method != "POST" || s.Code != 201 || s.Verb != "POST" {
		t.Errorf("fields of both ends: method %q code %d verb %q", s.Method, s.Code, s.Verb)
	}
	got := p.Unjoined()
	if got[Unjoined{"apiserver.request.end", "no-start"}] != 1 || len(got) != 1 {
		t.Errorf("unjoined %v; want the other goroutine's end counted as an end without a start", got)
	}
}

func TestPairsJoinByUIDAcrossGoroutines(t *testing.T) {
	p := NewPairs(time.Second, 0)
	var out []probes.Event
	emit := func(e probes.Event) { out = append(out, e) }
	p.Add(rowEvent(t, "scheduler.cycle", 1, func(e *probes.Event) { e.UID = "u1" }), at(1), emit)
	p.Add(rowEvent(t, "scheduler.cycle", 2, func(e *probes.Event) { e.UID = "u2"; e.Goroutine = 9 }), at(2), emit)
	p.Add(rowEvent(t, "scheduler.cycle.done", 5, func(e *probes.Event) { e.UID = "u1"; e.Node = "n1"; e.Goroutine = 99 }), at(5), emit)
	p.Add(rowEvent(t, "scheduler.cycle.failed", 6, func(e *probes.Event) { e.UID = "u2"; e.Failed = true }), at(6), emit)
	if len(out) != 2 {
		t.Fatalf("%d spans, want 2", len(out))
	}
	if s := out[0]; s.UID != "u1" || s.Node != "n1" || s.Failed || !s.Start.Equal(at(1)) || !s.End.Equal(at(5)) || s.Goroutine != 40 {
		t.Errorf("scheduled: %+v", s)
	}
	if s := out[1]; s.UID != "u2" || !s.Failed || !s.End.Equal(at(6)) {
		t.Errorf("failed: %+v", s)
	}
	if p.Open() != 0 {
		t.Errorf("%d spans still open", p.Open())
	}
}

func TestPairsCountWhatJoinsNothing(t *testing.T) {
	p := NewPairs(time.Second, 0)
	var out []probes.Event
	emit := func(e probes.Event) { out = append(out, e) }
	// A container start that never reached the runtime, then another on
	// the same goroutine; a start whose end never comes.
	p.Add(rowEvent(t, "kubelet.container.start", 1, nil), at(1), emit)
	p.Add(rowEvent(t, "kubelet.container.start", 2, nil), at(2), emit)
	p.Add(rowEvent(t, "kubelet.cri.start", 3, nil), at(3), emit)
	p.Add(rowEvent(t, "kubelet.container.start", 4, func(e *probes.Event) { e.Goroutine = 41 }), at(4), emit)
	// An end with nothing open, a UID-joined start without a UID.
	p.Add(rowEvent(t, "kubelet.cri.start", 5, func(e *probes.Event) { e.Goroutine = 42 }), at(5), emit)
	p.Add(rowEvent(t, "scheduler.cycle", 5, nil), at(5), emit)
	// A moment passes through.
	p.Add(rowEvent(t, "etcd.request.rpc", 7, func(e *probes.Event) { e.Method = "/etcdserverpb.KV/Txn" }), at(7), emit)
	p.Flush(at(4).Add(2 * time.Second))
	want := map[Unjoined]uint64{
		{"kubelet.container.start", "no-end"}: 2, // replaced, then expired
		{"kubelet.cri.start", "no-start"}:     1,
		{"scheduler.cycle", "no-key"}:         1,
	}
	got := p.Unjoined()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%v: %d, want %d", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("unjoined %v, want %v", got, want)
	}
	if len(out) != 2 || !out[0].Start.Equal(at(2)) || !out[0].End.Equal(at(3)) || out[1].Method != "/etcdserverpb.KV/Txn" {
		t.Errorf("out: %+v", out)
	}
}

// A goroutine is reused: a handler's request ended unseen, and a request
// that no handler row opens ends on the same goroutine later. Its end
// knows it began after that open: no span from one's path and the other's
// times.
func TestPairsRefuseAnEndThatBeganAfterTheOpen(t *testing.T) {
	p := NewPairs(time.Second, 0)
	var out []probes.Event
	emit := func(e probes.Event) { out = append(out, e) }
	p.Add(rowEvent(t, "apiserver.request.create-named", 1, func(e *probes.Event) { e.Method, e.Path = "POST", "/api/v1/namespaces/ns/pods/p/binding" }), at(1), emit)
	p.Add(rowEvent(t, "apiserver.request.end", 30, func(e *probes.Event) { e.Elapsed = 15 * time.Millisecond; e.Verb = "POST" }), at(30), emit)
	if len(out) != 1 || !out[0].InFlight {
		t.Fatalf("out %+v; want only the announcement", out)
	}
	want := map[Unjoined]uint64{{"apiserver.request.create-named", "no-end"}: 1, {"apiserver.request.end", "no-start"}: 1}
	if got := p.Unjoined(); len(got) != len(want) || got[Unjoined{"apiserver.request.create-named", "no-end"}] != 1 || got[Unjoined{"apiserver.request.end", "no-start"}] != 1 {
		t.Errorf("unjoined %v, want %v", got, want)
	}
	if p.Open() != 0 {
		t.Errorf("%d open; the stale open is given up", p.Open())
	}
	// A begin a little after the open is the same request, its end hit
	// late after the clock was read (a goroutine preempted in between).
	p.Add(rowEvent(t, "apiserver.request.create", 40, func(e *probes.Event) { e.Goroutine = 50 }), at(40), emit)
	p.Add(rowEvent(t, "apiserver.request.end", 45, func(e *probes.Event) { e.Goroutine = 50; e.Elapsed = 2 * time.Millisecond }), at(45), emit)
	if last := out[len(out)-1]; last.InFlight || !last.End.Equal(at(45)) || !last.Start.Equal(at(40)) || !last.Opened.Equal(at(40)) || len(p.Unjoined()) != len(want) {
		t.Errorf("a close a little late: %+v, unjoined %v; want it to end its request", last, p.Unjoined())
	}
}

// Ends that both hold the request's address pair by it: a hit that came
// long after elapsed was read (a CPU-starved node) still ends its own
// request, and another request's end on the same goroutine is refused
// however close its begin.
func TestPairsJoinByTheCallsHandle(t *testing.T) {
	p := NewPairs(time.Second, 0)
	var out []probes.Event
	emit := func(e probes.Event) { out = append(out, e) }
	p.Add(rowEvent(t, "apiserver.request.create", 10, func(e *probes.Event) { e.Handle = 0xc000100000 }), at(10), emit)
	// Elapsed read at 12 ms and the hit at 40: the implied begin is 28 ms
	// after the open, far past closeSkew.
	p.Add(rowEvent(t, "apiserver.request.end", 40, func(e *probes.Event) {
		e.Handle, e.Elapsed, e.Verb, e.Code = 0xc000100000, 12*time.Millisecond, "POST", 201
	}), at(40), emit)
	if last := out[len(out)-1]; last.InFlight || !last.End.Equal(at(40)) || last.Code != 201 || len(p.Unjoined()) != 0 {
		t.Fatalf("a late end of the same request: %+v, unjoined %v; want it to end its request", last, p.Unjoined())
	}
	n := len(out)
	p.Add(rowEvent(t, "apiserver.request.create", 50, func(e *probes.Event) { e.Handle = 0xc000200000 }), at(50), emit)
	p.Add(rowEvent(t, "apiserver.request.end", 52, func(e *probes.Event) {
		e.Handle, e.Elapsed, e.Verb = 0xc000300000, 3*time.Millisecond, "POST"
	}), at(52), emit)
	if len(out) != n+1 || !out[n].InFlight {
		t.Errorf("out %+v; want only the second open's announcement", out[n:])
	}
	if got := p.Unjoined(); got[Unjoined{"apiserver.request.create", "no-end"}] != 1 || got[Unjoined{"apiserver.request.end", "no-start"}] != 1 || len(got) != 2 {
		t.Errorf("unjoined %v; want the open's end missed and the other request's end unpaired", got)
	}
}

func TestPairsBoundWhatWaits(t *testing.T) {
	p := NewPairs(time.Minute, 2)
	emit := func(probes.Event) {}
	for g := uint64(1); g <= 3; g++ {
		p.Add(rowEvent(t, "kubelet.container.start", 1, func(e *probes.Event) { e.Goroutine = g }), at(1), emit)
	}
	if p.Open() != 2 || p.Unjoined()[Unjoined{"kubelet.container.start", "no-room"}] != 1 {
		t.Errorf("open %d, unjoined %v; want 2 open and the third counted no-room", p.Open(), p.Unjoined())
	}
}

// FuzzParseKey: any etcd key gives an object or nothing, and a parsed
// object's name is the key's last segment.
func FuzzParseKey(f *testing.F) {
	for _, k := range []string{"/registry/pods/ns/name", "/registry/apps.example.com/widgets/ns/w", "/registry/nodes/n1", "", "/", "//a//b"} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		o := ParseKey(key)
		if o.Name != "" && !strings.HasSuffix(strings.TrimRight(key, "/"), "/"+o.Name) {
			t.Fatalf("ParseKey(%q) = %+v: the name is not the key's last segment", key, o)
		}
		o.Attributes()
	})
}

// A webhook call's span: the review's UID opens it, ObserveWebhook's hit
// closes it and says when it began. A call that failed before its review
// (or whose review row did not attach) is still the span ObserveWebhook
// times, alone, counted nowhere as a loss.
func TestPairsKeepAnAloneCloseAsItsOwnSpan(t *testing.T) {
	p := NewPairs(time.Second, 0)
	var out []probes.Event
	emit := func(e probes.Event) { out = append(out, e) }
	p.Add(rowEvent(t, "apiserver.webhook.review", 2, func(e *probes.Event) { e.UID = "u-1" }), at(2), emit)
	p.Add(rowEvent(t, "apiserver.webhook", 10, func(e *probes.Event) { e.Webhook, e.Elapsed = "m.example.com", 9*time.Millisecond }), at(10), emit)
	p.Add(rowEvent(t, "apiserver.webhook", 20, func(e *probes.Event) { e.Webhook, e.Elapsed = "v.example.com", 4*time.Millisecond }), at(20), emit)
	if len(out) != 2 {
		t.Fatalf("%d events out, want 2: %+v", len(out), out)
	}
	if s := out[0]; s.UID != "u-1" || s.Webhook != "m.example.com" || !s.Start.Equal(at(1)) || !s.End.Equal(at(10)) || s.Point {
		t.Errorf("paired call: %+v", s)
	}
	if s := out[1]; s.UID != "" || s.Webhook != "v.example.com" || !s.Start.Equal(at(16)) || !s.End.Equal(at(20)) || s.Point {
		t.Errorf("call alone: %+v", s)
	}
	if got := p.Unjoined(); len(got) != 0 {
		t.Errorf("unjoined %v, want none", got)
	}
}
