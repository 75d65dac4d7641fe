package correlate

import (
	"maps"
	"slices"
	"time"

	"github.com/kpath/kpath/probes"
)

// Assembler builds the traces of one feed from the catalogue's declaration
// of it (probes.Shape): which events name a trace, how every other event is
// found from one already in it, which span each hangs under. It is the one
// mechanism behind every kind of trace: a stage new to kpath is a row and a
// Join, not a state machine. Events that join nothing within their Keep,
// and events refused, are counted by row and reason.
//
// Each event is placed as it arrives: an event that names a trace looks up
// what it relates to among the events held, and a held event looks up the
// traces that wait for it, so the work per event does not grow with the
// traces pending. Not safe for concurrent use: its owner locks.
type Assembler struct {
	shape    *probes.Shape
	opts     AssemblerOptions
	stages   []stageState
	pos      map[string]int
	roots    []int
	required []int
	expects  int

	traces   map[traceKey]*Assembly
	order    []*Assembly
	emitted  []*Assembly // lingering
	pending  map[traceKey][]pendingEvent
	unjoined map[Unjoined]uint64
	stats    AssemblerStats

	heldSlab  slab[held]
	traceSlab slab[Assembly]
	helds     chunk[held]
	assembled chunk[Assembly]
	stoodEvs  chunk[probes.Event]
	names     spanNames
}

// pendingEvent names its trace but may not open it (a receipt of a pod
// no one follows yet): it waits for an event that does.
type pendingEvent struct {
	si int
	h  *held
}

// AssemblerOptions bound how long and how much an Assembler waits.
type AssemblerOptions struct {
	Settle     time.Duration // a complete trace waits this long for stragglers
	Grace      time.Duration // ... or this long while it lacks the Shape's Expects stage
	MaxWait    time.Duration // an incomplete trace is emitted as it is after this long
	Retain     time.Duration // an event waits this long for a trace, where its Join has no Keep
	MaxPending int           // past this many traces pending the oldest is emitted, counted evicted
	// Name returns the identity of the trace an event names.
	Name func(*probes.Event) (string, int64)
	// Emit takes each finished trace; the Assembly is valid during the call.
	Emit func(a *Assembly, complete bool)
	// Complete, when set, says whether a trace is complete, instead of
	// the Shape's Required stages.
	Complete func(a *Assembly) bool
	// Linger keeps an emitted trace this long after its last change for
	// the events of Late stages, which go to Late as they come.
	Linger time.Duration
	Late   func(a *Assembly, ev *probes.Event)
	// Shed drops an emitted trace's events as Emit returns: what the
	// feed's Late needs, it keeps in the trace's Data. A lingering trace
	// is then a few words, not its events.
	Shed bool
	// Forget, when set, is told of each trace the assembler lets go of.
	Forget func(a *Assembly)
	// Alone takes each event of a stage whose Join has Alone that joined
	// no trace within its Keep; the event is valid during the call.
	Alone func(ev *probes.Event, j *probes.Join)
}

// AssemblerStats counts the traces emitted.
type AssemblerStats struct{ Traces, Incomplete, Evicted uint64 }

type traceKey struct {
	s string
	n int64
}

// held is an event not (or not only) in a trace: waiting for one to find it.
type held struct {
	ev     probes.Event
	row    string
	seen   time.Time
	joined bool        // placed in a trace
	gone   bool        // taken (not Shared) or expired
	in     []*Assembly // Waits stages: the traces it is in, to wake when it ends
	in1    [1]*Assembly
}

