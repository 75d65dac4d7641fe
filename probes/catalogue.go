package probes

import (
	"fmt"
	"slices"
	"strings"

	"golang.org/x/mod/semver"

	"github.com/kpath/kpath/bpf"
)

// Catalogue is every row kpath knows: the write path (rows.go), feeding
// the write traces, what follows a pod from the watch to its node
// (rows_pods.go), feeding the pod traces, the reconciles of operators
// (rows_operators.go), the webhook servers' answers, feeding the write
// traces (rows_webhooks.go), and the syncs of kube-controller-manager's
// controllers (rows_controllers.go).
var Catalogue = func() []Row {
	rows := slices.Concat(feeding(writeRows, FeedsWrites), feeding(podRows, FeedsPods), feeding(operatorRows, FeedsReconciles),
		feeding(webhookServerRows, FeedsWrites), feeding(controllerRows, FeedsSyncs))
	for i := range rows {
		if rows[i].ID == "client-go.informer.receive" {
			// An operator's receipt of an object is where its reconcile's
			// queue wait starts, and it names the write it received.
			rows[i].Feeds |= FeedsReconciles
		}
	}
	return rows
}()

// Feed names the traces a row's events belong to: which correlators take
// them (a set: a receipt is on a pod's path and before a reconcile).
type Feed uint8

const (
	FeedsWrites     Feed = 1 << iota // one trace per object write (its revision)
	FeedsPods                        // one trace per pod (UID)
	FeedsReconciles                  // one per reconcile, in the trace of the write it reconciled
	FeedsSyncs                       // one per sync of a kube-controller-manager controller, in the trace of the write it acted on
)

func feeding(rows []Row, f Feed) []Row {
	out := slices.Clone(rows)
	for i := range out {
		out[i].Feeds = f
	}
	return out
}

// SpanRole says what a row's events are in span building.
type SpanRole uint8

const (
	// Moment: a point in time (an untimed row), or, for a timed row, the
	// whole span its entry and RET make in BPF.
	Moment SpanRole = iota
	// Opens starts the span named Row.Pair; the event of a Closes row with
	// the same Pair and the same join key (Row.By) ends it. Both ends are
	// entry hits, the cheap kind, so no RET is paid for.
	Opens
	Closes
)

// JoinKey says what ties a Closes event to the Opens event of its span.
type JoinKey uint8

const (
	ByGoroutine JoinKey = iota + 1 // the same goroutine of the same process
	ByUID                          // the same object UID in the same process
)

var joinNames = [...]string{"", "goroutine", "uid"}

func (j JoinKey) String() string {
	if int(j) < len(joinNames) {
		return joinNames[j]
	}
	return fmt.Sprintf("join(%d)", uint8(j))
}

// Match keeps the events whose string Field is one of Values.
type Match struct {
	Field  Field
	Values []string
}

// Row is one attach point of the catalogue: which function, in which
// versions, what to read at its entry and at its RETs, and what it means.
type Row struct {
	ID        string // stable name, the `probe` label of kpath_probe_hits_total
	Component Component
	Stage     string // kpath.stage of the spans it produces
	Symbol    string // function name as .gopclntab spells it
	// Module and Versions select the row: the row applies when the binary's
	// version of Module is inside Versions (">=vA <vB", upper bound exclusive).
	// Both empty: any version (rows for a program of one's own).
	Module   string
	Versions string
	// Timed rows get a uprobe on every RET and produce spans; the others
	// produce point events from their entry only.
	Timed bool
	// Announce also reports a timed row's entry when it happens, so that
	// what it encloses can wait for its end (the request around a write).
	Announce bool
	Entry    []Capture
	Exit     []Capture // read at the RETs: Go results are live in registers there
	// Detail rows add spans but cost hits on hot paths; they attach only
	// when asked for (--detail).
	Detail bool
	// Hits says how often the row fires, for the hit budget (README).
	Hits string
	// Span names the spans the row's events make, where its stage's Join
	// does not (rows of one stage that do different things).
	Span string
	// Controller names the controller whose work the row's events are,
	// where no capture reads it (kube-controller-manager's controllers do
	// not hold their names); a FieldController capture wins.
	Controller string

	// Span building (correlate.Pairs): an Opens or Closes row names the
	// span it builds (Pair) and what joins its two ends (By).
	Role SpanRole
	Pair string
	By   JoinKey
	// Unpaired says why a Closes event may find no open span and still be
	// no loss (MonitorRequest ends reads, which open nothing): such events
	// are counted under this reason instead of as lost starts.
	Unpaired string
	// Alone: a Closes event with nothing open is still the span it would
	// end, without the opener's captures (its own Elapsed says when it
	// began): the opener adds to a span the closing row times alone
	// (ObserveWebhook times the call; the review before it adds its UID).
	Alone bool
	// Only keeps the events whose captured string matches; the others are
	// counted as filtered (etcd's RPC stats: only Txn calls are writes).
	Only *Match
	// Feeds is the correlator that takes the row's spans (set by Catalogue).
	Feeds Feed

	// CalledFrom puts the probe not on Symbol's entry but on each CALL of
	// Symbol inside these functions, so that it fires on that path alone
	// (a CALL rel32 is emulated like the push). Registers hold Symbol's
	// arguments there, and RSP is the caller's: stack arguments at 0(SP),
	// Spilled captures in the caller's frame.
	CalledFrom []string
	// CallArg keeps only the calls that pass one of these string
	// constants (RecordEtcdRequest's verb: writes, not reads), in the
	// register CallArgAt and the next (RAX,RBX when zero).
	CallArg   []string
	CallArgAt Reg
}

