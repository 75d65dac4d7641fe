package correlate

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kpath/kpath/probes"
)

// Options bound how long and how much the correlator waits.
type Options struct {
	// Settle is how long a write waits after it is complete, for stragglers
	// from other CPUs' share of the ring buffer. Default 50 ms.
	Settle time.Duration
	// MaxWait is how long a write waits for its missing pieces before it is
	// emitted incomplete. Default 5 s.
	MaxWait time.Duration
	// ApiserverGrace is how long a txn seen only in etcd waits for the
	// apiserver's side of it. Default 2 s.
	ApiserverGrace time.Duration
	// Retain is how long a piece that matched nothing yet is kept (a
	// webhook of a request whose write has not happened). Default 30 s.
	Retain time.Duration
	// MaxPending caps the writes waiting to complete; past it the oldest
	// is emitted as it is and counted as evicted. Default 50000.
	MaxPending int
}

func (o *Options) defaults() {
	if o.Settle == 0 {
		o.Settle = 50 * time.Millisecond
	}
	if o.MaxWait == 0 {
		o.MaxWait = 5 * time.Second
	}
	if o.ApiserverGrace == 0 {
		o.ApiserverGrace = 2 * time.Second
	}
	if o.Retain == 0 {
		o.Retain = 30 * time.Second
	}
	if o.MaxPending == 0 {
		o.MaxPending = 50000
	}
}

// Stats counts what the correlator did; Dropped pieces never made it into a trace.
type Stats struct {
	Traces     uint64
	Incomplete uint64
	Evicted    uint64
	Dropped    map[string]uint64 // by reason
}

// Writes joins the events of one object write, across kube-apiserver and
// etcd, into one trace: request → admission webhooks → storage write →
// etcd request → raft proposal, WAL fsync, apply. A write is named by its
// etcd key and the revision it created, which every stage can see.
type Writes struct {
	opts Options
	emit func(Write)

	mu      sync.Mutex
	writes  map[writeKey]*write
	order   []*write // by creation, for eviction and timeouts
	byAPIG  map[gkey][]*write
	reqs    map[gkey]*pendingReq // apiserver requests by the goroutine running them
	hooks   []piece              // webhooks not yet matched to a write
	storage map[gkey][]piece     // detail storage spans by goroutine
	// proposals by raft request ID: the apply's Trigger ends the etcd
	// request that registered the same ID.
	proposals map[raftKey]piece
	fsyncs    map[uint32][]piece // WAL fsyncs by etcd pid, by start
	applies   map[gkey][]piece   // applied keys waiting for their entry's Trigger
	stats     Stats
}

type writeKey struct {
	key string
	rev int64
}

type gkey struct {
	pid uint32
	g   uint64
}

type raftKey struct {
	pid uint32
	id  uint64
}

type piece struct {
	ev   probes.Event
	seen time.Time
}

type pendingReq struct {
	key    gkey          // its entry in Writes.reqs
	start  *probes.Event // the announced entry
	done   *probes.Event // the span, once it returned
	seen   time.Time
	writes []*write
}

type write struct {
	writeKey
	created, changed time.Time
	emitted          bool

	req          *pendingReq
	hooks        []probes.Event
	storage      *probes.Event
	storageWrite *probes.Event
	etcd         *probes.Event
	propose      *probes.Event
	fsync        *probes.Event
	apply        *applied
}

type applied struct {
	ev         probes.Event // the put or delete
	start, end time.Time
	raftID     uint64
}

// Write is one finished write: its trace, and the moments that what follows
// the write (watchers, the pod's story) is measured from.
type Write struct {
	Key      string
	Revision int64
	Object   Object
	Method   string // of the request that made it; "" for the apiserver's own writes
	Path     string
	// Subresource is the request's, as the apiserver routed it (binding,
	// status, eviction; "" for the object itself).
	Subresource string
	// Start is when the request (or, without one, the storage write) began.
	Start time.Time
	// Committed is when etcd applied the key: its watchers are notified as
	// that txn ends, before the result goes back to the request.
	Committed time.Time
	// StorageWrite and EtcdRequest are when the apiserver issued the txn
	// and when etcd's part of it began (zero when not seen): the pod's
	// partition starts its etcd-wait and etcd-commit stages there.
	StorageWrite, EtcdRequest time.Time
	Trace                     Trace
}

