package correlate

import (
	"slices"
	"sort"
	"time"

	"github.com/kpath/kpath/probes"
)

// ikey is the value of one relation's equalities, within one process.
type ikey struct {
	pid  uint32
	a, b uint64
}

type relIdx struct {
	of, bound, until int
	after            []int
}

// mine is the index key of candidate c under relation r; theirs the key a
// trace's event o looks it up by.
func mine(r *probes.Relation, c *probes.Event) ikey   { return relKey(r, c, true) }
func theirs(r *probes.Relation, o *probes.Event) ikey { return relKey(r, o, false) }

func relKey(r *probes.Relation, e *probes.Event, candidate bool) ikey {
	k := ikey{}
	if !r.AnyProcess {
		k.pid = e.PID
	}
	for i, s := range r.Same {
		key := s.Theirs
		if candidate {
			key = s.Mine
		}
		if i == 0 {
			k.a = key.Value(e)
		} else {
			k.b = key.Value(e)
		}
	}
	return k
}

// wake resolves the traces that wait for an event like h.
func (a *Assembler) wake(si int, h *held, now time.Time) {
	st := &a.stages[si]
	for ri := range st.join.Found {
		r := &st.join.Found[ri]
		k := mine(r, &h.ev)
		ts := st.waiting[ri][k]
		live := ts[:0]
		for _, t := range ts {
			if t.emitted || (!st.join.Many && t.one[si] != nil) {
				continue // it found its event of this stage: it waits no more
			}
			live = append(live, t)
		}
		clear(ts[len(live):]) // what left must not stay alive in a slab's slot
		if len(live) == 0 {
			delete(st.waiting[ri], k)
			continue
		}
		st.waiting[ri][k] = live
		if len(live) > 1 && (r.When == probes.RevisionAfter || r.When == probes.FirstAfter) {
			// The trace of the latest event before it first: the pod's life
			// that a write of its name at this revision belongs to, the
			// reconcile whose branch a result call is on.
			of := st.rels[ri].of
			live = slices.Clone(live)
			if r.When == probes.RevisionAfter {
				slices.SortFunc(live, func(x, y *Assembly) int { return -cmpRev(x.ev(of), y.ev(of)) })
			} else {
				slices.SortFunc(live, func(x, y *Assembly) int { return -cmpStart(x.ev(of), y.ev(of)) })
			}
		}
		// resolve only appends to waiting lists: live's elements stay.
		for _, t := range live {
			a.resolve(t, now)
		}
	}
}

// index adds h to its stage's lists, by start.
func (a *Assembler) index(si int, h *held) {
	st := &a.stages[si]
	for ri := range st.join.Found {
		k := mine(&st.join.Found[ri], &h.ev)
		l, ok := st.index[ri][k]
		if ok {
			l = append(l, h)
		} else {
			l = a.heldSlab.one(h)
		}
		// By start, for the First rules' search; they come almost in order.
		for i := len(l) - 1; i > 0 && l[i].ev.Start.Before(l[i-1].ev.Start); i-- {
			l[i], l[i-1] = l[i-1], l[i]
		}
		st.index[ri][k] = l
	}
}

// unindex takes h out of its stage's lists.
func (a *Assembler) unindex(si int, h *held) {
	st := &a.stages[si]
	for ri := range st.join.Found {
		e := struct {
			rel int
			key ikey
		}{ri, mine(&st.join.Found[ri], &h.ev)}
		l := st.index[e.rel][e.key]
		switch i := slices.Index(l, h); {
		case i == 0:
			l[0] = nil // a slab's slot outlives its list: it must not hold h
			l = l[1:]  // the oldest, as expiry takes them: no copy
		case i > 0:
			l = slices.Delete(l, i, i+1)
		}
		if len(l) == 0 {
			delete(st.index[e.rel], e.key)
		} else {
			st.index[e.rel][e.key] = l
		}
	}
}

// register makes t wait for the events found from its event h of stage si.
func (a *Assembler) register(t *Assembly, si int, h *held) {
	st := &a.stages[si]
	o := &h.ev
	for i := range st.after {
		at := st.afterAt[i]
		k := theirs(&st.after[i], o)
		w := a.stages[at.st].waiting[at.r]
		switch l, ok := w[k]; {
		case !ok:
			w[k] = a.traceSlab.one(t)
		case !slices.Contains(l, t):
			w[k] = append(l, t)
		}
	}
}