// Field names what a captured value means.
type Field uint8

const (
	FieldNone Field = iota
	FieldMethod
	FieldPath
	FieldKey
	FieldRevision
	FieldSucceeded
	FieldRaftID
	FieldWebhook
	FieldNamespace
	FieldName
	FieldUID
	FieldNode      // node name (the scheduler's bind target)
	FieldContainer // container name
	// FieldFailed is an error interface's type word, a *Status's code or a
	// similar integer: non-zero means the call failed.
	FieldFailed
	// A resourceVersion is a decimal string in ObjectMeta. The BPF program
	// reads it as integers: the first and second 8 bytes of its text and its
	// length; the reader turns them into Event.Revision (see revText).
	FieldRVText0
	FieldRVText1
	FieldRVLen
	// A pod status's container statuses: how many, and the runtime's
	// StartedAt (a Go time.Time, wall and ext words) of the first two
	// running ones. The reader turns them into Event.ContainersStarted.
	FieldStatuses
	FieldStartedWall0
	FieldStartedExt0
	FieldStartedWall1
	FieldStartedExt1
	FieldVerb        // the apiserver route's verb as MonitorRequest gets it (POST, GET, LIST, WATCH, ...)
	FieldSubresource // the request's subresource (binding, status, ...)
	FieldCode        // an HTTP status code
	// FieldElapsed is a time.Duration that ends at the hit: the span it
	// closes started that long before (the apiserver's request latency,
	// from the request's receipt).
	FieldElapsed
	// FieldBeginWall and FieldBeginExt are a Go time.Time at which the
	// span that ends at the hit began (etcd's RPC start time).
	FieldBeginWall
	FieldBeginExt
	FieldController  // a controller's name (controller-runtime's Controller.Name)
	FieldWebhookType // a webhook call's kind as the apiserver's metric names it: admit (mutating) or validating
	FieldOwner       // the name in an object's first ownerReference
	// FieldHandle is the address of the object a call is about (the
	// *http.Request a handler and the apiserver's MonitorRequest are both
	// handed): two ends of a span with different handles are two calls'.
	FieldHandle
)

var fieldNames = [...]string{"none", "method", "path", "key", "revision", "succeeded", "raft-id", "webhook", "namespace", "name", "uid",
	"node", "container", "failed", "rv-text0", "rv-text1", "rv-len",
	"statuses", "started-wall0", "started-ext0", "started-wall1", "started-ext1",
	"verb", "subresource", "code", "elapsed", "begin-wall", "begin-ext", "controller", "webhook-type", "owner", "handle"}

// FieldNamed is the field whose String is name.
func FieldNamed(name string) (Field, bool) {
	for i, n := range fieldNames {
		if n == name {
			return Field(i), true
		}
	}
	return FieldNone, false
}

func (f Field) String() string {
	if int(f) < len(fieldNames) {
		return fieldNames[f]
	}
	return fmt.Sprintf("field(%d)", uint8(f))
}

// IsString says whether the field is captured into a string slot.
// The string fields are those an Event holds in a string (Event.str).
func (f Field) IsString() bool {
	var e Event
	return e.str(f) != nil
}

// Reg is an amd64 register as Go's ABIInternal passes arguments: RAX RBX RCX
// RDI RSI R8 R9 R10 R11, results in the same order, RSP for stack arguments.
type Reg uint8

const (
	RAX Reg = iota
	RBX
	RCX
	RDI
	RSI
	R8
	R9
	R10
	R11
	RSP
	RDX // closure context
)

