package correlate

import (
	"sync"
	"sync/atomic"
)

// interned caches values the agent would otherwise build again for every
// span of every write: attribute values that repeat (components, stages,
// probe IDs, resources; converting a string to an interface allocates) and
// the k8s.<kind>.name keys made from resources. Its keys come from the
// catalogue and from resource names, but nothing outside may grow it
// without end: past maxInterned entries it builds without keeping.
type interned[V any] struct {
	m sync.Map // string -> V
	n atomic.Int32
}

const maxInterned = 4096

func (c *interned[V]) get(key string, build func() V) V {
	if v, ok := c.m.Load(key); ok {
		return v.(V)
	}
	v := build()
	if c.n.Load() < maxInterned {
		if _, loaded := c.m.LoadOrStore(key, v); !loaded {
			c.n.Add(1)
		}
	}
	return v
}

var (
	boxed    interned[any]
	nameKeys interned[string]
)

// box returns s as an attribute value, shared for strings seen before.
func box(s string) any { return boxed.get(s, func() any { return s }) }

func nameKey(o Object) string {
	return nameKeys.get(o.Resource, func() string { return "k8s." + o.Kind() + ".name" })
}
