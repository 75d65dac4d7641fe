package probes

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/bits"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/kpath/kpath/bpf"
)

// PollInterval is how often the reader looks at the ring buffer when the
// BPF program has not woken it (it does once a quarter of the ring, at most
// 256 KiB, is unread). Every look is a wakeup of the agent: at 25 ms, the
// looks and the correlator's flushes were most of an idle agent's CPU
// (about 1 % of a core here). Events reach the correlator up to this late,
// so a complete trace settles for longer than this (correlate.Settle).
const PollInterval = 100 * time.Millisecond

// DecodeErrors counts ring-buffer records that could not be decoded: short
// records, and records of a slot that was freed (its process detached)
// before the record was read.
type DecodeErrors struct {
	Short, StaleSlot uint64
}

// Read delivers every event from the ring buffer to fn until ctx ends. fn
// runs on the reading goroutine: keep it quick, or the ring fills and the
// kernel drops (counted as ringbuf_full). One goroutine reads a tracer
// (its decoding state is its own).
func (t *Tracer) Read(ctx context.Context, fn func(Event)) error {
	rd, err := ringbuf.NewReader(t.objs.Events())
	if err != nil {
		return fmt.Errorf("open ring buffer: %w", err)
	}
	w, err := newRingWaiter(t.objs.Events())
	if err != nil {
		rd.Close()
		return err
	}
	go func() {
		<-ctx.Done()
		w.close()
		rd.Close()
	}()
	// ReadInto never blocks: a deadline in the past makes it return what the
	// ring holds and then os.ErrDeadlineExceeded. The reader waits in Go's
	// netpoller instead (ringWaiter).
	rd.SetDeadline(time.Unix(1, 0))
	var rec ringbuf.Record
	for {
		for rd.AvailableBytes() > 0 {
			err := rd.ReadInto(&rec)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("read ring buffer: %w", err)
			}
			if ev, ok := t.decode(rec.RawSample); ok {
				fn(ev)
			}
		}
		t.clock.maybeRefresh(t.clock.monoNow())
		if err := w.wait(time.Now().Add(PollInterval), func() bool { return rd.AvailableBytes() > 0 }); err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("wait for the ring buffer: %w", err)
		}
	}
}

// ringWaiter waits for the ring buffer in Go's netpoller, woken by the BPF
// program's wakeups or a deadline. cilium/ebpf's Reader waits in a blocking
// epoll_wait of its own instead: a goroutine in a blocking syscall keeps its
// P, and every poll that lasted long enough made the runtime's sysmon hand
// the P off and start polling every 20 µs again. On this VM those wakeups
// cost the agent more CPU than all its decoding (measured: docs/benchmarks.md).
type ringWaiter struct {
	f  *os.File
	rc syscall.RawConn
}