var regNames = [...]string{"RAX", "RBX", "RCX", "RDI", "RSI", "R8", "R9", "R10", "R11", "RSP", "RDX"}

func (r Reg) String() string {
	if int(r) < len(regNames) {
		return regNames[r]
	}
	return fmt.Sprintf("reg(%d)", uint8(r))
}

// CaptureKind says how a value is read.
type CaptureKind uint8

const (
	InReg     CaptureKind = iota + 1 // integer in a register (after Deref)
	AtOffset                         // integer in memory at Offset from the (dereferenced) register
	StrInRegs                        // Go string / []byte passed as pointer and length registers
	StrAt                            // Go string / []byte header in memory at Offset
	// Spilled is an integer the caller saved in its frame: result register
	// Reg of the CALL before the probed one (CalledFrom rows). Attach finds
	// the slot in the caller's code and reads it as AtOffset from RSP.
	Spilled
)

// Capture reads one value: start from Reg, follow Deref (each step loads a
// pointer at that offset), then read at Offset as Kind says.
type Capture struct {
	Field  Field
	Kind   CaptureKind
	Reg    Reg
	LenReg Reg      // StrInRegs: register holding the length
	Deref  []uint32 // pointer hops before the final read
	Offset uint32   // AtOffset / StrAt: offset of the field
	Size   uint8    // integer width in bytes (default 8)
	Add    int64    // added to integers after reading (etcd's beginRev+1)
	// Optional: the read fails whenever what it points at is absent (a
	// container not running yet), so failures say nothing about the layout.
	Optional bool
}

func (c Capture) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s=", c.Field)
	switch c.Kind {
	case StrInRegs:
		fmt.Fprintf(&b, "string(%s,%s)", c.Reg, c.LenReg)
		return b.String()
	case Spilled:
		fmt.Fprintf(&b, "saved(%s)", c.Reg)
		return b.String()
	}
	b.WriteString(c.Reg.String())
	for _, d := range c.Deref {
		fmt.Fprintf(&b, "->+%d", d)
	}
	if c.Kind == AtOffset || c.Kind == StrAt {
		fmt.Fprintf(&b, "@+%d", c.Offset)
	}
	if c.Add != 0 {
		fmt.Fprintf(&b, "%+d", c.Add)
	}
	return b.String()
}

// Capture constructors keep the catalogue rows short and readable. In each,
// path lists pointer hops followed by the final field offset.

func str(f Field, ptr, length Reg) Capture {
	return Capture{Field: f, Kind: StrInRegs, Reg: ptr, LenReg: length}
}

func strAt(f Field, r Reg, path ...uint32) Capture {
	return Capture{Field: f, Kind: StrAt, Reg: r, Deref: path[:len(path)-1], Offset: path[len(path)-1]}
}

func u64(f Field, r Reg) Capture { return Capture{Field: f, Kind: InReg, Reg: r, Size: 8} }

func u64At(f Field, r Reg, path ...uint32) Capture {
	return Capture{Field: f, Kind: AtOffset, Reg: r, Deref: path[:len(path)-1], Offset: path[len(path)-1], Size: 8}
}

func boolean(f Field, r Reg) Capture { return Capture{Field: f, Kind: InReg, Reg: r, Size: 1} }

// spilled reads result register r of the call before the probed CALL
// where the caller saved it, size bytes.
func spilled(f Field, r Reg, size uint8) Capture {
	return Capture{Field: f, Kind: Spilled, Reg: r, Size: size}
}

func boolAt(f Field, r Reg, path ...uint32) Capture {
	c := u64At(f, r, path...)
	c.Size = 1
	return c
}

// Applies reports whether the row fits a binary whose Module is at version v.
func (r *Row) Applies(v string) (bool, error) {
	lo, hi, err := parseRange(r.Versions)
	if err != nil {
		return false, fmt.Errorf("row %s: %w", r.ID, err)
	}
	if !semver.IsValid(v) {
		return false, fmt.Errorf("row %s: %s version %q is not semver", r.ID, r.Module, v)
	}
	v = semver.Canonical(v)
	if lo != "" && semver.Compare(v, lo) < 0 {
		return false, nil
	}
	if hi != "" && semver.Compare(v, hi) >= 0 {
		return false, nil
	}
	return true, nil
}

