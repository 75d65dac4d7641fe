package probes

import "time"

// SyncShape is how one sync of a kube-controller-manager controller joins:
// the span its two entry hits make (Pairs) and the object it read, found
// on its goroutine after it began, which names the write it acted on.
var SyncShape = Shape{
	Roots:    []string{StageControllerSync},
	Required: []string{StageControllerSync},
	Joins: Joins{
		{Stage: StageControllerSync, Names: true, Span: "sync {controller} {key}"},
		// A sync of an object that is gone, or whose controller still
		// waits for its earlier creates to be seen, reads none: the next
		// sync's object, on the same worker goroutine, lies past its end.
		{Stage: StageSyncObject, Found: []Relation{{Of: StageControllerSync, When: FirstAfter, Bound: StageControllerSync,
			Same: []Same{{KeyGoroutine, KeyGoroutine}}}},
			NoSpan: true, Keep: time.Second, Unjoined: "object-without-sync"},
	},
}
