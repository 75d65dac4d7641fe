package correlate

import (
	"crypto/sha256"
	"time"
)

// TraceID and SpanID follow OpenTelemetry: 16 and 8 bytes, all zero = unset.
type (
	TraceID [16]byte
	SpanID  [8]byte
)

// Attribute is one span attribute. Value is a string, int64 or bool.
type Attribute struct {
	Key   string
	Value any
}

// Span is one finished span of a trace.
type Span struct {
	TraceID    TraceID
	SpanID     SpanID
	Parent     SpanID // zero for the root
	Name       string
	Start, End time.Time
	Attributes []Attribute
	// Links point at spans of other traces that caused this one (the
	// controller's sync that created a pod, in its owner's write's trace):
	// one trace per object change would otherwise break the chain there.
	Links []Link
}

// Link is an OpenTelemetry span link.
type Link struct {
	TraceID    TraceID
	SpanID     SpanID
	Attributes []Attribute
}

// Attr returns the value of the attribute named key, or nil.
func (s *Span) Attr(key string) any {
	for _, a := range s.Attributes {
		if a.Key == key {
			return a.Value
		}
	}
	return nil
}

// Trace is every span kpath knows for one object change, root first.
type Trace struct {
	ID    TraceID
	Spans []Span
	// Complete is false when the trace was flushed on a timeout with stages
	// missing; such traces are still exported and counted.
	Complete bool
}

// Attribute keys: part of the public contract (see README).
const (
	AttrComponent = "kpath.component"
	AttrStage     = "kpath.stage"
	AttrKey       = "kpath.key"
	AttrRevision  = "kpath.revision"
	AttrProbe     = "kpath.probe"
	AttrResource  = "kpath.resource"
	AttrWebhook   = "kpath.webhook"
	AttrSucceeded = "kpath.succeeded"
	AttrRaftID    = "kpath.raft_id"
	AttrComplete  = "kpath.complete" // on a pod trace's root: every stage was seen
	AttrMissing   = "kpath.missing"  // on an incomplete trace's root: the stages not seen
	// AttrKubeletElsewhere, on a pod trace's root, names the node whose
	// agent adds the kubelet's part to the trace: this agent's part (and
	// the root) ends with the binding.
	AttrKubeletElsewhere = "kpath.kubelet_part_from"
	// AttrStartedBy says where a pod's container-start stage ends: "runtime"
	// (the runtime's StartedAt, from the kubelet's status) or "cri-reply"
	// (the kubelet's CRI StartContainer returned; StartedAt was not read).
	AttrStartedBy = "kpath.started_by"
	AttrNamespace = "k8s.namespace.name"
	AttrPodName   = "k8s.pod.name"
	AttrPodUID    = "k8s.pod.uid"
	AttrNodeName  = "k8s.node.name"
	// AttrLink says what a span link points at (Link.Attributes).
	AttrLink = "kpath.link"
)

// derivedTraceID and derivedSpanID name a trace or a span by what every
// agent that sees its object knows alike (a pod's UID, a review's UID), so
// that agents put their spans together without talking.
func derivedTraceID(kind, of string) TraceID {
	h := sha256.Sum256([]byte("kpath/" + kind + "\x00" + of))
	var id TraceID
	copy(id[:], h[:])
	return id
}

func derivedSpanID(kind, of string) SpanID {
	h := sha256.Sum256([]byte("kpath/" + kind + "\x00" + of))
	var id SpanID
	copy(id[:], h[:])
	return id
}
