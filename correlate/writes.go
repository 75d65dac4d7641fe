package correlate

import (
	"crypto/sha256"
	"encoding/binary"
	"strconv"
	"time"

	"github.com/kpath/kpath/probes"
)

// Options bound how long and how much the correlator waits.
type Options struct {
	// Settle is how long a write waits after it is complete, for stragglers
	// from other CPUs' share of the ring buffer. Default Settle.
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
	// Alone, when set, takes the traces of events that belong to a write
	// whose agent is elsewhere: a webhook server's answer to a call this
	// agent does not see, in the trace its call's span links to.
	Alone func(Trace)
}

// Settle is how long a complete trace waits for stragglers by default:
// the events of one trace can be read in two looks at the ring buffer,
// probes.PollInterval apart, and a flush comes as often.
const Settle = 2 * probes.PollInterval

func (o *Options) defaults() {
	if o.Settle == 0 {
		o.Settle = Settle
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

// Stats counts what the correlator did. Events that joined no write are
// counted by row and reason in Unjoined.
type Stats struct {
	Traces     uint64
	Incomplete uint64
	Evicted    uint64
}

// Writes joins the events of one object write, across kube-apiserver and
// etcd, into one trace: request → admission webhooks → storage write →
// etcd request → raft proposal, WAL fsync, apply. A write is named by its
// etcd key and the revision it created, which every stage can see; how
// the rest is found is the catalogue's (probes.WriteShape), and the spans
// are built by the generic Assembler.
type Writes struct {
	locked
	emit func(Write)
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
	w := &Writes{emit: emit}
	w.a = NewAssembler(&probes.WriteShape, AssemblerOptions{
		Settle: opts.Settle, Grace: opts.ApiserverGrace, MaxWait: opts.MaxWait, Retain: opts.Retain, MaxPending: opts.MaxPending,
		Name: func(e *probes.Event) (string, int64) { return e.Key, e.Revision },
		Emit: w.emitWrite,
		Alone: func(ev *probes.Event, j *probes.Join) {
			if opts.Alone != nil && ev.UID != "" {
				opts.Alone(answerTrace(ev, j))
			}
		},
	})
	return w
}

// WebhookTraceID and WebhookServerSpanID name the trace and the span of a
// webhook server's answer that its agent could not put in its write's
// trace: derived from the review's UID, which both the apiserver's call
// and the server's answer carry, so the agent that sees the call links to
// it without asking the one that saw the answer.
func WebhookTraceID(uid string) TraceID { return derivedTraceID("webhook", uid) }

// WebhookServerSpanID: see WebhookTraceID.
func WebhookServerSpanID(uid string) SpanID { return derivedSpanID("webhook-server", uid) }

// answerTrace is a webhook server's answer as a trace of its own.
func answerTrace(ev *probes.Event, j *probes.Join) Trace {
	id := WebhookTraceID(ev.UID)
	attrs := appendFieldAttrs([]Attribute{{AttrComponent, box(string(ev.Component))}, {AttrStage, box(ev.Stage)}, {AttrProbe, box(ev.Probe)},
		{probes.AttrKeys[probes.FieldUID], ev.UID}}, ev, j.Attrs)
	return Trace{ID: id, Complete: true, Spans: []Span{{TraceID: id, SpanID: WebhookServerSpanID(ev.UID), Name: spanName(ev, j),
		Start: ev.Start, End: ev.End, Attributes: attrs}}}
}

// linkAnswersElsewhere links each webhook call of tr that no answer in tr
// hangs under to where its server's agent puts the answer (answerTrace):
// the server runs on a node whose agent does not see the call.
func linkAnswersElsewhere(tr *Trace) {
	answered := map[SpanID]bool{}
	for i := range tr.Spans {
		if tr.Spans[i].Attr(AttrStage) == probes.StageWebhookServer {
			answered[tr.Spans[i].Parent] = true
		}
	}
	for i := range tr.Spans {
		s := &tr.Spans[i]
		uid, _ := s.Attr(probes.AttrKeys[probes.FieldUID]).(string)
		if s.Attr(AttrStage) != probes.StageAdmission || uid == "" || answered[s.SpanID] {
			continue
		}
		s.Links = append(s.Links, Link{TraceID: WebhookTraceID(uid), SpanID: WebhookServerSpanID(uid),
			Attributes: []Attribute{{AttrLink, LinkWebhookServer}}})
	}
}

// LinkWebhookServer is the AttrLink of a webhook call's link to its
// server's answer in a trace of its own.
const LinkWebhookServer = "webhook-server"

// Stats returns a copy of the counters.
func (w *Writes) Stats() Stats {
	s := w.stats()
	return Stats{Traces: s.Traces, Incomplete: s.Incomplete, Evicted: s.Evicted}
}

func (w *Writes) emitWrite(t *Assembly, complete bool) {
	key, rev := t.Key()
	obj := ParseKey(key)
	id := WriteTraceID(rev)
	// What every span of the write says, built once: the agent does this
	// for every write of the cluster.
	var sh [5]Attribute // copied into each span's attributes: not kept
	shared := obj.AppendAttributes(append(sh[:0], Attribute{AttrKey, key}, Attribute{AttrRevision, rev}))
	tr := t.Trace(id, WriteRootID(rev), shared)
	tr.Complete = complete
	if t.Event(probes.StageAdmission) != nil {
		linkAnswersElsewhere(&tr)
	}
	if m := t.missing(); !complete && m != "" && len(tr.Spans) > 0 {
		tr.Spans[0].Attributes = append(tr.Spans[0].Attributes, Attribute{AttrMissing, m})
	}
	out := Write{Key: key, Revision: rev, Object: obj, Trace: tr}
	req, sw, etcd, apply := t.Event(probes.StageRequest), t.Event(probes.StageStorageWrite), t.Event(probes.StageEtcdRequest), t.Event(probes.StageApply)
	switch {
	case req != nil && !req.InFlight:
		out.Method, out.Path, out.Subresource, out.Start = req.Method, req.Path, req.Subresource, req.Start
	case sw != nil:
		out.Start = sw.Start
	case etcd != nil:
		out.Start = etcd.Start
	case apply != nil:
		out.Start = apply.Start
	}
	if apply != nil {
		out.Committed = apply.Start
	}
	if sw != nil {
		out.StorageWrite = sw.Start
	}
	if etcd != nil {
		out.EtcdRequest = etcd.Start
	}
	w.emit(out)
}

// WriteTraceID names the trace of the write that made revision rev. The
// revision alone names it: the apiserver writes one key a txn, and every
// revision is one txn. So agents on different nodes, and any component that
// saw the object at that revision (an operator's informer), derive the same
// ID without talking and without knowing the etcd key.
func WriteTraceID(rev int64) TraceID {
	var id TraceID
	h := revisionHash("kpath/write\x00", rev)
	copy(id[:], h[:])
	return id
}

// WriteRootID is the ID of the root span of the write that made revision
// rev: derived, so that what follows the write elsewhere (a reconcile of
// the object) hangs under it.
func WriteRootID(rev int64) SpanID {
	var id SpanID
	h := revisionHash("kpath/write-root\x00", rev)
	copy(id[:], h[:])
	return id
}

// revisionHash is sha256(prefix, rev in decimal), built without allocating.
func revisionHash(prefix string, rev int64) [32]byte {
	var buf [48]byte
	b := append(buf[:0], prefix...)
	return sha256.Sum256(strconv.AppendInt(b, rev, 10))
}

// spanID names a span by its trace and the event it came from. Only the
// agent that saw the event makes it, so it need not be a cryptographic
// hash every agent agrees on (as the trace IDs are): FNV-1a, a fifth of
// sha256's cost on every span of every write.
func spanID(t TraceID, e *probes.Event, extra string) SpanID {
	var buf [192]byte
	b := append(buf[:0], t[:]...)
	b = binary.LittleEndian.AppendUint32(b, e.PID)
	b = binary.LittleEndian.AppendUint64(b, e.Goroutine)
	b = binary.LittleEndian.AppendUint64(b, uint64(e.Start.UnixNano()))
	b = binary.LittleEndian.AppendUint64(b, uint64(e.End.UnixNano()))
	b = append(b, e.Probe...)
	b = append(b, extra...)
	const offset64, prime64 = 14695981039346656037, 1099511628211
	h := uint64(offset64)
	for _, c := range b {
		h ^= uint64(c)
		h *= prime64
	}
	var id SpanID
	binary.BigEndian.PutUint64(id[:], h)
	if id == (SpanID{}) {
		id[7] = 1 // all-zero is no span in OTLP
	}
	return id
}
