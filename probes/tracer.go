package probes

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/link"
	"golang.org/x/mod/semver"

	"github.com/kpath/kpath/bpf"
)

// Options configure a Tracer.
type Options struct {
	// Rows is the catalogue to use; nil means Catalogue.
	Rows []Row
	// Detail also attaches rows marked Detail (more spans, more hits).
	Detail bool
	// DetailRows attaches these detail rows (by ID) without the others:
	// say etcd.wal.fsync alone, to see etcd's disk syncs.
	DetailRows []string
	// ClientGoPrograms are executables (base names) of operators and
	// controllers: their client-go informers get the AnyClientGo rows, and
	// their events carry the program's name as the component.
	ClientGoPrograms []string
	// Operators follows every program that links controller-runtime,
	// found by its build info, without its being named.
	Operators bool
	// NetNS, when set, is a network namespace file (/proc/self/ns/net,
	// /run/netns/NAME): only processes in that namespace are followed. It
	// tells apart nodes that share one host's PID namespace (the lab's
	// second node), whose kubelets an agent each must not both trace.
	NetNS string
	// RingBytes sizes the ring buffer (0: the compiled default, 4 MiB).
	RingBytes uint32
	Logger    *slog.Logger
}

// Tracer owns the BPF program and every process it is attached to.
type Tracer struct {
	objs *bpf.Objects
	rows []Row
	opts Options
	log  *slog.Logger

	notOurs notOurs // Find's memory of the processes it need not look at again

	ops *Operators // nil unless Options.Operators

	mu    sync.Mutex
	procs map[int]*Process
	// slots by slot number (nil = free), written under mu and read by
	// the ring-buffer reader without it.
	slots []atomic.Pointer[slotInfo]
	free  []uint32

	clock *clock
	// names interns the strings of few values that every record carries
	// again (methods, URL paths, verbs, nodes): the reader's own, unlocked.
	names interned
	// statsMu guards what the reader counts: decodeErrs and reads. The
	// reader never takes mu.
	statsMu    sync.Mutex
	decodeErrs DecodeErrors
	// retired keeps the hits of detached processes, so that totals never
	// go down when a component restarts.
	retired map[retiredKey]uint64
	// reads counts each row's events and unreadable captures (reader.go).
	reads map[retiredKey]*ReadStats
}

type retiredKey struct {
	comp Component
	row  string
}

type slotInfo struct {
	row    *Row
	proc   *Process
	fields slots
}

// RowState says what became of one catalogue row in one process.
type RowState string

const (
	RowAttached      RowState = "attached"
	RowNotApplicable RowState = "not-applicable" // not this component, or a module it does not link
	// RowNotCovered: the binary links the row's module at a version none of
	// the row's variants covers: a probe point this kpath cannot place there.
	RowNotCovered RowState = "not-covered"
	RowDisabled   RowState = "disabled" // a detail row without --detail
	RowFailed     RowState = "failed"
)

// RowStatus is the outcome of one row for one process.
type RowStatus struct {
	Row     *Row
	State   RowState
	Version string // the binary's version of Row.Module
	Uprobes int    // entry + RETs attached
	// EntryAtPush: the entry probe sits on the frame pointer push after
	// the stack check, which the kernel emulates (Binary.EntrySite).
	EntryAtPush bool
	Err         error // why not attached
}

// Process is a traced process.
type Process struct {
	PID       int
	Component Component
	Exe       string // what /proc/PID/exe pointed to
	GoVersion string
	StartTime uint64 // from /proc/PID/stat: tells a restart from a reused PID
	Rows      []RowStatus

	links []link.Link // kept referenced: a collected link closes its probe
	slots []uint32
}

// Attached counts the rows attached.
func (p *Process) Attached() int {
	n := 0
	for _, r := range p.Rows {
		if r.State == RowAttached {
			n++
		}
	}
	return n
}