// stageState is what the assembler holds for one stage of its shape.
type stageState struct {
	join *probes.Join
	// index[r] holds the stage's events by relation r's values, by start;
	// waiting[r] the traces whose relation r's Of event has those values.
	index   []map[ikey][]*held
	waiting []map[ikey][]*Assembly
	held    []*held        // by arrival, for expiry
	open    map[ikey]*held // Waits stages: the announced event of each goroutine
	// Anchors stages: by relation, the events waiting for their trace to
	// open that an event of this stage found from them would open.
	anchoring []map[ikey][]pendingEvent
	after     []probes.Relation // relations of other stages found from this one
	afterAt   []struct{ st, r int }
	// The stages the join names, by position (-1: none).
	rels   []relIdx
	under  []int
	ender  int // the stage whose event ends this one's span
	stands int
}

// maxStages bounds a shape's joins, so that a trace's slots are one array.
const maxStages = 16

// NewAssembler returns an assembler for a shape. The shape must pass Check.
func NewAssembler(shape *probes.Shape, opts AssemblerOptions) *Assembler {
	if err := shape.Check(); err != nil {
		panic("correlate: " + err.Error()) // shapes are the catalogue's data, checked by its tests
	}
	if len(shape.Joins) > maxStages {
		panic("correlate: a shape of more than 16 stages")
	}
	a := &Assembler{shape: shape, opts: opts, pos: map[string]int{}, traces: map[traceKey]*Assembly{},
		pending: map[traceKey][]pendingEvent{}, unjoined: map[Unjoined]uint64{},
		helds: chunk[held]{n: 64}, assembled: chunk[Assembly]{n: 16}, stoodEvs: chunk[probes.Event]{n: 16}}
	a.stages = make([]stageState, len(shape.Joins))
	for i := range shape.Joins {
		j := &shape.Joins[i]
		a.pos[j.Stage] = i
		st := &a.stages[i]
		st.join = j
		for range j.Found {
			st.index = append(st.index, map[ikey][]*held{})
			st.waiting = append(st.waiting, map[ikey][]*Assembly{})
			st.anchoring = append(st.anchoring, map[ikey][]pendingEvent{})
		}
		if j.Waits {
			st.open = map[ikey]*held{}
		}
	}
	for i, j := range shape.Joins {
		for ri, r := range j.Found {
			of := &a.stages[a.pos[r.Of]]
			of.after = append(of.after, r)
			of.afterAt = append(of.afterAt, struct{ st, r int }{i, ri})
		}
	}
	idx := func(stage string) int {
		if i, ok := a.pos[stage]; ok {
			return i
		}
		return -1
	}
	for _, r := range shape.Roots {
		a.roots = append(a.roots, idx(r))
	}
	for _, r := range shape.Required {
		a.required = append(a.required, idx(r))
	}
	a.expects = idx(shape.Expects)
	for i := range a.stages {
		st := &a.stages[i]
		st.ender, st.stands = -1, idx(st.join.Stands)
		for _, r := range st.join.Found {
			ri := relIdx{of: idx(r.Of), bound: idx(r.Bound), until: idx(r.Until)}
			for _, s := range r.After {
				ri.after = append(ri.after, idx(s))
			}
			st.rels = append(st.rels, ri)
		}
		for _, u := range st.join.Under {
			st.under = append(st.under, idx(u))
		}
	}
	for i := range a.stages {
		if e := a.stages[i].join.Ends; e != "" {
			a.stages[idx(e)].ender = i
		}
	}
	return a
}

// rowOf names an event's row for the counters (its stage when made by hand).
func rowOf(ev *probes.Event) string {
	if ev.Probe != "" {
		return ev.Probe
	}
	return ev.Stage
}

func (a *Assembler) count(row, reason string) { a.unjoined[Unjoined{row, reason}]++ }

