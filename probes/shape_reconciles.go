package probes

import "time"

// ReconcileShape is how one reconcile of an operator joins: the span its
// two entry hits make (Pairs), and the operator's receipt of the object it
// reconciled — the latest before it began — which names the write it
// acted on (its revision) and starts its wait in the queue.
var ReconcileShape = Shape{
	Roots:    []string{StageReconcile},
	Required: []string{StageReconcile},
	Joins: Joins{
		{Stage: StageReconcile, Names: true, Span: "reconcile {controller} {namespace}/{name}", Attrs: []Field{FieldController}},
		// What the handler did with the result, found on the reconcile's
		// goroutine after it.
		{Stage: StageReconcileError, Found: []Relation{{Of: StageReconcile, When: FirstAfter, Same: []Same{{KeyGoroutine, KeyGoroutine}}}},
			NoSpan: true, Keep: time.Second, Unjoined: "result-without-reconcile"},
		{Stage: StageRequeueAfter, Found: []Relation{{Of: StageReconcile, When: FirstAfter, Same: []Same{{KeyGoroutine, KeyGoroutine}}}},
			NoSpan: true, Keep: time.Second, Unjoined: "result-without-reconcile"},
		{Stage: StageRequeue, Found: []Relation{{Of: StageReconcile, When: FirstAfter, Same: []Same{{KeyGoroutine, KeyGoroutine}}}},
			NoSpan: true, Keep: time.Second, Unjoined: "result-without-reconcile"},
		{Stage: StageInformer, Found: []Relation{{Of: StageReconcile, When: LastBefore, Same: []Same{{KeyObject, KeyObject}}}},
			// A receipt may start several reconciles (a failure and its
			// retry); one of an object no controller of this process
			// reconciles (an owned object, enqueued by its owner's name)
			// joins none.
			Shared: true, NoSpan: true, Keep: time.Minute, Unjoined: "receipt-without-reconcile"},
	},
}
