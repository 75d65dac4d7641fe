package correlate

import (
	"crypto/sha256"
	"encoding/binary"
	"time"

	"github.com/kpath/kpath/probes"
)

// Reconcile is one finished reconcile of an operator.
type Reconcile struct {
	Component  string // the operator's program
	Controller string
	Namespace  string
	Name       string
	Result     string // ResultOK, ResultError, ResultRequeueAfter or ResultRequeue
	Start, End time.Time
	// Received is the operator's receipt of the object it reconciled (zero
	// when none was seen: a resync, or the agent started after it); from
	// it to Start the request waited in the queue. Revision is the write
	// that receipt carried: the reconcile's spans are in its trace.
	Received time.Time
	Revision int64
	// Queued is when its wait in the queue began: the receipt, or, when
	// the same object's previous reconcile ended after it (a retry, a
	// requeue), that end, as the handler adds the request back there
	// (the retry's backoff or requeue delay is part of its wait). Zero
	// when neither is known.
	Queued time.Time
	Trace  Trace
}

// Results of a reconcile, as reconcileHandler acted on them (the values
// of controller-runtime's own controller_runtime_reconcile_total, but
// success: ok).
const (
	ResultOK           = "ok"
	ResultError        = "error"
	ResultRequeueAfter = "requeue_after"
	ResultRequeue      = "requeue" // the deprecated Result.Requeue, without a delay
)

// Attribute keys of reconcile spans.
const (
	AttrController = "kpath.controller"
	AttrResult     = "kpath.result"
	AttrObjectName = "kpath.object.name"
)

// Reconciles joins each reconcile of an operator with the receipt of the
// object it reconciled (probes.ReconcileShape): the reconcile goes into the
// trace of the write that receipt carried, under that write's root, with
// the wait in the operator's queue before it.
type Reconciles struct {
	locked
	opts ReconcileOptions
	emit func(Reconcile)
	// calls is when each object (namespace, and name or "" for a create)
	// last had a write request from an operator: only the API server's
	// writes of those are held for a reconcile, not every write.
	calls map[callKey]callSeen
	// writes are the writes the assembler holds, by revision.
	writes map[int64]Write
	// ended is the end of each object's last reconcile, by trace name,
	// kept for Retain.
	ended map[string]time.Time
	sweep time.Time
}

// ReconcileOptions say what the agent sees of the reconciles' writes.
type ReconcileOptions struct {
	// SeesAPIServer says whether the agent follows a kube-apiserver: only
	// then do a reconcile's write requests become writes here (an operator
	// on a worker node has them traced by the control plane's agent). Nil:
	// it does.
	SeesAPIServer func() bool
}

type callKey struct{ ns, name, verb string }

// callSeen spans the write requests of one key made within a Retain of
// each other: a write of them may begin anywhere after the first (several
// reconciles create in one namespace before the first create's write is
// done).
type callSeen struct{ first, last time.Time }

// NewReconciles returns a correlator calling emit with each reconcile;
// emit runs with its lock held.
func NewReconciles(opts ReconcileOptions, emit func(Reconcile)) *Reconciles {
	r := &Reconciles{opts: opts, emit: emit, ended: map[string]time.Time{}, calls: map[callKey]callSeen{}, writes: map[int64]Write{}}
	r.a = NewAssembler(&probes.ReconcileShape, AssemblerOptions{
		// A reconcile names its trace; what follows it (its result's
		// branch) comes microseconds later, on its goroutine; its writes
		// once their own traces are done, a Settle after their requests
		// returned, or incomplete after a write's MaxWait (5 s).
		Settle: Settle, MaxWait: 6 * time.Second, Retain: reconcileRetain, MaxPending: 20000,
		Name: func(e *probes.Event) (string, int64) {
			return reconcileName(e), e.Start.UnixNano()
		},
		Complete: r.complete,
		Emit:     r.emitReconcile,
		Forget:   r.forget,
	})
	return r
}

