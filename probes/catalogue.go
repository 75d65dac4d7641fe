package probes

import (
	"fmt"
	"slices"
	"strings"

	"golang.org/x/mod/semver"
)

// Catalogue is every row kpath knows: the write path (rows.go) and what
// follows a pod from the watch to its node (rows_pods.go).
var Catalogue = slices.Concat(writeRows, podRows)

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
	// AtReturn rows have no entry probe: a point event at each RET, with
	// the Exit captures. For a call whose end matters and whose start is
	// known from elsewhere (the kubelet's CRI StartContainer inside the
	// container start it belongs to): one hit instead of two.
	AtReturn bool
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
)

var fieldNames = [...]string{"none", "method", "path", "key", "revision", "succeeded", "raft-id", "webhook", "namespace", "name", "uid",
	"node", "container", "failed", "rv-text0", "rv-text1", "rv-len",
	"statuses", "started-wall0", "started-ext0", "started-wall1", "started-ext1"}

func (f Field) String() string {
	if int(f) < len(fieldNames) {
		return fieldNames[f]
	}
	return fmt.Sprintf("field(%d)", uint8(f))
}

// IsString says whether the field is captured into a string slot.
func (f Field) IsString() bool {
	switch f {
	case FieldMethod, FieldPath, FieldKey, FieldWebhook, FieldNamespace, FieldName, FieldUID, FieldNode, FieldContainer:
		return true
	}
	return false
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
}

func (c Capture) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s=", c.Field)
	switch c.Kind {
	case StrInRegs:
		fmt.Fprintf(&b, "string(%s,%s)", c.Reg, c.LenReg)
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
	if len(r.Exit) > 0 && !r.Timed && !r.AtReturn {
		return fmt.Errorf("row %s: exit captures need a timed or at-return row", r.ID)
	}
	if r.AtReturn && (r.Timed || r.Announce || len(r.Entry) > 0) {
		return fmt.Errorf("row %s: an at-return row has no entry probe: no entry captures, not timed, not announced", r.ID)
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
