package probes

import "time"

// Component names a traced program. The values are the kpath.component span
// attribute, so they are part of the public contract.
type Component string

const (
	KubeAPIServer         Component = "kube-apiserver"
	Etcd                  Component = "etcd"
	KubeScheduler         Component = "kube-scheduler"
	KubeControllerManager Component = "kube-controller-manager"
	Kubelet               Component = "kubelet"
	// AnyClientGo marks rows for any program built with client-go (an
	// operator, a controller): they attach to the programs named in
	// Options.ClientGoPrograms, whose events carry the program's own name.
	AnyClientGo Component = "client-go"
)

// Event is one probe firing, decoded: a span when the row has an exit (Start
// at entry, End at the RET), a point in time when it has none (End == Start).
// Only the fields the catalogue row captures are set.
type Event struct {
	// Row is the catalogue row that fired: what the event means and what
	// it joins to (nil for events made by hand in tests).
	Row       *Row
	Component Component
	Stage     string // kpath.stage, e.g. "request", "storage-write", "etcd-txn"
	Probe     string // catalogue row ID
	PID       uint32
	TID       uint32
	// Goroutine and ParentGoroutine are runtime.g.goid and .parentGoid of the
	// goroutine that hit the probe: the apiserver hands one request across
	// three goroutines, and this is how the pieces are joined.
	Goroutine       uint64
	ParentGoroutine uint64
	Start, End      time.Time
	Point           bool
	// InFlight marks the early report of an Announce row's entry: the span
	// with the same Probe, PID and Goroutine follows at its RET.
	InFlight bool

	Method    string // HTTP method
	Path      string // HTTP URL path
	Key       string // storage key as the component spells it (etcd: /registry/...)
	Revision  int64  // etcd revision: the object's resourceVersion after a write
	Succeeded bool   // an optimistic txn's compare held (SucceededSet says it was captured)
	// SucceededSet is true when the row captures Succeeded.
	SucceededSet bool
	RaftID       uint64
	Webhook      string
	WebhookType  string // admit or validating
	Namespace    string
	Name         string
	UID          string
	Node         string // node name (scheduler bind)
	Container    string // container name (kubelet container start)
	Controller   string // a controller's name (an operator's reconcile)
	Owner        string // the name of the object's first owner (its controller, as Kubernetes sets it)
	Failed       bool   // the call returned an error or a failure status (rows that capture FieldFailed)
	// Truncated is set when a captured string was longer than the BPF buffer.
	Truncated bool
	// Unread has bit 1<<Field set for each capture the BPF program could
	// not read (a nil pointer on the way, a layout that moved): that field
	// is zero, not a value.
	Unread uint64
	// Statuses is how many container statuses a pod status has, and
	// ContainersStarted the runtime's start time of the first ones (by
	// container name, as the kubelet sorts them; zero: not running).
	Statuses          int
	ContainersStarted []time.Time
	Verb              string        // the apiserver's request verb
	Subresource       string        // the request's subresource
	Code              int           // HTTP status code
	Elapsed           time.Duration // how long before the hit the span began (FieldElapsed)
	Handle            uint64        // the address of the object the call is about (FieldHandle)
	// Opened is when the span's opening row fired, when the span's start
	// came from its closing row instead (the apiserver's request begins at
	// its receipt; the handler's entry is where the filters ended).
	Opened time.Time

	// rvText collects a resourceVersion read as text (FieldRVText0/1,
	// FieldRVLen) until it can be parsed into Revision.
	rvText [2]uint64
	rvLen  uint64
	// started collects FieldStartedWall/Ext pairs, begin FieldBeginWall/Ext.
	started [2][2]uint64
	begin   [2]uint64
}

// Duration is End-Start, zero for point events.
func (e *Event) Duration() time.Duration { return e.End.Sub(e.Start) }

// CopyField sets field f of e to its value in src: what a span's closing
// event adds to its opening one.
func (e *Event) CopyField(f Field, src *Event) {
	if p := e.str(f); p != nil {
		*p = *src.str(f)
		return
	}
	switch f {
	case FieldRevision, FieldRVText0, FieldRVText1, FieldRVLen:
		e.Revision = src.Revision
	case FieldSucceeded:
		e.Succeeded, e.SucceededSet = src.Succeeded, src.SucceededSet
	case FieldRaftID:
		e.RaftID = src.RaftID
	case FieldFailed:
		e.Failed = src.Failed
	case FieldStatuses, FieldStartedWall0, FieldStartedExt0, FieldStartedWall1, FieldStartedExt1:
		e.Statuses, e.ContainersStarted = src.Statuses, src.ContainersStarted
	case FieldCode:
		e.Code = src.Code
	case FieldElapsed:
		e.Elapsed = src.Elapsed
	case FieldHandle:
		e.Handle = src.Handle
	}
}

// StringField is the value of a string field ("" for other fields).
func (e *Event) StringField(f Field) string {
	if p := e.str(f); p != nil {
		return *p
	}
	return ""
}

// str is where a string field lives in the event, nil for other fields.
func (e *Event) str(f Field) *string {
	switch f {
	case FieldMethod:
		return &e.Method
	case FieldPath:
		return &e.Path
	case FieldKey:
		return &e.Key
	case FieldWebhook:
		return &e.Webhook
	case FieldWebhookType:
		return &e.WebhookType
	case FieldNamespace:
		return &e.Namespace
	case FieldName:
		return &e.Name
	case FieldUID:
		return &e.UID
	case FieldNode:
		return &e.Node
	case FieldContainer:
		return &e.Container
	case FieldController:
		return &e.Controller
	case FieldOwner:
		return &e.Owner
	case FieldVerb:
		return &e.Verb
	case FieldSubresource:
		return &e.Subresource
	}
	return nil
}

// StartFromElapsed makes e the span its Elapsed holds: from when that
// says it began to the hit. An event of a row that times the call itself
// is read so; a closing event is, when no opener is there (Row.Alone).
func (e *Event) StartFromElapsed() {
	if e.Elapsed > 0 {
		e.Start, e.Point = e.End.Add(-e.Elapsed), false
	}
}

// PairKey is what joins the two ends of a span a row Opens or Closes.
type PairKey struct {
	Pair string
	PID  uint32
	G    uint64
	UID  string
}

// PairKey is e's join key; e must come from an Opens or Closes row.
func (e *Event) PairKey() PairKey {
	k := PairKey{Pair: e.Row.Pair, PID: e.PID}
	switch e.Row.By {
	case ByGoroutine:
		k.G = e.Goroutine
	case ByUID:
		k.UID = e.UID
	}
	return k
}

// ClosedBy is the span from e, the event that opened it, to c, the event
// of a row that closes it: e's row and captures, with what c captured
// added, ending at c.
func (e Event) ClosedBy(c *Event) Event {
	s := e
	s.End, s.Point, s.InFlight = c.Start, false, false
	for _, cp := range c.Row.Entry {
		s.CopyField(cp.Field, c)
	}
	if c.Elapsed > 0 {
		// The closing site knows when the span really began (before the
		// opening row could see it): the opening hit becomes a mark inside.
		// Elapsed is read a little before the hit: a begin it puts after
		// the opening hit is late by that much, and the span began by the
		// opening hit at the latest.
		s.Opened, s.Start = e.Start, c.Start.Add(-c.Elapsed)
		if s.Start.After(e.Start) {
			s.Start = e.Start
		}
	}
	return s
}