// NewTracer loads the BPF program. It needs root or CAP_BPF and CAP_PERFMON.
func NewTracer(opts Options) (*Tracer, error) {
	rows := opts.Rows
	if rows == nil {
		rows = Catalogue
	}
	for i := range rows {
		if err := rows[i].Validate(); err != nil {
			return nil, fmt.Errorf("catalogue: %w", err)
		}
	}
	if err := CheckDetailRows(rows, opts.DetailRows); err != nil {
		return nil, err
	}
	for _, p := range opts.ClientGoPrograms {
		if c, ok := Targets[p]; ok || p == "" || strings.ContainsRune(p, '/') {
			return nil, fmt.Errorf("client-go program %q: want the base name of an executable that is not a control-plane component (%s is)", p, c)
		}
	}
	objs, err := bpf.Load(opts.RingBytes)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if objs.MultiErr != nil {
		log.Warn("kernel has no uprobe_multi: attaching one uprobe at a time; detaching will be slow", "err", objs.MultiErr)
	}
	t := &Tracer{
		objs:    objs,
		rows:    rows,
		opts:    opts,
		log:     log,
		procs:   map[int]*Process{},
		retired: map[retiredKey]uint64{},
		reads:   map[retiredKey]*ReadStats{},
		slots:   make([]atomic.Pointer[slotInfo], bpf.MaxConfigs),
		clock:   newClock(),
	}
	if opts.Operators {
		t.ops = NewOperators()
	}
	for i := bpf.MaxConfigs - 1; i >= 0; i-- {
		t.free = append(t.free, uint32(i))
	}
	return t, nil
}

// Close detaches everything and unloads the program.
func (t *Tracer) Close() error {
	t.mu.Lock()
	for pid := range t.procs {
		t.detachLocked(pid)
	}
	t.mu.Unlock()
	return t.objs.Close()
}

// Attach attaches every catalogue row of component to process pid, opening
// the binary through /proc/PID/exe so that it works across mount namespaces.
// It returns the process with the outcome of each row; the error is set when
// no row could be attached. A process already attached is detached first.
func (t *Tracer) Attach(pid int, comp Component) (*Process, error) {
	return t.AttachIn("/proc", pid, comp)
}

// AttachIn is Attach with the processes under procRoot (the host's /proc
// mounted elsewhere, the agent's --proc): the binary and the start time
// are read there, as discovery found them.
func (t *Tracer) AttachIn(procRoot string, pid int, comp Component) (*Process, error) {
	exe := filepath.Join(procRoot, strconv.Itoa(pid), "exe")
	target, _ := os.Readlink(exe)
	target = strings.TrimSuffix(target, " (deleted)")
	start, err := startTimeIn(procRoot, pid)
	if err != nil {
		return nil, fmt.Errorf("%s pid %d: %w", comp, pid, err)
	}
	bin, err := OpenBinary(exe)
	if err != nil {
		return nil, fmt.Errorf("%s pid %d (%s): %w", comp, pid, target, err)
	}
	defer bin.Close()
	layout, err := layoutFor(bin.GoVersion)
	if err != nil {
		return nil, fmt.Errorf("%s pid %d (%s): %w", comp, pid, target, err)
	}
	ex, err := link.OpenExecutable(exe)
	if err != nil {
		return nil, fmt.Errorf("%s pid %d (%s): %w", comp, pid, target, err)
	}

	p := &Process{PID: pid, Component: comp, Exe: target, GoVersion: bin.GoVersion, StartTime: start}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.procs[pid]; ok {
		t.detachLocked(pid)
	}
	for i := range t.rows {
		row := &t.rows[i]
		if !t.rowFor(row, comp) {
			continue
		}
		st := t.attachRow(p, bin, ex, row, layout)
		p.Rows = append(p.Rows, st)
	}
	p.Rows = collapseVariants(p.Rows)
	t.procs[pid] = p
	if p.Attached() == 0 {
		return p, fmt.Errorf("%s pid %d (%s): no catalogue row attached: %w", comp, pid, target, rowErrors(p))
	}
	return p, nil
}