// resolve places in t every held event its present events find.
func (a *Assembler) resolve(t *Assembly, now time.Time) {
	for changed := true; changed; {
		changed = false
		for si := range a.stages {
			st := &a.stages[si]
			j := st.join
			if j.Names || (!j.Many && t.one[si] != nil) {
				continue
			}
			for ri := range j.Found {
				if a.find(t, si, ri, now) {
					changed = true
					if !j.Many {
						break
					}
				}
			}
		}
	}
}

// find places the events relation ri of stage si finds in t.
func (a *Assembler) find(t *Assembly, si, ri int, now time.Time) bool {
	st := &a.stages[si]
	j := st.join
	rx := &st.rels[ri]
	placed := false
	for k := range t.n(rx.of) {
		if a.findFrom(t, si, ri, &t.at(rx.of, k).ev, now) {
			placed = true
			if !j.Many {
				break
			}
		}
	}
	return placed
}

// findFrom places what relation ri of stage si finds from o.
func (a *Assembler) findFrom(t *Assembly, si, ri int, o *probes.Event, now time.Time) bool {
	st := &a.stages[si]
	j := st.join
	r := &j.Found[ri]
	rx := &st.rels[ri]
	var lo, hi time.Time
	if r.When == probes.Window {
		lo, hi = t.first(rx.after), t.startOf(rx.until)
		if lo.IsZero() || hi.IsZero() {
			return false
		}
	}
	bound := t.endOf(rx.bound)
	l := st.index[ri][theirs(r, o)]
	i := 0
	switch r.When {
	case probes.FirstAfter:
		i = sort.Search(len(l), func(i int) bool { return !l[i].ev.Start.Before(o.Start) })
	case probes.Window:
		i = sort.Search(len(l), func(i int) bool { return !l[i].ev.Start.Before(lo) })
	}
	free := func(h *held) bool {
		return !h.gone && (!h.joined || j.Shared) && !t.holds(si, h) && (bound.IsZero() || !h.ev.Start.After(bound))
	}
	if r.When == probes.LastBefore {
		// The latest that began no later: search from the end of those.
		for i = sort.Search(len(l), func(i int) bool { return l[i].ev.Start.After(o.Start) }) - 1; i >= 0; i-- {
			if free(l[i]) {
				a.place(t, si, l[i], now)
				return true
			}
		}
		return false
	}
	placed := false
	for ; i < len(l); i++ {
		h := l[i]
		if !free(h) {
			continue
		}
		if !r.Holds(&h.ev, o, lo, hi) {
			if r.When == probes.Window && h.ev.Start.After(hi) {
				break
			}
			continue
		}
		a.place(t, si, h, now)
		if !j.Shared {
			i-- // h left the list under i
			l = st.index[ri][theirs(r, o)]
		}
		placed = true
		if !j.Many || r.First() {
			break
		}
	}
	return placed
}

// place puts held event h into t as stage si: taken from the held events
// unless its stage is Shared, and t then waits for what h finds.
func (a *Assembler) place(t *Assembly, si int, h *held, now time.Time) {
	j := a.stages[si].join
	t.put(si, h)
	h.joined = true
	if j.Waits {
		if h.in == nil {
			h.in = h.in1[:0] // most are in one trace
		}
		h.in = append(h.in, t)
	}
	if !j.Shared {
		h.gone = true
		a.unindex(si, h)
	}
	t.touch(now)
	a.register(t, si, h)
}

// slab hands out one-element slices cut from a shared array: most lists of
// an index hold one entry, and an array of its own for each would be an
// allocation an event. A list that grows leaves for an array of its own
// (its capacity is one). Slots are cleared as their entry leaves, so that
// a slab kept alive by one list holds nothing else alive.
type slab[T any] struct{ free []*T }

// chunk hands out values cut from arrays of n: an event held, a trace
// opened, one allocation for n of them instead of one each. An array lives
// while any of its values is reachable, so what the others pointed at may
// live as long: at most n-1 dead events per live one, and they die within
// the feed's Retain as traffic goes on.
type chunk[T any] struct {
	free []T
	n    int
}

func (c *chunk[T]) next() *T {
	if len(c.free) == 0 {
		c.free = make([]T, c.n)
	}
	v := &c.free[0]
	c.free = c.free[1:]
	return v
}

func (s *slab[T]) one(v *T) []*T {
	if len(s.free) == 0 {
		s.free = make([]*T, 256)
	}
	l := s.free[:1:1]
	l[0] = v
	s.free = s.free[1:]
	return l
}