// Add places one event. now is when it was read.
func (a *Assembler) Add(event probes.Event, now time.Time) {
	// The one copy of the event: everything below points into it (taking
	// the parameter's address would move a second copy to the heap).
	h := a.helds.next()
	*h = held{ev: event, seen: now}
	ev := &h.ev
	h.row = rowOf(ev)
	si, ok := a.pos[ev.Stage]
	if !ok {
		a.count(h.row, "no-join")
		return
	}
	st := &a.stages[si]
	j := st.join
	if j.Names {
		if ev.InFlight {
			return // a trace is named by what happened, not by what is announced
		}
		if j.Require != nil && !j.Require(ev) {
			a.count(h.row, j.Refused)
			return
		}
		k, n := a.opts.Name(ev)
		key := traceKey{k, n}
		t, ok := a.traces[key]
		h.joined = true
		switch {
		case ok && t.emitted:
			if !j.Late {
				a.count(h.row, "after-trace")
				return
			}
			if !a.opts.Shed {
				t.put(si, h)
			}
			t.touch(now)
			if a.opts.Late != nil {
				a.opts.Late(t, &h.ev)
			}
			return
		case !ok && j.Opens != nil && !j.Opens(ev) && !a.anchored(si, ev):
			h.joined = false
			st.held = append(st.held, h)
			a.pending[key] = append(a.pending[key], pendingEvent{si, h})
			for i := range st.after {
				if at := st.afterAt[i]; a.stages[at.st].join.Anchors {
					k := theirs(&st.after[i], ev)
					a.stages[at.st].anchoring[at.r][k] = append(a.stages[at.st].anchoring[at.r][k], pendingEvent{si, h})
				}
			}
			return
		case !ok:
			t = a.open(key, now)
		}
		if j.Many || t.one[si] == nil {
			t.put(si, h)
		} else {
			// The later report of the same stage (the RPC's own span over
			// one derived) takes the place of the first.
			t.one[si] = h
		}
		t.touch(now)
		a.register(t, si, h)
		a.resolve(t, now)
		return
	}
	if j.Waits && !ev.InFlight {
		if o, ok := st.open[ikey{ev.PID, ev.Goroutine, 0}]; ok && o.ev.InFlight {
			// The end of an announced event: the same one, now whole.
			a.unindex(si, o)
			o.ev, o.seen = *ev, now
			a.index(si, o)
			delete(st.open, ikey{ev.PID, ev.Goroutine, 0})
			st.held = append(st.held, o) // from now on it expires by its Keep
			for _, t := range o.in {
				t.touch(now)
			}
			a.wake(si, o, now)
			return
		}
	}
	if j.Waits && ev.InFlight {
		if old, ok := st.open[ikey{ev.PID, ev.Goroutine, 0}]; ok && !old.joined {
			// A new announcement on its goroutine: that one ended unseen
			// (Pairs counts it, no-end).
			old.gone = true
			a.unindex(si, old)
		}
		st.open[ikey{ev.PID, ev.Goroutine, 0}] = h
	} else {
		st.held = append(st.held, h)
	}
	a.index(si, h)
	a.wake(si, h, now)
	if j.Anchors && !h.joined {
		a.anchor(si, h, now)
	}
}

// open starts the trace named key, with the events that waited for it.
func (a *Assembler) open(key traceKey, now time.Time) *Assembly {
	t := a.trace(key, now)
	for _, p := range a.pending[key] {
		if !p.h.gone {
			p.h.joined, p.h.gone = true, true // in the trace now, no longer held
			a.unanchor(p.si, p.h)
			t.put(p.si, p.h)
			a.register(t, p.si, p.h)
		}
	}
	delete(a.pending, key)
	return t
}

// unanchor takes a waiting event out of the lists of what would open its
// trace.
func (a *Assembler) unanchor(si int, h *held) {
	st := &a.stages[si]
	for i := range st.after {
		at := st.afterAt[i]
		if !a.stages[at.st].join.Anchors {
			continue
		}
		m := a.stages[at.st].anchoring[at.r]
		k := theirs(&st.after[i], &h.ev)
		if l := slices.DeleteFunc(m[k], func(p pendingEvent) bool { return p.h == h }); len(l) == 0 {
			delete(m, k)
		} else {
			m[k] = l
		}
	}
}