// collapseVariants keeps one status per probe point. A row with version
// variants is one point: the variants that do not fit this binary say
// nothing beside one that was tried, and a point none of whose variants
// covers the binary's version is reported once, as not covered, with every
// range the variants cover.
func collapseVariants(rows []RowStatus) []RowStatus {
	tried := map[string]bool{}
	ranges := map[string][]string{}
	for _, r := range rows {
		switch r.State {
		case RowNotApplicable:
		case RowNotCovered:
			ranges[r.Row.ID] = append(ranges[r.Row.ID], fmt.Sprintf("%q", r.Row.Versions))
		default:
			tried[r.Row.ID] = true
		}
	}
	out := rows[:0]
	reported := map[string]bool{}
	for _, r := range rows {
		quiet := r.State == RowNotApplicable || r.State == RowNotCovered
		if quiet && tried[r.Row.ID] || r.State == RowNotCovered && reported[r.Row.ID] {
			continue
		}
		if r.State == RowNotCovered {
			reported[r.Row.ID] = true
			fix := "upgrade kpath, or run a version it covers"
			if olderThanEvery(r.Version, ranges[r.Row.ID]) {
				fix = "this version is older than kpath covers"
			}
			r.Err = fmt.Errorf("%w: %s %s; this kpath's rows cover %s: %s", ErrNotCovered, r.Row.Module, r.Version, strings.Join(ranges[r.Row.ID], ", "), fix)
		}
		out = append(out, r)
	}
	return out
}

// olderThanEvery says whether v is below the lower bound of every range.
func olderThanEvery(v string, quoted []string) bool {
	for _, q := range quoted {
		lo, _, err := parseRange(strings.Trim(q, `"`))
		if err != nil || lo == "" || semver.Compare(semver.Canonical(v), lo) >= 0 {
			return false
		}
	}
	return len(quoted) > 0
}

func rowErrors(p *Process) error {
	var errs []error
	for _, r := range p.Rows {
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.Row.ID, r.Err))
		}
	}
	if len(errs) == 0 {
		return errors.New("the catalogue has no rows for this component")
	}
	return errors.Join(errs...)
}

