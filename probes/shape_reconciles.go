package probes

import "time"

// ReconcileShape is how one reconcile of an operator joins: the span its
// two entry hits make (Pairs), and the operator's receipt of the object it
// reconciled — the latest before it began — which names the write it
// acted on (its revision) and starts its wait in the queue; and the writes
// it made: each write request its goroutine sent during it, and the API
// server's write of the same verb and object that began next (a create's
// request names no object: the next create in its namespace).
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
		{Stage: StageReconcileCall, Found: []Relation{{Of: StageReconcile, When: During, Same: []Same{{KeyGoroutine, KeyGoroutine}}}},
			Many: true, NoSpan: true, Keep: 2 * time.Second, Unjoined: "write-outside-reconcile"},
		// The writes come from the API server's agent as finished write
		// traces (correlate.Reconciles.AddWrite), grafted whole under the
		// reconcile's span.
		{Stage: StageReconcileWrite, Found: []Relation{{Of: StageReconcileCall, AnyProcess: true, When: FirstAfter, Bound: StageReconcile,
			Same: []Same{{KeyObject, KeyObject}, {KeyVerb, KeyVerb}}}},
			Many: true, NoSpan: true, Keep: 10 * time.Second, Unjoined: "write-of-no-reconcile"},
		{Stage: StageInformer, Found: []Relation{{Of: StageReconcile, When: LastBefore, Same: []Same{{KeyObject, KeyObject}}}},
			// A receipt may start several reconciles (a failure and its
			// retry); one of an object no controller of this process
			// reconciles (an owned object, enqueued by its owner's name)
			// joins none.
			Shared: true, NoSpan: true, Keep: time.Minute, Unjoined: "receipt-without-reconcile"},
	},
}