// anchored says whether an event that may not open its trace finds a held
// event of an Anchors stage, which opens it.
func (a *Assembler) anchored(si int, ev *probes.Event) bool {
	st := &a.stages[si]
	for i := range st.after {
		at := st.afterAt[i]
		if !a.stages[at.st].join.Anchors {
			continue
		}
		r := &st.after[i]
		for _, h := range a.stages[at.st].index[at.r][theirs(r, ev)] {
			if !h.gone && !h.joined && r.Holds(&h.ev, ev, time.Time{}, time.Time{}) {
				return true
			}
		}
	}
	return false
}

// anchor opens the trace of a waiting event that h, of an Anchors stage,
// is found from.
func (a *Assembler) anchor(si int, h *held, now time.Time) {
	st := &a.stages[si]
	for ri := range st.join.Found {
		r := &st.join.Found[ri]
		// Only waiting events are listed: open and forget take theirs out.
		for _, p := range st.anchoring[ri][mine(r, &h.ev)] {
			if r.Holds(&h.ev, &p.h.ev, time.Time{}, time.Time{}) {
				name, n := a.opts.Name(&p.h.ev)
				a.resolve(a.open(traceKey{name, n}, now), now)
				return
			}
		}
	}
}

// trace returns the trace named k, made if new; past MaxPending the
// oldest pending is emitted as it is, counted evicted.
func (a *Assembler) trace(k traceKey, now time.Time) *Assembly {
	if t, ok := a.traces[k]; ok {
		return t
	}
	if a.opts.MaxPending > 0 && len(a.traces)-len(a.emitted) >= a.opts.MaxPending {
		for _, t := range a.order {
			if !t.emitted {
				a.stats.Evicted++
				a.emitTrace(t, false)
				break
			}
		}
	}
	t := a.assembled.next()
	*t = Assembly{key: k, a: a, created: now, changed: now}
	a.traces[k] = t
	a.order = append(a.order, t)
	return t
}

// Flush emits the traces complete and settled, and those that waited
// MaxWait, and forgets held events past their Keep, counting those that
// joined nothing.
func (a *Assembler) Flush(now time.Time) {
	for _, t := range a.order {
		if t.emitted {
			continue
		}
		wait := a.opts.Settle
		if a.expects >= 0 && t.ev(a.expects) == nil {
			wait = max(wait, a.opts.Grace)
		}
		switch {
		case a.complete(t) && now.Sub(t.changed) >= wait:
			a.emitTrace(t, true)
		case now.Sub(t.created) >= a.opts.MaxWait:
			a.emitTrace(t, false)
		}
	}
	a.order = slices.DeleteFunc(a.order, func(t *Assembly) bool { return t.emitted })
	// The lingering are queued by when they last changed: only the front
	// is looked at, and one that changed since it was queued goes to the
	// back, so a flush costs what expires, not what lingers.
	n := 0
	for n < len(a.emitted) {
		t := a.emitted[n]
		if now.Sub(t.changed) <= a.opts.Linger {
			if t.gen == t.queuedGen {
				break
			}
			t.queuedGen = t.gen
			a.emitted = append(a.emitted, t)
			a.emitted[n] = nil
			n++
			continue
		}
		if a.traces[t.key] == t {
			delete(a.traces, t.key)
		}
		if a.opts.Forget != nil {
			a.opts.Forget(t)
		}
		a.emitted[n] = nil
		n++
	}
	a.emitted = a.emitted[n:]
	for si := range a.stages {
		a.expire(si, now)
	}
}

// complete says whether t is complete; asked again only once t changed
// (a feed's own test can cost: the pod's reads its whole story).
func (a *Assembler) complete(t *Assembly) bool {
	if t.checked && t.gen == t.checkedGen {
		return t.wasComplete
	}
	c := t.complete()
	if a.opts.Complete != nil {
		c = a.opts.Complete(t)
	}
	t.checked, t.checkedGen, t.wasComplete = true, t.gen, c
	return c
}