// NewWrites returns a correlator that calls emit with each finished write.
// emit runs with the correlator's lock held: it must not call back.
func NewWrites(opts Options, emit func(Write)) *Writes {
	opts.defaults()
	return &Writes{
		opts:      opts,
		emit:      emit,
		writes:    map[writeKey]*write{},
		byAPIG:    map[gkey][]*write{},
		reqs:      map[gkey]*pendingReq{},
		storage:   map[gkey][]piece{},
		proposals: map[raftKey]piece{},
		fsyncs:    map[uint32][]piece{},
		applies:   map[gkey][]piece{},
		stats:     Stats{Dropped: map[string]uint64{}},
	}
}

// Stats returns a copy of the counters.
func (w *Writes) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stats
	s.Dropped = map[string]uint64{}
	for k, v := range w.stats.Dropped {
		s.Dropped[k] = v
	}
	return s
}

// Add takes one event. now is the time it was read (tests pass their own).
func (w *Writes) Add(ev probes.Event, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch ev.Stage {
	case probes.StageRequest:
		w.addRequest(ev, now)
	case probes.StageAdmission:
		w.hooks = append(w.hooks, piece{ev, now})
	case probes.StageStorage:
		k := gkey{ev.PID, ev.Goroutine}
		w.storage[k] = append(w.storage[k], piece{ev, now})
		for _, wr := range w.byAPIG[k] {
			if wr.storage == nil && inside(wr.storageWrite, &ev) {
				e := ev
				wr.storage, wr.changed = &e, now
			}
		}
	case probes.StageStorageWrite:
		w.addStorageWrite(ev, now)
	case probes.StageEtcdRequest:
		w.addEtcdRequest(ev, now)
	case probes.StagePropose:
		w.proposals[raftKey{ev.PID, ev.RaftID}] = piece{ev, now}
	case probes.StageWALFsync:
		fs := append(w.fsyncs[ev.PID], piece{ev, now})
		// Kept in start order for matchFsync's search; they come in order
		// but for the rare sync from another goroutine.
		for i := len(fs) - 1; i > 0 && fs[i].ev.Start.Before(fs[i-1].ev.Start); i-- {
			fs[i], fs[i-1] = fs[i-1], fs[i]
		}
		w.fsyncs[ev.PID] = fs
	case probes.StageApply:
		w.addApply(ev, now)
	case probes.StageApplied:
		w.closeApply(gkey{ev.PID, ev.Goroutine}, ev.Start, ev.RaftID, now)
	}
}

// inside says whether inner ran within outer.
func inside(inner, outer *probes.Event) bool {
	return !inner.Start.Before(outer.Start) && !inner.End.After(outer.End)
}

func (w *Writes) addRequest(ev probes.Event, now time.Time) {
	k := gkey{ev.PID, ev.Goroutine}
	r := w.reqs[k]
	if ev.InFlight {
		// A new request on a goroutine that had one: the old one is over
		// (goroutines are per request, so this is a lost RET).
		if r != nil && r.done == nil && len(r.writes) == 0 {
			w.stats.Dropped["request_without_end"]++
		}
		e := ev
		w.reqs[k] = &pendingReq{key: k, start: &e, seen: now}
		return
	}
	if r == nil || r.done != nil {
		// Its entry was not announced (the agent attached mid-request).
		r = &pendingReq{key: k, seen: now}
		w.reqs[k] = r
	}
	e := ev
	r.done = &e
	for _, wr := range r.writes {
		wr.changed = now
	}
	if len(r.writes) == 0 {
		// Reads never reach a write row; a write request that made no write
		// (rejected, invalid, a no-op update) ends here.
		delete(w.reqs, k)
		w.stats.Dropped["request_without_write"]++
	}
}

func (w *Writes) writeFor(k writeKey, now time.Time) *write {
	if wr, ok := w.writes[k]; ok {
		return wr
	}
	if len(w.writes) >= w.opts.MaxPending {
		w.evictOldest(now)
	}
	wr := &write{writeKey: k, created: now, changed: now}
	w.writes[k] = wr
	w.order = append(w.order, wr)
	return wr
}

