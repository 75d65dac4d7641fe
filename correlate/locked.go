package correlate

import (
	"sync"
	"time"

	"github.com/kpath/kpath/probes"
)

// locked is an Assembler behind a lock, which is what each of the agent's
// correlators is: the ring-buffer reader adds, the flush loop flushes, the
// metrics loop counts. Its Emit runs with the lock held.
type locked struct {
	mu sync.Mutex
	a  *Assembler
}

// Add takes one event. now is the time it was read (tests pass their own).
func (f *locked) Add(ev probes.Event, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.a.Add(ev, now)
}

// Flush emits what is complete and settled and what waited too long, and
// forgets held events past their Keep. Call it often (every 50–100 ms).
func (f *locked) Flush(now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.a.Flush(now)
}

// Unjoined returns the counts of events that joined nothing, by row and
// reason.
func (f *locked) Unjoined() map[Unjoined]uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.a.Unjoined()
}

// Held is how many events wait for a trace, or may join more.
func (f *locked) Held() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.a.Held()
}

func (f *locked) stats() AssemblerStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.a.Stats()
}