// expire forgets the held events of stage si past their Keep, counting
// those that joined nothing. They are held in the order they came, each
// stage with one Keep, so only the oldest need looking at.
func (a *Assembler) expire(si int, now time.Time) {
	st := &a.stages[si]
	keep := st.join.Keep
	if keep == 0 {
		keep = a.opts.Retain
	}
	n := 0
	for n < len(st.held) {
		h := st.held[n]
		if !h.gone && now.Sub(h.seen) <= keep {
			break
		}
		if !h.gone {
			a.forget(si, h)
		}
		h.in = nil
		st.held[n] = nil
		n++
	}
	st.held = st.held[n:]
	// Announced events wait for their end as long as anything waits.
	for k, h := range st.open {
		if now.Sub(h.seen) > a.opts.Retain {
			delete(st.open, k)
			a.forget(si, h)
			h.in = nil
		}
	}
}

// forget lets go of a held event past its Keep, counting it if it joined
// nothing.
func (a *Assembler) forget(si int, h *held) {
	h.gone = true
	a.unindex(si, h)
	if h.joined {
		return
	}
	if j := a.stages[si].join; j.Alone && a.opts.Alone != nil {
		a.opts.Alone(&h.ev, j)
	} else {
		a.count(h.row, j.Unjoined)
	}
	if a.stages[si].join.Names {
		a.unanchor(si, h)
		k, n := a.opts.Name(&h.ev)
		key := traceKey{k, n}
		if l := slices.DeleteFunc(a.pending[key], func(p pendingEvent) bool { return p.h == h }); len(l) == 0 {
			delete(a.pending, key)
		} else {
			a.pending[key] = l
		}
	}
}

// emitTrace hands t to the feed and stops its waiting.
func (a *Assembler) emitTrace(t *Assembly, complete bool) {
	t.emitted = true
	if a.opts.Linger > 0 {
		t.queuedGen = t.gen
		a.emitted = append(a.emitted, t)
	} else {
		delete(a.traces, t.key)
		defer func() {
			if a.opts.Forget != nil {
				a.opts.Forget(t)
			}
		}()
	}
	t.settle()
	t.checked = false
	if complete && !a.complete(t) {
		complete = false // settle took back what made it so
	}
	a.stats.Traces++
	if !complete {
		a.stats.Incomplete++
	}
	a.opts.Emit(t, complete)
	// Unregister: the traces waiting lists are keyed by goroutines and
	// raft IDs that never come again.
	for si := range a.stages {
		if t.one[si] == nil {
			continue
		}
		st := &a.stages[si]
		o := &t.one[si].ev
		for i := range st.after {
			at := st.afterAt[i]
			k := theirs(&st.after[i], o)
			w := a.stages[at.st].waiting[at.r]
			l := slices.DeleteFunc(w[k], func(x *Assembly) bool { return x == t })
			if len(l) == 0 {
				delete(w, k)
			} else {
				w[k] = l
			}
		}
		if st.join.Waits {
			for k := range t.n(si) {
				h := t.at(si, k)
				h.in = slices.DeleteFunc(h.in, func(x *Assembly) bool { return x == t })
			}
		}
	}
	if a.opts.Shed && a.opts.Linger > 0 {
		t.one, t.more, t.stood = [maxStages]*held{}, nil, nil
	}
}

// Refuse counts an event the feed turned away before it reached the
// assembler, with the assembler's own counts of events that joined
// nothing.
func (a *Assembler) Refuse(ev *probes.Event, reason string) { a.count(rowOf(ev), reason) }

// Unjoined returns the counts of events that joined no trace.
func (a *Assembler) Unjoined() map[Unjoined]uint64 { return maps.Clone(a.unjoined) }

// Stats returns the trace counts.
func (a *Assembler) Stats() AssemblerStats { return a.stats }

// Held is how many events wait for a trace or may join more.
func (a *Assembler) Held() int {
	n := 0
	for _, st := range a.stages {
		n += len(st.held)
	}
	return n
}
