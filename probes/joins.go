package probes

import (
	"fmt"
	"slices"
	"time"
)

// Join says where the events of one stage go in a trace: whether they name
// the trace themselves (a write's key and revision), or how they are found
// from an event already in it (the handler that spawned the writing
// goroutine, the WAL fsync between the proposal and the apply), and which
// span they hang under. correlate.Assembler reads these and builds every
// span of a feed with one mechanism; a stage new to kpath is a row and a
// Join, not new correlator code.
type Join struct {
	Stage string
	// Names: the event carries the trace's identity (Feed's key). Opens,
	// when set, says which of them may open a trace no one follows yet; the
	// others wait for one that does, up to Keep, counted under Unjoined
	// if none comes (a receipt of a pod created before the agent). Require
	// is a condition it must meet to name one; an event that fails it is
	// counted under Refused (a failed compare wrote nothing).
	Names   bool
	Opens   func(*Event) bool
	Require func(*Event) bool
	Refused string
	// Found lists how the event is found from one already in the trace;
	// any one that holds places it.
	Found []Relation
	// Under lists the stages of the span this one hangs under, the first
	// present wins; when none is present it hangs under the trace's root,
	// or is the root.
	Under []string
	// Many: every event found joins (webhooks); else the first.
	Many bool
	// Late: an event that names a trace already emitted still joins it,
	// as more of it (a slow consumer's watch receipt).
	Late bool
	// Anchors: found from an event waiting for its trace to open, this
	// event opens it (the pod's create, found from a receipt of it).
	Anchors bool
	// Shared: one event may join several traces (one request making two
	// writes, one WAL fsync making a batch durable).
	Shared bool
	// Ends names the stage whose span this event ends, instead of making
	// its own span; the fields it captured are added to that span.
	Ends string
	// Waits: an announced event of this stage that has not ended holds its
	// trace back (the request a write was made in).
	Waits bool
	// Stands: when the trace has no span of that stage, this event starts
	// one that ends where the span this event's Found stage ends (etcd's
	// part of a write, from the proposal to the Trigger, without the RPC
	// row); it then makes no span of its own.
	Stands     string
	StandsSpan string // the name of the span it stands for
	// Keep is how long an event not yet in a trace waits for one (0: the
	// feed's default); Unjoined is the reason counted when it never joins.
	Keep     time.Duration
	Unjoined string
	// Alone: an event that joined no trace within Keep is not lost but
	// emitted by itself (correlate.AssemblerOptions.Alone), and not
	// counted as unjoined: a webhook server's answer on a node whose
	// agent does not see the call, in a trace derived from the review's
	// UID that the call's span links to.
	Alone bool
	// NoSpan: the event says something of its trace (a result, where a
	// wait began) and makes no span of its own.
	NoSpan bool
	// Span is the span's name, with {field} replaced by the event's value
	// of that field (a row's SpanName wins); Attrs the event's fields put
	// on the span as attributes (AttrKeys).
	Span  string
	Attrs []Field
	// Splits makes a child span from the event's Start to its Opened (the
	// request's filters, before its handler).
	Splits string
}

// Relation is one way to find an event from another already in its trace.
type Relation struct {
	Of   string // the stage of the event in the trace
	Same []Same // values that must be equal (within one process)
	When TimeRule
	// AnyProcess: the values are equal across processes (an object's
	// name and revision), not only within one.
	AnyProcess bool
	// After and Until bound a Window: the first event to start at or after
	// the first present of After's starts and end before Until's start.
	After []string
	Until string
	// Bound: the candidate starts no later than the end of this stage's
	// event, when the trace has one (etcd answers a txn after its apply's
	// Trigger, so a later Trigger is another entry's). A placed event found
	// out of bound is taken back and counted under the join's Refused.
	Bound string
}

// Same is one equality of a relation: the candidate's Mine equals the
// trace's event's Theirs.
type Same struct{ Mine, Theirs EventKey }

// EventKey names a value a relation can join on.
type EventKey uint8

const (
	KeyGoroutine EventKey = iota + 1
	KeyParentGoroutine
	KeyRaftID
	KeyRevision
	KeyObject // namespace and name, hashed (Relation.Holds compares them)
	KeyUID    // a UID (an admission review's), hashed (Relation.Holds compares them)
	KeyVerb   // a request's verb (POST, PUT, ...), hashed (Relation.Holds compares them)
)

// Value is the event's value of k.
func (k EventKey) Value(e *Event) uint64 {
	switch k {
	case KeyGoroutine:
		return e.Goroutine
	case KeyParentGoroutine:
		return e.ParentGoroutine
	case KeyRaftID:
		return e.RaftID
	case KeyRevision:
		return uint64(e.Revision)
	case KeyUID:
		h := uint64(14695981039346656037)
		for i := 0; i < len(e.UID); i++ {
			h = (h ^ uint64(e.UID[i])) * 1099511628211
		}
		return h
	case KeyVerb:
		h := uint64(14695981039346656037)
		for i := 0; i < len(e.Verb); i++ {
			h = (h ^ uint64(e.Verb[i])) * 1099511628211
		}
		return h
	case KeyObject:
		// FNV-1a of namespace, NUL, name: without allocating.
		h := uint64(14695981039346656037)
		for _, s := range [2]string{e.Namespace, e.Name} {
			for i := 0; i < len(s); i++ {
				h = (h ^ uint64(s[i])) * 1099511628211
			}
			h = (h ^ 0) * 1099511628211
		}
		return h
	}
	return 0
}