func (t *Tracer) attachRow(p *Process, bin *Binary, ex *link.Executable, row *Row, g goroutineLayout) RowStatus {
	st := RowStatus{Row: row}
	// The version first: a detail row's variant for another version is not
	// applicable, and drops out beside the variant that fits.
	if row.Module != "" {
		v, err := bin.ModuleVersion(row.Module)
		if err != nil {
			st.State, st.Err = RowNotApplicable, err
			return st
		}
		st.Version = v
		ok, err := row.Applies(v)
		if err != nil {
			st.State, st.Err = RowFailed, err
			return st
		}
		if !ok {
			st.State = RowNotCovered
			st.Err = fmt.Errorf("%w: %s %s is outside the row's range %q", ErrNotCovered, row.Module, v, row.Versions)
			return st
		}
	}
	if !t.wants(row) {
		st.State = RowDisabled
		return st
	}
	fn, err := bin.Func(row.Symbol)
	if err != nil {
		st.State, st.Err = RowFailed, err
		return st
	}
	var rets []uint64
	if row.Timed {
		rets, err = bin.Returns(fn)
		if err != nil {
			st.State, st.Err = RowFailed, err
			return st
		}
		if len(rets) == 0 {
			st.State, st.Err = RowFailed, fmt.Errorf("symbol %s has no RET instruction to time its exit", row.Symbol)
			return st
		}
	}
	fields, err := assignSlots(row)
	if err != nil {
		st.State, st.Err = RowFailed, err
		return st
	}

	var (
		links []link.Link
		used  []uint32
	)
	fail := func(err error) RowStatus {
		for _, l := range links {
			l.Close()
		}
		for _, s := range used {
			t.freeSlotLocked(s)
		}
		st.State, st.Err = RowFailed, err
		return st
	}
	alloc := func(cfg bpf.ProbeConfig) (uint32, error) {
		if len(t.free) == 0 {
			return 0, fmt.Errorf("all %d probe slots are in use", bpf.MaxConfigs)
		}
		s := t.free[len(t.free)-1]
		t.free = t.free[:len(t.free)-1]
		used = append(used, s)
		t.slots[s].Store(&slotInfo{row: row, proc: p, fields: fields})
		if cfg.Mode == bpf.ModeEntry || cfg.Mode == bpf.ModePoint {
			cfg.EntrySlot = s
		}
		return s, t.objs.SetConfig(s, &cfg)
	}
	var offs, cookies []uint64
	if len(row.CalledFrom) > 0 {
		sites, err := callSitesOf(bin, row, fn)
		if err != nil {
			return fail(err)
		}
		// One slot a site: where the caller saved what the row reads
		// differs from one call site to the next.
		for _, site := range sites {
			caps, err := resolveSaved(row, site)
			if err != nil {
				return fail(err)
			}
			slot, err := alloc(withMatch(probeConfig(caps, fields, bpf.ModePoint, 0, g, false), row.Only))
			if err != nil {
				return fail(err)
			}
			offs, cookies = append(offs, site.Offset), append(cookies, uint64(slot))
		}
		st.EntryAtPush = true // a CALL rel32 is emulated as the push is
	} else {
		mode := bpf.ModePoint
		if row.Timed {
			mode = bpf.ModeEntry
		}
		site, atPush, err := bin.EntrySite(fn)
		if err != nil {
			return fail(err)
		}
		entrySlot, err := alloc(withMatch(probeConfig(row.Entry, fields, mode, 0, g, row.Announce), row.Only))
		if err != nil {
			return fail(err)
		}
		offs, cookies = append(offs, site), append(cookies, uint64(entrySlot))
		st.EntryAtPush = atPush
	}
	if row.Timed {
		entrySlot := uint32(cookies[0])
		retSlot, err := alloc(probeConfig(row.Exit, fields, bpf.ModeRet, entrySlot, g, false))
		if err != nil {
			return fail(err)
		}
		for _, r := range rets {
			offs = append(offs, r)
			cookies = append(cookies, uint64(retSlot))
		}
	}
	if prog := t.objs.MultiProgram(); prog != nil {
		// One link for the entry and every RET: attached and detached at once.
		l, err := ex.UprobeMulti(nil, prog, &link.UprobeMultiOptions{Addresses: offs, Cookies: cookies, PID: uint32(p.PID)})
		if err != nil {
			return fail(fmt.Errorf("uprobe_multi on %s (%d sites) in pid %d: %w", row.Symbol, len(offs), p.PID, err))
		}
		links = append(links, l)
	} else {
		// RETs first: a call already running when the entry probe lands
		// would otherwise leave an entry that no RET ever completes.
		for i := len(offs) - 1; i >= 0; i-- {
			l, err := ex.Uprobe(row.Symbol, t.objs.Program(), &link.UprobeOptions{Address: offs[i], PID: p.PID, Cookie: cookies[i]})
			if err != nil {
				return fail(fmt.Errorf("uprobe on %s at file offset %#x in pid %d: %w", row.Symbol, offs[i], p.PID, err))
			}
			links = append(links, l)
		}
	}
	st.Uprobes = len(offs)
	p.links = append(p.links, links...)
	p.slots = append(p.slots, used...)
	st.State = RowAttached
	return st
}

func (t *Tracer) freeSlotLocked(s uint32) {
	if err := t.objs.ClearSlot(s); err != nil {
		t.log.Warn("clear probe slot", "slot", s, "err", err)
	}
	t.slots[s].Store(nil)
	t.free = append(t.free, s)
}

// callSitesOf finds the CALLs of fn that a CalledFrom row probes: in each
// caller, those passing one of CallArg when the row names any.
func callSitesOf(bin *Binary, row *Row, fn Func) ([]CallSite, error) {
	var out []CallSite
	for _, name := range row.CalledFrom {
		caller, err := bin.Func(name)
		if err != nil {
			return nil, fmt.Errorf("caller of %s: %w", row.Symbol, err)
		}
		sites, err := bin.CallSites(caller, fn)
		if err != nil {
			return nil, err
		}
		n := 0
		for _, s := range sites {
			if len(row.CallArg) == 0 || slices.Contains(row.CallArg, s.StrArgs[row.CallArgAt]) {
				out = append(out, s)
				n++
			}
		}
		if n == 0 {
			return nil, fmt.Errorf("%s has no call of %s passing %q (inlined, or the code changed: this version needs its own row)",
				name, row.Symbol, row.CallArg)
		}
	}
	return out, nil
}