func (w *Writes) addStorageWrite(ev probes.Event, now time.Time) {
	if !ev.Succeeded || ev.Key == "" {
		// A failed compare (a conflict the apiserver retries) wrote nothing.
		w.stats.Dropped["storage_write_conflict"]++
		return
	}
	wr := w.writeFor(writeKey{ev.Key, ev.Revision}, now)
	e := ev
	wr.storageWrite, wr.changed = &e, now
	g := gkey{ev.PID, ev.Goroutine}
	w.byAPIG[g] = append(w.byAPIG[g], wr)

	// The handler runs on the parent of the goroutine that writes.
	if r, ok := w.reqs[gkey{ev.PID, ev.ParentGoroutine}]; ok && r.done == nil {
		wr.req = r
		r.writes = append(r.writes, wr)
	}
	// Mutating webhooks ran on this goroutine; validating ones each on a
	// child of it.
	keep := w.hooks[:0]
	for _, h := range w.hooks {
		if h.ev.PID == ev.PID && (h.ev.Goroutine == ev.Goroutine || h.ev.ParentGoroutine == ev.Goroutine) && !h.ev.End.After(ev.Start) {
			wr.hooks = append(wr.hooks, h.ev)
			continue
		}
		keep = append(keep, h)
	}
	w.hooks = keep
	for _, s := range w.storage[g] {
		if inside(&ev, &s.ev) {
			e := s.ev
			wr.storage = &e
		}
	}
}

// addEtcdRequest takes the gRPC Txn/Put span of the detail rows: it carries
// the key and revision the write got.
func (w *Writes) addEtcdRequest(ev probes.Event, now time.Time) {
	if !ev.Succeeded || ev.Key == "" {
		w.stats.Dropped["etcd_request_without_write"]++
		return
	}
	wr := w.writeFor(writeKey{ev.Key, ev.Revision}, now)
	e := ev
	wr.etcd, wr.changed = &e, now // the gRPC call itself beats the span derived from its proposal
	// etcd answers after the apply's Trigger, and both records share one
	// ring buffer in order: an apply still open now had no Trigger (its
	// probe lost), so it ends where its last put was.
	if wr.apply == nil {
		for k, open := range w.applies {
			if slices.ContainsFunc(open, func(p piece) bool { return p.ev.Key == ev.Key && p.ev.Revision == ev.Revision }) {
				w.closeApply(k, open[len(open)-1].ev.End, 0, now)
				break
			}
		}
	}
	w.matchFsync(wr)
}

// matchFsync picks the WAL fsync that made the proposal durable: the first
// one to start after the proposal (or, without the detail row that sees
// it, the request) that ended before the apply.
func (w *Writes) matchFsync(wr *write) {
	if wr.fsync != nil || wr.apply == nil || wr.etcd == nil {
		return
	}
	after := wr.etcd.Start
	if wr.propose != nil {
		after = wr.propose.Start
	}
	// Search, don't scan: there are hundreds of fsyncs a second.
	fs := w.fsyncs[wr.etcd.PID]
	i := sort.Search(len(fs), func(i int) bool { return !fs[i].ev.Start.Before(after) })
	for ; i < len(fs) && !fs[i].ev.Start.After(wr.apply.start); i++ {
		if !fs[i].ev.End.After(wr.apply.start) {
			e := fs[i].ev
			wr.fsync = &e
			return
		}
	}
}

func (w *Writes) addApply(ev probes.Event, now time.Time) {
	k := gkey{ev.PID, ev.Goroutine}
	open := w.applies[k]
	// An entry applies at one revision: a put at another revision means the
	// previous entry ended without a Trigger (it was proposed elsewhere).
	if len(open) > 0 && open[0].ev.Revision != ev.Revision {
		w.closeApply(k, open[len(open)-1].ev.End, 0, now)
	}
	w.applies[k] = append(w.applies[k], piece{ev, now})
}

