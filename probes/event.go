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
	Namespace    string
	Name         string
	UID          string
	Node         string // node name (scheduler bind)
	Container    string // container name (kubelet container start)
	Failed       bool   // the call returned an error or a failure status (rows that capture FieldFailed)
	// Truncated is set when a captured string was longer than the BPF buffer.
	Truncated bool
	// Statuses is how many container statuses a pod status has, and
	// ContainersStarted the runtime's start time of the first ones (by
	// container name, as the kubelet sorts them; zero: not running).
	Statuses          int
	ContainersStarted []time.Time

	// rvText collects a resourceVersion read as text (FieldRVText0/1,
	// FieldRVLen) until it can be parsed into Revision.
	rvText [2]uint64
	rvLen  uint64
	// started collects FieldStartedWall/Ext pairs.
	started [2][2]uint64
}

// Duration is End-Start, zero for point events.
func (e *Event) Duration() time.Duration { return e.End.Sub(e.Start) }