// resolveSaved turns a row's Spilled captures into reads of the slots
// where the caller, at this site, saved the previous call's results.
func resolveSaved(row *Row, site CallSite) ([]Capture, error) {
	caps := slices.Clone(row.Entry)
	for i, c := range caps {
		if c.Kind != Spilled {
			continue
		}
		d, ok := site.Saved[c.Reg]
		if !ok || d < 0 {
			return nil, fmt.Errorf("at the call of %s at file offset %#x the caller did not save %s of the call before it "+
				"(the code changed: this version needs its own row)", row.Symbol, site.Offset, c.Reg)
		}
		caps[i] = Capture{Field: c.Field, Kind: AtOffset, Reg: RSP, Offset: uint32(d), Size: c.Size}
	}
	return caps, nil
}

// Detach removes every probe of process pid. Detaching an unknown pid is a no-op.
func (t *Tracer) Detach(pid int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.detachLocked(pid)
}

func (t *Tracer) detachLocked(pid int) {
	p, ok := t.procs[pid]
	if !ok {
		return
	}
	for _, l := range p.links {
		l.Close()
	}
	for _, s := range p.slots {
		row := t.slots[s].Load().row
		if h, err := t.objs.Hits(s); err == nil {
			t.retired[retiredKey{p.Component, row.ID}] += h
		}
		if f, err := t.objs.Filtered(s); err == nil && f > 0 {
			t.statsMu.Lock()
			t.readStatsLocked(p.Component, row).Filtered += f
			t.statsMu.Unlock()
		}
		t.freeSlotLocked(s)
	}
	if err := t.objs.ForgetProcess(uint32(pid)); err != nil {
		t.log.Warn("forget stashed entries", "pid", pid, "err", err)
	}
	delete(t.procs, pid)
}

// Processes returns the traced processes, by PID.
func (t *Tracer) Processes() []*Process {
	t.mu.Lock()
	defer t.mu.Unlock()
	ps := make([]*Process, 0, len(t.procs))
	for _, p := range t.procs {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b *Process) int { return a.PID - b.PID })
	return ps
}

// RowHits is how often one row fired in one process.
type RowHits struct {
	Component Component
	PID       int
	Row       string
	Hits      uint64
}

// Hits reads the hit counters of every attached row; PID 0 holds the hits
// of processes that are gone.
func (t *Tracer) Hits() ([]RowHits, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []RowHits
	for k, h := range t.retired {
		out = append(out, RowHits{Component: k.comp, Row: k.row, Hits: h})
	}
	for _, p := range t.procs {
		byRow := map[string]uint64{}
		for _, s := range p.slots {
			h, err := t.objs.Hits(s)
			if err != nil {
				return nil, err
			}
			byRow[t.slots[s].Load().row.ID] += h
		}
		for id, h := range byRow {
			out = append(out, RowHits{Component: p.Component, PID: p.PID, Row: id, Hits: h})
		}
	}
	slices.SortFunc(out, func(a, b RowHits) int {
		if c := strings.Compare(a.Row, b.Row); c != 0 {
			return c
		}
		return a.PID - b.PID
	})
	return out, nil
}

// Drops reads the BPF drop counters by reason.
func (t *Tracer) Drops() (map[string]uint64, error) {
	out := map[string]uint64{}
	for _, c := range bpf.Counters {
		n, err := t.objs.Count(c)
		if err != nil {
			return nil, err
		}
		out[c.String()] = n
	}
	return out, nil
}

// SweepStash forgets entries whose RET never came within maxAge (a
// goroutine that panicked, or a call still running) and returns how many.
func (t *Tracer) SweepStash(maxAge time.Duration) (int, error) {
	now := t.clock.monoNow()
	if now < uint64(maxAge) {
		return 0, nil
	}
	return t.objs.SweepStash(now - uint64(maxAge))
}

// CheckDetailRows says which of ids names no detail row of rows.
func CheckDetailRows(rows []Row, ids []string) error {
	var detail []string
	for _, r := range rows {
		if r.Detail {
			detail = append(detail, r.ID)
		}
	}
	for _, id := range ids {
		if !slices.Contains(detail, id) {
			return fmt.Errorf("%q is not a detail row of the catalogue; detail rows: %s", id, strings.Join(detail, ", "))
		}
	}
	return nil
}
