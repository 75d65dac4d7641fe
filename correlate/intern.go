package correlate

import "sync"

// boxed holds attribute values that repeat on every span — components,
// stages, probe IDs, attribute keys made from resources — already
// converted to the interface an Attribute holds: converting a string
// allocates, and the agent builds several spans for every write.
var boxed sync.Map // string -> any

// maxBoxed bounds the cache: its strings come from the catalogue and from
// resource names, but nothing outside must make it grow without end.
const maxBoxed = 4096

var boxedCount struct {
	sync.Mutex
	n int
}

// box returns s as an attribute value, shared for strings seen before.
func box(s string) any {
	if v, ok := boxed.Load(s); ok {
		return v
	}
	var v any = s
	boxedCount.Lock()
	defer boxedCount.Unlock()
	if boxedCount.n < maxBoxed {
		if _, loaded := boxed.LoadOrStore(s, v); !loaded {
			boxedCount.n++
		}
	}
	return v
}

var nameKeys sync.Map // resource -> "k8s.<kind>.name"

func nameKey(o Object) string {
	if k, ok := nameKeys.Load(o.Resource); ok {
		return k.(string)
	}
	k := "k8s." + o.Kind() + ".name"
	if len(o.Resource) <= 64 {
		nameKeys.Store(o.Resource, k)
	}
	return k
}