// TimeRule says how a candidate's time must lie against the event it is
// found from.
type TimeRule uint8

const (
	Anytime       TimeRule = iota
	Encloses               // starts no later and ends no earlier (an announced, unended event: starts no later)
	EndsBefore             // ends no later than the other starts
	FirstAfter             // the first to start at or after the other starts
	Window                 // the first inside After … Until (Relation)
	RevisionAfter          // at a later revision (a later write of the same object)
	LastBefore             // the latest to start no later than the other starts
	During                 // starts inside the other (a call its reconcile made)
)

// Holds says whether candidate c lies as r.When wants against the event o
// it is found from; for Window, lo and hi are the bounds.
func (r *Relation) Holds(c, o *Event, lo, hi time.Time) bool {
	for _, s := range r.Same {
		if s.Mine == KeyObject && (c.Namespace != o.Namespace || c.Name != o.Name) ||
			s.Mine == KeyUID && c.UID != o.UID || s.Mine == KeyVerb && c.Verb != o.Verb {
			return false // a hash that collided
		}
	}
	switch r.When {
	case RevisionAfter:
		return c.Revision > o.Revision
	case LastBefore:
		return !c.Start.After(o.Start)
	case Encloses:
		return !c.Start.After(o.Start) && (c.InFlight || !c.End.Before(o.End))
	case EndsBefore:
		return !c.End.After(o.Start)
	case FirstAfter:
		return !c.Start.Before(o.Start)
	case Window:
		return !c.Start.Before(lo) && !c.End.After(hi)
	case During:
		return !c.Start.Before(o.Start) && !c.Start.After(o.End)
	}
	return true
}

// First says whether the rule picks the earliest candidate that holds.
func (r *Relation) First() bool {
	return r.When == FirstAfter || r.When == Window || r.When == LastBefore
}

// AttrKeys are the span attributes of the fields a Join lists.
var AttrKeys = map[Field]string{
	FieldMethod:  "http.request.method",
	FieldPath:    "url.path",
	FieldCode:    "http.response.status_code",
	FieldWebhook: "kpath.webhook",
	// The UID the event carries: on a webhook call, its AdmissionReview's,
	// which the webhook server logs and answers under.
	FieldUID:         "kpath.uid",
	FieldWebhookType: "kpath.webhook.type",
	FieldSucceeded:   "kpath.succeeded",
	FieldRaftID:      "kpath.raft_id",
}

// Joins is one feed's join table, in the order spans are built (a span's
// Under stages come before it).
type Joins []Join

// Of returns the join of a stage, or nil.
func (js Joins) Of(stage string) *Join {
	for i := range js {
		if js[i].Stage == stage {
			return &js[i]
		}
	}
	return nil
}

// Check says what is wrong with a join table: a relation to a stage that is
// not in it or that comes after, a span under a stage that comes after.
func (js Joins) Check() error {
	seen := map[string]bool{}
	for _, j := range js {
		if seen[j.Stage] {
			return fmt.Errorf("join %s: stage listed twice", j.Stage)
		}
		if !j.Names && len(j.Found) == 0 {
			return fmt.Errorf("join %s: neither names its trace nor is found from another stage", j.Stage)
		}
		if j.Names && len(j.Found) > 0 {
			return fmt.Errorf("join %s: names its trace and is found from another stage", j.Stage)
		}
		for _, r := range j.Found {
			if js.Of(r.Of) == nil {
				return fmt.Errorf("join %s: found from stage %q, which is not in the table", j.Stage, r.Of)
			}
			if r.When == Window && (len(r.After) == 0 || r.Until == "") {
				return fmt.Errorf("join %s: a window needs After and Until", j.Stage)
			}
			if r.When != Window && (len(r.After) > 0 || r.Until != "") {
				return fmt.Errorf("join %s: After and Until are for windows", j.Stage)
			}
			if len(r.Same) > 2 {
				return fmt.Errorf("join %s: at most two equalities a relation", j.Stage)
			}
		}
		for _, u := range j.Under {
			if !seen[u] {
				return fmt.Errorf("join %s: under %q, which does not come before it", j.Stage, u)
			}
		}
		if j.Ends != "" && js.Of(j.Ends) == nil {
			return fmt.Errorf("join %s: ends stage %q, which is not in the table", j.Stage, j.Ends)
		}
		if j.Stands != "" && (js.Of(j.Stands) == nil || len(j.Found) == 0) {
			return fmt.Errorf("join %s: stands for %q without being found from a stage that ends", j.Stage, j.Stands)
		}
		seen[j.Stage] = true
	}
	return nil
}

// Shape is what one feed's traces are made of: how their events join
// (Joins, in the order spans are built), which stages may be the root (the
// first present is), and what a trace needs to be complete.
type Shape struct {
	Joins    Joins
	Roots    []string
	Required []string
	// Expects is a stage that a complete trace lacking it waits longer for
	// (Shape's users give how long): the apiserver's side of a txn seen
	// in etcd, which is reported when its call returns, well after.
	Expects string
}

// Check says what is wrong with a shape.
func (s *Shape) Check() error {
	if err := s.Joins.Check(); err != nil {
		return err
	}
	for _, st := range slices.Concat(s.Roots, s.Required, []string{s.Expects}) {
		if st != "" && s.Joins.Of(st) == nil {
			return fmt.Errorf("shape: stage %q is not in its joins", st)
		}
	}
	return nil
}