func (w *Writes) closeApply(k gkey, end time.Time, raftID uint64, now time.Time) {
	// A Trigger ends its proposal whether or not the entry wrote a key (a
	// failed compare, a lease grant, a proposal that timed out).
	prop, proposed := w.proposals[raftKey{k.pid, raftID}]
	if raftID != 0 {
		delete(w.proposals, raftKey{k.pid, raftID})
	}
	open := w.applies[k]
	delete(w.applies, k)
	if len(open) == 0 {
		return
	}
	start := open[0].ev.Start
	if end.Before(start) {
		// Not this entry's Trigger: the order on the apply goroutine broke.
		w.stats.Dropped["apply_trigger_mismatch"]++
		end, raftID, proposed = open[len(open)-1].ev.End, 0, false
	}
	for _, p := range open {
		wr := w.writeFor(writeKey{p.ev.Key, p.ev.Revision}, now)
		wr.apply = &applied{ev: p.ev, start: start, end: end, raftID: raftID}
		wr.changed = now
		if proposed {
			// etcd's part of the write: from the proposal its request
			// registered to the Trigger that hands the result back, joined
			// exactly by the raft request ID. (With the detail txn rows, the
			// gRPC call's own span replaces it.)
			pe := prop.ev
			wr.propose = &pe
			if wr.etcd == nil {
				wr.etcd = &probes.Event{Component: pe.Component, Stage: probes.StageEtcdRequest, Probe: pe.Probe, PID: pe.PID,
					Goroutine: pe.Goroutine, Start: pe.Start, End: end, Key: p.ev.Key, Revision: p.ev.Revision,
					Succeeded: true, SucceededSet: true}
			}
		}
		w.matchFsync(wr)
	}
}

func (wr *write) complete() bool {
	if wr.etcd == nil || wr.apply == nil {
		return false
	}
	if wr.storageWrite != nil && wr.req != nil && wr.req.done == nil {
		return false // the request it was made in has not returned
	}
	return true
}

// Flush emits the writes that are complete and settled, and those that
// waited MaxWait, and forgets pieces older than Retain. Call it often
// (every 50–100 ms).
func (w *Writes) Flush(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, wr := range w.order {
		if wr.emitted {
			continue
		}
		switch {
		case wr.complete() && now.Sub(wr.changed) >= w.settle(wr):
			w.emitWrite(wr, true)
		case now.Sub(wr.created) >= w.opts.MaxWait:
			w.emitWrite(wr, false)
		}
	}
	w.order = slices.DeleteFunc(w.order, func(wr *write) bool { return wr.emitted })
	w.prune(now)
}

// settle is how long a complete write waits. A txn seen only in etcd so
// far is most likely the apiserver's, whose side is reported when its
// OptimisticPut returns: under load that can trail etcd's answer by a
// hundred milliseconds or more, so such a write waits ApiserverGrace.
func (w *Writes) settle(wr *write) time.Duration {
	if wr.storageWrite == nil && wr.etcd != nil {
		return max(w.opts.Settle, w.opts.ApiserverGrace)
	}
	return w.opts.Settle
}

func (w *Writes) evictOldest(now time.Time) {
	for _, wr := range w.order {
		if !wr.emitted {
			w.stats.Evicted++
			w.emitWrite(wr, false)
			return
		}
	}
}

func (w *Writes) prune(now time.Time) {
	old := func(p piece) bool { return now.Sub(p.seen) > w.opts.Retain }
	n := len(w.hooks)
	w.hooks = slices.DeleteFunc(w.hooks, old)
	w.stats.Dropped["webhook_without_write"] += uint64(n - len(w.hooks))
	for k, p := range w.proposals {
		// Never triggered: a proposal dropped by raft (a leader change) or a
		// Trigger the ring buffer lost.
		if old(p) {
			delete(w.proposals, k)
			w.stats.Dropped["etcd_proposal_untriggered"]++
		}
	}
	for _, m := range []map[gkey][]piece{w.storage} {
		for k, ps := range m {
			if ps = slices.DeleteFunc(ps, old); len(ps) == 0 {
				delete(m, k)
			} else {
				m[k] = ps
			}
		}
	}
	// A write waits at most MaxWait, so older fsyncs can match nothing.
	oldFsync := func(p piece) bool { return now.Sub(p.seen) > w.opts.MaxWait+time.Second }
	for pid, ps := range w.fsyncs {
		if ps = slices.DeleteFunc(ps, oldFsync); len(ps) == 0 {
			delete(w.fsyncs, pid)
		} else {
			w.fsyncs[pid] = ps
		}
	}
	for k, ps := range w.applies {
		// Never triggered: close it as it stands.
		if old(ps[len(ps)-1]) {
			w.closeApply(k, ps[len(ps)-1].ev.End, 0, now)
		}
	}
	for k, r := range w.reqs {
		if now.Sub(r.seen) > w.opts.Retain && (r.done != nil || len(r.writes) == 0) {
			delete(w.reqs, k)
		}
	}
	for k, ws := range w.byAPIG {
		if ws = slices.DeleteFunc(ws, func(wr *write) bool { return wr.emitted }); len(ws) == 0 {
			delete(w.byAPIG, k)
		} else {
			w.byAPIG[k] = ws
		}
	}
}

