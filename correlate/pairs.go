package correlate

import (
	"sync"
	"time"

	"github.com/kpath/kpath/probes"
)

// Pairs builds the spans the catalogue declares from two entry hits: an
// event of a row that Opens a span and one of a row that Closes it, joined
// By goroutine or UID (probes.Row). It is the userspace twin of the BPF
// program's entry/RET pairing, for spans whose end is a function that runs
// at completion rather than a RET, which a uprobe would single-step.
// Every other event passes through unchanged; every event that joins
// nothing is counted by row and reason.
type Pairs struct {
	ttl     time.Duration
	maxOpen int

	mu   sync.Mutex
	open map[probes.PairKey]*openEnd
	// opens: an open span's event is larger than a map keeps in place, so
	// each insert would allocate one; cut them from chunks instead. Small
	// ones: a span that never closes (a call that failed before its
	// completion site) holds its chunk for the TTL, minutes.
	opens    chunk[openEnd]
	unjoined map[Unjoined]uint64
}

// closeSkew bounds how late a close's Elapsed can say its span began: it
// is read some time before the hit, and the thread can wait for a CPU in
// between (the lab's 2 cores under a burst of pod starts showed it past
// the filters' few hundred µs). A begin later than this after the open
// belongs to another span; one before it is the open's own, begun by the
// open at the latest (probes.Event.ClosedBy).
const closeSkew = 5 * time.Millisecond

// Unjoined names one count of events that built no span.
type Unjoined struct {
	Row    string // catalogue row ID
	Reason string // no-start, no-end, no-room, no-key, or the row's own Unpaired reason
}

type openEnd struct {
	ev   probes.Event
	seen time.Time
}

// NewPairs returns a pairer that gives up on an open span after ttl
// (counted no-end): a goroutine that panicked, a call that failed before
// the completion site. At most maxOpen spans wait (0: 100 000); past that
// the new one is given up, counted no-room.
func NewPairs(ttl time.Duration, maxOpen int) *Pairs {
	if maxOpen == 0 {
		maxOpen = 100_000
	}
	return &Pairs{ttl: ttl, maxOpen: maxOpen, open: map[probes.PairKey]*openEnd{}, unjoined: map[Unjoined]uint64{},
		opens: chunk[openEnd]{n: 8}}
}

// Add takes one event and passes on what it makes: the event itself, the
// announcement of a span it opens, or the span it closes.
func (p *Pairs) Add(ev probes.Event, now time.Time, out func(probes.Event)) {
	r := ev.Row
	if r == nil {
		out(ev)
		return
	}
	switch r.Role {
	case probes.Opens:
		if r.By == probes.ByUID && ev.UID == "" {
			p.count(r.ID, "no-key")
			return
		}
		k := ev.PairKey()
		p.mu.Lock()
		_, reopened := p.open[k]
		switch {
		case reopened:
			// The previous span on this key never reached its end.
			p.unjoined[Unjoined{r.ID, "no-end"}]++
		case len(p.open) >= p.maxOpen:
			p.unjoined[Unjoined{r.ID, "no-room"}]++
			p.mu.Unlock()
			return
		}
		o := p.opens.next()
		*o = openEnd{ev, now}
		p.open[k] = o
		p.mu.Unlock()
		if r.Announce {
			a := ev
			a.InFlight = true
			out(a)
		}
	case probes.Closes:
		k := ev.PairKey()
		p.mu.Lock()
		o, ok := p.open[k]
		if ok {
			delete(p.open, k)
		}
		stale := ok && p.stale(&o.ev, &ev)
		if stale {
			p.unjoined[Unjoined{o.ev.Probe, "no-end"}]++
		}
		p.mu.Unlock()
		if (!ok || stale) && r.Alone {
			ev.StartFromElapsed()
			out(ev)
			return
		}
		if !ok || stale {
			reason := "no-start"
			if r.Unpaired != "" {
				reason = r.Unpaired
			}
			p.count(r.ID, reason)
			return
		}
		out(o.ev.ClosedBy(&ev))
	default:
		out(ev)
	}
}

// stale says whether close c on open o's key is another span's end: o's
// own end was missed, and c's opening hit was not seen (a request whose
// handler no row probes, on a goroutine o's reused). Paired, they would
// make a span from one call's captures and another's times, in the first
// one's trace. Ends that both hold the call's object (Handle) say so
// exactly. Otherwise a close that knows when its span began (Elapsed) and
// began after the open is another's; the begin it implies is late by the
// time between the program's reading of the clock and the hit (a
// preempted goroutine: up to a scheduler slice, more on a CPU-starved
// node), so only a begin later than closeSkew is taken for another's.
func (p *Pairs) stale(o, c *probes.Event) bool {
	if o.Handle != 0 && c.Handle != 0 {
		return o.Handle != c.Handle
	}
	return c.Elapsed > 0 && c.Start.Add(-c.Elapsed).After(o.Start.Add(closeSkew))
}

func (p *Pairs) count(row, reason string) {
	p.mu.Lock()
	p.unjoined[Unjoined{row, reason}]++
	p.mu.Unlock()
}

// Flush gives up on spans open longer than the TTL.
func (p *Pairs) Flush(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, o := range p.open {
		if now.Sub(o.seen) > p.ttl {
			delete(p.open, k)
			p.unjoined[Unjoined{o.ev.Probe, "no-end"}]++
		}
	}
}

// Unjoined returns the counts of events that built no span.
func (p *Pairs) Unjoined() map[Unjoined]uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[Unjoined]uint64, len(p.unjoined))
	for k, v := range p.unjoined {
		out[k] = v
	}
	return out
}

// Open is how many spans wait for their end.
func (p *Pairs) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.open)
}