func newRingWaiter(m *ebpf.Map) (*ringWaiter, error) {
	// A duplicate: closing the os.File must not close the map.
	fd, err := unix.FcntlInt(uintptr(m.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("ring buffer: dup its fd: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("ring buffer: make its fd non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(fd), "ringbuf")
	// A file the netpoller could not take has no deadlines.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, fmt.Errorf("ring buffer: Go's netpoller does not take its fd (kernel without poll on BPF ring buffers?): %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("ring buffer: %w", err)
	}
	return &ringWaiter{f: f, rc: rc}, nil
}

// wait returns once ready says so (checked first, and again after each
// wakeup) or at until.
func (w *ringWaiter) wait(until time.Time, ready func() bool) error {
	if err := w.f.SetReadDeadline(until); err != nil {
		return err
	}
	err := w.rc.Read(func(uintptr) bool { return ready() })
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	return err
}

func (w *ringWaiter) close() { w.f.Close() }

// DecodeErrors returns the decode error counts so far.
func (t *Tracer) DecodeErrors() DecodeErrors {
	t.statsMu.Lock()
	defer t.statsMu.Unlock()
	return t.decodeErrs
}

func (t *Tracer) decode(raw []byte) (Event, bool) {
	if len(raw) < int(unsafe.Sizeof(bpf.Event{})) {
		t.statsMu.Lock()
		t.decodeErrs.Short++
		t.statsMu.Unlock()
		return Event{}, false
	}
	// The record is a struct event written by the same architecture.
	be := (*bpf.Event)(unsafe.Pointer(&raw[0]))
	// No lock on the way to the slot: Attach holds t.mu through ELF
	// parsing and attaching, and the reader must keep draining the ring.
	var info *slotInfo
	if int(be.Slot) < len(t.slots) {
		info = t.slots[be.Slot].Load()
	}
	if info == nil || uint32(info.proc.PID) != be.Pid {
		t.statsMu.Lock()
		t.decodeErrs.StaleSlot++
		t.statsMu.Unlock()
		return Event{}, false
	}
	row, comp := info.row, info.proc.Component
	t.clock.maybeRefresh(max(be.StartNs, be.EndNs))

	ev := Event{
		Row:             row,
		Component:       comp,
		Stage:           row.Stage,
		Probe:           row.ID,
		PID:             be.Pid,
		TID:             be.Tid,
		Goroutine:       be.Goid,
		ParentGoroutine: be.ParentGoid,
		Start:           t.clock.wall(be.StartNs),
		End:             t.clock.wall(be.EndNs),
		Point:           !row.Timed,
		InFlight:        row.Timed && be.EndNs == 0,
		Truncated:       be.Flags&0xff != 0,
	}
	for i, c := range row.Entry {
		t.setField(&ev, c, be, info.fields[c.Field])
		if be.Flags&(1<<(8+i)) != 0 {
			ev.Unread |= 1 << c.Field
		}
	}
	// A timed row's RET captures flag their own bits.
	exitBit := 8 + bpf.MaxCaptures
	if !ev.InFlight {
		for i, c := range row.Exit {
			t.setField(&ev, c, be, info.fields[c.Field])
			if be.Flags&(1<<(exitBit+i)) != 0 {
				ev.Unread |= 1 << c.Field
			}
		}
	} else {
		ev.End = ev.Start
	}
	ev.finish(row)

	t.statsMu.Lock()
	defer t.statsMu.Unlock()
	rs := t.readStatsLocked(comp, row)
	if row.Only != nil && !slices.Contains(row.Only.Values, ev.StringField(row.Only.Field)) {
		// Not a call the row traces (the BPF program filters these first;
		// a string longer than its buffer gets here): its other captures
		// read another layout, so they are not counted.
		rs.Filtered++
		return Event{}, false
	}
	rs.Events++
	for u := ev.Unread; u != 0; u &= u - 1 {
		rs.Unread[Field(bits.TrailingZeros64(u))]++
	}
	return ev, true
}

// ReadStats says what one row's events read in one component: how many
// it decoded, how many Row.Only filtered out, and how often each capture
// could not be read. A row whose captures keep failing reads a layout the
// binary does not have.
type ReadStats struct {
	Component Component
	Row       string
	Events    uint64
	Filtered  uint64
	Unread    map[Field]uint64
	row       *Row
}

// Since is what happened between prev, an earlier ReadStats of the same
// row, and rs.
func (rs ReadStats) Since(prev ReadStats) ReadStats {
	d := rs
	d.Events, d.Filtered = rs.Events-prev.Events, rs.Filtered-prev.Filtered
	d.Unread = make(map[Field]uint64, len(rs.Unread))
	for f, n := range rs.Unread {
		d.Unread[f] = n - prev.Unread[f]
	}
	return d
}

// BrokenReads lists the captures of a row that failed in nearly every
// event it saw (at least 9 in 10, over at least 5): the binary's layout is
// not the one the row reads. Optional captures (a pointer that is nil
// when the thing is absent) are not judged.
func BrokenReads(rs ReadStats) []Field {
	if rs.Events < 5 {
		return nil
	}
	var out []Field
	for f, n := range rs.Unread {
		if n*10 >= rs.Events*9 && (rs.row == nil || !rs.row.optional(f)) {
			out = append(out, f)
		}
	}
	slices.Sort(out)
	return out
}

func (r *Row) optional(f Field) bool {
	for _, c := range slices.Concat(r.Entry, r.Exit) {
		if c.Field == f {
			return c.Optional
		}
	}
	return false
}

// readStatsLocked needs t.statsMu.
func (t *Tracer) readStatsLocked(comp Component, row *Row) *ReadStats {
	k := retiredKey{comp, row.ID}
	rs := t.reads[k]
	if rs == nil {
		rs = &ReadStats{Component: comp, Row: row.ID, Unread: map[Field]uint64{}, row: row}
		t.reads[k] = rs
	}
	return rs
}

// ReadStats returns the read statistics of every row that fired, by
// component and row.
func (t *Tracer) ReadStats() []ReadStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	// What the BPF program filtered out in the slots still attached, on
	// top of what the detached ones left (detachLocked).
	bpfFiltered := map[retiredKey]uint64{}
	var rows []*slotInfo
	for _, p := range t.procs {
		for _, s := range p.slots {
			info := t.slots[s].Load()
			if info.row.Only == nil {
				continue
			}
			if f, err := t.objs.Filtered(s); err == nil && f > 0 {
				bpfFiltered[retiredKey{p.Component, info.row.ID}] += f
				rows = append(rows, info)
			}
		}
	}
	t.statsMu.Lock()
	defer t.statsMu.Unlock()
	for _, info := range rows {
		t.readStatsLocked(info.proc.Component, info.row)
	}
	out := make([]ReadStats, 0, len(t.reads))
	for k, rs := range t.reads {
		c := *rs
		c.Filtered += bpfFiltered[k]
		c.Unread = maps.Clone(rs.Unread)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b ReadStats) int {
		if c := strings.Compare(string(a.Component), string(b.Component)); c != 0 {
			return c
		}
		return strings.Compare(a.Row, b.Row)
	})
	return out
}