func (w *Writes) emitWrite(wr *write, complete bool) {
	wr.emitted = true
	delete(w.writes, wr.writeKey)
	if wr.req != nil {
		wr.req.writes = slices.DeleteFunc(wr.req.writes, func(x *write) bool { return x == wr })
		if len(wr.req.writes) == 0 && wr.req.done != nil && w.reqs[wr.req.key] == wr.req {
			delete(w.reqs, wr.req.key)
		}
	}
	t := wr.trace()
	t.Complete = complete
	w.stats.Traces++
	if !complete {
		w.stats.Incomplete++
		var missing []string
		for _, m := range []struct {
			lost bool
			what string
		}{
			{wr.req != nil && wr.req.done == nil, "request-end"},
			{wr.etcd == nil, "etcd-request"},
			{wr.apply == nil, "apply"},
		} {
			if m.lost {
				missing = append(missing, m.what)
			}
		}
		if len(t.Spans) > 0 && len(missing) > 0 {
			t.Spans[0].Attributes = append(t.Spans[0].Attributes, Attribute{AttrMissing, strings.Join(missing, ",")})
		}
	}
	out := Write{Key: wr.key, Revision: wr.rev, Object: ParseKey(wr.key), Trace: t}
	switch {
	case wr.req != nil && wr.req.done != nil:
		r := wr.req.done
		out.Method, out.Path, out.Subresource, out.Start = r.Method, r.Path, r.Subresource, r.Start
	case wr.storageWrite != nil:
		out.Start = wr.storageWrite.Start
	case wr.etcd != nil:
		out.Start = wr.etcd.Start
	case wr.apply != nil:
		out.Start = wr.apply.start
	}
	if wr.apply != nil {
		out.Committed = wr.apply.ev.Start
	}
	if wr.storageWrite != nil {
		out.StorageWrite = wr.storageWrite.Start
	}
	if wr.etcd != nil {
		out.EtcdRequest = wr.etcd.Start
	}
	w.emit(out)
}

// WriteTraceID names the trace of the write that gave key revision rev.
// Agents on different nodes derive the same ID without talking.
func WriteTraceID(key string, rev int64) TraceID {
	// sha256("kpath/write\x00" key "\x00" rev), built without allocating
	// for keys of usual length.
	var buf [256]byte
	b := append(buf[:0], "kpath/write\x00"...)
	b = append(b, key...)
	b = append(b, 0)
	b = strconv.AppendInt(b, rev, 10)
	h := sha256.Sum256(b)
	var id TraceID
	copy(id[:], h[:])
	return id
}

func spanID(t TraceID, e *probes.Event, extra string) SpanID {
	var buf [192]byte
	b := append(buf[:0], t[:]...)
	b = binary.LittleEndian.AppendUint32(b, e.PID)
	b = binary.LittleEndian.AppendUint64(b, e.Goroutine)
	b = binary.LittleEndian.AppendUint64(b, uint64(e.Start.UnixNano()))
	b = binary.LittleEndian.AppendUint64(b, uint64(e.End.UnixNano()))
	b = append(b, e.Probe...)
	b = append(b, extra...)
	h := sha256.Sum256(b)
	var id SpanID
	copy(id[:], h[:])
	return id
}

