package correlate

import (
	"slices"
	"strings"
	"time"

	"github.com/kpath/kpath/probes"
)

// Assembly is one trace being built: the events of each stage in it.
type Assembly struct {
	key              traceKey
	a                *Assembler
	one              [maxStages]*held // each stage's first event
	more             []extra          // Many stages: the others
	created, changed time.Time
	emitted          bool
	// stood is the event a Stands join made, for stage stoodAt: cut from
	// the assembler's chunk, so that a trace of a shape without one (a
	// lingering pod) is not the size of an event bigger.
	stood   *probes.Event
	stoodAt int
	// Data is the feed's own state of the trace (what it already sent).
	Data any

	gen, checkedGen      uint64 // changes, and the change complete was last asked at
	queuedGen            uint64 // lingering: the change it was queued at
	checked, wasComplete bool
}

func (t *Assembly) touch(now time.Time) { t.changed = now; t.gen++ }

type extra struct {
	si int
	h  *held
}

func (t *Assembly) n(si int) int {
	if t.one[si] == nil {
		return 0
	}
	n := 1
	for _, x := range t.more {
		if x.si == si {
			n++
		}
	}
	return n
}

func (t *Assembly) at(si, k int) *held {
	if k == 0 {
		return t.one[si]
	}
	for _, x := range t.more {
		if x.si == si {
			if k--; k == 0 {
				return x.h
			}
		}
	}
	return nil
}

func (t *Assembly) put(si int, h *held) {
	if t.one[si] == nil {
		t.one[si] = h
		return
	}
	t.more = append(t.more, extra{si, h})
}

func (t *Assembly) holds(si int, h *held) bool {
	if t.one[si] == h {
		return true
	}
	for _, x := range t.more {
		if x.si == si && x.h == h {
			return true
		}
	}
	return false
}

// ev is the first event of stage si in t, or the one a Stands join made
// for it; nil for none (or si -1).
func (t *Assembly) ev(si int) *probes.Event {
	switch {
	case si < 0:
		return nil
	case t.one[si] != nil:
		return &t.one[si].ev
	case t.stood != nil && t.stoodAt == si:
		return t.stood
	}
	return nil
}

func (t *Assembly) startOf(si int) time.Time {
	if e := t.ev(si); e != nil {
		return e.Start
	}
	return time.Time{}
}

func (t *Assembly) endOf(si int) time.Time {
	if e := t.ev(si); e != nil {
		return e.End
	}
	return time.Time{}
}

func (t *Assembly) first(sis []int) time.Time {
	for _, si := range sis {
		if e := t.ev(si); e != nil {
			return e.Start
		}
	}
	return time.Time{}
}

// Event returns the first event of a stage in the trace (or the one a
// Stands join made for it), nil when there is none.
func (t *Assembly) Event(stage string) *probes.Event {
	if i, ok := t.a.pos[stage]; ok {
		return t.ev(i)
	}
	return nil
}

// Events returns every event of a stage in the trace.
func (t *Assembly) Events(stage string) []*probes.Event {
	i, ok := t.a.pos[stage]
	if !ok {
		return nil
	}
	out := make([]*probes.Event, t.n(i))
	for k := range out {
		out[k] = &t.at(i, k).ev
	}
	return out
}

// Key is the trace's identity, as the feed's Name gave it.
func (t *Assembly) Key() (string, int64) { return t.key.s, t.key.n }

// settle folds in what a trace's events say of each other once they are
// all there: out-of-bound finds, the stage a Stands event stands for.
func (t *Assembly) settle() {
	a := t.a
	for si := range a.stages {
		j := a.stages[si].join
		for ri := range j.Found {
			if b := t.endOf(a.stages[si].rels[ri].bound); !b.IsZero() && t.one[si] != nil && t.one[si].ev.Start.After(b) {
				// Found before the bound was known, and out of it.
				a.count(t.one[si].row, j.Refused)
				t.one[si] = nil
				if i := slices.IndexFunc(t.more, func(x extra) bool { return x.si == si }); i >= 0 {
					t.one[si] = t.more[i].h
					t.more = slices.Delete(t.more, i, i+1)
				}
			}
		}
	}
	for si := range a.stages {
		st := &a.stages[si]
		if st.stands < 0 || t.one[si] == nil || t.ev(st.stands) != nil {
			continue
		}
		from := t.ev(st.rels[0].of)
		if from == nil {
			continue
		}
		if t.stood == nil {
			t.stood = a.stoodEvs.next()
		}
		*t.stood = t.one[si].ev
		t.stood.Stage, t.stood.End = st.join.Stands, from.End
		t.stoodAt = st.stands
	}
}

// ender is the event that Ends stage si's span, if the trace has one: the
// span ends at its start.
func (t *Assembly) ender(si int) *probes.Event {
	if e := t.a.stages[si].ender; e >= 0 && t.one[e] != nil {
		return &t.one[e].ev
	}
	return nil
}

// complete says whether t has every required stage, nothing it waits for
// still open.
func (t *Assembly) complete() bool {
	for _, s := range t.a.required {
		if t.ev(s) == nil && !t.canStand(s) {
			return false
		}
	}
	for si := range t.a.stages {
		if t.a.stages[si].join.Waits && t.inFlight(si) {
			return false
		}
	}
	return true
}

func (t *Assembly) canStand(s int) bool {
	for si := range t.a.stages {
		st := &t.a.stages[si]
		if st.stands == s && t.one[si] != nil && t.ev(st.rels[0].of) != nil {
			return true
		}
	}
	return false
}

func (t *Assembly) inFlight(si int) bool {
	for k := range t.n(si) {
		if t.at(si, k).ev.InFlight {
			return true
		}
	}
	return false
}

func (t *Assembly) missingEnds() []string {
	var out []string
	for si, st := range t.a.stages {
		if !st.join.Waits {
			continue
		}
		if t.inFlight(si) {
			out = append(out, st.join.Stage+"-end")
		}
	}
	return out
}

// missing names what an incomplete trace lacks.
func (t *Assembly) missing() string {
	out := t.missingEnds()
	for _, s := range t.a.required {
		if t.ev(s) == nil && !t.canStand(s) {
			out = append(out, t.a.stages[s].join.Stage)
		}
	}
	return strings.Join(out, ",")
}

func cmpRev(x, y *probes.Event) int {
	switch {
	case x == nil || y == nil:
		return 0
	case x.Revision < y.Revision:
		return -1
	case x.Revision > y.Revision:
		return 1
	}
	return 0
}

func cmpStart(x, y *probes.Event) int {
	if x == nil || y == nil {
		return 0
	}
	return x.Start.Compare(y.Start)
}
