package correlate

import (
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kpath/kpath/probes"
)

// Sync is one finished sync of a kube-controller-manager controller.
type Sync struct {
	Component  string
	Controller string // replicaset, deployment, ...
	Namespace  string
	Name       string
	// Owner is the object's first owner as the sync read it (a
	// ReplicaSet's Deployment); Revision its resourceVersion then: the
	// write the sync acted on, whose trace holds the sync's span. Zero
	// when the sync read no object (it was deleted; the controller still
	// waited for its earlier creates to be seen).
	Owner      string
	Revision   int64
	Start, End time.Time
	Trace      Trace
	Span       SpanID // the sync's span in Trace
}

// Attribute keys of sync spans and of what they created.
const (
	// AttrCreator names, on the root of a pod's trace, the controller
	// whose sync created the pod: "kube-controller-manager/replicaset".
	AttrCreator = "kpath.creator"
	// AttrAfterOwnerWrite is how long after its owner's write (the one
	// the creating sync acted on) etcd applied, in milliseconds, the
	// object's create began.
	AttrAfterOwnerWrite = "kpath.creator.after_owner_write_ms"
)

// Values of AttrLink on the links of a created object's trace.
const (
	LinkCreator         = "creator"           // the sync that created it
	LinkOwnerWrite      = "owner-write"       // the owner's write that sync acted on
	LinkOwnerCreator    = "owner-creator"     // the sync of the owner's owner that made that write
	LinkOwnerOwnerWrite = "owner-owner-write" // the write of the owner's owner that sync acted on
)

// Syncs joins each sync of a kube-controller-manager controller with the
// object it read (probes.SyncShape): the sync goes into the trace of the
// write it acted on, under that write's root. It keeps the recent syncs
// and their owners' writes to say which sync created an object (Creator).
type Syncs struct {
	locked
	emit func(Sync)

	mu      sync.Mutex
	retain  time.Duration
	syncs   map[syncKey][]syncRec // per object, oldest first
	nsyncs  int
	writes  map[int64]ownerWrite
	revs    []int64 // writes in arrival order, to forget the oldest
	creator map[string]uint64
}

type syncKey struct{ controller, namespace, name string }

// syncRec is what Creator needs of a sync: a pod's trace asks for it when
// the pod runs, after every sync its status changes caused.
type syncRec struct {
	component, controller, owner string
	revision                     int64
	start, end                   time.Time
	trace                        TraceID
	span                         SpanID
}

// ownerWrite is a write of an object that owns others (a ReplicaSet, a
// Deployment), as the apiserver's agent saw it.
type ownerWrite struct {
	start, committed time.Time
}

const (
	// A ReplicaSet syncs on every change of each of its pods: a rollout of
	// 100 replicas is some 400 syncs before its last pod runs.
	syncsPerObject = 2048
	maxSyncs       = 200_000 // 128 bytes each: about 25 MB
	maxOwnerWrites = 100_000
)

// NewSyncs returns a correlator calling emit with each sync; emit runs with
// its lock held. Syncs and owner writes are kept retain for Creator.
func NewSyncs(retain time.Duration, emit func(Sync)) *Syncs {
	s := &Syncs{emit: emit, retain: retain, syncs: map[syncKey][]syncRec{}, writes: map[int64]ownerWrite{}, creator: map[string]uint64{}}
	s.a = NewAssembler(&probes.SyncShape, AssemblerOptions{
		// The object comes microseconds after the sync's start, on its
		// goroutine; the span itself is whole when it comes.
		Settle: Settle, MaxWait: time.Second, Retain: time.Minute, MaxPending: 20000,
		Name: func(e *probes.Event) (string, int64) {
			return string(e.Component) + "\x00" + e.Controller + "\x00" + e.Key, e.Start.UnixNano()
		},
		Emit: s.emitSync,
	})
	return s
}

// Add takes one event of a controller.
func (s *Syncs) Add(ev probes.Event, now time.Time) {
	if ev.InFlight {
		return
	}
	if ev.Controller == "" && ev.Row != nil {
		ev.Controller = ev.Row.Controller
	}
	// The replica set controller's kind: ReplicaSet, or ReplicationController
	// for the replication manager that runs the same code.
	ev.Controller = strings.ToLower(ev.Controller)
	s.locked.Add(ev, now)
}