func (wr *write) trace() Trace {
	id := WriteTraceID(wr.key, wr.rev)
	// What every span of the write says, built once: the agent does this
	// for every write of the cluster.
	shared := append([]Attribute{{AttrKey, wr.key}, {AttrRevision, wr.rev}}, ParseKey(wr.key).Attributes()...)
	spans := 6 + len(wr.hooks)
	t := Trace{ID: id, Spans: make([]Span, 0, spans)}
	// Every span's attributes in one array: each span takes its part of it.
	pool := make([]Attribute, 0, spans*(3+len(shared)+3))
	add := func(e *probes.Event, parent SpanID, name string, start, end time.Time, extra ...Attribute) SpanID {
		s := Span{TraceID: id, SpanID: spanID(id, e, name), Parent: parent, Name: name, Start: start, End: end}
		from := len(pool)
		pool = append(pool,
			Attribute{AttrComponent, box(string(e.Component))},
			Attribute{AttrStage, box(e.Stage)},
			Attribute{AttrProbe, box(e.Probe)},
		)
		pool = append(pool, shared...)
		pool = append(pool, extra...)
		s.Attributes = pool[from:len(pool):len(pool)]
		t.Spans = append(t.Spans, s)
		return s.SpanID
	}

	var root SpanID
	if wr.req != nil && wr.req.done != nil {
		r := wr.req.done
		attrs := []Attribute{{"http.request.method", r.Method}, {"url.path", r.Path}}
		if r.Code != 0 {
			attrs = append(attrs, Attribute{"http.response.status_code", int64(r.Code)})
		}
		root = add(r, SpanID{}, r.Method+" "+r.Path, r.Start, r.End, attrs...)
		if r.Opened.After(r.Start) {
			// From the request's receipt to its handler: authentication,
			// audit, priority and fairness queueing, authorization.
			f := *r
			f.Stage = probes.StageFilters
			add(&f, root, "filters", r.Start, r.Opened)
		}
	}
	for i := range wr.hooks {
		h := &wr.hooks[i]
		add(h, root, "admission webhook "+h.Webhook, h.Start, h.End, Attribute{AttrWebhook, h.Webhook})
	}
	writeParent := root
	if wr.storage != nil {
		writeParent = add(wr.storage, root, "storage "+shortProbe(wr.storage.Probe), wr.storage.Start, wr.storage.End)
	}
	etcdParent := writeParent
	if sw := wr.storageWrite; sw != nil {
		etcdParent = add(sw, writeParent, "etcd txn "+shortProbe(sw.Probe), sw.Start, sw.End, Attribute{AttrSucceeded, sw.Succeeded})
	}
	applyParent := etcdParent
	// Without the detail txn rows, etcd's span is the one closeApply made
	// from the proposal: the proposal is its start, not a span of its own.
	derived := wr.etcd != nil && wr.propose != nil && wr.etcd.Probe == wr.propose.Probe
	if e := wr.etcd; e != nil {
		name := "etcd " + shortProbe(e.Probe)
		if i := strings.LastIndexByte(e.Method, '/'); i >= 0 {
			name = "etcd " + e.Method[i+1:] // the gRPC method: "etcd Txn"
		}
		if derived {
			name = "etcd proposal → applied"
		}
		applyParent = add(e, etcdParent, name, e.Start, e.End)
	}
	if p := wr.propose; p != nil && !derived {
		add(p, applyParent, "raft propose", p.Start, p.End, Attribute{AttrRaftID, int64(p.RaftID)})
	}
	if f := wr.fsync; f != nil {
		add(f, applyParent, "wal fsync", f.Start, f.End)
	}
	if a := wr.apply; a != nil {
		extra := []Attribute{}
		if a.raftID != 0 {
			extra = append(extra, Attribute{AttrRaftID, int64(a.raftID)})
		}
		add(&a.ev, applyParent, "apply "+shortProbe(a.ev.Probe), a.start, a.end, extra...)
	}
	return t
}

// shortProbe is the last dot-separated part of a row ID ("put" of "etcd.apply.put").
func shortProbe(id string) string {
	for i := len(id) - 1; i >= 0; i-- {
		if id[i] == '.' {
			return id[i+1:]
		}
	}
	return id
}