func parseRange(s string) (lo, hi string, err error) {
	for _, f := range strings.Fields(s) {
		switch {
		case strings.HasPrefix(f, ">="):
			lo = f[2:]
		case strings.HasPrefix(f, "<"):
			hi = f[1:]
		default:
			return "", "", fmt.Errorf("version range %q: term %q is neither >=vX nor <vY", s, f)
		}
	}
	for _, v := range []string{lo, hi} {
		if v != "" && !semver.IsValid(v) {
			return "", "", fmt.Errorf("version range %q: %q is not semver", s, v)
		}
	}
	return lo, hi, nil
}

// Validate checks a row's shape: that it fits the BPF program's slots.
func (r *Row) Validate() error {
	if r.ID == "" || r.Symbol == "" || r.Component == "" || r.Stage == "" {
		return fmt.Errorf("row %q: ID, Symbol, Component and Stage are required", r.ID)
	}
	if (r.Module == "") != (r.Versions == "") {
		return fmt.Errorf("row %s: Module and Versions go together", r.ID)
	}
	if _, _, err := parseRange(r.Versions); err != nil {
		return fmt.Errorf("row %s: %w", r.ID, err)
	}
	if len(r.Exit) > 0 && !r.Timed {
		return fmt.Errorf("row %s: exit captures need a timed row", r.ID)
	}
	switch r.Role {
	case Moment:
		if r.Pair != "" || r.By != 0 || r.Unpaired != "" || r.Alone {
			return fmt.Errorf("row %s: Pair, By, Unpaired and Alone are for Opens and Closes rows", r.ID)
		}
	case Opens, Closes:
		if r.Pair == "" || r.By == 0 {
			return fmt.Errorf("row %s: an Opens or Closes row names its span (Pair) and its join (By)", r.ID)
		}
		if r.Timed {
			return fmt.Errorf("row %s: an Opens or Closes row is one entry hit, not timed", r.ID)
		}
		if r.Role == Opens && (r.Unpaired != "" || r.Alone) {
			return fmt.Errorf("row %s: Unpaired and Alone are for Closes rows", r.ID)
		}
		if r.Alone && r.Unpaired != "" {
			return fmt.Errorf("row %s: an Alone row's unpaired events are spans, not losses: no Unpaired reason", r.ID)
		}
		if r.Role == Closes && r.Announce {
			return fmt.Errorf("row %s: only the opening row of a span can announce it", r.ID)
		}
	default:
		return fmt.Errorf("row %s: unknown role %d", r.ID, r.Role)
	}
	if len(r.CallArg) > 0 && len(r.CalledFrom) == 0 {
		return fmt.Errorf("row %s: CallArg selects calls: it needs CalledFrom", r.ID)
	}
	for _, c := range r.Entry {
		if c.Kind == Spilled && len(r.CalledFrom) == 0 {
			return fmt.Errorf("row %s: field %s is read from the caller's frame: the row needs CalledFrom", r.ID, c.Field)
		}
	}
	if r.Only != nil && !r.Only.Field.IsString() {
		return fmt.Errorf("row %s: Only matches a string field, not %s", r.ID, r.Only.Field)
	}
	if r.Only != nil {
		// The BPF program matches capture 0's string against the values.
		if len(r.Entry) == 0 || r.Entry[0].Field != r.Only.Field {
			return fmt.Errorf("row %s: Only matches %s, which must be the row's first capture", r.ID, r.Only.Field)
		}
		if len(r.Only.Values) == 0 || len(r.Only.Values) > bpf.MaxMatch {
			return fmt.Errorf("row %s: Only takes 1 to %d values", r.ID, bpf.MaxMatch)
		}
		for _, v := range r.Only.Values {
			if len(v) == 0 || len(v) > bpf.MatchLen {
				return fmt.Errorf("row %s: Only value %q is not 1 to %d bytes", r.ID, v, bpf.MatchLen)
			}
		}
	}
	seen := map[Field]bool{}
	for _, c := range append(append([]Capture{}, r.Entry...), r.Exit...) {
		if seen[c.Field] {
			return fmt.Errorf("row %s: field %s captured twice", r.ID, c.Field)
		}
		seen[c.Field] = true
		if c.Field.IsString() != (c.Kind == StrInRegs || c.Kind == StrAt) {
			return fmt.Errorf("row %s: field %s read as the wrong kind", r.ID, c.Field)
		}
		if len(c.Deref) > maxDeref {
			return fmt.Errorf("row %s: field %s follows %d pointers, at most %d", r.ID, c.Field, len(c.Deref), maxDeref)
		}
	}
	if len(r.Entry) > maxCaptures || len(r.Exit) > maxCaptures {
		return fmt.Errorf("row %s: at most %d captures at entry and at exit", r.ID, maxCaptures)
	}
	_, err := assignSlots(r)
	return err
}