// AddWrite notes a write of an owner kind (ReplicaSets, Deployments), for
// Creator: the time from it to what its controller created.
func (s *Syncs) AddWrite(w Write) {
	owner := false
	for _, c := range probes.Controllers {
		owner = owner || strings.HasPrefix(w.Key, c.Prefix)
	}
	if !owner {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.writes[w.Revision]; !ok {
		s.revs = append(s.revs, w.Revision)
	}
	s.writes[w.Revision] = ownerWrite{start: w.Start, committed: w.Committed}
	if len(s.revs) > maxOwnerWrites {
		for _, r := range s.revs[:len(s.revs)-maxOwnerWrites] {
			delete(s.writes, r)
		}
		s.revs = append(s.revs[:0], s.revs[len(s.revs)-maxOwnerWrites:]...)
	}
}

func (s *Syncs) emitSync(t *Assembly, _ bool) {
	ev := t.Event(probes.StageControllerSync)
	if ev == nil {
		return
	}
	// The workqueue's key: "namespace/name", or "name" for a cluster-scoped object.
	ns, name, namespaced := strings.Cut(ev.Key, "/")
	if !namespaced {
		ns, name = "", ev.Key
	}
	out := Sync{Component: string(ev.Component), Controller: ev.Controller, Namespace: ns, Name: name, Start: ev.Start, End: ev.End}
	shared := []Attribute{{AttrController, ev.Controller}, {AttrNamespace, ns}, {AttrObjectName, name}}
	if obj := t.Event(probes.StageSyncObject); obj != nil && obj.Revision != 0 {
		out.Owner, out.Revision = obj.Owner, obj.Revision
		out.Trace = t.TraceUnder(WriteTraceID(obj.Revision), WriteRootID(obj.Revision), append(shared, Attribute{AttrRevision, obj.Revision}))
	} else {
		// Nothing read: a trace of its own.
		out.Trace = t.Trace(reconcileTraceID(ev), SpanID{}, shared)
	}
	out.Trace.Complete = true
	for i := range out.Trace.Spans {
		if out.Trace.Spans[i].Attr(AttrStage) == probes.StageControllerSync {
			out.Span = out.Trace.Spans[i].SpanID
		}
	}
	s.remember(out)
	s.emit(out)
}

func (s *Syncs) remember(sy Sync) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := syncKey{sy.Controller, sy.Namespace, sy.Name}
	l := s.syncs[k]
	// Forget what is older than retain, and the oldest past the cap.
	drop := 0
	for drop < len(l) && (sy.End.Sub(l[drop].end) > s.retain || len(l)-drop >= syncsPerObject) {
		drop++
	}
	l = l[drop:]
	// In order of start: one object's syncs do not overlap, but the
	// assembler may emit two that settled together in either order.
	i := sort.Search(len(l), func(i int) bool { return l[i].start.After(sy.Start) })
	l = slices.Insert(l, i, syncRec{component: sy.Component, controller: sy.Controller, owner: sy.Owner, revision: sy.Revision,
		start: sy.Start, end: sy.End, trace: sy.Trace.ID, span: sy.Span})
	s.syncs[k] = l
	s.nsyncs += 1 - drop
	if s.nsyncs <= maxSyncs {
		return
	}
	// As many busy objects as that: forget the objects idle for longest
	// first, then any; a lookup of one of them finds no sync, counted.
	for k, l := range s.syncs {
		if sy.End.Sub(l[len(l)-1].end) > s.retain/10 || s.nsyncs > maxSyncs*11/10 {
			s.nsyncs -= len(l)
			delete(s.syncs, k)
		}
		if s.nsyncs <= maxSyncs*9/10 {
			break
		}
	}
}

// enclosing is the sync of the object that was running at t: a
// controller's workqueue hands one object to one worker at a time, so it
// is the only one.
func (s *Syncs) enclosing(controller, ns, name string, t time.Time) (syncRec, bool) {
	l := s.syncs[syncKey{controller, ns, name}]
	i := sort.Search(len(l), func(i int) bool { return l[i].start.After(t) }) - 1
	if i >= 0 && !l[i].end.Before(t) {
		return l[i], true
	}
	return syncRec{}, false
}

// Creator is what made an object: a controller's sync, and the writes and
// syncs that led to it.
type Creator struct {
	Component, Controller string
	// AfterOwnerWrite is from the owner's write being applied to the
	// object's create (-1: that write was not seen).
	AfterOwnerWrite time.Duration
	Links           []Link
}

// Creator says which sync created an object of namespace ns whose
// controller owner is ownerKind/ownerName, its create having begun at t.
// It is false, and counted by reason, when the owner's controller is one
// kpath follows but no sync of the owner was running then.
func (s *Syncs) Creator(ns, ownerKind, ownerName string, t time.Time) (Creator, bool) {
	k, ok := probes.ControllerOfKind(ownerKind)
	if !ok || ownerName == "" {
		return Creator{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sy, ok := s.enclosing(k.Name, ns, ownerName, t)
	if !ok {
		s.creator["no-sync"]++
		return Creator{}, false
	}
	s.creator["found"]++
	c := Creator{Component: sy.component, Controller: sy.controller, AfterOwnerWrite: -1}
	c.Links = append(c.Links, Link{TraceID: sy.trace, SpanID: sy.span, Attributes: []Attribute{{AttrLink, LinkCreator}, {AttrController, sy.controller}}})
	if sy.revision == 0 {
		return c, true
	}
	c.Links = append(c.Links, Link{TraceID: WriteTraceID(sy.revision), SpanID: WriteRootID(sy.revision),
		Attributes: []Attribute{{AttrLink, LinkOwnerWrite}, {AttrRevision, sy.revision}}})
	w, seen := s.writes[sy.revision]
	if !seen {
		return c, true
	}
	c.AfterOwnerWrite = t.Sub(w.committed)
	// The owner's own creator: the sync of its owner that was running as
	// the owner's write began (a Deployment's sync creating or scaling the
	// ReplicaSet).
	// The sync reads only the owner's name: an owner of another kind than
	// the one its controller expects (a custom rollout controller's) has
	// no sync running as the write began, and links nothing.
	own, _ := probes.ControllerNamed(sy.controller)
	if own.OwnedBy == "" || sy.owner == "" {
		return c, true
	}
	up, ok := s.enclosing(own.OwnedBy, ns, sy.owner, w.start)
	if !ok {
		return c, true
	}
	c.Links = append(c.Links, Link{TraceID: up.trace, SpanID: up.span, Attributes: []Attribute{{AttrLink, LinkOwnerCreator}, {AttrController, up.controller}}})
	if up.revision != 0 {
		c.Links = append(c.Links, Link{TraceID: WriteTraceID(up.revision), SpanID: WriteRootID(up.revision),
			Attributes: []Attribute{{AttrLink, LinkOwnerOwnerWrite}, {AttrRevision, up.revision}}})
	}
	return c, true
}

// CreatorLookups counts the lookups of Creator by outcome: found, or
// no-sync (the owner's controller is followed, but no sync of the owner
// was seen running as the object was created).
func (s *Syncs) CreatorLookups() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.creator)
}
