package export

import "sync"

// capped bounds a label's values: the first max keys seen keep their own
// series, the rest share the overflow value. The sets behind such labels
// (controllers, webhooks) are the cluster's configuration, so small, but a
// program that names one per object must not grow the series without end.
type capped[K comparable] struct {
	mu    sync.Mutex
	max   int
	known map[K]bool
}

func newCapped[K comparable](max int) *capped[K] { return &capped[K]{max: max, known: map[K]bool{}} }

// admits says whether k keeps its own series.
func (c *capped[K]) admits(k K) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.known[k] {
		if len(c.known) >= c.max {
			return false
		}
		c.known[k] = true
	}
	return true
}