// complete: the reconcile ended, and each write request it made has its
// write, when the agent sees the API server.
func (r *Reconciles) complete(t *Assembly) bool {
	if t.Event(probes.StageReconcile) == nil {
		return false
	}
	if r.opts.SeesAPIServer != nil && !r.opts.SeesAPIServer() {
		return true
	}
	return len(t.Events(probes.StageReconcileWrite)) >= len(t.Events(probes.StageReconcileCall))
}

func (r *Reconciles) forget(t *Assembly) {
	for _, e := range t.Events(probes.StageReconcileWrite) {
		delete(r.writes, e.Revision)
	}
}

// AddWrite takes a finished write: one an operator asked for in the last
// Retain may be one of a reconcile's; others are ignored.
func (r *Reconciles) AddWrite(w Write, now time.Time) {
	if w.Method == "" {
		return // the apiserver's own
	}
	ev := probes.Event{Component: probes.KubeAPIServer, Stage: probes.StageReconcileWrite, Probe: probes.StageReconcileWrite,
		Namespace: w.Object.Namespace, Name: w.Object.Name, Verb: w.Method, Revision: w.Revision, Start: w.Start, End: w.Committed,
		Method: w.Method, Path: w.Path, Subresource: w.Subresource}
	if w.Method == "POST" && w.Subresource == "" {
		ev.Name = "" // a create's request names no object
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.calls[callKey{ev.Namespace, ev.Name, ev.Verb}]; !ok || w.Start.Before(c.first) || w.Start.Sub(c.last) > reconcileRetain {
		return
	}
	r.writes[w.Revision] = w
	r.a.Add(ev, now)
}

// reconcileRetain is how long a receipt waits for its reconcile, and an
// object's last reconcile end is kept for the next one's wait.
const reconcileRetain = time.Minute

func reconcileName(e *probes.Event) string {
	return string(e.Component) + "\x00" + e.Controller + "\x00" + e.Namespace + "/" + e.Name
}

// Add takes one event of an operator.
func (r *Reconciles) Add(ev probes.Event, now time.Time) {
	if ev.InFlight {
		return
	}
	if ev.Stage == probes.StageReconcileCall {
		r.mu.Lock()
		k := callKey{ev.Namespace, ev.Name, ev.Verb}
		c, ok := r.calls[k]
		if !ok || ev.Start.Sub(c.last) > reconcileRetain {
			c.first = ev.Start
		}
		c.last = ev.Start
		r.calls[k] = c
		if len(r.calls) > 4096 {
			for k, c := range r.calls {
				if ev.Start.Sub(c.last) > reconcileRetain {
					delete(r.calls, k)
				}
			}
		}
		r.mu.Unlock()
	}
	r.locked.Add(ev, now)
}

func (r *Reconciles) emitReconcile(t *Assembly, _ bool) {
	ev := t.Event(probes.StageReconcile)
	if ev == nil {
		return
	}
	out := Reconcile{Component: string(ev.Component), Controller: ev.Controller, Namespace: ev.Namespace, Name: ev.Name,
		Result: ResultOK, Start: ev.Start, End: ev.End}
	switch {
	case t.Event(probes.StageReconcileError) != nil:
		out.Result = ResultError
	case t.Event(probes.StageRequeueAfter) != nil:
		out.Result = ResultRequeueAfter
	case t.Event(probes.StageRequeue) != nil:
		out.Result = ResultRequeue
	}
	shared := []Attribute{{AttrController, ev.Controller}, {AttrResult, out.Result}, {AttrNamespace, ev.Namespace}, {AttrObjectName, ev.Name}}
	key := reconcileName(ev)
	prev, requeued := r.ended[key]
	requeued = requeued && !prev.After(ev.Start) && ev.Start.Sub(prev) < reconcileRetain
	r.remember(key, ev.End)
	rcv := t.Event(probes.StageInformer)
	if rcv == nil {
		// No receipt: a trace of its own.
		if requeued {
			out.Queued = prev
		}
		out.Trace = t.Trace(reconcileTraceID(ev), SpanID{}, shared)
		out.Trace.Complete = true
		r.addWrites(t, &out.Trace)
		r.emit(out)
		return
	}
	out.Received, out.Revision, out.Queued = rcv.Start, rcv.Revision, rcv.Start
	waitFrom := "receipt"
	if requeued && prev.After(rcv.Start) {
		// A retry or a requeue of the object since the receipt: added back
		// as the previous reconcile ended, not waiting through it.
		out.Queued, waitFrom = prev, "previous-reconcile"
	}
	id, parent := WriteTraceID(rcv.Revision), WriteRootID(rcv.Revision)
	out.Trace = t.TraceUnder(id, parent, append(shared, Attribute{AttrRevision, rcv.Revision}))
	out.Trace.Complete = true
	r.addWrites(t, &out.Trace)
	if out.Queued.Before(ev.Start) {
		// The wait in the queue: beside the reconcile, under the write.
		q := *rcv
		q.Stage, q.Start = "queue-wait", out.Queued
		out.Trace.Spans = append(out.Trace.Spans, Span{TraceID: id, SpanID: spanID(id, &q, "queue wait"), Parent: parent,
			Name: "queue wait " + ev.Controller, Start: out.Queued, End: ev.Start,
			Attributes: append([]Attribute{{AttrComponent, box(string(ev.Component))}, {AttrStage, "queue-wait"}, {AttrProbe, box(rcv.Probe)},
				{AttrWaitFrom, waitFrom}}, shared...)})
	}
	r.emit(out)
}

// addWrites grafts the writes the reconcile made under its span, whole
// (request, storage write, etcd), and links the span to each write's own
// trace, where the write's watchers and what they did follow.
func (r *Reconciles) addWrites(t *Assembly, tr *Trace) {
	var rec *Span
	for i := range tr.Spans {
		if tr.Spans[i].Attr(AttrStage) == probes.StageReconcile {
			rec = &tr.Spans[i]
		}
	}
	if rec == nil {
		return
	}
	var grafted []Span
	for _, e := range t.Events(probes.StageReconcileWrite) {
		w, ok := r.writes[e.Revision]
		if !ok {
			continue
		}
		rec.Links = append(rec.Links, Link{TraceID: w.Trace.ID, SpanID: rootOf(w.Trace), Attributes: []Attribute{{AttrLink, LinkWriteMade}, {AttrRevision, w.Revision}}})
		grafted = append(grafted, regraft(w.Trace, tr.ID, rec.SpanID, nil)...)
	}
	tr.Spans = append(tr.Spans, grafted...)
}

func rootOf(t Trace) SpanID {
	for _, s := range t.Spans {
		if s.Parent == (SpanID{}) {
			return s.SpanID
		}
	}
	return SpanID{}
}

// LinkWriteMade is the AttrLink of a reconcile's link to the trace of a
// write it made.
const LinkWriteMade = "write-made"

// AttrWaitFrom says where a queue wait began: "receipt" (the operator's
// informer received the write) or "previous-reconcile" (the object's last
// reconcile ended, and the handler added it back: a retry or a requeue).
const AttrWaitFrom = "kpath.wait_from"

// remember keeps an object's last reconcile end, forgetting, once a
// Retain, those older than it.
func (r *Reconciles) remember(key string, end time.Time) {
	r.ended[key] = end
	if end.Sub(r.sweep) < reconcileRetain {
		return
	}
	r.sweep = end
	for k, e := range r.ended {
		if end.Sub(e) > reconcileRetain {
			delete(r.ended, k)
		}
	}
}

func reconcileTraceID(ev *probes.Event) TraceID {
	var buf [64]byte
	b := append(buf[:0], "kpath/reconcile\x00"...)
	b = binary.LittleEndian.AppendUint32(b, ev.PID)
	b = binary.LittleEndian.AppendUint64(b, ev.Goroutine)
	b = binary.LittleEndian.AppendUint64(b, uint64(ev.Start.UnixNano()))
	h := sha256.Sum256(b)
	var id TraceID
	copy(id[:], h[:])
	return id
}