func (t *Tracer) setField(ev *Event, c Capture, be *bpf.Event, slot uint8) {
	if p := ev.str(c.Field); p != nil {
		n := min(int(be.StrLen[slot]), bpf.StrLen)
		b := unsafe.Slice((*byte)(unsafe.Pointer(&be.Str[slot][0])), n)
		switch c.Field {
		case FieldKey, FieldName, FieldUID:
			*p = string(b) // one per object: nothing to share
		default:
			*p = t.names.of(b)
		}
		return
	}
	v := int64(be.Num[slot]) + c.Add
	switch c.Field {
	case FieldRevision:
		ev.Revision = v
	case FieldSucceeded:
		ev.Succeeded, ev.SucceededSet = v != 0, true
	case FieldRaftID:
		ev.RaftID = uint64(v)
	case FieldFailed:
		ev.Failed = v != 0
	case FieldRVText0, FieldRVText1, FieldRVLen:
		switch c.Field {
		case FieldRVText0:
			ev.rvText[0] = uint64(v)
		case FieldRVText1:
			ev.rvText[1] = uint64(v)
		default:
			ev.rvLen = uint64(v)
		}
		ev.Revision = revText(ev.rvText, ev.rvLen)
	case FieldStatuses:
		ev.Statuses = int(v)
	case FieldCode:
		ev.Code = int(v)
	case FieldElapsed:
		ev.Elapsed = time.Duration(v)
	case FieldHandle:
		ev.Handle = uint64(v)
	case FieldBeginWall:
		ev.begin[0] = uint64(v)
	case FieldBeginExt:
		ev.begin[1] = uint64(v)
	case FieldStartedWall0, FieldStartedExt0, FieldStartedWall1, FieldStartedExt1:
		i := int(c.Field-FieldStartedWall0) / 2
		ev.started[i][int(c.Field-FieldStartedWall0)%2] = uint64(v)
	}
}

// interned maps the strings of the captures that repeat to one copy each,
// so that decoding them allocates nothing; it starts over when full.
type interned struct{ m map[string]string }

const maxInterned = 4096

func (in *interned) of(b []byte) string {
	if s, ok := in.m[string(b)]; ok {
		return s
	}
	if in.m == nil || len(in.m) >= maxInterned {
		in.m = make(map[string]string, 256)
	}
	s := string(b)
	in.m[s] = s
	return s
}

// finish derives what needs several captures together.
func (ev *Event) finish(row *Row) {
	// A completion site holds its span's start: the event is the span.
	if t := goTime(ev.begin[0], int64(ev.begin[1])); !t.IsZero() && !t.After(ev.End) {
		ev.Start, ev.Point = t, false
	}
	if row.Role != Closes {
		ev.StartFromElapsed() // a close's Elapsed is its span's, for Pairs
	}
	if ev.Statuses <= 0 {
		return
	}
	n := 0
	for _, c := range row.Entry {
		if c.Field == FieldStartedWall0 || c.Field == FieldStartedWall1 {
			n++
		}
	}
	n = min(n, ev.Statuses)
	ev.ContainersStarted = make([]time.Time, n)
	for i := range n {
		ev.ContainersStarted[i] = goTime(ev.started[i][0], int64(ev.started[i][1]))
	}
}

// goTime decodes a Go time.Time from its wall and ext words (src/time/time.go):
// with the monotonic bit, wall holds 33 bits of seconds since 1885 and ext
// the monotonic reading; without it, ext holds the seconds since year 1. A
// zero Time (a container not running) stays zero.
func goTime(wall uint64, ext int64) time.Time {
	const (
		hasMonotonic   = 1 << 63
		nsecMask       = 1<<30 - 1
		wallToInternal = (1884*365 + 1884/4 - 1884/100 + 1884/400) * 86400
		unixToInternal = (1969*365 + 1969/4 - 1969/100 + 1969/400) * 86400
	)
	nsec := int64(wall & nsecMask)
	sec := ext
	if wall&hasMonotonic != 0 {
		sec = wallToInternal + int64(wall<<1>>31)
	}
	if sec == 0 && nsec == 0 {
		return time.Time{}
	}
	return time.Unix(sec-unixToInternal, nsec)
}

// revText parses a resourceVersion read as two little-endian words of
// text and a length: up to 16 decimal digits. Anything else (a longer or
// unreadable string, or one not yet complete) gives 0.
func revText(w [2]uint64, n uint64) int64 {
	if n == 0 || n > 16 {
		return 0
	}
	var rev int64
	for i := range n {
		c := byte(w[i/8] >> (8 * (i % 8)))
		if c < '0' || c > '9' {
			return 0
		}
		rev = rev*10 + int64(c-'0')
	}
	return rev
}
